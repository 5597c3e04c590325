"""The units as dispatch sees them: a snapshot of the store's units as the dispatcher's pool of
arrays (the hot path of every dispatch).

The units' fixed columns (kind, street, office...) are read once per loaded dataset and kept
per engine; each snapshot reads only what changes (status, duty, busy incident, position), as
the driver returns it, decoded in vectorised calls. Positions go through
:func:`gridgov.dispatch.rules.effective_positions` and ranked by
:func:`gridgov.dispatch.rules.unit_rank` (the one owner of each rule)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from sqlalchemy import (
    Connection,
    Engine,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.types import NullType

from gridgov import dispatch
from gridgov.dispatch import rules
from gridgov.errors import (
    StoreError,
)
from gridgov.model import UnitStatus
from gridgov.store.engine import (
    translate_errors,
)
from gridgov.store.models import (
    DATASETS,
    INCIDENTS,
    OFFICES,
    UNITS,
)
from gridgov.store.travel_context import _CACHE_LOCK, _dataset_version


@dataclass(frozen=True)
class _UnitStatics:
    """The units' columns that change only when a dataset is loaded, one row per unit.

    Read once per dataset version and kept per engine (:data:`_STATICS`); a dispatch then
    reads only what changes between loads (status, duty, busy incident, position).
    """

    version: Any
    index: dict[str, int]  # unit id -> row
    rank: np.ndarray  # place of each id in str order (ties cannot happen: ids are unique)
    kind: np.ndarray
    street: np.ndarray
    mode: np.ndarray
    grid: np.ndarray
    office_lon: np.ndarray  # the office's position (NaN: no office, or it has no position)
    office_lat: np.ndarray


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
    with _CACHE_LOCK:
        cached = _STATICS.get(engine)
    if cached is not None and cached.version == version:
        return cached
    statics = _read_statics(connection)
    if statics is None:
        return None
    with _CACHE_LOCK:
        _STATICS[engine] = statics
    return statics if statics.version == version else None


_SNAPSHOTS: dict[tuple[tuple[str, ...], bool], Any] = {}


def _snapshot_statement(kinds: Sequence[str], with_busy: bool) -> Any:
    """The snapshot query of these kinds, built once (SQLAlchemy then reuses its cache key)."""
    key = (tuple(sorted(kinds)), with_busy)
    stmt = _SNAPSHOTS.get(key)
    if stmt is not None:
        return stmt
    units, incidents = UNITS, INCIDENTS
    status_ok = units.c.status == str(UnitStatus.AVAILABLE)
    if with_busy:
        status_ok = or_(status_ok, units.c.status == str(UnitStatus.BUSY))
    stmt = (
        select(
            _VERSION,
            units.c.unit_id,
            units.c.status,
            units.c.on_duty,
            units.c.busy_incident_id,
            incidents.c.priority.label("busy_priority"),
            # As the driver returns it: most units of a snapshot have no time to convert
            # (see _times), and a per-row result processor cost more than the rest of a row.
            type_coerce(units.c.position_time, NullType()).label("position_time"),
            _raw_position(units.c.position),
        )
        .select_from(
            units.outerjoin(incidents, units.c.busy_incident_id == incidents.c.incident_id)
        )
        .where(units.c.kind.in_(list(key[0])), units.c.on_duty.is_(True), status_ok)
        .order_by(units.c.unit_id)
    )
    _SNAPSHOTS[key] = stmt
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
    """
    stmt = _snapshot_statement(kinds, with_busy)
    for _ in range(_SNAPSHOT_ROUNDS):
        if within is not None:
            # Inside the caller's write transaction: it sees the units that transaction freed.
            rows = within.execute(stmt).all()
            if not rows:
                return _pool(ctx, None, [], now, within.dialect)
            statics = _unit_statics(engine, within, rows[0].version)
            dialect = within.dialect
        else:
            # One connection (one pool checkout) for everything this attempt reads.
            with translate_errors(engine), engine.connect() as connection:
                rows = connection.execute(stmt).all()
                if not rows:
                    return _pool(ctx, None, [], now, connection.dialect)
                statics = _unit_statics(engine, connection, rows[0].version)
                dialect = connection.dialect
        if statics is None:
            continue
        try:
            return _pool(ctx, statics, rows, now, dialect)
        except KeyError:
            # A unit the cached statics do not know: units were written without a dataset
            # entry (by hand, in SQL). Read the statics afresh rather than fail.
            with _CACHE_LOCK:
                if _STATICS.get(engine) is statics:
                    del _STATICS[engine]
    msg = "the units were reloaded again and again while dispatching; try again"
    raise StoreError(msg)


def _times(values: Sequence[Any], dialect: Any) -> list[datetime | None]:
    """Raw ``position_time`` values as the column type returns them (UTC-aware, or None)."""
    column_type = UNITS.c.position_time.type.dialect_impl(dialect)
    process = column_type.result_processor(dialect, None)
    if process is None:  # pragma: no cover - UTCDateTime always converts
        return list(values)
    return [None if v is None else process(v) for v in values]


def _pool(
    ctx: dispatch.DispatchContext,
    statics: _UnitStatics | None,
    rows: Sequence[Any],
    now: datetime,
    dialect: Any,
) -> Any:
    n = len(rows)
    # Columns of the snapshot's rows (see _snapshot_statement), transposed in one go.
    _, unit_ids, status, on_duty, busy, priority, times, positions = (
        zip(*rows, strict=True) if n else ((),) * 8
    )
    ids = _objects(unit_ids)
    at = np.array([statics.index[u] for u in unit_ids] if statics else [], dtype=np.int64)
    lon, lat = _xy(positions)
    office_lon = statics.office_lon[at] if statics else np.zeros(0)
    office_lat = statics.office_lat[at] if statics else np.zeros(0)
    stamps = _times(times, dialect)
    lon, lat, note = rules.effective_positions(lon, lat, stamps, office_lon, office_lat, now)
    empty = np.zeros(0, dtype=object)
    return dispatch.UnitPool.from_arrays(
        ctx,
        ids=ids,
        rank=statics.rank[at] if statics else np.zeros(0, dtype=np.int64),
        kind=statics.kind[at] if statics else empty,
        street=statics.street[at] if statics else empty,
        mode=statics.mode[at] if statics else empty,
        grid=statics.grid[at] if statics else empty,
        status=_objects(status),
        on_duty=np.array(on_duty, dtype=bool).reshape(n),
        lon=lon,
        lat=lat,
        note=note,
        busy_incident=_objects(busy),
        busy_priority=np.array(
            [np.nan if p is None else float(p) for p in priority], dtype=float
        ).reshape(n),
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
