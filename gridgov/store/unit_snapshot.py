"""The units as dispatch sees them: a snapshot of the store's units as the dispatcher's pool of
arrays (the hot path of every dispatch).

The units' fixed columns (kind, street, office...) are read once per loaded dataset and kept
per engine; their changing columns (status, duty, busy incident, position) are kept per engine
too, and each snapshot reads only the unit rows written since the last (one statement, exact:
see :func:`_state_statement`), as the driver returns them, decoded in vectorised calls.
Positions go through :func:`gridgov.dispatch.rules.effective_positions` and ranked by
:func:`gridgov.dispatch.rules.unit_rank` (the one owner of each rule)."""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    String,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.types import NullType

from gridgov import dispatch
from gridgov.dispatch import rules
from gridgov.errors import (
    StoreError,
)
from gridgov.model import UnitStatus
from gridgov.store import travel_context
from gridgov.store.engine import at_or_above, read_statements, translate_errors
from gridgov.store.many_rows import any_of
from gridgov.store.models import (
    DATASETS,
    INCIDENTS,
    OFFICES,
    UNITS,
)
from gridgov.store.travel_context import _dataset_version


@dataclass(frozen=True)
class _UnitStatics:
    """The units' columns that change only when a dataset is loaded, one row per unit.

    Read once per dataset version and kept per engine (:data:`_STATICS`); a dispatch then
    reads only what changes between loads (status, duty, busy incident, position).
    """

    version: Any
    ids: np.ndarray  # the unit ids (str), in the database's order of them
    index: dict[str, int]  # unit id -> row
    rank: np.ndarray  # place of each id in str order (ties cannot happen: ids are unique)
    kind: np.ndarray
    street: np.ndarray
    mode: np.ndarray
    grid: np.ndarray
    office_lon: np.ndarray  # the office's position (NaN: no office, or it has no position)
    office_lat: np.ndarray
    # Which rows are of some kinds, by sorted kinds (filled in by _wanted).
    kind_masks: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict, compare=False)


_STATICS: weakref.WeakKeyDictionary[Engine, _UnitStatics] = weakref.WeakKeyDictionary()
# A snapshot whose dataset version differs from the statics' is read again (a load committed
# in between); loads are rare maintenance actions, so a few rounds always settle it.
_SNAPSHOT_ROUNDS = 5
_VERSION = select(func.max(DATASETS.c.id)).scalar_subquery().label("version")


def _raw_position(column: Any) -> Any:
    # The driver's raw (hex) WKB, decoded in one vectorised call: per-row decoding was most of
    # a dispatch's time with a thousand grid workers.
    return type_coerce(column, NullType()).label("position")


_STATICS_UNITS = select(
    _VERSION,
    UNITS.c.unit_id,
    UNITS.c.kind,
    UNITS.c.street_code,
    UNITS.c.travel_mode,
    UNITS.c.grid_code,
    UNITS.c.office_id,
).order_by(UNITS.c.unit_id)
_STATICS_OFFICES = select(_VERSION, OFFICES.c.office_id, _raw_position(OFFICES.c.position))


def _strs(values: Sequence[Any]) -> np.ndarray:
    return np.array([None if v is None else str(v) for v in values], dtype=object)


# Little-endian 2-D WKB points: (geometry type, bytes before x) of plain WKB and of PostGIS's
# EWKB with an SRID (type flag 0x20000000, then the 4-byte SRID).
_POINT_LAYOUTS = {21: (1, 5), 25: (0x20000001, 9)}


def _xy(raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of raw WKB points (NaN where missing or empty)."""
    if not raw:
        return np.zeros(0), np.zeros(0)
    fast = _xy_points(raw)
    if fast is not None:
        return fast
    values = np.empty(len(raw), dtype=object)
    values[:] = raw
    try:
        geoms = shapely.from_wkb(values)
    except TypeError:  # memoryviews (some drivers' blobs): converted one by one
        geoms = shapely.from_wkb(np.array([_raw_wkb(v) for v in raw], dtype=object))
    geoms[shapely.is_empty(geoms)] = None  # GEOS refuses the coordinates of an empty point
    return (
        np.asarray(shapely.get_x(geoms), dtype=float),
        np.asarray(shapely.get_y(geoms), dtype=float),
    )


def _xy_points(raw: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_xy` read straight from the bytes when every value is a little-endian 2-D point
    of one layout (what both backends store); None otherwise (then GEOS decodes them).

    Decoding a thousand points through GEOS took longer than the rest of a unit snapshot.
    """
    present = np.array([v is not None for v in raw], dtype=bool)
    values = [v for v in raw if v is not None]
    if not values:
        return np.full(len(raw), np.nan), np.full(len(raw), np.nan)
    first = values[0]
    if isinstance(first, str) and all(type(v) is str for v in values):
        try:
            buf = bytes.fromhex("".join(values))
        except ValueError:
            return None
        size = len(first) // 2
    elif isinstance(first, bytes) and all(type(v) is bytes for v in values):
        buf, size = b"".join(values), len(first)
    else:
        return None
    layout = _POINT_LAYOUTS.get(size)
    if layout is None or len(buf) != size * len(values):
        return None
    rows = np.frombuffer(buf, dtype=np.uint8).reshape(len(values), size)
    kind = rows[:, 1:5].copy().view("<u4").ravel()
    if not (np.all(rows[:, 0] == 1) and np.all(kind == layout[0])):
        return None
    start = layout[1]
    lon, lat = np.full(len(raw), np.nan), np.full(len(raw), np.nan)
    lon[present] = rows[:, start : start + 8].copy().view("<f8").ravel()
    lat[present] = rows[:, start + 8 : start + 16].copy().view("<f8").ravel()
    return lon, lat


def _read_statics(connection: Connection) -> _UnitStatics | None:
    """The statics as stored now; None when a load committed between the two reads."""
    units = connection.execute(_STATICS_UNITS).all()
    offices = connection.execute(_STATICS_OFFICES).all()
    versions = {r.version for r in units} | {r.version for r in offices}
    if len(versions) > 1:
        return None
    version = versions.pop() if versions else _dataset_version(connection.engine, connection)
    office_x, office_y = _xy([r.position for r in offices])
    office_row = {r.office_id: i for i, r in enumerate(offices)}
    at_office = np.array([office_row.get(r.office_id, -1) for r in units], dtype=np.int64)
    has_office = at_office >= 0
    office_lon, office_lat = np.full(len(units), np.nan), np.full(len(units), np.nan)
    office_lon[has_office] = office_x[at_office[has_office]]
    office_lat[has_office] = office_y[at_office[has_office]]
    ids = [str(r.unit_id) for r in units]
    return _UnitStatics(
        version=version,
        ids=_objects(ids),
        index={u: i for i, u in enumerate(ids)},
        rank=rules.unit_rank(ids),
        kind=_strs([r.kind for r in units]),
        street=_strs([r.street_code for r in units]),
        mode=_strs([r.travel_mode for r in units]),
        grid=_strs([r.grid_code for r in units]),
        office_lon=office_lon,
        office_lat=office_lat,
    )


def _unit_statics(engine: Engine, connection: Connection, version: Any) -> _UnitStatics | None:
    """The statics of dataset ``version`` (read on ``connection`` unless cached); None when the
    stored ones are of another version by now (the caller reads its snapshot again)."""
    with travel_context._CACHE_LOCK:
        cached = _STATICS.get(engine)
    if cached is not None and cached.version == version:
        return cached
    statics = _read_statics(connection)
    if statics is None:
        return None
    with travel_context._CACHE_LOCK:
        _STATICS[engine] = statics
    return statics if statics.version == version else None


@dataclass(frozen=True)
class _UnitState:
    """The units' changing columns as of one database snapshot, row for row with ``statics``.

    Kept per engine (:data:`_STATES`) and brought up to date by each snapshot, which reads only
    the rows written since (:func:`_state_statement`). Never changed once built: a snapshot
    that finds changes builds a new one, so threads share states without locks.
    """

    statics: _UnitStatics
    mark: Any  # where the next delta starts (see _state_statement)
    seq: np.ndarray  # change numbers (-1: none)
    status: np.ndarray
    on_duty: np.ndarray  # bool: the column is true
    busy: np.ndarray
    times: np.ndarray  # position times, aware (or None)
    lon: np.ndarray
    lat: np.ndarray
    full_at: float  # time.monotonic() of the full read this state descends from


_STATES: weakref.WeakKeyDictionary[Engine, _UnitState] = weakref.WeakKeyDictionary()
#: A state older than this (since its last full read) is read in full again: a backstop that
#: bounds the life of any state, though deltas are exact (see _state_statement).
_REFRESH_S = 300.0
# How snapshots went, for tests and profiling: full reads and delta reads.
_COUNTS = {"full": 0, "delta": 0}
_STATEMENTS: dict[tuple[str, bool, bool], Any] = {}


def _state_statement(dialect: str, with_busy: bool, full: bool) -> Any:
    """The one statement a snapshot runs (one database snapshot): a header row (dataset version,
    the units' count and sum of change numbers, the next mark, the priorities of the incidents
    the units of the kinds bound as ``:kinds`` are busy on), left-joined with every unit row
    (``full``) or with the rows written since ``:mark``. The kinds are bound, not written in:
    one statement text for every set of kinds, which psycopg prepares and PostgreSQL parses once.

    Why the delta is exact, i.e. every unit row that differs from the state's is in it:

    - PostgreSQL: a row the state's snapshot S did not see was written by a transaction S did
      not see as committed: one running at S or begun after it. The units' trigger records
      the writing transaction's 64-bit top-level id (``change_xid``, migration 0013). The
      mark is S itself (``pg_current_snapshot()``), and the delta is the rows whose
      ``change_xid`` S does not see (``pg_visible_in_snapshot``): late commits whatever their
      change number, rows written in a savepoint (the id is the top-level transaction's, the
      one S lists as running), and the caller's own uncommitted writes (its transaction is
      another than S's). Every such id is at least S's ``xmin``: an index range, which holds
      only the rows of the transactions around S. (Rows last written before migration 0013
      have none: they are older than any state.)
    - SQLite: one writer at a time, and each takes the largest number plus one while it holds
      the write lock, so numbers follow commit order and a snapshot sees every number up to
      its largest, and no other: the delta is the rows at or above the largest the state saw
      (at: a number reused after the row holding it was deleted).

    A deleted row is not in any delta: the count and the sum of change numbers, compared with
    the state's, tell (and catch anything a delta might ever miss), and the state is read in
    full again.
    """
    key = (dialect, with_busy, full)
    stmt = _STATEMENTS.get(key)
    if stmt is not None:
        return stmt
    units = UNITS
    status_ok = units.c.status == str(UnitStatus.AVAILABLE)
    if with_busy:
        status_ok = or_(status_ok, units.c.status == str(UnitStatus.BUSY))
    # The priorities a full read would join to the wanted units (an incident's priority can
    # change without its units' rows changing), read afresh each time as one JSON value.
    busy_on = select(units.c.busy_incident_id).where(
        any_of(units.c.kind, "kinds"),
        units.c.on_duty.is_(True),
        status_ok,
        units.c.busy_incident_id.is_not(None),
    )
    agg = func.json_object_agg if dialect == "postgresql" else func.json_group_object
    priorities = (
        select(
            type_coerce(agg(INCIDENTS.c.incident_id, INCIDENTS.c.priority), NullType()).label(
                "priorities"
            )
        )
        .where(INCIDENTS.c.incident_id.in_(busy_on))
        .subquery("p")
    )
    totals = select(
        func.count().label("n"),
        func.coalesce(func.sum(units.c.change_seq), 0).label("total"),
        func.coalesce(func.max(units.c.change_seq), -1).label("top"),
    ).subquery("t")
    if dialect == "postgresql":
        then = "CAST(CAST(:mark AS text) AS pg_snapshot)"
        mark: Any = literal_column("pg_current_snapshot()::text")
        xmin = text(f"pg_snapshot_xmin({then})::text::bigint").bindparams(
            bindparam("mark", type_=String)
        )
        unseen = text(
            f"NOT pg_visible_in_snapshot(units.change_xid::text::xid8, {then})"
        ).bindparams(bindparam("mark", type_=String))
        # Bounded above, so that the delta is planned once per connection (at_or_above).
        changed: Any = and_(*at_or_above(units.c.change_xid, xmin), unseen)
    else:
        mark = totals.c.top
        changed = or_(
            units.c.change_seq >= bindparam("mark", type_=BigInteger),
            units.c.change_seq.is_(None),
        )
    header = (
        select(_VERSION, totals.c.n, totals.c.total, mark.label("mark"), priorities.c.priorities)
        .select_from(totals.join(priorities, true()))
        .subquery("h")
    )
    delta = (
        select(
            units.c.unit_id,
            units.c.status,
            units.c.on_duty,
            units.c.busy_incident_id,
            # As the driver returns it: converted once per written row (see _times).
            type_coerce(units.c.position_time, NullType()).label("position_time"),
            _raw_position(units.c.position),
            units.c.change_seq,
        )
        .where(*([] if full else [changed]))
        .subquery("d")
    )
    stmt = select(header, delta).select_from(header.outerjoin(delta, true()))
    _STATEMENTS[key] = stmt
    return stmt


def _snapshot_pool(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    kinds: Sequence[str],
    with_busy: bool,
    now: datetime,
    within: Connection | None = None,
) -> Any:
    """The units dispatch may use, as the dispatcher's pool of arrays.

    Available units on duty; with ``with_busy`` also the busy ones, each with the incident it
    works on and that incident's priority, which is what preemption needs. Positions go
    through the same fallbacks as :func:`gridgov.dispatch.prepare_units`: a stale or missing
    one is replaced by the unit's office, or the unit is left out, and the note says which.

    The same pool as reading every wanted unit row now, in the order of their ids, built from
    the units' state this process keeps (:class:`_UnitState`) and the rows written since.
    ``within``: the caller's write transaction, whose own writes the pool includes; a state
    read there is used for this pool only, never kept for other threads.
    """
    (pool,) = _snapshot_pools(engine, ctx, [(kinds, with_busy)], now, within)
    return pool


def _snapshot_pools(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    wanted: Sequence[tuple[Sequence[str], bool]],
    now: datetime,
    within: Connection | None = None,
    *,
    unwritten: bool = False,
) -> list[Any]:
    """:func:`_snapshot_pool` for each ``(kinds, with_busy)`` of ``wanted``, all from ONE read of
    the units' state (one statement): pools of the same database snapshot. A state read in
    ``within`` is kept for other threads only when ``unwritten``: the transaction has written
    nothing yet, so what it reads is what is committed (under PostgreSQL's read committed each
    statement sees every commit before it)."""
    busy_kinds = sorted({k for kinds, busy in wanted if busy for k in kinds})
    with_busy = bool(busy_kinds)
    # The busy incidents' priorities are read for the kinds that may preempt only.
    kinds = busy_kinds or sorted({k for kinds, _ in wanted for k in kinds})
    for _ in range(_SNAPSHOT_ROUNDS):
        if within is not None:
            found = _current_state(engine, within, kinds, with_busy, keep=unwritten)
        else:
            # One connection (one pool checkout) for everything this attempt reads.
            with translate_errors(engine), read_statements(engine).connect() as connection:
                found = _current_state(engine, connection, kinds, with_busy, keep=True)
        if found is not None:
            return [_pool(ctx, *found, k, busy, now) for k, busy in wanted]
    msg = "the units were reloaded again and again while dispatching; try again"
    raise StoreError(msg)


def _current_state(
    engine: Engine, connection: Connection, kinds: Sequence[str], with_busy: bool, *, keep: bool
) -> tuple[_UnitState, dict[str, Any]] | None:
    """The units' state as ``connection`` sees them now, with the busy incidents' priorities;
    None when a dataset load came in between (the caller tries again). ``keep``: publish it
    for other threads (only what is committed: never a state read inside a write)."""
    with travel_context._CACHE_LOCK:
        start = _STATES.get(engine)
    base = start
    if base is not None and time.monotonic() - base.full_at > _REFRESH_S:
        base = None

    def read(mark: Any) -> list[Any]:
        # Every row without a mark, else the delta since it.
        stmt = _state_statement(connection.dialect.name, with_busy, mark is None)
        params = {"kinds": list(kinds)} if mark is None else {"kinds": list(kinds), "mark": mark}
        return list(connection.execute(stmt, params).all())

    rows = read(None if base is None else base.mark)
    statics = _unit_statics(engine, connection, rows[0].version)
    if statics is None:
        return None
    state = None
    if base is not None and base.statics is statics:
        state = _merged(base, rows, statics, connection.dialect)
    if state is None:
        if base is not None:
            # A state of other statics, or the delta did not add up (a unit deleted): read all.
            rows = read(None)
            if rows[0].version != statics.version:
                return None
        state = _merged(None, rows, statics, connection.dialect)
        if state is None:
            # Units the statics do not know, or rows they have and the table lacks: units were
            # written without a dataset entry (by hand, in SQL). Read the statics afresh.
            with travel_context._CACHE_LOCK:
                if _STATICS.get(engine) is statics:
                    del _STATICS[engine]
            return None
    if keep:
        with travel_context._CACHE_LOCK:
            # Only over the state this one grew from: any published state is exact for its own
            # snapshot, so losing this race costs at most a larger delta next time.
            if _STATES.get(engine) is start:
                _STATES[engine] = state
    head = rows[0]
    priorities = head.priorities
    if isinstance(priorities, str):
        priorities = json.loads(priorities)
    return state, priorities or {}


def _merged(
    base: _UnitState | None, rows: Sequence[Any], statics: _UnitStatics, dialect: Any
) -> _UnitState | None:
    """``base`` with the rows of a delta read written in (a full read when None); None when the
    result does not add up to the header's count and sum of change numbers, or a row is of a
    unit the statics do not know."""
    head = rows[0]
    n = len(statics.index)
    delta = [r for r in rows if r.unit_id is not None]
    try:
        at = np.array([statics.index[r.unit_id] for r in delta], dtype=np.int64)
    except KeyError:
        return None
    if base is None:
        _COUNTS["full"] += 1
        state = _UnitState(
            statics=statics,
            mark=head.mark,
            seq=np.full(n, -1, dtype=np.int64),
            status=np.full(n, None, dtype=object),
            on_duty=np.zeros(n, dtype=bool),
            busy=np.full(n, None, dtype=object),
            times=np.full(n, None, dtype=object),
            lon=np.full(n, np.nan),
            lat=np.full(n, np.nan),
            full_at=time.monotonic(),
        )
    elif not delta:
        _COUNTS["delta"] += 1
        state = replace(base, mark=head.mark)
    else:
        _COUNTS["delta"] += 1
        state = replace(
            base,
            mark=head.mark,
            seq=base.seq.copy(),
            status=base.status.copy(),
            on_duty=base.on_duty.copy(),
            busy=base.busy.copy(),
            times=base.times.copy(),
            lon=base.lon.copy(),
            lat=base.lat.copy(),
        )
    if delta:
        # The delta's columns (after the header's five), transposed in one go.
        _, status, on_duty, busy, times, positions, seq = zip(*(r[5:] for r in delta), strict=True)
        state.seq[at] = [-1 if s is None else s for s in seq]
        state.status[at] = _objects(status)
        state.on_duty[at] = [v is True for v in on_duty]
        state.busy[at] = _objects(busy)
        state.times[at] = _objects(_times(times, dialect))
        state.lon[at], state.lat[at] = _xy(positions)
    numbered = state.seq >= 0
    if (
        int(head.n) != n
        or int(head.total) != int(state.seq[numbered].sum())
        or (base is None and len(np.unique(at)) != n)
    ):
        return None
    return state


def _times(values: Sequence[Any], dialect: Any) -> list[datetime | None]:
    """Raw ``position_time`` values as the column type returns them (UTC-aware, or None)."""
    column_type = UNITS.c.position_time.type.dialect_impl(dialect)
    process = column_type.result_processor(dialect, None)
    if process is None:  # pragma: no cover - UTCDateTime always converts
        return list(values)
    return [None if v is None else process(v) for v in values]


def _wanted(statics: _UnitStatics, kinds: Sequence[str]) -> np.ndarray:
    """Which units are of ``kinds`` (kept with the statics: kinds change only with a load)."""
    key = tuple(sorted(kinds))
    mask = statics.kind_masks.get(key)
    if mask is None:
        wanted = frozenset(key)
        mask = np.array([k in wanted for k in statics.kind], dtype=bool).reshape(-1)
        statics.kind_masks[key] = mask
    return mask


def _pool(
    ctx: dispatch.DispatchContext,
    state: _UnitState,
    priorities: dict[str, Any],
    kinds: Sequence[str],
    with_busy: bool,
    now: datetime,
) -> Any:
    """The pool of the wanted units of ``state``: the rows a full read's WHERE keeps, in the
    statics' order (the database's order of the ids)."""
    statics = state.statics
    status_ok = state.status == str(UnitStatus.AVAILABLE)
    if with_busy:
        status_ok |= state.status == str(UnitStatus.BUSY)
    at = np.flatnonzero(_wanted(statics, kinds) & state.on_duty & status_ok)
    n = len(at)
    busy = state.busy[at]
    lon, lat, note = rules.effective_positions(
        state.lon[at],
        state.lat[at],
        state.times[at].tolist(),
        statics.office_lon[at],
        statics.office_lat[at],
        now,
    )
    busy_priority = np.full(n, np.nan)
    if priorities:  # none unless the wanted units include busy ones
        for i, b in enumerate(busy.tolist()):
            p = None if b is None else priorities.get(b)
            if p is not None:
                busy_priority[i] = float(p)
    return dispatch.UnitPool.from_arrays(
        ctx,
        ids=statics.ids[at],
        rank=statics.rank[at],
        kind=statics.kind[at],
        street=statics.street[at],
        mode=statics.mode[at],
        grid=statics.grid[at],
        status=state.status[at],
        on_duty=state.on_duty[at],
        lon=lon,
        lat=lat,
        note=note,
        busy_incident=busy,
        busy_priority=busy_priority,
    )


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (str or None, as the driver returned them)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _raw_wkb(value: Any) -> bytes | str | None:
    if value is None or isinstance(value, bytes | str):
        return value
    return bytes(value)  # memoryview from some drivers
