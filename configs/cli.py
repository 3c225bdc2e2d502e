"""Command-line plumbing shared by every entry point that reads a profile.

Used by the runners (pipelines/), tracking.lineage and tracking.ui, so `--profile` and
`--set` mean the same everywhere and a bad config ends the command with one clear line.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from configs.config import Config, ConfigError, available_profiles, load_config, parse_override


def add_config_arguments(parser: argparse.ArgumentParser, default_profile: str = "smoke") -> None:
    parser.add_argument(
        "--profile",
        default=default_profile,
        help=f"config profile name or YAML path (known: {', '.join(available_profiles())})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=5 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config named by --profile and --set; exits with status 2 and the reason if invalid."""
    try:
        return load_config(args.profile, dict(parse_override(o) for o in args.overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


def quiet_third_party_noise() -> None:
    """Hide start-up chatter that says nothing about this run (TF C++ logs, google-* warnings)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    ignore_google_version_warnings()


def ignore_google_version_warnings() -> None:
    """google-* packages' FutureWarnings about this Python (3.10, which TFX 1.16 needs) and
    their own versions, printed at import: nothing a user of this project can act on."""
    warnings.filterwarnings("ignore", message=".*non-supported Python version.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*google-cloud-storage < 3.0.0.*", category=FutureWarning)
