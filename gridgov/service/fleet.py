"""Unit state as the front ends change it: status by hand, release from a job, position fixes.

The writing is the store's (each change atomic, with the unit's row locked); this module owns
what comes before it: the fix's time (a device clock may run a little ahead, not more), the
conversion of the fix from the sender's CRS, and whether the stored fix is stale
(:func:`gridgov.dispatch.stale_before`, the threshold of the one staleness rule), and what
the answer to each fix of a gateway's batch is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from gridgov import dispatch, store
from gridgov.crs import normalize_crs, to_wgs84
from gridgov.errors import InputError, NotFoundError
from gridgov.model import UnitStatus
from gridgov.service.clock import sent_time
from gridgov.service.scope import Scope
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


@dataclass(frozen=True)
class SentFix:
    """A fix as an AVL gateway sends it: in ``crs``, ``at`` None meaning now."""

    unit_id: str
    lon: float
    lat: float
    crs: str = "wgs84"
    at: datetime | None = None


#: What becomes of a fix of a batch.
FixOutcome = Literal["accepted", "stale", "unknown_unit", "out_of_scope", "invalid"]


@dataclass(frozen=True)
class FixAnswer:
    """The answer to one fix of a batch: ``accepted`` (stored and fresh), ``stale`` (older
    than the stored fix, or too old for dispatch: ``stored`` says which), ``unknown_unit``,
    ``out_of_scope`` (a unit the caller may not move) or ``invalid`` (``reason`` says why);
    the position in WGS84 when it could be read."""

    unit_id: str
    result: FixOutcome
    stored: bool
    lon: float | None = None
    lat: float | None = None
    at: datetime | None = None
    reason: str | None = None


def _outcome(r: store.FixResult) -> FixOutcome:
    # A unit outside the scope answers like a missing one to a single fix (404), but a
    # gateway is told which of its units it may not move.
    if not r.known:
        return "unknown_unit"
    if not r.in_scope:
        return "out_of_scope"
    return "accepted" if r.stored and not r.stale else "stale"


def record_fixes(
    engine: Engine,
    fixes: Sequence[SentFix],
    scope: Scope,
    *,
    source: str = "avl",
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> list[FixAnswer]:
    """Record many units' position fixes at once (an AVL gateway's batch), in one statement.

    Each fix is checked on its own: a bad one (a time from the future, coordinates its CRS
    cannot convert) is answered ``invalid`` and the others are stored. Of several fixes of
    one unit the newest is stored; a fix never overwrites a newer stored one.

    Parameters
    ----------
    engine
        The store.
    fixes
        The fixes, answered in this order.
    scope
        The caller's scope: only its units are moved.
    source, now, max_age
        As for :func:`record_position`.
    """
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    answers: list[FixAnswer | None] = []
    good: list[store.FixIn] = []
    for fix in fixes:
        try:
            at = sent_time(fix.at, now, "at")
            crs = normalize_crs(fix.crs)
            if crs == "wgs84":  # most gateways: no conversion (the range is checked below)
                wlon, wlat = float(fix.lon), float(fix.lat)
            else:
                x, y = to_wgs84(fix.lon, fix.lat, crs)
                wlon, wlat = float(x[0]), float(y[0])
            finite = math.isfinite(wlon) and math.isfinite(wlat)
            if not (finite and -180 <= wlon <= 180 and -90 <= wlat <= 90):
                msg = f"({wlon}, {wlat}) is not a WGS84 longitude/latitude"
                raise InputError(msg)
        except InputError as exc:  # a CRSError too
            answers.append(FixAnswer(fix.unit_id, "invalid", False, reason=str(exc)))
            continue
        answers.append(None)
        good.append(store.FixIn(fix.unit_id, wlon, wlat, at))
    results = iter(
        store.store_fixes(
            engine,
            good,
            oldest=dispatch.stale_before(now, max_age),
            unit_filters=scope.unit_filters(),
            source=source,
        )
    )
    kept = iter(good)
    out = []
    for answer in answers:
        if answer is None:
            fix_in, r = next(kept), next(results)
            answer = FixAnswer(r.unit_id, _outcome(r), r.stored, fix_in.lon, fix_in.lat, fix_in.at)
        out.append(answer)
    return out


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
    scope: Scope | None = None,
    credential_id: str | None = None,
) -> PositionFix:
    """Record a unit's position fix (an older fix never overwrites a newer one).

    One statement reads and writes the unit (:func:`gridgov.store.store_fixes`).

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
    scope
        The caller's scope (default: the whole district); a unit outside it is not found.
    credential_id
        The caller's credential, to be checked live in the fix's own statement (a caller
        known from a cache), or None.

    Raises
    ------
    InputError
        A time from the future, or not a point.
    CRSError
        An unknown CRS, or a point it cannot convert.
    NotFoundError
        No such unit (in the caller's scope).
    CredentialRefusedError
        ``credential_id`` is unknown, revoked or expired: nothing was stored.
    """
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    at = sent_time(at, now, "at")
    x, y = to_wgs84(lon, lat, normalize_crs(crs))
    fix = store.FixIn(unit_id, float(x[0]), float(y[0]), at)
    (result,) = store.store_fixes(
        engine,
        [fix],
        oldest=dispatch.stale_before(now, max_age),
        unit_filters={} if scope is None else scope.unit_filters(),
        source=source,
        credential_id=credential_id,
        now=now,
    )
    if not (result.known and result.in_scope):
        msg = f"no unit {unit_id!r} in the store"
        raise NotFoundError(msg)
    return PositionFix(unit_id, result.stored, result.stale, fix.lon, fix.lat, at)


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
