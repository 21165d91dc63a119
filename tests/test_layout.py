"""The house rules: which package may import which, no script imported by library code, light imports."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"main", "eval", "retrieve", "hubconf"}
# package -> the project's top-level names it may import (utils is the leaf)
ALLOWED = {"utils": set(), "dataloaders": {"utils"}, "models": {"utils", "dataloaders"}}


def project_imports(path: Path) -> set[str]:
    """Top-level project names imported by ``path`` (relative imports resolve to its own package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & (set(ALLOWED) | SCRIPTS | {"bench", "tests"})


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_the_layers_below_them(package):
    wrong = {str(p.relative_to(REPO)): sorted(project_imports(p) - ALLOWED[package] - {package})
             for p in (REPO / package).rglob("*.py")}
    assert not {k: v for k, v in wrong.items() if v}


def test_no_script_or_benchmark_imports_another_script():
    # main.py is the public entry point (``from main import VPRModel``); eval, retrieve and hubconf are not
    files = [REPO / f"{s}.py" for s in SCRIPTS] + list((REPO / "bench").glob("*.py"))
    wrong = {str(p.relative_to(REPO)): sorted(project_imports(p) & (SCRIPTS - {"main"} | {"bench"}) - {p.stem})
             for p in files}
    assert not {k: v for k, v in wrong.items() if v}


@pytest.mark.parametrize("modules,heavy", [
    ("utils.errors, utils.files, utils.recipes, utils.images, utils.recall, utils.distributed",
     ("faiss", "pytorch_metric_learning", "lightning")),
    ("models.network, models.loading", ("lightning", "pytorch_metric_learning", "faiss")),
])
def test_light_modules_do_not_import_heavy_dependencies(modules, heavy):
    code = f"import sys, {modules}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
