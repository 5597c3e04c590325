"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import yaml
from shapely.geometry import Polygon
from sqlalchemy import Engine, text

from gridgov.settings import PROJECT_ROOT

#: The matter :func:`custom_catalog` adds to the reference catalogue.
CUSTOM = "CUSTOM-01"


def bowtie(poly: Polygon) -> Polygon:
    """Swap two consecutive vertices so that two edges cross."""
    xy = np.asarray(poly.exterior.coords)[:-1]
    for i in range(1, len(xy) - 1):
        swapped = xy.copy()
        swapped[[i, i + 1]] = swapped[[i + 1, i]]
        out = Polygon(swapped)
        if not out.is_valid:
            return out
    raise AssertionError("could not make a bow-tie")


@dataclass(frozen=True)
class Damage:
    """A damaged copy of the reference areas and the codes each kind of damage must name."""

    gdf: gpd.GeoDataFrame
    shifted: str  # a grid moved 40 m east over its neighbour, with its micro-grids
    deleted: str  # a grid removed, with its micro-grids
    hole: Polygon  # where the deleted grid was
    hole_parent: str  # the community left with a gap
    bowtie: str  # a micro-grid made self-intersecting
    wrong_prefix: str  # a micro-grid code given another street's digits

    @property
    def expected(self) -> list[tuple[str, str]]:
        return [
            ("overlap", self.shifted),
            ("gap", self.hole_parent),
            ("invalid_geometry", self.bowtie),
            ("prefix_mismatch", self.wrong_prefix),
        ]


def damage_areas(clean: gpd.GeoDataFrame) -> Damage:
    """Apply the four damages of the foundation issue to a copy of ``clean``."""
    gdf = clean.copy()
    level, code, parent = gdf["level"], gdf["code"], gdf["parent_code"]
    grids = gdf.index[level == "grid"]
    micro = gdf.index[level == "microgrid"]

    shifted = str(code[grids[100]])
    moving = (code == shifted) | (parent == shifted)
    gdf.loc[moving, "geometry"] = gdf.geometry[moving].translate(xoff=40 / 95_700)

    deleted = str(code[grids[500]])
    hole = gdf.geometry[code == deleted].iloc[0]
    hole_parent = str(parent[code == deleted].iloc[0])
    gdf = gdf[(code != deleted) & (parent != deleted)].copy()

    bow = str(code[micro[2000]])
    assert not str(parent[micro[2000]]).startswith((shifted, deleted))
    gdf.loc[gdf["code"] == bow, "geometry"] = bowtie(clean.geometry[micro[2000]])

    wrong_from = str(code[micro[7000]])
    wrong = wrong_from[:6] + "999" + wrong_from[9:]
    gdf.loc[gdf["code"] == wrong_from, "code"] = wrong
    return Damage(gdf, shifted, deleted, hole, hole_parent, bow, wrong)


def custom_catalog(path: Path) -> Path:
    """The reference catalogue plus one matter, in its own domain, that it does not have."""
    data = yaml.safe_load((PROJECT_ROOT / "data" / "catalog.yaml").read_text(encoding="utf-8"))
    data["version"] = "custom-1"
    data["domains"].append({"code": "CUSTOM", "zh": "自定义事项", "en": "custom matters"})
    data["matters"].append(
        {
            "code": CUSTOM,
            "domain": "CUSTOM",
            "name_zh": "共享单车堆积",
            "name_en": "Shared bikes piled up",
            "description_en": "Shared bicycles block a pavement or an entrance.",
            "keywords": ["共享单车", "bikes"],
            "lead": "enforcement",
            "assist": ["police"],
            "priority": 3,
            "deadlines": {"acknowledge_min": 10, "arrive_min": 40, "resolve_h": 24},
            "max_travel_min": 30,
            "level": "community",
            "event_class": {"major": "05", "minor": "99", "name_zh": "共享单车"},
        }
    )
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


#: Advisory lock of the PostGIS test database: dropping a test's schema holds it shared; a test
#: that reads the catalogue of every schema holds it alone (:func:`no_schema_dropped`).
CATALOGUE_LOCK = 0x67726964


@contextmanager
def no_schema_dropped(engine: Engine) -> Iterator[None]:
    """Hold back other tests' schema drops while the body runs (PostgreSQL; nothing elsewhere).

    Comparing the schema with the models reads catalogue rows of every schema of the shared
    test database; a relation that a parallel test drops between two of those reads fails the
    comparison ("could not open relation with OID ...").
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": CATALOGUE_LOCK})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": CATALOGUE_LOCK})
