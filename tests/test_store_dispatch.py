"""The store side of dispatch: roads, incidents, and assignments committed atomically.

Every test runs on SQLite and on PostGIS (``store_engine``). The district is the tiny exact
hierarchy of test_store.py with a lattice of two-way roads over it, and a handful of units
standing on road nodes, so the dispatcher's choices are known in advance.
"""

from __future__ import annotations

import gc
import json
import threading
import weakref
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from helpers import no_schema_dropped
from pyproj import Geod
from shapely.geometry import LineString, Point
from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from test_store import SIZE, STREET_1, STREET_2, X0, Y0, make_tiny_areas

from gridgov import dispatch
from gridgov.catalog import Catalog, load_catalog
from gridgov.errors import InputError, NotFoundError, StoreError, UnknownMatterError
from gridgov.model import UNIT_COLUMNS, ForceKind
from gridgov.reference import read_reference_district
from gridgov.settings import get_settings
from gridgov.store import (
    context_from_store,
    context_of_version,
    create_engine_from_url,
    create_incident,
    decide_stored,
    decision_rows,
    detect_backend,
    dispatch_stored,
    export_geopackage,
    init_db,
    load_district,
    load_files,
    load_roads,
    load_units,
    read_assignments,
    read_dispatch,
    read_incidents,
    read_roads,
    read_units,
    release_unit,
    schema_diff,
    set_unit_status,
    store_context_version,
    travel_context,
    update_unit_position,
)
from gridgov.store import dispatch_rows as store_dispatching
from gridgov.store.models import ASSIGNMENTS, DISPATCHES, UNITS

GEOD = Geod(ellps="WGS84")
N = 9  # lattice nodes per side
D = SIZE / (N - 1)  # lattice spacing, degrees (about 750 m east-west, 870 m north-south)
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# the district: tiny areas, a road lattice, units on its nodes, a test catalogue
# --------------------------------------------------------------------------------------------


def xy(i: int, j: int) -> tuple[float, float]:
    """Lattice node (i east, j north) in WGS84."""
    return X0 + i * D, Y0 + j * D


def node_id(i: int, j: int) -> int:
    return 1000 + i * N + j


def make_roads() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    ids, points = [], []
    for i in range(N):
        for j in range(N):
            ids.append(node_id(i, j))
            points.append(Point(*xy(i, j)))
    gdf_nodes = gpd.GeoDataFrame({"node_id": ids}, geometry=points, crs="EPSG:4326")
    rows = []
    for i in range(N):
        for j in range(N):
            for di, dj in ((1, 0), (0, 1)):
                if i + di < N and j + dj < N:
                    a, b = (i, j), (i + di, j + dj)
                    rows.extend([(a, b), (b, a)])
    lines = [LineString([xy(*a), xy(*b)]) for a, b in rows]
    lengths = [GEOD.geometry_length(line) for line in lines]
    gdf_links = gpd.GeoDataFrame(
        {
            "link_id": np.arange(len(rows), dtype=np.int64) + 1,
            "u": [node_id(*a) for a, _ in rows],
            "v": [node_id(*b) for _, b in rows],
            "length_m": lengths,
            "road_class": "arterial",
            "road_name": [f"路{k}" if k % 3 else None for k in range(len(rows))],
            "class_source": "default",
            "oneway": False,
            "speed_drive_kmh": 30.0,
            "speed_bike_kmh": 15.0,
            "speed_walk_kmh": 5.0,
        },
        geometry=lines,
        crs="EPSG:4326",
    )
    return gdf_nodes, gdf_links


# unit_id, kind, street, lattice node; every unit drives and stands on a road node.
UNIT_SPEC = [
    ("E1", "enforcement", STREET_1, (1, 2)),
    ("E2", "enforcement", STREET_1, (2, 3)),
    ("E3", "enforcement", STREET_2, (6, 6)),
    ("F1", "fire", STREET_1, (2, 1)),
    ("F2", "fire", STREET_2, (8, 8)),
    ("P1", "police", STREET_1, (1, 0)),
    ("P2", "police", STREET_2, (7, 2)),
]


def make_units() -> gpd.GeoDataFrame:
    return units_frame(
        [(s[0], s[1], s[2]) for s in UNIT_SPEC],
        [Point(*xy(*s[3])) for s in UNIT_SPEC],
        names=[f"单元{s[0]}" for s in UNIT_SPEC],
    )


def units_frame(
    rows: list[tuple[str, str, str]], points: list[Point], *, names: list[str] | None = None
) -> gpd.GeoDataFrame:
    """Units of the lattice district: (unit id, kind, street) rows at ``points``, available,
    on duty, at static home positions (never stale); named by id unless ``names``."""
    return gpd.GeoDataFrame(
        {
            "unit_id": [r[0] for r in rows],
            "name": [r[0] for r in rows] if names is None else names,
            "kind": [r[1] for r in rows],
            "office_id": None,
            "department": "部门",
            "street_code": [r[2] for r in rows],
            "travel_mode": "drive",
            "status": "available",
            "on_duty": True,
            "grid_code": None,
            "generated": True,
            # No time: a static home position, never stale.
            "position_time": None,
            "position_source": "road",
        },
        geometry=points,
        crs="EPSG:4326",
    )


def make_catalog() -> Catalog:
    base = load_catalog(get_settings().catalog_path)
    template = base.get("UM-04")
    kinds = ForceKind

    def matter(code: str, lead: ForceKind, assist: tuple[ForceKind, ...], priority: int, mx: float):
        return replace(
            template, code=code, lead=lead, assist=assist, priority=priority, max_travel_min=mx
        )

    matters = (
        matter("T-ENF", kinds.ENFORCEMENT, (), 3, 20.0),
        # Three minutes: two lattice hops. Top priority, so it may preempt.
        matter("T-FIRE", kinds.FIRE, (), 1, 3.0),
        # A low-priority joint job a fire unit can be taken from.
        matter("T-LOW", kinds.FIRE, (kinds.POLICE,), 4, 30.0),
        # Nobody in the district is hrss: one kind is always unfilled.
        matter("T-JOINT", kinds.ENFORCEMENT, (kinds.HRSS,), 2, 20.0),
        matter("T-HRSS", kinds.HRSS, (), 3, 30.0),
    )
    return Catalog(
        version="test",
        source="tests",
        event_majors=base.event_majors,
        domains=base.domains,
        matters=matters,
    )


CATALOG = make_catalog()


def load_tiny(engine: Engine, units: gpd.GeoDataFrame | None = None) -> None:
    """Load the lattice district (areas, roads, the test catalogue; :func:`make_units` unless
    ``units``) into ``engine``."""
    gdf_nodes, gdf_links = make_roads()
    load_district(
        engine,
        make_tiny_areas(),
        None,
        make_units() if units is None else units,
        CATALOG.matters,
        gdf_nodes=gdf_nodes,
        gdf_links=gdf_links,
        name="tiny",
    )


@pytest.fixture
def district(store_engine: Engine) -> Engine:
    load_tiny(store_engine)
    return store_engine


@pytest.fixture
def ctx(district: Engine) -> dispatch.DispatchContext:
    return context_from_store(district, CATALOG)


_COUNTER = iter(range(1_000_000))


def new_incident(
    engine: Engine, matter: str, node: tuple[int, int], *, offset: float = 1e-4
) -> str:
    """Store a registered incident just north-east of a lattice node.

    The tests put several incidents of one matter on one spot on purpose (to see units taken
    in turn), so the duplicate check is off here; tests/test_store_workflow.py covers it.
    """
    lon, lat = xy(*node)
    incident_id = f"INC-{next(_COUNTER):05d}"
    create_incident(
        engine,
        dispatch.Incident(incident_id, matter, lon + offset, lat + offset, NOW),
        source="test",
        now=NOW,
        check_duplicates=False,
    )
    return incident_id


def unit_row(engine: Engine, unit_id: str) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(select(UNITS).where(UNITS.c.unit_id == unit_id)).one()
    return dict(row._mapping)


def incident_status(engine: Engine, incident_id: str) -> str:
    incidents = read_incidents(engine)
    return str(incidents.set_index("incident_id").loc[incident_id, "status"])


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------


def test_schema_is_at_0003_and_matches_the_models(store_engine: Engine) -> None:
    with store_engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [v[0] for v in versions] == ["0013"]
    with no_schema_dropped(store_engine):
        assert schema_diff(store_engine) == []


def test_the_database_refuses_a_second_active_assignment_of_a_unit(district: Engine) -> None:
    """The partial unique index is the last line of defence, on both backends."""
    incident_id = new_incident(district, "T-ENF", (1, 1))
    row = {
        "incident_id": incident_id,
        "unit_id": "E1",
        "kind": "enforcement",
        "role": "lead",
        "level": "street",
        "rule": "nearest_in_street",
        "time_s": 1.0,
        "over_max_travel": False,
        "active": True,
        "assigned_at": NOW,
    }
    with district.begin() as connection:
        dispatch_id = connection.execute(
            insert(DISPATCHES)
            .values(
                incident_id=incident_id,
                created_at=NOW,
                status="assigned",
                travel_model="network",
                attempts=1,
                explanation={},
            )
            .returning(DISPATCHES.c.dispatch_id)
        ).scalar_one()
        connection.execute(insert(ASSIGNMENTS).values(dispatch_id=dispatch_id, **row))
    with pytest.raises(IntegrityError), district.begin() as connection:
        connection.execute(insert(ASSIGNMENTS).values(dispatch_id=dispatch_id, **row))
    # An ended assignment of the same unit is fine, and so is its release time check.
    ended = {**row, "active": False, "released_at": NOW + timedelta(minutes=1)}
    with district.begin() as connection:
        connection.execute(insert(ASSIGNMENTS).values(dispatch_id=dispatch_id, **ended))
    with pytest.raises(IntegrityError), district.begin() as connection:
        connection.execute(
            insert(ASSIGNMENTS).values(dispatch_id=dispatch_id, **{**row, "active": False})
        )


# --------------------------------------------------------------------------------------------
# roads
# --------------------------------------------------------------------------------------------


def _assert_same_roads(
    given: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame],
    stored: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame],
) -> None:
    nodes_in = given[0].sort_values("node_id").reset_index(drop=True)
    links_in = given[1].sort_values("link_id").reset_index(drop=True)
    nodes_out, links_out = stored
    assert nodes_out["node_id"].tolist() == nodes_in["node_id"].astype(int).tolist()
    coords_in = shapely.get_coordinates(np.asarray(nodes_in.geometry.values))
    coords_out = shapely.get_coordinates(np.asarray(nodes_out.geometry.values))
    assert np.abs(coords_in - coords_out).max() <= 1e-12
    for column in ("link_id", "u", "v", "oneway"):
        assert links_out[column].tolist() == links_in[column].tolist(), column
    for column in ("length_m", "speed_drive_kmh", "speed_bike_kmh", "speed_walk_kmh"):
        assert np.allclose(links_out[column], links_in[column].astype(float)), column
    for column in ("road_class", "road_name", "class_source"):
        # An empty name is no name: both come back as missing.
        expected = [None if pd.isna(v) or v == "" else str(v) for v in links_in[column]]
        got = [None if pd.isna(v) else v for v in links_out[column]]
        assert got == expected, column
    a = shapely.get_coordinates(np.asarray(links_in.geometry.values))
    b = shapely.get_coordinates(np.asarray(links_out.geometry.values))
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-12
    assert links_out.crs.to_epsg() == 4326


def test_reference_roads_round_trip(store_engine: Engine) -> None:
    ref = read_reference_district()
    assert read_roads(store_engine)[1].empty
    counts = load_roads(store_engine, ref.gdf_nodes, ref.gdf_links, name="jinniu roads")
    assert counts == {"nodes": len(ref.gdf_nodes), "links": len(ref.gdf_links)}
    _assert_same_roads((ref.gdf_nodes, ref.gdf_links), read_roads(store_engine))


def test_bad_roads_are_refused_with_every_problem_and_change_nothing(
    store_engine: Engine,
) -> None:
    gdf_nodes, gdf_links = make_roads()
    load_roads(store_engine, gdf_nodes, gdf_links)
    bad = gdf_links.copy()
    bad.loc[0, "v"] = 999_999  # an unknown node
    bad.loc[1, "length_m"] = 0.0  # not a positive length
    bad.loc[3, "link_id"] = bad.loc[2, "link_id"]  # a duplicate id
    bad.loc[4, "geometry"] = LineString([xy(0, 0), xy(5, 5)])  # does not end at its v node
    with pytest.raises(InputError) as info:
        load_roads(store_engine, gdf_nodes, bad)
    message = str(info.value)
    for expected in ("unknown v node", "positive length_m", "duplicate link id"):
        assert expected in message
    # The geometry check runs once the ids are sound.
    with pytest.raises(InputError, match="do not run from node u to node v"):
        load_roads(store_engine, gdf_nodes, gdf_links.assign(geometry=bad.geometry))
    with pytest.raises(InputError, match="road_class column or all of"):
        speeds = ["speed_drive_kmh", "speed_bike_kmh", "speed_walk_kmh"]
        load_roads(store_engine, gdf_nodes, gdf_links.drop(columns=["road_class", *speeds]))
    _assert_same_roads((gdf_nodes, gdf_links), read_roads(store_engine))


def test_load_district_replaces_the_roads_in_the_same_transaction(district: Engine) -> None:
    gdf_nodes, gdf_links = make_roads()
    _assert_same_roads((gdf_nodes, gdf_links), read_roads(district))
    units_before = read_units(district)
    # A bad road network fails the whole swap: areas, units and roads stay as they were.
    with pytest.raises(InputError, match="unknown"):
        load_district(
            district,
            make_tiny_areas(),
            None,
            make_units().iloc[:2],
            gdf_nodes=gdf_nodes.iloc[1:],
            gdf_links=gdf_links,
        )
    pd.testing.assert_frame_equal(read_units(district), units_before)
    _assert_same_roads((gdf_nodes, gdf_links), read_roads(district))
    with pytest.raises(InputError, match="both gdf_nodes and gdf_links"):
        load_district(district, make_tiny_areas(), gdf_nodes=gdf_nodes)
    # Without roads the district has none: dispatch falls back to straight lines.
    load_district(district, make_tiny_areas(), None, make_units())
    assert read_roads(district)[1].empty
    assert read_units(district)["position_source"].tolist() == ["road"] * len(UNIT_SPEC)


def test_exports_carry_roads_and_position_sources(
    district: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    path = export_geopackage(district, tmp_path / "tiny.gpkg")
    init_db(sqlite_url)
    target = create_engine_from_url(sqlite_url)
    try:
        counts = load_files(target, path)
        assert counts["road_nodes"] == N * N
        assert counts["road_links"] == len(make_roads()[1])
        _assert_same_roads(read_roads(district), read_roads(target))
        pd.testing.assert_frame_equal(read_units(target), read_units(district))
    finally:
        target.dispose()


# --------------------------------------------------------------------------------------------
# the dispatch context
# --------------------------------------------------------------------------------------------


def test_context_is_built_once_and_follows_the_stored_roads(district: Engine) -> None:
    ctx = context_from_store(district, CATALOG)
    assert ctx.travel.kind == "network"
    assert context_from_store(district, CATALOG) is ctx  # cached for the engine
    load_district(district, make_tiny_areas(), None, make_units(), CATALOG.matters)
    fallback = context_from_store(district, CATALOG)
    assert fallback is not ctx  # a new dataset, a new context
    described = fallback.describe_travel()
    assert described["kind"] == "straight_line"
    assert "no road network" in described["reason"]
    incident_id = new_incident(district, "T-ENF", (1, 1))
    dispatch_stored(district, fallback, incident_id, now=NOW)
    stored = read_dispatch(district, incident_id)
    assert stored["travel_model"] == "straight_line"
    assert stored["explanation"]["travel_model"]["reason"].startswith("no road network")


def test_a_context_of_the_version_told_is_reused_without_a_read(
    district: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The intake's turn process (its own engine on the store) is told the dataset version of
    the request's context: the same version kept needs no read, a newer one is built."""
    ctx = context_from_store(district)
    own, version = store_context_version(district, ctx)
    assert own and version is not None
    # A context of another catalogue (a test's, a what-if's) is not the store's own.
    assert store_context_version(district, context_from_store(district, CATALOG)) == (False, None)
    child = create_engine_from_url(district.url.render_as_string(hide_password=False))
    try:
        kept = context_from_store(child)

        def no_read(*args: Any) -> Any:
            raise AssertionError("the version was read")

        with monkeypatch.context() as m:
            m.setattr(travel_context, "_dataset_version", no_read)
            assert context_of_version(child, version) is kept
        load_district(district, make_tiny_areas(), None, make_units(), CATALOG.matters)
        own, newer_version = store_context_version(district, context_from_store(district))
        assert own and newer_version != version
        newer = context_of_version(child, newer_version)
        assert newer is not kept
        assert store_context_version(child, newer) == (True, newer_version)
        assert newer.describe_travel()["kind"] == "straight_line"  # the new dataset's
    finally:
        child.dispose()


def _frozen(obj: object) -> bool:
    """Whether ``obj`` is out of the collector's generations (``gc.freeze`` moved it)."""
    return gc.is_tracked(obj) and all(o is not obj for o in gc.get_objects())


def test_a_settled_heap_keeps_the_context_out_of_full_collections_across_a_reload(
    district: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server process settles its heap once its district is loaded: the garbage of the load
    is collected, and what stays (the context) is frozen out of the full collections. A
    reload settles it again around the new context; a process that never settled (this test
    process, before) is left alone."""

    def no_settling() -> int:
        raise AssertionError("a heap never settled was settled")

    with monkeypatch.context() as m:
        m.setattr(travel_context, "settle_heap", no_settling)
        ctx = context_from_store(district, CATALOG)
    assert gc.get_freeze_count() == 0 and not _frozen(ctx)

    class Cycle:
        pass

    garbage = Cycle()
    garbage.me = garbage  # type: ignore[attr-defined]
    gone = weakref.ref(garbage)
    del garbage
    try:
        # (Counts, not equal ones: a frozen object freed meanwhile leaves the count.)
        assert travel_context.settle_heap() > 0 and gc.get_freeze_count() > 0
        assert gone() is None  # collected first, never frozen
        assert _frozen(ctx)
        load_district(district, make_tiny_areas(), None, make_units(), CATALOG.matters)
        reloaded = context_from_store(district, CATALOG)
        assert reloaded is not ctx and _frozen(reloaded)
    finally:
        gc.unfreeze()  # the rest of this process's tests run with the collector as it was


# --------------------------------------------------------------------------------------------
# incidents
# --------------------------------------------------------------------------------------------


def test_incidents_are_stored_registered_and_checked(district: Engine) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    incidents = read_incidents(district)
    assert incidents["incident_id"].tolist() == [incident_id]
    row = incidents.iloc[0]
    assert row["status"] == "registered"
    assert row["priority"] == 3  # copied from the stored catalogue
    assert row["reported_at"] == pd.Timestamp(NOW)
    assert row["source"] == "test"
    assert row.geometry.equals_exact(Point(xy(1, 1)[0] + 1e-4, xy(1, 1)[1] + 1e-4), 1e-12)
    same = dispatch.Incident(incident_id, "T-ENF", 104.01, 30.51, NOW)
    with pytest.raises(InputError, match="exists already"):
        create_incident(district, same)
    with pytest.raises(UnknownMatterError):
        create_incident(district, replace(same, incident_id="X-1", matter_code="NOPE"))
    with pytest.raises(InputError, match="timezone-aware"):
        create_incident(
            district, replace(same, incident_id="X-2", reported_at=datetime(2026, 1, 1))
        )
    with pytest.raises(InputError, match="longitude/latitude"):
        create_incident(district, replace(same, incident_id="X-3", lon=200.0))
    assert len(read_incidents(district)) == 1
    assert read_incidents(district, status="dispatched").empty


def test_only_registered_incidents_are_dispatched(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    with pytest.raises(NotFoundError):
        dispatch_stored(district, ctx, "NO-SUCH", now=NOW)
    incident_id = new_incident(district, "T-ENF", (1, 1))
    dispatch_stored(district, ctx, incident_id, now=NOW)
    with pytest.raises(InputError, match="is dispatched"):
        dispatch_stored(district, ctx, incident_id, now=NOW)
    with pytest.raises(NotFoundError, match="not been dispatched"):
        read_dispatch(district, new_incident(district, "T-ENF", (2, 2)))


# --------------------------------------------------------------------------------------------
# atomic assignment
# --------------------------------------------------------------------------------------------


def test_assignment_and_unit_status_commit_together(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    decision = dispatch_stored(district, ctx, incident_id, now=NOW)
    assert [a.unit_id for a in decision.assignments] == ["E1"]  # one hop away, E2 two
    assert decision.status == "assigned"

    unit = unit_row(district, "E1")
    assert (unit["status"], unit["busy_incident_id"]) == ("busy", incident_id)
    assignments = read_assignments(district, incident_id=incident_id)
    assert len(assignments) == 1
    a = assignments.iloc[0]
    assert (a["unit_id"], a["rule"], a["level"], a["role"]) == (
        "E1",
        "nearest_in_street",
        "street",
        "lead",
    )
    assert a["active"]
    assert a["assigned_at"] == pd.Timestamp(NOW)
    assert a["time_s"] == pytest.approx(decision.assignments[0].time_s)
    assert a.geometry is not None and a.geometry.geom_type == "LineString"
    assert a["route_length_m"] > 0

    incident = read_incidents(district).set_index("incident_id").loc[incident_id]
    assert incident["status"] == "dispatched"
    assert incident["street_code"] == STREET_1
    assert incident["grid_code"] == decision.placement.grid_code
    assert incident["microgrid_code"] == decision.placement.microgrid_code

    stored = read_dispatch(district, incident_id)
    assert stored["status"] == "assigned"
    assert stored["level"] == "street"
    assert stored["travel_model"] == "network"
    assert stored["attempts"] == 1
    assert stored["explanation"]["store"]["taken_meanwhile"] == []
    kinds = stored["explanation"]["kinds"]
    assert kinds[0]["accepted_tier"] == "street"
    assert kinds[0]["tiers"][0]["candidates"][0]["unit_id"] == "E1"
    assert stored["assignments"][0]["route"]["type"] == "LineString"
    assert stored["incident"]["status"] == "dispatched"
    # Written by the engine's JSON rule (dispatch.json_text, no converted copy first), the
    # explanation reads back as the answer's (dispatch.jsonable) does.
    kept = {k: v for k, v in stored["explanation"].items() if k != "store"}
    assert kept == json.loads(json.dumps(decision.to_json()["explanation"]))

    # The next one cannot have E1: it is busy, so E2 is the street's nearest.
    second = dispatch_stored(district, ctx, new_incident(district, "T-ENF", (1, 1)), now=NOW)
    assert [a.unit_id for a in second.assignments] == ["E2"]


def test_a_dry_run_decides_like_a_dispatch_and_writes_nothing(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    lon, lat = xy(1, 1)
    incident = dispatch.Incident("DRY-1", "T-ENF", lon + 1e-4, lat + 1e-4, NOW)
    dry = decide_stored(district, ctx, incident, now=NOW)
    assert [a.unit_id for a in dry.assignments] == ["E1"]
    assert read_incidents(district).empty
    assert count(district, DISPATCHES) == 0
    assert unit_row(district, "E1")["status"] == "available"
    stored_id = new_incident(district, "T-ENF", (1, 1))
    real = dispatch_stored(district, ctx, stored_id, now=NOW)
    assert [(a.unit_id, a.time_s) for a in real.assignments] == [
        (a.unit_id, a.time_s) for a in dry.assignments
    ]


def test_a_failure_between_unit_and_assignment_leaves_neither(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    real = decision_rows.insert_assignments
    # The units are already marked busy (and the dispatch row written) when this runs.
    calls: list[str] = []

    def fail(*args: Any, **kwargs: Any) -> None:
        calls.append("reached")
        msg = "injected failure after the unit update"
        raise RuntimeError(msg)

    monkeypatch.setattr(decision_rows, "insert_assignments", fail)
    with pytest.raises(RuntimeError, match="injected"):
        dispatch_stored(district, ctx, incident_id, now=NOW)
    assert calls == ["reached"]
    unit = unit_row(district, "E1")
    assert (unit["status"], unit["busy_incident_id"]) == ("available", None)
    assert count(district, ASSIGNMENTS) == 0
    assert count(district, DISPATCHES) == 0
    assert incident_status(district, incident_id) == "registered"  # not lost, not half-done

    monkeypatch.setattr(decision_rows, "insert_assignments", real)
    decision = dispatch_stored(district, ctx, incident_id, now=NOW)
    assert [a.unit_id for a in decision.assignments] == ["E1"]
    assert unit_row(district, "E1")["status"] == "busy"


def test_a_decisions_writes_go_together(district: Engine, ctx: dispatch.DispatchContext) -> None:
    """On PostgreSQL the rows a decision writes after its reads (the unit busy, the assignment,
    the event, the incident's state) go in one pipeline, not one round trip each; the reads
    before them do not (each needs its answer). The dispatch is the same either way."""
    from sqlalchemy import event

    incident_id = new_incident(district, "T-ENF", (1, 1))
    seen: list[tuple[str, bool]] = []

    def note(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        pgconn = getattr(conn.connection.driver_connection, "pgconn", None)
        words = statement.split()
        seen.append((" ".join(words[:3]), bool(pgconn is not None and pgconn.pipeline_status)))

    event.listen(district, "before_cursor_execute", note)
    try:
        decision = dispatch_stored(district, ctx, incident_id, now=NOW)
    finally:
        event.remove(district, "before_cursor_execute", note)
    assert [a.unit_id for a in decision.assignments] == ["E1"]
    assert unit_row(district, "E1")["status"] == "busy"
    assert incident_status(district, incident_id) == "dispatched"
    writes = (
        "UPDATE units SET",
        "INSERT INTO assignments",
        "INSERT INTO events",
        "UPDATE incidents SET",
    )
    together = {text for text, piped in seen if piped}
    alone = {text for text, piped in seen if not piped}
    if district.dialect.name == "postgresql":
        assert set(writes) <= together, seen
        assert not any(w.startswith("SELECT") for w in together), seen
        assert "INSERT INTO dispatches" in alone  # its ids name the assignments and events
    else:
        assert not together and set(writes) <= alone


def _take_after_first_decision(
    monkeypatch: pytest.MonkeyPatch, take: Any
) -> list[dispatch.Decision]:
    """Patch the decide step so that ``take(decision)`` runs once, after the first decision
    and before its commit: another dispatcher taking the unit in between."""
    real = store_dispatching._decide
    decisions: list[dispatch.Decision] = []

    def decide(*args: Any, **kwargs: Any) -> dispatch.Decision:
        decision = real(*args, **kwargs)
        decisions.append(decision)
        if len(decisions) == 1:
            take(decision)
        return decision

    monkeypatch.setattr(store_dispatching, "_decide", decide)
    return decisions


def test_a_unit_taken_meanwhile_is_excluded_and_the_dispatch_retried(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    other = create_engine_from_url(district.url)
    try:
        decisions = _take_after_first_decision(
            monkeypatch, lambda d: set_unit_status(other, d.assignments[0].unit_id, "busy")
        )
        decision = dispatch_stored(district, ctx, incident_id, now=NOW)
    finally:
        other.dispose()
    assert [a.unit_id for a in decisions[0].assignments] == ["E1"]
    assert [a.unit_id for a in decision.assignments] == ["E2"]
    stored = read_dispatch(district, incident_id)
    assert stored["attempts"] == 2
    assert stored["explanation"]["store"]["taken_meanwhile"] == ["E1"]
    # E1 is busy on whatever took it, and has no assignment of ours.
    assert unit_row(district, "E1")["busy_incident_id"] is None
    assert read_assignments(district, unit_id="E1").empty
    assert unit_row(district, "E2")["busy_incident_id"] == incident_id


def test_when_every_attempt_loses_its_unit_the_incident_stays_registered(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    other = create_engine_from_url(district.url)
    real = store_dispatching._decide

    def decide_and_lose(*args: Any, **kwargs: Any) -> dispatch.Decision:
        decision = real(*args, **kwargs)
        for a in decision.assignments:
            set_unit_status(other, a.unit_id, "busy")
        return decision

    monkeypatch.setattr(store_dispatching, "_decide", decide_and_lose)
    try:
        with pytest.raises(StoreError, match=r"after 2 attempt\(s\).*E1, E2.*stays registered"):
            dispatch_stored(district, ctx, incident_id, now=NOW, max_attempts=2)
    finally:
        other.dispose()
    assert incident_status(district, incident_id) == "registered"
    assert count(district, DISPATCHES) == 0
    assert count(district, ASSIGNMENTS) == 0


def test_a_concurrent_writer_holding_the_unit_never_shares_it(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction takes E1 between our decision and our commit, and holds it.

    PostgreSQL: our ``FOR UPDATE SKIP LOCKED`` skips the locked row at once (we do not wait
    for the other transaction) and the retry picks E2. SQLite: our ``BEGIN IMMEDIATE`` waits
    for the other writer's commit, then the re-check sees E1 busy, and the retry picks E2.
    """
    postgres = detect_backend(district) == "postgresql"
    incident_id = new_incident(district, "T-ENF", (1, 1))
    holder = create_engine_from_url(district.url)
    locked, dispatched, committed = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold(unit_id: str) -> None:
        try:
            with holder.execution_options(gridgov_write=True).begin() as connection:
                connection.execute(
                    update(UNITS).where(UNITS.c.unit_id == unit_id).values(status="busy")
                )
                locked.set()
                if postgres:
                    # Keep the row lock until the dispatcher is done: it must not wait for us.
                    dispatched.wait(timeout=60)
                else:
                    # The dispatcher queues behind this write lock; let it wait a moment.
                    dispatched.wait(timeout=0.5)
            committed.set()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)
            locked.set()

    threads: list[threading.Thread] = []

    def take(decision: dispatch.Decision) -> None:
        thread = threading.Thread(target=hold, args=(decision.assignments[0].unit_id,))
        threads.append(thread)
        thread.start()
        assert locked.wait(timeout=30)

    _take_after_first_decision(monkeypatch, take)
    try:
        decision = dispatch_stored(district, ctx, incident_id, now=NOW)
        committed_before_us = committed.is_set()
        dispatched.set()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        holder.dispose()
    assert not errors, errors
    assert [a.unit_id for a in decision.assignments] == ["E2"]
    assert read_dispatch(district, incident_id)["explanation"]["store"]["taken_meanwhile"] == ["E1"]
    if postgres:
        assert not committed_before_us  # skipped the locked row instead of waiting for it
    else:
        assert committed_before_us  # serialised: the other writer went first
    assert unit_row(district, "E1")["status"] == "busy"
    assert read_assignments(district, unit_id="E1").empty


# --------------------------------------------------------------------------------------------
# preemption, partial and unassigned
# --------------------------------------------------------------------------------------------


def test_preemption_requeues_the_low_priority_incident_and_records_it(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    low = new_incident(district, "T-LOW", (2, 1))  # fire + police, priority 4
    first = dispatch_stored(district, ctx, low, now=NOW)
    assert [a.unit_id for a in first.assignments] == ["F1", "P1"]

    later = NOW + timedelta(minutes=5)
    fire = new_incident(district, "T-FIRE", (1, 1))  # priority 1, three minutes at most
    decision = dispatch_stored(district, ctx, fire, now=later)
    (a,) = decision.assignments
    # F2 is free but far beyond three minutes; F1 is one hop away, on a priority-4 job.
    assert (a.unit_id, a.rule, a.preempts) == ("F1", "preemption", low)

    assert incident_status(district, low) == "registered"  # re-queued
    assert incident_status(district, fire) == "dispatched"
    assert unit_row(district, "F1")["busy_incident_id"] == fire
    p1 = unit_row(district, "P1")
    assert (p1["status"], p1["busy_incident_id"]) == ("available", None)
    history = read_assignments(district, incident_id=low).set_index("unit_id")
    assert not history["active"].any()
    assert history.loc["F1", "release_reason"] == f"preempted by {fire}"
    assert history.loc["P1", "release_reason"] == f"incident {low} re-queued: preempted by {fire}"
    assert (history["released_at"] == pd.Timestamp(later)).all()
    new = read_assignments(district, incident_id=fire).iloc[0]
    assert (new["unit_id"], new["preempts"], new["active"]) == ("F1", low, True)
    assert new["assigned_at"] >= history.loc["F1", "released_at"]
    recorded = read_dispatch(district, fire)["explanation"]
    assert recorded["store"]["requeued"] == [{"incident_id": low, "units": ["F1"], "freed": ["P1"]}]
    assert recorded["kinds"][0]["preemption"]["result"].startswith("F1 preempted")

    # The re-queued incident is dispatched again like any registered one.
    again = dispatch_stored(district, ctx, low, now=later)
    assert [a.unit_id for a in again.assignments] == ["F2", "P1"]
    assert read_dispatch(district, low)["dispatches"] == 2


def test_partial_and_unassigned_are_recorded_and_can_be_retried(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    joint = new_incident(district, "T-JOINT", (1, 1))
    decision = dispatch_stored(district, ctx, joint, now=NOW)
    assert decision.status == "partial"
    assert [a.unit_id for a in decision.assignments] == ["E1"]
    assert incident_status(district, joint) == "dispatched"  # the dispatch row says partial
    assert read_dispatch(district, joint)["explanation"]["store"]["unfilled"] == ["hrss"]

    nobody = new_incident(district, "T-HRSS", (5, 5))
    decision = dispatch_stored(district, ctx, nobody, now=NOW)
    assert decision.status == "unassigned"
    assert incident_status(district, nobody) == "registered"  # nobody was called
    stored = read_dispatch(district, nobody)
    assert (stored["status"], stored["level"], stored["assignments"]) == ("unassigned", None, [])
    assert stored["explanation"]["kinds"][0]["unfilled_reason"].startswith("no usable unit")
    assert read_assignments(district, incident_id=nobody).empty
    # Unassigned stays registered, so dispatchable: a second attempt is recorded beside it.
    dispatch_stored(district, ctx, nobody, now=NOW)
    assert read_dispatch(district, nobody)["dispatches"] == 2


def test_an_incident_too_far_from_the_roads_is_recorded_unassigned(
    district: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRIDGOV_MAX_SNAP_M", "100")
    get_settings.cache_clear()
    try:
        ctx = context_from_store(district, make_catalog())
        # The middle of a lattice cell is about 400 m from every road.
        incident_id = new_incident(district, "T-ENF", (1, 1), offset=D / 2)
        decision = dispatch_stored(district, ctx, incident_id, now=NOW)
    finally:
        monkeypatch.delenv("GRIDGOV_MAX_SNAP_M")
        get_settings.cache_clear()
    assert decision.status == "unassigned"
    stored = read_dispatch(district, incident_id)
    assert "cannot be dispatched over the road network" in stored["explanation"]["refused"]
    assert incident_status(district, incident_id) == "registered"
    assert unit_row(district, "E1")["status"] == "available"


# --------------------------------------------------------------------------------------------
# releasing, status, positions, reloads
# --------------------------------------------------------------------------------------------


def test_release_unit_frees_it_and_ends_its_assignment(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    dispatch_stored(district, ctx, incident_id, now=NOW)
    # A release meant for another incident changes nothing.
    assert release_unit(district, "E1", now=NOW, incident_id="OTHER") is None
    assert unit_row(district, "E1")["status"] == "busy"
    with pytest.raises(InputError, match="release it"):
        set_unit_status(district, "E1", "available")
    done = NOW + timedelta(minutes=30)
    assert release_unit(district, "E1", now=done, reason="done", incident_id=incident_id) == (
        incident_id
    )
    unit = unit_row(district, "E1")
    assert (unit["status"], unit["busy_incident_id"]) == ("available", None)
    a = read_assignments(district, unit_id="E1").iloc[0]
    assert (a["active"], a["release_reason"], a["released_at"]) == (
        False,
        "done",
        pd.Timestamp(done),
    )
    # Finished work is not re-queued: the incident keeps its status (closing it is the
    # workflow's business).
    assert incident_status(district, incident_id) == "dispatched"
    # Releasing a free unit is harmless; an unknown one is not found.
    assert release_unit(district, "E1", now=done) is None
    with pytest.raises(NotFoundError):
        release_unit(district, "NOPE", now=done)
    # A release dated before the assignment never makes it end before it began.
    dispatch_stored(district, ctx, new_incident(district, "T-ENF", (1, 1)), now=done)
    release_unit(district, "E1", now=NOW, reason="clock skew")
    last = read_assignments(district, unit_id="E1").iloc[-1]
    assert last["released_at"] == last["assigned_at"] == pd.Timestamp(done)


def test_status_and_position_updates(district: Engine, ctx: dispatch.DispatchContext) -> None:
    set_unit_status(district, "E1", "off_duty", on_duty=False)
    assert (unit_row(district, "E1")["status"], unit_row(district, "E1")["on_duty"]) == (
        "off_duty",
        False,
    )
    decision = dispatch_stored(district, ctx, new_incident(district, "T-ENF", (1, 1)), now=NOW)
    assert [a.unit_id for a in decision.assignments] == ["E2"]
    with pytest.raises(InputError, match="unknown unit status"):
        set_unit_status(district, "E1", "asleep")
    with pytest.raises(NotFoundError):
        set_unit_status(district, "NOPE", "available")

    fix = NOW + timedelta(minutes=1)
    assert update_unit_position(district, "E3", *xy(1, 1), fix)
    # An older fix arriving late is ignored.
    assert not update_unit_position(district, "E3", *xy(8, 8), NOW)
    e3 = unit_row(district, "E3")
    assert e3["position"].equals_exact(Point(*xy(1, 1)), 1e-12)
    assert e3["position_time"] == fix
    assert e3["position_source"] == "avl"
    with pytest.raises(NotFoundError):
        update_unit_position(district, "NOPE", *xy(1, 1), fix)
    with pytest.raises(InputError):
        update_unit_position(district, "E3", 500.0, 0.0, fix)
    # E3 now stands on the incident's node, one street over: it wins on time at the
    # neighbour tier only if the street had nobody; E1 is off duty, E2 busy, so it does.
    decision = dispatch_stored(
        district, ctx, new_incident(district, "T-ENF", (1, 1)), now=fix + timedelta(seconds=1)
    )
    assert [(a.unit_id, a.level.value) for a in decision.assignments] == [("E3", "neighbour")]


def test_a_reload_ends_active_assignments_and_requeues_their_incidents(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = new_incident(district, "T-ENF", (1, 1))
    dispatch_stored(district, ctx, incident_id, now=NOW)
    load_units(district, make_units())
    unit = unit_row(district, "E1")
    assert (unit["status"], unit["busy_incident_id"]) == ("available", None)
    a = read_assignments(district, incident_id=incident_id).iloc[0]
    assert not a["active"]
    assert a["release_reason"] == "units reloaded with a new dataset"
    assert incident_status(district, incident_id) == "registered"
    # The history survives the reload: the incident, its dispatch and the assignment.
    assert read_dispatch(district, incident_id)["assignments"][0]["unit_id"] == "E1"


def test_units_frame_columns(district: Engine) -> None:
    units = read_units(district)
    assert list(units.columns) == [
        *UNIT_COLUMNS,
        "position_time",
        "position_source",
        "busy_incident_id",
        "geometry",
    ]


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    yield
    get_settings.cache_clear()
