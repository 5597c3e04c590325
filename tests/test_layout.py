"""The README's layout map matches the tree: every module is named there, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gridgov", "api")


def _layout_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## )", text, flags=re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


def _modules() -> set[str]:
    out: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            # Migrations are named by Alembic revision; the map names their folder.
            if "/migrations/" in rel or path.name == "__init__.py":
                continue
            out.add(rel)
    return out


def test_every_module_is_in_the_layout_map() -> None:
    named = set(re.findall(r"`((?:gridgov|api)/[\w/]+\.py)`", _layout_section()))
    modules = _modules()
    assert sorted(modules - named) == [], "modules missing from README's layout map"
    assert sorted(named - modules) == [], "README's layout map names modules that do not exist"


def test_no_module_name_repeats_across_packages() -> None:
    seen: dict[str, list[str]] = {}
    for rel in _modules():
        seen.setdefault(Path(rel).stem, []).append(rel)
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
