"""The units' state kept per engine (gridgov.store.unit_snapshot): every snapshot built from it
and the rows written since must equal a full read of the unit rows at that moment.

The reference below is the full read the dispatcher made before the state was kept (every
wanted unit row, joined to its busy incident's priority, in the order of the ids), written
out here so the two share nothing but the statics and the pool constructor.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Connection, Engine, delete, or_, select, text, type_coerce, update
from sqlalchemy.types import NullType
from test_store_dispatch import (
    CATALOG,
    NOW,
    ctx,
    district,
    load_tiny,
    new_incident,
    xy,
)

from gridgov import dispatch
from gridgov.dispatch import rules
from gridgov.model import UnitStatus
from gridgov.store import (
    context_from_store,
    create_engine_from_url,
    dispatch_stored,
    init_db,
    release_unit,
    set_unit_status,
)
from gridgov.store import unit_snapshot as snap
from gridgov.store.engine import begin_write
from gridgov.store.models import INCIDENTS, UNITS
from gridgov.store.position_fixes import FixIn, store_fixes

__all__ = ["ctx", "district"]  # fixtures used here

KIND_SETS = (["fire"], ["enforcement", "police"], ["fire", "police", "enforcement"], ["hrss"])
POOL_FIELDS = (
    "ids",
    "rank",
    "kind",
    "street",
    "mode",
    "grid",
    "status",
    "on_duty",
    "lon",
    "lat",
    "note",
    "busy_incident",
    "busy_priority",
)


def full_pool(
    connection: Connection,
    ctx: dispatch.DispatchContext,
    kinds: Sequence[str],
    with_busy: bool,
    now: datetime,
) -> Any:
    """The pool as a full read of the wanted unit rows gives it (the former snapshot)."""
    units, incidents = UNITS, INCIDENTS
    status_ok = units.c.status == str(UnitStatus.AVAILABLE)
    if with_busy:
        status_ok = or_(status_ok, units.c.status == str(UnitStatus.BUSY))
    rows = connection.execute(
        select(
            units.c.unit_id,
            units.c.status,
            units.c.on_duty,
            units.c.busy_incident_id,
            incidents.c.priority,
            units.c.position_time,
            type_coerce(units.c.position, NullType()),
        )
        .select_from(
            units.outerjoin(incidents, units.c.busy_incident_id == incidents.c.incident_id)
        )
        .where(units.c.kind.in_(list(kinds)), units.c.on_duty.is_(True), status_ok)
        .order_by(units.c.unit_id)
    ).all()
    statics = snap._read_statics(connection)
    assert statics is not None
    n = len(rows)
    at = np.array([statics.index[r[0]] for r in rows], dtype=np.int64)
    lon, lat = snap._xy([r[6] for r in rows])
    lon, lat, note = rules.effective_positions(
        lon, lat, [r[5] for r in rows], statics.office_lon[at], statics.office_lat[at], now
    )
    return dispatch.UnitPool.from_arrays(
        ctx,
        ids=snap._objects([r[0] for r in rows]),
        rank=statics.rank[at],
        kind=statics.kind[at],
        street=statics.street[at],
        mode=statics.mode[at],
        grid=statics.grid[at],
        status=snap._objects([r[1] for r in rows]),
        on_duty=np.array([r[2] for r in rows], dtype=bool).reshape(n),
        lon=lon,
        lat=lat,
        note=note,
        busy_incident=snap._objects([r[3] for r in rows]),
        busy_priority=np.array(
            [np.nan if r[4] is None else float(r[4]) for r in rows], dtype=float
        ).reshape(n),
    )


def assert_same_pool(got: Any, want: Any, what: str) -> None:
    assert got.n == want.n, what
    for name in POOL_FIELDS:
        a, b = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
        assert a.dtype == b.dtype, f"{what}: {name} {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{what}: {name}"
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), f"{what}: {name} {a} != {b}"
        else:
            assert a.tolist() == b.tolist(), f"{what}: {name} {a} != {b}"


def check(engine: Engine, ctx: dispatch.DispatchContext, now: datetime, what: str) -> None:
    for kinds in KIND_SETS:
        for with_busy in (False, True):
            got = snap._snapshot_pool(engine, ctx, kinds, with_busy, now)
            with engine.connect() as connection:
                want = full_pool(connection, ctx, kinds, with_busy, now)
            assert_same_pool(got, want, f"{what} {kinds} busy={with_busy}")


def _unit_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [str(u) for u in connection.execute(select(UNITS.c.unit_id)).scalars()]


def _busy(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(UNITS.c.unit_id).where(UNITS.c.busy_incident_id.is_not(None))
        ).scalars()
        return [str(u) for u in rows]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_writes_never_make_the_kept_state_differ_from_a_full_read(
    district: Engine,
    ctx: dispatch.DispatchContext,
    seed: int,
) -> None:
    rng = random.Random(seed)
    engine = district
    snap._STATES.pop(engine, None)
    counts = dict(snap._COUNTS)
    fix_at = NOW - timedelta(minutes=30)
    check(engine, ctx, NOW, "start")
    for step in range(70):
        ids = _unit_ids(engine)
        unit = rng.choice(ids)
        action = rng.choice(
            ["status", "status", "duty", "fix", "fix", "fix", "dispatch", "release", "priority"]
            + (["reload"] if step % 25 == 24 else [])
        )
        try:
            if action == "status":
                set_unit_status(
                    engine, unit, rng.choice([UnitStatus.AVAILABLE, UnitStatus.OFF_DUTY])
                )
            elif action == "duty":
                set_unit_status(engine, unit, UnitStatus.AVAILABLE, on_duty=rng.random() < 0.7)
            elif action == "fix":
                fix_at += timedelta(seconds=rng.randint(1, 400))
                lon, lat = xy(rng.randint(0, 8), rng.randint(0, 8))
                fixes = [FixIn(unit, lon + rng.uniform(-1e-4, 1e-4), lat, fix_at)]
                store_fixes(engine, fixes, oldest=fix_at - timedelta(days=1))
            elif action == "dispatch":
                matter = rng.choice(["T-FIRE", "T-LOW", "T-ENF", "T-JOINT"])
                incident = new_incident(engine, matter, (rng.randint(1, 7), rng.randint(1, 7)))
                dispatch_stored(engine, ctx, incident, now=NOW, routes=False)
            elif action == "release":
                busy = _busy(engine)
                if busy:
                    release_unit(engine, rng.choice(busy), now=NOW)
            elif action == "priority":
                # An incident's priority, which the pool carries for its busy units, changed
                # without any unit row being written.
                with begin_write(engine) as connection:
                    connection.execute(
                        update(INCIDENTS)
                        .where(
                            INCIDENTS.c.incident_id.in_(
                                select(UNITS.c.busy_incident_id).where(
                                    UNITS.c.busy_incident_id.is_not(None)
                                )
                            )
                        )
                        .values(priority=rng.randint(1, 4))
                    )
            elif action == "reload":
                load_tiny(engine)
        except Exception as exc:  # a refused write (a busy unit...) is a step too
            if type(exc).__name__ not in ("InputError", "UnitsTakenError"):
                raise
        # The dispatcher's clock moves too: fixes turn stale and units fall back to offices.
        now = max(NOW, fix_at) + timedelta(seconds=rng.choice([0, 30, 900, 4000]))
        full = snap._COUNTS["full"]
        check(engine, ctx, now, f"step {step} after {action} of {unit}")
        if action != "reload":
            # Deltas are exact by themselves: the count and sum check never had to step in.
            assert snap._COUNTS["full"] == full, f"step {step}: a full read after {action}"
    assert snap._COUNTS["delta"] > counts["delta"], "the snapshots never used a delta"


def test_a_deleted_unit_and_a_unit_added_by_hand_are_seen(
    district: Engine,
    ctx: dispatch.DispatchContext,
) -> None:
    engine = district
    check(engine, ctx, NOW, "start")
    with begin_write(engine) as connection:
        row = connection.execute(select(UNITS).where(UNITS.c.unit_id == "F2")).one()
        connection.execute(delete(UNITS).where(UNITS.c.unit_id == "F2"))
    check(engine, ctx, NOW, "F2 deleted")
    values = dict(row._mapping)
    values.pop("change_seq", None)
    values["unit_id"] = "F3"
    with begin_write(engine) as connection:
        connection.execute(UNITS.insert().values(**values))
    check(engine, ctx, NOW, "F3 added")
    # Deleted and added in one transaction (the count stays, the ids change).
    values["unit_id"] = "F4"
    with begin_write(engine) as connection:
        connection.execute(delete(UNITS).where(UNITS.c.unit_id == "F3"))
        connection.execute(UNITS.insert().values(**values))
    check(engine, ctx, NOW, "F3 replaced by F4")


def test_a_write_transaction_sees_its_own_writes_and_others_never_do(
    district: Engine,
    ctx: dispatch.DispatchContext,
) -> None:
    engine = district
    check(engine, ctx, NOW, "start")
    with begin_write(engine) as connection:
        connection.execute(update(UNITS).where(UNITS.c.unit_id == "F1").values(status="off_duty"))
        connection.execute(update(UNITS).where(UNITS.c.unit_id == "P1").values(on_duty=False))
        inside = snap._snapshot_pool(engine, ctx, ["fire", "police"], False, NOW, connection)
        assert_same_pool(
            inside, full_pool(connection, ctx, ["fire", "police"], False, NOW), "inside"
        )
        assert "F1" not in inside.ids.tolist() and "P1" not in inside.ids.tolist()
        # Another thread meanwhile: it sees the committed units only, and keeps its state.
        seen: list[Any] = []
        worker = threading.Thread(
            target=lambda: seen.append(
                snap._snapshot_pool(engine, ctx, ["fire", "police"], False, NOW)
            )
        )
        worker.start()
        worker.join()
        assert "F1" in seen[0].ids.tolist() and "P1" in seen[0].ids.tolist()
        connection.rollback()
    # Rolled back: what the transaction saw was never kept for anyone.
    check(engine, ctx, NOW, "after the rollback")
    pool = snap._snapshot_pool(engine, ctx, ["fire", "police"], False, NOW)
    assert {"F1", "P1"} <= set(pool.ids.tolist())
    # And committed, everyone sees it.
    with begin_write(engine) as connection:
        connection.execute(update(UNITS).where(UNITS.c.unit_id == "F1").values(status="off_duty"))
        snap._snapshot_pool(engine, ctx, ["fire"], False, NOW, connection)
    check(engine, ctx, NOW, "after the commit")
    assert "F1" not in snap._snapshot_pool(engine, ctx, ["fire"], False, NOW).ids.tolist()


@pytest.fixture
def pg_district(postgis_schema_url: str) -> Iterator[Engine]:
    """The test district on PostGIS only."""
    init_db(postgis_schema_url)
    engine = create_engine_from_url(postgis_schema_url)
    try:
        load_tiny(engine)
        yield engine
    finally:
        engine.dispose()


@pytest.mark.postgis
@pytest.mark.parametrize("in_savepoint", [False, True])
def test_a_late_commit_is_in_the_delta(pg_district: Engine, in_savepoint: bool) -> None:
    """PostgreSQL numbers a row when it is written, not when it commits: a transaction that
    took a smaller number than one a snapshot saw may commit after that snapshot (SQLite has
    one writer at a time: its numbers follow its commits). A row written in a savepoint
    carries the subtransaction's own id as its ``xmin``, which a snapshot's list of running
    transactions does not hold: judged by ``xmin``, it looked seen, and only the count and sum
    check's full read caught it. The delta itself must see both."""
    engine = pg_district
    ctx = context_from_store(engine, CATALOG)
    check(engine, ctx, NOW, "start")
    late = engine.connect()
    try:
        with late.begin_nested() if in_savepoint else nullcontext():
            late.execute(update(UNITS).where(UNITS.c.unit_id == "E1").values(on_duty=False))
        # Many later numbers, committed, and seen (more than any look-back window); the next
        # snapshot's xmax lies above the late transaction's ids.
        for k in range(300):
            set_unit_status(engine, "P2", UnitStatus.AVAILABLE, on_duty=k % 2 == 0)
        check(engine, ctx, NOW, "before the late commit")
        late.commit()
    finally:
        late.close()
    full = snap._COUNTS["full"]
    check(engine, ctx, NOW, "after the late commit")
    # Seen by the delta itself, not by the count and sum check's full read.
    assert snap._COUNTS["full"] == full
    pool = snap._snapshot_pool(engine, ctx, ["enforcement"], False, NOW)
    assert "E1" not in pool.ids.tolist()


def test_threads_snapshot_together_while_units_are_written(
    district: Engine,
    ctx: dispatch.DispatchContext,
) -> None:
    engine = district
    snap._STATES.pop(engine, None)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for kinds in KIND_SETS:
                    snap._snapshot_pool(engine, ctx, kinds, True, NOW)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    try:
        rng = random.Random(5)
        at = NOW - timedelta(minutes=5)
        for k in range(60):
            unit = rng.choice(["E1", "E2", "F1", "F2", "P1", "P2"])
            at += timedelta(seconds=1)
            if k % 3:
                lon, lat = xy(rng.randint(0, 8), rng.randint(0, 8))
                store_fixes(engine, [FixIn(unit, lon, lat, at)], oldest=at - timedelta(hours=1))
            else:
                set_unit_status(engine, unit, UnitStatus.AVAILABLE, on_duty=k % 2 == 0)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert not errors, errors
    check(engine, ctx, NOW, "after the threads")


def test_the_state_statement_reads_only_rows_written_since(
    district: Engine,
    ctx: dispatch.DispatchContext,
) -> None:
    """With nothing written since, a snapshot's delta holds no unit row on SQLite but the one
    holding the largest number (on PostgreSQL, none once no transaction of the cluster that
    was running at the last snapshot is left: other tests' may be)."""
    engine = district
    snap._STATES.pop(engine, None)
    snap._snapshot_pool(engine, ctx, ["fire"], True, NOW)
    snap._snapshot_pool(engine, ctx, ["fire"], True, NOW)
    state = snap._STATES[engine]
    stmt = snap._state_statement(engine.dialect.name, True, False)
    with engine.connect() as connection:
        rows = connection.execute(stmt, {"mark": state.mark, "kinds": ["fire"]}).all()
        if engine.dialect.name == "sqlite":
            # The row holding the largest number, again (see _state_statement).
            assert len(rows) == 1 and rows[0].unit_id is not None
        assert rows[0].n == len(state.statics.ids)
        total = connection.execute(text("SELECT count(*) FROM units")).scalar()
    assert total == len(state.statics.ids)


def crowd(engine: Engine, copies: int) -> None:
    """Add ``copies`` idle, off-duty copies of every unit and refresh the planner's statistics:
    PostgreSQL's choice of plan depends on the size of the table."""
    kept = [
        c.name
        for c in UNITS.c
        if c.name
        not in ("unit_id", "status", "on_duty", "busy_incident_id", "change_seq", "change_xid")
    ]
    columns = ", ".join(kept)
    with begin_write(engine) as connection:
        connection.exec_driver_sql(
            f"INSERT INTO units (unit_id, status, on_duty, {columns}) "
            f"SELECT unit_id || '~' || g, 'available', false, {columns} "
            f"FROM units, generate_series(1, {copies}) AS g"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE units")


def plans(connection: Any, marker: str) -> tuple[int, int]:
    """(generic, custom) plans of the statement containing ``marker`` that the session of
    ``connection`` prepared (psycopg prepares a statement run five times on a connection)."""
    row = connection.exec_driver_sql(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
        "WHERE statement LIKE %(marker)s",
        {"marker": f"%{marker}%"},
    ).one()
    return int(row.generic_plans), int(row.custom_plans)


@pytest.mark.postgis
def test_the_state_statement_is_planned_once_per_connection(pg_district: Engine) -> None:
    """The dispatcher's snapshot runs the delta statement at every turn. It was parsed and
    planned each time: its read ended in a ROLLBACK, at which psycopg drops the connection's
    prepared statements, and PostgreSQL guessed its open range of transaction ids held a
    third of the units. Now one generic plan per connection serves, an index range."""
    url = pg_district.url.render_as_string(hide_password=False)
    crowd(pg_district, 300)  # about 2,000 units: a district's
    engine = create_engine_from_url(url, pool_size=1, max_overflow=0)  # one session
    try:
        ctx = context_from_store(engine, CATALOG)
        snap._snapshot_pool(engine, ctx, ["fire"], True, NOW)  # a full read, the copies' statics
        for _ in range(20):  # deltas
            snap._snapshot_pool(engine, ctx, ["fire"], True, NOW)
        with engine.connect() as connection:
            assert plans(connection, "pg_visible_in_snapshot") == (10, 5)
    finally:
        engine.dispose()
