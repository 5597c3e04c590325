"""Unit state as the front ends change it: status by hand, release from a job, position fixes.

The writing is the store's (each change atomic, with the unit's row locked); this module owns
what comes before it: the fix's time (a device clock may run a little ahead, not more), the
conversion of the fix from the sender's CRS, and whether the stored fix is stale
(:func:`gridgov.dispatch.position_is_stale`, the one staleness rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gridgov import dispatch, store
from gridgov.crs import normalize_crs, to_wgs84
from gridgov.model import UnitStatus
from gridgov.service.clock import sent_time
from gridgov.store import Engine


@dataclass(frozen=True)
class PositionFix:
    """A position fix as received: stored unless a newer one was, and stale or not."""

    unit_id: str
    stored: bool
    stale: bool
    lon: float
    lat: float
    at: datetime


def record_position(
    engine: Engine,
    unit_id: str,
    lon: float,
    lat: float,
    *,
    crs: str = "wgs84",
    at: datetime | None = None,
    source: str = "avl",
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> PositionFix:
    """Record a unit's position fix (an older fix never overwrites a newer one).

    Parameters
    ----------
    engine
        The store.
    unit_id
        The unit.
    lon, lat
        The fix in ``crs`` (``wgs84``, ``gcj02``, ``bd09`` or an EPSG code).
    at
        When it was taken (timezone-aware); default ``now``.
    source
        Where it comes from (``avl``...).
    now
        The receiving time (default: the current time).
    max_age
        Oldest fix that is not stale (default: ``settings.position_max_age_min``).

    Raises
    ------
    InputError
        A time from the future, or not a point.
    CRSError
        An unknown CRS, or a point it cannot convert.
    NotFoundError
        No such unit.
    """
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    at = sent_time(at, now, "at")
    x, y = to_wgs84(lon, lat, normalize_crs(crs))
    wlon, wlat = float(x[0]), float(y[0])
    stored = store.update_unit_position(engine, unit_id, wlon, wlat, at, source=source)
    stale = bool(dispatch.position_is_stale([at], now, max_age)[0])
    return PositionFix(unit_id, stored, stale, wlon, wlat, at)


def set_status(
    engine: Engine, unit_id: str, status: UnitStatus | str, *, on_duty: bool | None = None
) -> None:
    """Set a unit's status and on-duty flag by hand (:func:`gridgov.store.set_unit_status`:
    a unit working on an incident is released, not set)."""
    store.set_unit_status(engine, unit_id, status, on_duty=on_duty)


def release(
    engine: Engine,
    unit_id: str,
    *,
    now: datetime,
    reason: str = "released",
    incident_id: str | None = None,
) -> str | None:
    """Free a unit and end its active assignment (:func:`gridgov.store.release_unit`);
    returns the incident it was released from."""
    return store.release_unit(engine, unit_id, now=now, reason=reason, incident_id=incident_id)
