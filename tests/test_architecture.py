"""The layering rule of DESIGN.md, checked on the source: a folder imports only the
folders below it, so a change in an upper layer can never break a lower one.

Order, lowest first: configs, data, models, tracking, components, pipelines. `serving`
imports none of them (it serves any exported model). Every import statement counts,
including those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("configs", "data", "models", "tracking", "components", "pipelines")
PROJECT_PACKAGES = (*LAYERS, "serving", "bench", "tests")
ALLOWED = {layer: set(LAYERS[: i + 1]) for i, layer in enumerate(LAYERS)}
ALLOWED["serving"] = {"serving"}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) for every import in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PROJECT_PACKAGES:
                found.add((top, node.lineno))
    return found


def violations(layer: str) -> list[str]:
    out = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for package, line in sorted(imported_packages(path)):
            if package not in ALLOWED[layer]:
                out.append(f"{path.relative_to(REPO)}:{line} imports {package}")
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_lower_layers(layer):
    assert violations(layer) == []


def test_the_check_sees_a_violation(tmp_path):
    """The walker finds imports in functions and `from x.y import z` forms."""
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from components.transform import text\n    import serving.rest\n")
    assert imported_packages(source) == {("components", 4), ("serving", 5)}


def test_the_tracking_modules_import_without_tfx_or_tensorflow():
    """Each MLflow piece (the run, its metrics, its files, the registry) loads on its own:
    a notebook or another orchestrator can use it without TFX or TensorFlow."""
    import subprocess
    import sys

    code = ("import sys; import tracking.lifecycle, tracking.metrics, tracking.artifacts, tracking.registry; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tfx', 'tensorflow', 'ml_metadata'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
