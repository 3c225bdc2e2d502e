"""Starts TF Serving on the pushed models: `make serve`.

    python -m serving.tf_serving [--models-dir serving/models] [--config serving/models.config]
                                 [--batching-parameters-file serving/batching.config | --no-batching]

Uses the `tensorflow_model_server` binary when it is on PATH (with a copy of
serving/models.config whose base_path points at the absolute models directory), else the
`tensorflow/serving` Docker image when a Docker engine answers (`docker info`), else stops
and says what is missing and that `make serve-local` needs neither. Either way with
server-side batching (`--enable_batching`) by serving/batching.config unless --no-batching.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from serving import batching_parameters

SERVING_DIR = Path(__file__).resolve().parent
CONTAINER_MODELS = "/models"  # where serving/models.config expects the models
CONTAINER_CONFIG = "/config/models.config"
CONTAINER_BATCHING = "/config/batching.config"
IMAGE = "tensorflow/serving"

_BASE_PATH = re.compile(r'(base_path:\s*")([^"]*)(")')


def rewrite_base_paths(config_text: str, models_dir: Path) -> str:
    """models.config with every base_path under /models/ moved to models_dir (absolute)."""

    def local(match: re.Match) -> str:
        path = match.group(2)
        if path == CONTAINER_MODELS or path.startswith(CONTAINER_MODELS + "/"):
            path = str(models_dir.resolve() / path[len(CONTAINER_MODELS) :].lstrip("/"))
        return f"{match.group(1)}{path}{match.group(3)}"

    return _BASE_PATH.sub(local, config_text)


def docker_answers(run: Callable = subprocess.run) -> tuple[bool, str]:
    """(True, "") when `docker info` succeeds, else (False, why not)."""
    if shutil.which("docker") is None:
        return False, "the `docker` command is not installed"
    try:
        result = run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "`docker info` did not answer within 20 s"
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        return False, f"`docker info` failed: {lines[-1] if lines else 'exit ' + str(result.returncode)}"
    return True, ""


def model_versions(models_dir: Path) -> list[str]:
    return sorted((p.name for p in models_dir.glob("*/*") if p.is_dir() and p.name.isdigit()), key=int)


def build_command(args: argparse.Namespace, which: Callable = shutil.which, docker=docker_answers) -> tuple[list[str] | None, str]:
    """The command that starts TF Serving, or (None, a message that says what is missing)."""
    binary = which("tensorflow_model_server")
    if binary:
        config = Path(tempfile.mkdtemp(prefix="captioner-tfs-")) / "models.config"
        config.write_text(rewrite_base_paths(args.config.read_text(), args.models_dir))
        batching = batching_flags(args, str(args.batching_parameters_file.resolve()))
        return [binary, f"--port={args.grpc_port}", f"--rest_api_port={args.port}", f"--model_config_file={config}",
                "--file_system_poll_wait_seconds=2", *batching], f"TF Serving (binary {binary}), config {config}"
    ok, why = docker()
    if ok:
        mount = [] if args.no_batching else ["-v", f"{args.batching_parameters_file.resolve()}:{CONTAINER_BATCHING}:ro"]
        return [
            "docker", "run", "--rm", "--init", "-p", f"127.0.0.1:{args.port}:8501",
            "-v", f"{args.models_dir.resolve()}:{CONTAINER_MODELS}:ro",
            "-v", f"{args.config.resolve()}:{CONTAINER_CONFIG}:ro", *mount,
            IMAGE, f"--model_config_file={CONTAINER_CONFIG}", "--file_system_poll_wait_seconds=2",
            *batching_flags(args, CONTAINER_BATCHING),
        ], f"TF Serving in Docker ({IMAGE})"
    return None, (
        "cannot start TF Serving: `tensorflow_model_server` is not on PATH, and Docker cannot run it "
        f"({why}).\n"
        "  Install one of them (https://www.tensorflow.org/tfx/serving/setup), or start the Docker engine,\n"
        "  or run `make serve-local`: the local REST server with the same API, which needs neither."
    )


def batching_flags(args: argparse.Namespace, path: str) -> list[str]:
    """TF Serving's batching flags: none with --no-batching, else --enable_batching with the file."""
    if args.no_batching:
        return []
    return ["--enable_batching", f"--batching_parameters_file={path}"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.tf_serving", description="Serve the pushed models with TF Serving.")
    parser.add_argument("--models-dir", type=Path, default=SERVING_DIR / "models",
                        help="the directory mounted as /models (default serving/models)")
    parser.add_argument("--config", type=Path, default=SERVING_DIR / "models.config",
                        help="TF Serving model config (default serving/models.config)")
    parser.add_argument("--batching-parameters-file", type=Path, default=SERVING_DIR / "batching.config",
                        help="batching parameters for --enable_batching (default serving/batching.config)")
    parser.add_argument("--no-batching", action="store_true", help="serve without server-side batching")
    parser.add_argument("--port", type=int, default=8501, help="REST port (default 8501)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="gRPC port of the binary (default 8500)")
    parser.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.no_batching:
        try:  # TF Serving would refuse to load the model over a bad file; say so before starting it
            batching_parameters.read(args.batching_parameters_file)
        except batching_parameters.BatchingConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    command, description = build_command(args)
    if command is None:
        print(f"error: {description}", file=sys.stderr)
        return 1
    if not model_versions(args.models_dir):
        print(f"warning: no model version under {args.models_dir}/<model>/<version>/ yet; TF Serving will wait "
              f"for one (`make pipeline` pushes one)", file=sys.stderr)
    print(f"starting {description}: REST on http://127.0.0.1:{args.port}/v1/models/captioner", file=sys.stderr)
    print(" ".join(command), file=sys.stderr)
    if args.dry_run:
        return 0
    sys.stderr.flush()
    os.execvp(command[0], command)  # TF Serving takes over this process (Ctrl-C stops it)


if __name__ == "__main__":
    sys.exit(main())
