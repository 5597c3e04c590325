"""docs/formats.md names every column the readers require, read from the constants they use, so
that the page cannot drift from the code silently; and its examples are valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gridgov import catalog, consultation_items
from gridgov.areas import REQUIRED_COLUMNS as AREA_REQUIRED
from gridgov.model import ROAD_NODE_COLUMNS
from gridgov.roads import LINK_COLUMNS, NODE_COLUMNS
from gridgov.tessellate import ADMIN_COLUMNS
from gridgov.units import OFFICE_REQUIRED_COLUMNS, UNIT_REQUIRED_COLUMNS
from gridgov.workdays import CALENDAR_FIELDS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "formats.md"

# Table heading in the page -> the columns (fields) its reader refuses to go without.
REQUIRED: dict[str, tuple[str, ...]] = {
    "Area columns": AREA_REQUIRED,
    "Office columns": OFFICE_REQUIRED_COLUMNS,
    "Unit columns": UNIT_REQUIRED_COLUMNS,
    "Road node columns (layer `nodes`)": ROAD_NODE_COLUMNS,
    # build_network checks these three by name (no constant); a class or speeds decide the rest.
    "Road link columns (layer `links`)": ("u", "v", "length_m"),
    "Link-table node columns": NODE_COLUMNS,
    "Link-table link columns": LINK_COLUMNS,
    "Catalogue fields (top level)": catalog.CATALOG_FIELDS,
    "Domain and event-major fields": catalog.CODED_FIELDS,
    "Matter fields": catalog.MATTER_FIELDS,
    "Deadline fields": catalog.DEADLINE_FIELDS,
    "Event-class fields": catalog.EVENT_CLASS_FIELDS,
    "Admin table columns": ADMIN_COLUMNS,
    "Consultation catalogue fields (top level)": consultation_items.CONSULTATION_FIELDS,
    "Consultation term fields": consultation_items.TERM_FIELDS,
    "Consultation item fields": consultation_items.ITEM_FIELDS,
    "Holiday calendar fields": CALENDAR_FIELDS,
}


def _tables(text: str) -> dict[str, list[list[str]]]:
    """The rows (cells) of the table under each ``####`` heading."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip() if line.startswith("#### ") else None
            continue
        if heading and line.startswith("|") and not set(line) <= set("|-: "):
            tables.setdefault(heading, []).append([c.strip() for c in line.strip("|").split("|")])
    return tables


def _required_in_doc(rows: list[list[str]]) -> set[str]:
    header, *body = rows
    assert header[:3] in (["column", "type", "required"], ["field", "type", "required"]), header
    names: set[str] = set()
    for row in body:
        if row[2] == "yes":
            names.update(re.findall(r"`([^`]+)`", row[0]))  # "geometry" is written unquoted
    return names


@pytest.mark.parametrize("heading", list(REQUIRED))
def test_the_page_names_exactly_the_required_columns(heading: str) -> None:
    tables = _tables(DOC.read_text(encoding="utf-8"))
    assert heading in tables, f"docs/formats.md has no table '#### {heading}'"
    assert _required_in_doc(tables[heading]) == set(REQUIRED[heading])


def test_the_catalogue_example_is_a_valid_catalogue() -> None:
    text = DOC.read_text(encoding="utf-8")
    [example] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    parsed = catalog.catalog_from_dict(yaml.safe_load(example), origin="docs/formats.md")
    assert parsed.codes == ("SB-01",)


def test_the_readme_links_the_page() -> None:
    assert "(docs/formats.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
