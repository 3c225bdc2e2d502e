"""A real `mlflow server` for the tests: started on a free port, stopped with all its children.

Used by the session fixture `mlflow_server` in conftest.py. The server runs in a session of
its own (its own process group), so stopping it signals uvicorn's workers too; afterwards
every process of that group must be gone.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

MLFLOW = Path(sys.executable).with_name("mlflow")


@dataclasses.dataclass
class MlflowServer:
    uri: str
    root: Path
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, timeout: float = 90.0) -> MlflowServer:
    """`mlflow server` over `<root>/mlflow.db`, proxying artifacts into `<root>/artifacts`."""
    port = free_port()
    log_path = root / "server.log"
    command = [
        str(MLFLOW), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    # No job runner: it serves GenAI jobs and would start a dozen more processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", root, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    survivors = stop(server)
    raise TimeoutError(
        f"mlflow server not healthy on {server.uri} after {timeout:.0f} s "
        f"(left running: {survivors}):\n{server.log_tail()}"
    )


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    members = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return members


def stop(server: MlflowServer, grace: float = 15.0) -> list[str]:
    """SIGTERM the server's process group, SIGKILL what is left after `grace` seconds.

    Returns the processes still alive afterwards (empty when all are gone): the group's
    members and any descendant that moved to another group.
    """
    pgid = server.process.pid  # start_new_session: the server leads its own group
    try:
        tracked = {p.pid: p for p in [psutil.Process(pgid), *psutil.Process(pgid).children(recursive=True)]}
    except psutil.NoSuchProcess:
        tracked = {}
    tracked.update({p.pid: p for p in group_members(pgid)})
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        for p in tracked.values():  # descendants that left the group get the signal too
            try:
                if p.is_running() and os.getpgid(p.pid) != pgid:
                    p.send_signal(sig)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        deadline = time.monotonic() + wait
        while True:
            server.process.poll()  # reap the server itself (its children go to init)
            alive = [p for p in tracked.values() if _running(p)]
            alive += [p for p in group_members(pgid) if p.pid not in tracked]
            if not alive:
                return []
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    return [f"{p.pid} {' '.join(_cmdline(p))[:120]}" for p in alive]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return ["?"]
