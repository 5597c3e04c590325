"""Migration 0003 gives the incidents of the previous release a reconstructed workflow history.

Each test builds a store at revision 0002 with alembic, loads the tiny lattice district of
test_store_workflow.py, writes incidents, dispatches and assignments the way the previous release
left them (plain core inserts in the 0002 shape, no gridgov.store function), upgrades to the head
and checks that every incident can go on through the workflow. On SQLite and on PostGIS
(``store_url``). Clocks are plain datetimes: nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from shapely.geometry import Point
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import DBAPIError
from test_store import STREET_1, STREET_2, make_tiny_areas
from test_store_dispatch import CATALOG, NOW, make_roads, xy
from test_store_workflow import make_offices, make_units

import gridgov.store
from gridgov import dispatch
from gridgov.errors import StoreError
from gridgov.store import (
    apply_action,
    begin_write,
    context_from_store,
    create_engine_from_url,
    create_incident,
    dispatch_stored,
    init_db,
    load_district,
    read_assignments,
    read_units,
)
from gridgov.store.journal import read_incident_events
from gridgov.store.models import GeometryType, UTCDateTime
from gridgov.workflow import Event, replay

MIGRATIONS = Path(gridgov.store.__file__).resolve().parent / "migrations"
ACTOR = "migration-0003"
T0 = NOW - timedelta(hours=2)  # the old incidents were reported from here on

# The 0002 shape of the tables the previous release wrote (frozen here, like a migration).
OLD_INCIDENTS = sa.table(
    "incidents",
    *(
        sa.column(name, sa.String())
        for name in ("incident_id", "matter_code", "status", "street_code", "source")
    ),
    sa.column("priority", sa.Integer()),
    sa.column("geometry", GeometryType("POINT")),
    sa.column("community_code", sa.String()),
    sa.column("grid_code", sa.String()),
    sa.column("microgrid_code", sa.String()),
    *(sa.column(name, UTCDateTime()) for name in ("reported_at", "created_at", "updated_at")),
)
OLD_DISPATCHES = sa.table(
    "dispatches",
    sa.column("dispatch_id", sa.Integer()),
    sa.column("incident_id", sa.String()),
    sa.column("created_at", UTCDateTime()),
    sa.column("level", sa.String()),
    sa.column("status", sa.String()),
    sa.column("travel_model", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("explanation", sa.JSON()),
)
OLD_ASSIGNMENTS = sa.table(
    "assignments",
    *(
        sa.column(name, sa.String())
        for name in ("incident_id", "unit_id", "kind", "role", "level", "rule", "release_reason")
    ),
    sa.column("dispatch_id", sa.Integer()),
    sa.column("time_s", sa.Float()),
    sa.column("over_max_travel", sa.Boolean()),
    sa.column("active", sa.Boolean()),
    sa.column("assigned_at", UTCDateTime()),
    sa.column("released_at", UTCDateTime()),
)
OLD_UNITS = sa.table(
    "units",
    sa.column("unit_id", sa.String()),
    sa.column("status", sa.String()),
    sa.column("busy_incident_id", sa.String()),
)


def _config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _revision(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar())


@pytest.fixture
def old_engine(store_url: str) -> Iterator[Engine]:
    """A store at revision 0002 holding the tiny district (no incidents yet)."""
    engine = create_engine_from_url(store_url)
    try:
        with begin_write(engine) as connection:
            command.upgrade(_config(connection), "0002")
        assert _revision(engine) == "0002"
        gdf_nodes, gdf_links = make_roads()
        load_district(
            engine,
            make_tiny_areas(),
            make_offices(),
            make_units(),
            CATALOG.matters,
            gdf_nodes=gdf_nodes,
            gdf_links=gdf_links,
            name="tiny",
        )
        yield engine
    finally:
        engine.dispose()


def _old_incident(
    connection: sa.Connection,
    incident_id: str,
    status: str,
    reported_at: datetime,
    *,
    at: tuple[int, int] = (1, 1),
    street_code: str = STREET_1,
    updated_at: datetime | None = None,
) -> None:
    connection.execute(
        sa.insert(OLD_INCIDENTS).values(
            incident_id=incident_id,
            matter_code="T-ENF",
            priority=3,
            geometry=Point(*xy(*at)),
            reported_at=reported_at,
            status=status,
            street_code=street_code,
            community_code=None,
            grid_code=None,
            microgrid_code=None,
            source="cli",
            created_at=reported_at,
            updated_at=updated_at or reported_at,
        )
    )


def _old_dispatch(
    connection: sa.Connection,
    incident_id: str,
    created_at: datetime,
    status: str,
    level: str | None,
    units: Sequence[tuple[str, str, bool]] = (),
) -> int:
    """A dispatch row and its assignments ``(unit_id, role, active)``; active units are busy."""
    dispatch_id = connection.execute(
        sa.insert(OLD_DISPATCHES)
        .values(
            incident_id=incident_id,
            created_at=created_at,
            level=level,
            status=status,
            travel_model="network",
            attempts=1,
            explanation={"made_by": "the previous release"},
        )
        .returning(OLD_DISPATCHES.c.dispatch_id)
    ).scalar_one()
    for unit_id, role, active in units:
        connection.execute(
            sa.insert(OLD_ASSIGNMENTS).values(
                dispatch_id=dispatch_id,
                incident_id=incident_id,
                unit_id=unit_id,
                kind="enforcement",
                role=role,
                level=level or "street",
                rule="nearest",
                time_s=120.0,
                over_max_travel=False,
                active=active,
                assigned_at=created_at,
                released_at=None if active else created_at + timedelta(minutes=30),
                release_reason=None if active else "released by hand",
            )
        )
        if active:
            connection.execute(
                sa.update(OLD_UNITS)
                .where(OLD_UNITS.c.unit_id == unit_id)
                .values(status="busy", busy_incident_id=incident_id)
            )
    return int(dispatch_id)


def _write_old_store(engine: Engine) -> dict[str, int]:
    """What ``gridgov demo`` / ``gridgov dispatch`` of the previous release could leave behind
    (and one hand-closed incident). Returns the dispatch ids that should be reconstructed."""
    ids: dict[str, int] = {}
    with begin_write(engine) as connection:
        _old_incident(connection, "OLD-PENDING", "pending", T0)
        _old_incident(connection, "OLD-UNASSIGNED", "unassigned", T0 + timedelta(minutes=1))
        _old_dispatch(connection, "OLD-UNASSIGNED", T0 + timedelta(minutes=2), "unassigned", None)
        # Dispatched on the second try: the first (unassigned) decision called nobody.
        _old_incident(connection, "OLD-DISPATCHED", "dispatched", T0 + timedelta(minutes=3))
        _old_dispatch(connection, "OLD-DISPATCHED", T0 + timedelta(minutes=4), "unassigned", None)
        ids["OLD-DISPATCHED"] = _old_dispatch(
            connection,
            "OLD-DISPATCHED",
            T0 + timedelta(minutes=5),
            "assigned",
            "street",
            [("E1", "lead", True)],
        )
        _old_incident(connection, "OLD-PARTIAL", "partial", T0 + timedelta(minutes=6))
        ids["OLD-PARTIAL"] = _old_dispatch(
            connection,
            "OLD-PARTIAL",
            T0 + timedelta(minutes=7),
            "partial",
            "community",
            [("E2", "lead", True)],
        )
        # Its unit is gone from the units table, and the dispatch row is dated before the
        # report (clocks of different callers): the time is moved up, the stored one kept.
        _old_incident(connection, "OLD-GONE", "dispatched", T0 + timedelta(minutes=9))
        ids["OLD-GONE"] = _old_dispatch(
            connection,
            "OLD-GONE",
            T0 + timedelta(minutes=8),
            "assigned",
            "district",
            [("GONE-1", "lead", False)],
        )
        _old_incident(connection, "OLD-NO-ROW", "dispatched", T0 + timedelta(minutes=10))
        _old_incident(
            connection,
            "OLD-CLOSED",
            "closed",
            T0 + timedelta(minutes=11),
            at=(6, 6),
            street_code=STREET_2,
            updated_at=T0 + timedelta(minutes=50),
        )
        ids["OLD-CLOSED"] = _old_dispatch(
            connection,
            "OLD-CLOSED",
            T0 + timedelta(minutes=12),
            "assigned",
            "street",
            [("E3", "lead", True)],
        )
        _old_incident(
            connection,
            "OLD-CLOSED-BARE",
            "closed",
            T0 + timedelta(minutes=13),
            updated_at=T0 + timedelta(minutes=20),
        )
    return ids


def _statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT incident_id, status FROM incidents")).all()
    return {r[0]: r[1] for r in rows}


def _logs(engine: Engine) -> dict[str, list[Event]]:
    with engine.connect() as connection:
        ids = [r[0] for r in connection.execute(text("SELECT incident_id FROM incidents"))]
        return {i: read_incident_events(connection, i) for i in ids}


def _actions(log: list[Event]) -> list[str]:
    return [str(e.action) for e in log]


EXPECTED = {
    "OLD-PENDING": ("registered", ["report", "register"]),
    "OLD-UNASSIGNED": ("registered", ["report", "register"]),
    "OLD-DISPATCHED": ("dispatched", ["report", "register", "dispatch"]),
    "OLD-PARTIAL": ("dispatched", ["report", "register", "dispatch"]),
    "OLD-GONE": ("dispatched", ["report", "register", "dispatch"]),
    "OLD-NO-ROW": ("registered", ["report", "register"]),
    "OLD-CLOSED": ("cancelled", ["report", "register", "dispatch", "cancel"]),
    "OLD-CLOSED-BARE": ("cancelled", ["report", "register", "cancel"]),
}


@pytest.fixture
def migrated(old_engine: Engine) -> tuple[Engine, dict[str, int]]:
    ids = _write_old_store(old_engine)
    init_db(old_engine)
    assert _revision(old_engine) != "0002"
    return old_engine, ids


def test_every_old_incident_gets_an_honest_history_that_replays_to_its_status(
    migrated: tuple[Engine, dict[str, int]],
) -> None:
    engine, ids = migrated
    statuses, logs = _statuses(engine), _logs(engine)
    assert set(statuses) == set(EXPECTED)
    for incident_id, (status, actions) in EXPECTED.items():
        log = logs[incident_id]
        assert (statuses[incident_id], _actions(log)) == (status, actions), incident_id
        assert replay(log) == statuses[incident_id]
        for event in log:
            assert event.actor == ACTOR
            assert event.data["reconstructed"] is True
            assert event.reason and event.reason.startswith("reconstructed")
        reported = log[0]
        assert reported.at == log[1].at  # report and register at reported_at, seq orders them
        assert reported.data["source"] == "cli"
        assert {str(e.role) for e in log if e.action != "cancel"} == {"system"}

    dispatch = logs["OLD-DISPATCHED"][2]
    assert dispatch.at == T0 + timedelta(minutes=5)  # the dispatch that called someone
    assert (dispatch.office_id, dispatch.level, dispatch.street_code) == (
        "OF-ENF-A",
        "street",
        STREET_1,
    )
    assert dispatch.data["dispatch_id"] == ids["OLD-DISPATCHED"]
    assert (dispatch.data["units"], dispatch.data["offices"]) == (["E1"], ["OF-ENF-A"])
    partial = logs["OLD-PARTIAL"][2]
    assert (partial.office_id, partial.level, partial.data["status"]) == (
        "OF-ENF-B",
        "community",
        "partial",
    )
    gone = logs["OLD-GONE"][2]
    assert (gone.office_id, gone.data["offices"]) == (None, [None])
    assert gone.at == T0 + timedelta(minutes=9)
    assert gone.data["recorded_at"] == (T0 + timedelta(minutes=8)).isoformat()

    # The hand-closed incident is not claimed to be resolved: it ends cancelled, its unit free.
    cancel = logs["OLD-CLOSED"][-1]
    assert (cancel.role, cancel.at, cancel.data["status_before"]) == (
        "dispatcher",
        T0 + timedelta(minutes=50),
        "closed",
    )
    units = read_units(engine).set_index("unit_id")
    assert units.loc["E3", "status"] == "available"
    assert pd.isna(units.loc["E3", "busy_incident_id"])
    closed = read_assignments(engine, incident_id="OLD-CLOSED")
    assert not closed["active"].any()
    assert (closed["released_at"] == T0 + timedelta(minutes=50)).all()
    # Units of the still-dispatched incidents stay on them.
    assert units.loc[["E1", "E2"], "busy_incident_id"].tolist() == [
        "OLD-DISPATCHED",
        "OLD-PARTIAL",
    ]


def test_a_migrated_dispatched_incident_can_be_finished_and_frees_its_unit(
    migrated: tuple[Engine, dict[str, int]],
) -> None:
    engine, _ = migrated
    for minutes, action in ((1, "acknowledge"), (10, "arrive"), (40, "resolve")):
        apply_action(
            engine,
            "OLD-DISPATCHED",
            action,
            at=NOW + timedelta(minutes=minutes),
            actor="E1",
            role="unit",
        )
    log = _logs(engine)["OLD-DISPATCHED"]
    assert _actions(log)[3:] == ["acknowledge", "arrive", "resolve"]
    assert replay(log) == _statuses(engine)["OLD-DISPATCHED"] == "resolved"
    unit = read_units(engine).set_index("unit_id").loc["E1"]
    assert unit["status"] == "available" and pd.isna(unit["busy_incident_id"])
    assert not read_assignments(engine, incident_id="OLD-DISPATCHED")["active"].any()


def test_a_migrated_registered_incident_can_be_dispatched(
    migrated: tuple[Engine, dict[str, int]],
) -> None:
    engine, _ = migrated
    ctx = context_from_store(engine, CATALOG)
    # E1 and E2 are still out on the migrated dispatched incidents; the cancel freed E3.
    decision = dispatch_stored(engine, ctx, "OLD-PENDING", now=NOW)
    assert [a.unit_id for a in decision.assignments] == ["E3"]
    log = _logs(engine)["OLD-PENDING"]
    assert _actions(log) == ["report", "register", "dispatch"]
    assert log[-1].actor != ACTOR and "reconstructed" not in log[-1].data
    assert replay(log) == _statuses(engine)["OLD-PENDING"] == "dispatched"
    # Nobody is left: the decision is recorded and the incident stays queued, its log valid.
    decision = dispatch_stored(engine, ctx, "OLD-NO-ROW", now=NOW)
    assert decision.assignments == ()
    log = _logs(engine)["OLD-NO-ROW"]
    assert replay(log) == _statuses(engine)["OLD-NO-ROW"] == "registered"


def test_new_incidents_and_a_second_init_are_left_alone(
    migrated: tuple[Engine, dict[str, int]],
) -> None:
    engine, _ = migrated
    before = _logs(engine)
    init_db(engine)
    assert _logs(engine) == before
    create_incident(
        engine,
        _new_incident("NEW-1"),
        now=NOW,
        check_duplicates=False,
    )
    log = _logs(engine)["NEW-1"]
    assert log[0].actor != ACTOR and replay(log) == _statuses(engine)["NEW-1"]


def _new_incident(incident_id: str) -> dispatch.Incident:
    lon, lat = xy(3, 3)
    return dispatch.Incident(
        incident_id=incident_id,
        matter_code="T-ENF",
        lon=lon,
        lat=lat,
        reported_at=NOW,
    )


def test_reconstructed_events_are_append_only(migrated: tuple[Engine, dict[str, int]]) -> None:
    engine, _ = migrated
    for statement in (
        "UPDATE events SET actor = 'someone else' WHERE incident_id = 'OLD-CLOSED'",
        "DELETE FROM events WHERE incident_id = 'OLD-CLOSED'",
    ):
        with pytest.raises(DBAPIError, match="append-only"), begin_write(engine) as connection:
            connection.execute(text(statement))
    assert _actions(_logs(engine)["OLD-CLOSED"]) == EXPECTED["OLD-CLOSED"][1]


def test_downgrade_gives_the_old_statuses_back(migrated: tuple[Engine, dict[str, int]]) -> None:
    engine, _ = migrated
    with begin_write(engine) as connection:
        command.downgrade(_config(connection), "0002")
    assert _statuses(engine) == {
        "OLD-PENDING": "pending",
        "OLD-UNASSIGNED": "pending",
        "OLD-DISPATCHED": "dispatched",
        "OLD-PARTIAL": "dispatched",
        "OLD-GONE": "dispatched",
        "OLD-NO-ROW": "pending",
        "OLD-CLOSED": "closed",
        "OLD-CLOSED-BARE": "closed",
    }


def test_an_unknown_old_status_stops_the_upgrade_and_changes_nothing(
    old_engine: Engine,
) -> None:
    with begin_write(old_engine) as connection:
        _old_incident(connection, "OLD-PENDING", "pending", T0)
        _old_incident(connection, "OLD-ODD", "on_hold", T0)
    with pytest.raises(StoreError, match=r"OLD-ODD.*'on_hold'"):
        init_db(old_engine)
    assert _revision(old_engine) == "0002"
    assert not inspect(old_engine).has_table("events")
    assert _statuses(old_engine) == {"OLD-PENDING": "pending", "OLD-ODD": "on_hold"}
    with old_engine.connect() as connection:
        assert connection.execute(select(sa.func.count()).select_from(OLD_UNITS)).scalar()
