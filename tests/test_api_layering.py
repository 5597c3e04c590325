"""The front end runs no SQL: api/ asks the store's functions, and the caller's Scope."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "api"
MODULES = sorted(API.rglob("*.py"))


def _runtime_imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every import outside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(API)))
def test_api_modules_run_no_sql(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for module, names in _runtime_imports(tree):
        # The store's tables and connections are the store's; the Engine type is a handle.
        assert not module.startswith(("gridgov.store.models", "gridgov.store.engine")), module
        if module == "sqlalchemy.exc":
            # Error classes, caught to answer 503 when the store is down: no SQL is run.
            assert all(name.endswith("Error") for name in names), names
        elif module.split(".")[0] == "sqlalchemy":
            assert names == ["Engine"], f"{path.name} imports {names} from {module}"
