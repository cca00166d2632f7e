"""Architecture rules that code review alone lets slip: layering and public surfaces.

* ``coin_core`` never imports prefect: not in its source (any import statement, even inside a
  function), and not transitively when every module of it is imported.
* Every package declares ``__all__`` and every name it lists exists.
* Prefect tasks stay thin wrappers over coin_core (the domain logic lives in coin_core).
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.common import REPO

CORE = REPO / "coin_core"
FLOWS = REPO / "flows"


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in {"import_module", "__import__"}:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


def _core_modules() -> list[str]:
    import coin_core

    return ["coin_core"] + [m.name for m in pkgutil.walk_packages(coin_core.__path__, "coin_core.")]


def test_import_scanner_sees_nested_and_dynamic_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n    from prefect.tasks import task\n"
        "def g():\n    import importlib\n    importlib.import_module('prefect.flows')\n"
        "from . import sibling\n"
    )
    assert _imported_roots(sample) == {"prefect", "importlib"}


def test_coin_core_source_never_imports_prefect() -> None:
    offenders = [str(p.relative_to(REPO)) for p in sorted(CORE.rglob("*.py")) if "prefect" in _imported_roots(p)]
    assert offenders == [], f"coin_core must not import prefect: {offenders}"


def test_importing_all_of_coin_core_does_not_load_prefect() -> None:
    """Transitive check in a clean interpreter (this one already has prefect loaded)."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import coin_core\n"
        "names = ['coin_core'] + [m.name for m in pkgutil.walk_packages(coin_core.__path__, 'coin_core.')]\n"
        "for n in names: importlib.import_module(n)\n"
        "print(json.dumps({'modules': len(names), 'prefect': sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["modules"] > 10
    assert found["prefect"] == [], f"importing coin_core loaded {found['prefect'][:5]}"


@pytest.mark.parametrize("root", ["coin_core", "flows"])
def test_every_package_declares_all_and_its_names_exist(root: str) -> None:
    base = REPO / root
    packages = sorted(p.parent for p in base.rglob("__init__.py"))
    assert packages, f"no packages under {root}"
    for pkg in packages:
        name = ".".join(pkg.relative_to(REPO).parts)
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert isinstance(exported, (list, tuple)) and exported, f"{name} declares no __all__"
        missing = [n for n in exported if not hasattr(module, n)]
        assert missing == [], f"{name}.__all__ lists names it does not define: {missing}"


def test_module_all_names_exist() -> None:
    """Modules that declare ``__all__`` (most do) must define every listed name."""
    problems: dict[str, list[str]] = {}
    for name in _core_modules():
        module = importlib.import_module(name)
        missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
        if missing:
            problems[name] = missing
    assert problems == {}


def _task_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_task(dec: ast.expr) -> bool:
        target = dec.func if isinstance(dec, ast.Call) else dec
        return getattr(target, "id", None) == "task" or getattr(target, "attr", None) == "task"

    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and any(is_task(d) for d in n.decorator_list)]


def test_prefect_tasks_are_thin_wrappers() -> None:
    """A task body is at most two statements (docstring aside): the logic belongs to coin_core."""
    seen = 0
    for path in sorted(FLOWS.glob("*.py")):
        for fn in _task_functions(ast.parse(path.read_text(encoding="utf-8"))):
            body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
            assert len(body) <= 2, f"{path.name}:{fn.name} has {len(body)} statements"
            seen += 1
    assert seen >= 6
