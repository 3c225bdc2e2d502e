"""Starts the MLflow UI on a profile's store: `python -m tracking.ui --profile smoke`.

Called by `make mlflow-ui PROFILE=...`. Prints the `mlflow server` command it runs, then
replaces itself with it (Ctrl-C stops the server). The store is the profile's embedded one:
`sqlite:///<output root>/mlflow.db` with artifacts in `<output root>/mlartifacts`. A
profile whose `mlflow.tracking_uri` names a server already has a UI there; this says so.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from configs.cli import add_config_arguments, config_from_args


def server_command(config, host: str = "127.0.0.1", port: int = 5000, mlflow_bin: str | None = None) -> list[str]:
    """The `mlflow server` command line for the profile's sqlite store."""
    mlflow_bin = mlflow_bin or str(Path(sys.executable).with_name("mlflow"))
    if not Path(mlflow_bin).exists():
        mlflow_bin = shutil.which("mlflow") or "mlflow"
    from tracking.lifecycle import sqlite_artifact_root

    return [
        mlflow_bin, "server",
        "--backend-store-uri", config.mlflow_tracking_uri,
        "--default-artifact-root", str(sqlite_artifact_root(config)),
        "--host", host, "--port", str(port), "--workers", "1",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracking.ui",
        description="Start the MLflow UI (mlflow server) on the MLflow store of a profile's runs.",
    )
    add_config_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--print-only", action="store_true", help="print the command instead of running it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if config.mlflow.tracking_uri and not config.mlflow.tracking_uri.startswith("sqlite:"):
        print(f"profile {config.profile} logs to {config.mlflow.tracking_uri}: open that server's UI instead")
        return 0
    command = server_command(config, args.host, args.port)
    print(shlex.join(command))
    if args.print_only:
        return 0
    db = Path(config.mlflow_tracking_uri[len("sqlite:///"):])
    if not db.exists():
        print(f"note: no runs recorded yet in {db} (run `make pipeline PROFILE={args.profile}`)")
    db.parent.mkdir(parents=True, exist_ok=True)
    print(f"MLflow UI: http://{args.host}:{args.port}  (Ctrl-C stops it)", flush=True)
    # MLflow 3's job runner serves GenAI features and starts a dozen processes: not needed here.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
