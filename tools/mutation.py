"""Mutation testing of the pure cores: does a small bug in the code make a fast test fail?

Run by `make mutation` (all modules in MODULES) or `make mutation MODULE=<path>`. For each
module it parses the source, lists every place one mutation applies (an operator, a
constant, a `return` value, a `not`), and for each mutant writes the mutated module into a
private copy of the project (the working tree is never touched) and runs only that
module's fast tests there with `pytest -x`. A mutant is killed when the tests fail or time
out; a survivor is a behaviour no test pins. It prints each survivor as file:line and the
mutation, and the score per module and overall.

Not mutated: docstrings, annotations, log messages, f-string text, the `__main__` guard, and
the default values of dataclass fields (annotated assignments in the body of a class
decorated with `@dataclass`, with or without arguments): those are data, so a test
restating each literal would only detect the edit itself. The checks that use them (a
`__post_init__`, a property) are mutated as usual.

Not part of `make test`: it runs the tests once per mutant, which takes minutes. Ctrl-C
stops it at once: no queued mutant starts, running tests are killed, exit code 130.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Module -> the pytest arguments of the fast tests that pin it (no TFX pipeline, no TF
# where the module needs none; `-k` leaves out the few tests of a file that load TF).
MODULES: dict[str, list[str]] = {
    "components/bleu_evaluator/gate.py": ["tests/test_gate.py", "tests/test_pinned_gate.py"],
    "models/metrics.py": ["tests/test_pinned_bleu.py"],
    "components/flickr8k_example_gen/records.py": ["tests/test_pinned_records.py"],
    "data/layout.py": ["tests/test_layout.py", "tests/test_pinned_layout.py"],
    "serving/rest.py": ["tests/test_pinned_rest.py", "tests/test_serving_units.py", "-k", "not clean_tf_error"],
    "serving/versions.py": ["tests/test_serving_units.py", "tests/test_pinned_versions.py", "-k", "not clean_tf_error"],
    "components/caption_pusher/push.py": ["tests/test_pusher.py", "tests/test_pinned_push.py", "-k", "not executor"],
    "configs/config.py": ["tests/test_config.py", "tests/test_pinned_config.py"],
    "data/download.py": ["tests/test_download.py", "tests/test_pinned_download.py"],
    # TensorFlow modules: a mutant costs about a minute (TF's import); run them with --jobs 1.
    "models/images.py": ["tests/test_pinned_images.py", "tests/test_image_budget.py"],
    "models/decoding.py": ["tests/test_pinned_beam.py", "tests/test_decoder.py"],
}

# Operator swaps: each maps to the one it becomes.
_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
    ast.And: ast.Or, ast.Or: ast.And,
}
_SYMBOLS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+",
    ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
    ast.And: "and", ast.Or: "or",
}
# Calls whose string arguments are only log text: mutating them tells nothing.
_LOG_METHODS = {"debug", "info", "warning", "error", "exception"}


@dataclasses.dataclass(frozen=True)
class Mutant:
    index: int  # position of the node in ast.walk order
    kind: str  # "op", "const", "return", "not"
    line: int
    description: str


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes no mutation should touch: docstrings, annotations, log messages, f-string text."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skip(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            skip(node.returns)
            for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                skip(arg.annotation)
        if isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        if isinstance(node, ast.JoinedStr):
            skipped.update(id(v) for v in node.values if isinstance(v, ast.Constant))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _LOG_METHODS:
            for arg in node.args:
                skip(arg)
        if isinstance(node, ast.If) and _is_main_guard(node.test):
            skip(node)
        if isinstance(node, ast.ClassDef) and any(_is_dataclass_decorator(d) for d in node.decorator_list):
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign):
                    skip(statement.value)  # a field's default value: data, not behaviour
    return skipped


def _is_dataclass_decorator(decorator: ast.expr) -> bool:
    """`@dataclass`, `@dataclasses.dataclass`, with or without arguments."""
    if isinstance(decorator, ast.Call):
        decorator = decorator.func
    if isinstance(decorator, ast.Attribute):
        return decorator.attr == "dataclass"
    return isinstance(decorator, ast.Name) and decorator.id == "dataclass"


def _is_main_guard(test: ast.expr) -> bool:
    return isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"


def find_mutants(source: str) -> list[Mutant]:
    """Every single mutation that applies to `source`."""
    tree = ast.parse(source)
    skipped = _skipped_nodes(tree)
    found: list[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skipped:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            for op in node.ops:
                found.append(Mutant(index, "op", line, f"`{_SYMBOLS[type(op)]}` -> `{_SYMBOLS[_SWAPS[type(op)]]}`"))
                break  # chained comparisons: the first operator only
        elif isinstance(node, (ast.BinOp, ast.AugAssign, ast.BoolOp)) and type(node.op) in _SWAPS:
            found.append(Mutant(index, "op", line, f"`{_SYMBOLS[type(node.op)]}` -> `{_SYMBOLS[_SWAPS[type(node.op)]]}`"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append(Mutant(index, "not", line, "`not x` -> `x`"))
        elif isinstance(node, ast.Constant):
            change = _constant_change(node.value)
            if change is not None:
                found.append(Mutant(index, "const", line, f"`{node.value!r}` -> `{change!r}`"))
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                found.append(Mutant(index, "return", line, "`return x` -> `return None`"))
    return found


def _constant_change(value: object) -> object | None:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 if value else 1.0
    if isinstance(value, str) and value:
        return ""
    return None


def mutate(source: str, mutant: Mutant) -> str:
    """`source` with the one mutation `mutant` applied."""
    tree = ast.parse(source)
    nodes = list(ast.walk(tree))
    node = nodes[mutant.index]
    if mutant.kind == "op":
        if isinstance(node, ast.Compare):
            node.ops[0] = _SWAPS[type(node.ops[0])]()
        else:
            node.op = _SWAPS[type(node.op)]()
    elif mutant.kind == "const":
        node.value = _constant_change(node.value)
    elif mutant.kind == "return":
        node.value = ast.Constant(None)
    elif mutant.kind == "not":
        _replace(tree, node, node.operand)
    return ast.unparse(ast.fix_missing_locations(tree))


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[i for i, v in enumerate(value) if v is old][0]] = new
                return


def copy_project(destination: Path) -> None:
    """The tracked project files (plus new, untracked ones) into `destination`, no caches."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file() and not name.startswith(".venv"):
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, destination / name)


# Ctrl-C: no new mutant starts, and the pytest process groups still running are killed.
_STOP = threading.Event()
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


def _kill_running() -> None:
    with _RUNNING_LOCK:
        for process in list(_RUNNING):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def run_tests(workdir: Path, tests: list[str], timeout: float) -> str:
    """'passed', 'failed' or 'timeout' for pytest over `tests` in `workdir`."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    with _RUNNING_LOCK:
        if _STOP.is_set():
            return "cancelled"
        # Its own session, so Ctrl-C reaches only this script, which then kills the group.
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _RUNNING.add(process)
    try:
        return "passed" if process.wait(timeout=timeout) == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: pytest and what it started
        process.wait()
        return "timeout"
    except KeyboardInterrupt:  # Ctrl-C while this thread waits (the baseline run)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(process)


@dataclasses.dataclass
class ModuleResult:
    module: str
    killed: int = 0
    timeouts: int = 0
    survivors: list[Mutant] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return self.killed + self.timeouts + len(self.survivors)


def mutation_test(module: str, tests: list[str], jobs: int, lines: set[int] | None = None) -> ModuleResult:
    """Run every mutant of `module` (on `lines` only, if given) against `tests`, `jobs` at a
    time, each in its own copy."""
    source = (ROOT / module).read_text()
    mutants = [m for m in find_mutants(source) if lines is None or m.line in lines]
    result = ModuleResult(module)
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        workdirs = [Path(tmp) / f"w{i}" for i in range(jobs)]
        for workdir in workdirs:
            copy_project(workdir)
        # The baseline runs the module as the mutants see it (unparsed from its AST).
        (workdirs[0] / module).write_text(ast.unparse(ast.parse(source)))
        started = time.monotonic()
        if run_tests(workdirs[0], tests, timeout=600) != "passed":
            sys.exit(f"error: {' '.join(tests)} fail on the unmutated code; fix them first")
        (workdirs[0] / module).write_text(source)
        # A mutant that makes the tests loop (or wait) is caught by this per-mutant timeout.
        timeout = 3 * (time.monotonic() - started) + 10
        print(f"{module}: {len(mutants)} mutants, tests {' '.join(tests)}, timeout {timeout:.0f} s", flush=True)
        free = list(workdirs)

        def run(mutant: Mutant) -> tuple[Mutant, str]:
            workdir = free.pop()
            target = workdir / module
            try:
                target.write_text(mutate(source, mutant))
                return mutant, run_tests(workdir, tests, timeout)
            finally:
                target.write_text(source)
                free.append(workdir)

        pool = ThreadPoolExecutor(jobs)
        try:
            for mutant, outcome in pool.map(run, mutants):
                if outcome == "failed":
                    result.killed += 1
                elif outcome == "timeout":
                    result.timeouts += 1
                else:
                    result.survivors.append(mutant)
                    print(f"  survived {module}:{mutant.line}: {mutant.description}", flush=True)
        except KeyboardInterrupt:
            # Ctrl-C: start no queued mutant, stop the running ones, leave no copy behind.
            _STOP.set()
            pool.shutdown(wait=False, cancel_futures=True)
            _kill_running()
            pool.shutdown(wait=True)
            print("\ninterrupted: no more mutants started, the running tests were stopped", flush=True)
            raise SystemExit(130) from None
        pool.shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", help="one module path (default: every module in MODULES)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at the same time (default 2)")
    parser.add_argument("--lines", help="only mutants on these lines, e.g. 20,55 (rechecking survivors; needs --module)")
    args = parser.parse_args(argv)
    if args.lines and not args.module:
        parser.error("--lines needs --module")
    lines = {int(n) for n in args.lines.split(",")} if args.lines else None
    if args.module and args.module not in MODULES:
        parser.error(f"{args.module} is not one of: {', '.join(MODULES)}")
    selected = [args.module] if args.module else list(MODULES)
    results = [mutation_test(m, MODULES[m], args.jobs, lines) for m in selected]

    print("\nmutation score (killed, including timeouts / mutants):")
    for r in results:
        detected = r.killed + r.timeouts
        print(f"  {r.module:45s} {detected:4d} / {r.total:4d}  {100 * detected / max(r.total, 1):5.1f}%  ({r.timeouts} timeouts)")
    detected = sum(r.killed + r.timeouts for r in results)
    total = sum(r.total for r in results)
    print(f"  {'overall':45s} {detected:4d} / {total:4d}  {100 * detected / max(total, 1):5.1f}%")
    survivors = [(r.module, m) for r in results for m in r.survivors]
    if survivors:
        print("\nsurvivors:")
        for module, m in survivors:
            print(f"  {module}:{m.line}: {m.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
