"""The benchmark's megacity generator at a tiny size: a sound city, the same one for a seed."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import shapely
from scipy.sparse.csgraph import connected_components

from gridgov.areas import build_locator, validate_areas
from gridgov.catalog import load_catalog
from gridgov.model import ROAD_LINK_COLUMNS, UNIT_COLUMNS, ForceKind, Level
from gridgov.settings import PROJECT_ROOT
from gridgov.units import validate_units

TINY = {"side_nodes": 48, "streets_side": 2, "n_incidents": 60, "n_islands": 2}


def _load_megacity() -> ModuleType:
    path = PROJECT_ROOT / "bench" / "megacity.py"
    spec = importlib.util.spec_from_file_location("bench_megacity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


megacity = _load_megacity()


@pytest.fixture(scope="module")
def city() -> Any:
    return megacity.generate_megacity(3, **TINY)


def test_areas_form_a_valid_hierarchy(city: Any) -> None:
    gdf = city.gdf_areas
    assert validate_areas(gdf) == []
    counts = gdf["level"].value_counts().to_dict()
    assert counts == {"district": 1, "street": 4, "community": 16, "grid": 16}
    for level in (Level.DISTRICT, Level.STREET, Level.COMMUNITY, Level.GRID):
        codes = gdf.loc[gdf["level"] == level.value, "code"]
        assert codes.str.len().eq(level.code_length).all()
    assert gdf.loc[gdf["level"] == "district", "code"].tolist() == [megacity.DISTRICT_CODE]


def test_roads_are_consistent(city: Any) -> None:
    nodes, links = city.gdf_nodes, city.gdf_links
    assert list(links.columns) == [*ROAD_LINK_COLUMNS, "geometry"]
    ids = set(nodes["node_id"])
    assert set(links["u"]) <= ids and set(links["v"]) <= ids
    assert (links["length_m"] > 0).all()
    pairs = pd.MultiIndex.from_arrays([links["u"], links["v"]])
    assert not pairs.duplicated().any()
    reverse = pd.MultiIndex.from_arrays([links["v"], links["u"]])
    assert (links["oneway"].to_numpy() == ~reverse.isin(pairs)).all()
    starts = shapely.get_point(links.geometry.to_numpy(), 0)
    by_id = nodes.set_index("node_id").geometry
    assert shapely.equals(starts, by_id.loc[links["u"]].to_numpy()).all()
    assert (links.loc[links["road_class"] == "expressway", "speed_walk_kmh"] == 0).all()
    # The islands are separate pieces of road, so a strongly-connected filter has work to do.
    n = len(nodes)
    graph = sp.csr_matrix((np.ones(len(links)), (links["u"], links["v"])), shape=(n, n))
    pieces, _ = connected_components(graph, directed=True, connection="weak")
    assert pieces > 1
    assert city.facts["island_nodes"] > 0


def test_units_stand_in_their_street_and_grid(city: Any) -> None:
    areas, units = city.gdf_areas, city.gdf_units
    offices = city.gdf_offices
    assert validate_units(units, areas, offices) == []
    assert list(units.columns)[: len(UNIT_COLUMNS)] == list(UNIT_COLUMNS)
    assert set(units["kind"]) == {k.value for k in megacity.MEGACITY_KINDS}
    assert units["unit_id"].is_unique
    where = build_locator(areas).locate(units.geometry.x, units.geometry.y)
    assert (where["street"] == units["street_code"].to_numpy()).all()
    workers = (units["kind"] == ForceKind.GRID_WORKER.value).to_numpy()
    assert (where["grid"][workers] == units["grid_code"][workers].to_numpy()).all()
    grids = areas.loc[areas["level"] == "grid", "code"]
    assert sorted(units.loc[workers, "grid_code"]) == sorted(grids)


def test_incidents_lie_in_the_district_with_known_matters(city: Any) -> None:
    incidents = city.incidents
    assert list(incidents.columns) == list(megacity.INCIDENT_COLUMNS)
    assert len(incidents) == TINY["n_incidents"]
    where = build_locator(city.gdf_areas).locate(incidents["lon"], incidents["lat"])
    assert where["street"].notna().all()
    catalog = load_catalog()
    allowed = {k.value for k in megacity.MEGACITY_KINDS}
    for code in incidents["matter_code"].unique():
        assert {k.value for k in catalog.get(code).required_kinds} <= allowed


def test_same_seed_same_city_other_seed_other_city(city: Any) -> None:
    again = megacity.generate_megacity(3, **TINY)
    other = megacity.generate_megacity(4, **TINY)
    for name in ("gdf_nodes", "gdf_links", "gdf_areas", "gdf_offices", "gdf_units"):
        a, b = getattr(city, name), getattr(again, name)
        pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
        assert shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), 0).all()
    pd.testing.assert_frame_equal(city.incidents, again.incidents)
    assert not city.gdf_nodes.geometry.geom_equals(other.gdf_nodes.geometry).all()
    assert not city.incidents["lon"].equals(other.incidents["lon"])
