"""AVL position fixes stored in one statement: one unit's or a gateway's batch of many.

Fixes arrive from every unit every few seconds, so this path reads no frame and takes no lock
of its own: on PostgreSQL one statement checks, per fix, that the unit exists and lies in the
caller's scope, keeps only the newest fix of each unit (an older fix never overwrites a newer
one: :func:`fix_is_newer`, the one order rule), stores it and answers what became of every
fix. SQLite (one writer at a time) runs the same checks statement by statement inside one
write transaction.

The caller's credential may be checked by the same statement (``credential_id``): a fix path
that knows its caller from a per-process cache then still refuses a token revoked a moment
ago, with no second query and no second connection.

Whether a fix is too old for dispatch is the dispatcher's rule
(:func:`gridgov.dispatch.stale_before` gives the threshold the caller passes here as
``oldest``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shapely.geometry import Point
from sqlalchemy import Engine, literal_column, or_, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from gridgov.errors import CredentialRefusedError, InputError
from gridgov.store.access import credential_is_live
from gridgov.store.engine import (
    begin_write,
    detect_backend,
    translate_errors,
    write_transaction,
)
from gridgov.store.models import CREDENTIALS, UNITS

__all__ = ["FixIn", "FixResult", "fix_is_newer", "store_fixes"]

#: Unit filters a scope may give (:meth:`gridgov.service.scope.Scope.unit_filters`).
_SCOPE_COLUMNS = ("street_code", "unit_id")
#: SQLite caps the parameters of one statement.
_CHUNK = 500


@dataclass(frozen=True)
class FixIn:
    """One fix to store: WGS84, its time timezone-aware."""

    unit_id: str
    lon: float
    lat: float
    at: datetime


@dataclass(frozen=True)
class FixResult:
    """What became of one fix."""

    unit_id: str
    known: bool
    in_scope: bool
    stored: bool
    stale: bool


def fix_is_newer(stored_time: Any, at: Any) -> ColumnElement[bool]:
    """The order rule: a fix replaces the stored one unless that one is newer (a unit with
    no fix time, a static post, takes any fix)."""
    return or_(stored_time.is_(None), stored_time <= at)


def _check(fix: FixIn) -> None:
    lon, lat = float(fix.lon), float(fix.lat)
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        msg = f"({lon}, {lat}) is not a WGS84 longitude/latitude"
        raise InputError(msg)
    if fix.at.tzinfo is None:
        msg = "at must be timezone-aware"
        raise InputError(msg)


def _scope(filters: Mapping[str, Any]) -> tuple[str, Any]:
    """The one unit filter of a scope as (column, value); ('', None) for the district."""
    unknown = set(filters) - set(_SCOPE_COLUMNS)
    if unknown or len(filters) > 1:
        msg = f"unit filters must be one of {_SCOPE_COLUMNS}; got {sorted(filters)}"
        raise ValueError(msg)
    for name, value in filters.items():
        return name, value
    return "", None


# One statement: the fixes as arrays, the newest per unit in scope stored, an answer per fix
# (and whether the caller's credential is live: nothing is stored otherwise). The units read
# by the last SELECT are the statement's snapshot, before the UPDATE.
_PG_FIXES = """
WITH caller AS (
    SELECT {live} AS live
), fix AS (
    SELECT * FROM unnest(
        CAST(:idx AS integer[]), CAST(:ids AS text[]), CAST(:lons AS float8[]),
        CAST(:lats AS float8[]), CAST(:ats AS timestamptz[])
    ) AS f(i, unit_id, lon, lat, at)
), pick AS (
    SELECT DISTINCT ON (f.unit_id) f.i, f.unit_id, f.lon, f.lat, f.at
    FROM fix f JOIN units u ON u.unit_id = f.unit_id
    WHERE {scope} AND (SELECT live FROM caller)
    ORDER BY f.unit_id, f.at DESC, f.i DESC
), locked AS MATERIALIZED (
    -- Rows locked in one order (the ids'): two gateways' batches never deadlock.
    SELECT u.unit_id FROM units u JOIN pick p ON p.unit_id = u.unit_id
    ORDER BY u.unit_id FOR UPDATE OF u
), done AS (
    UPDATE units AS u
    SET position = ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326),
        position_time = p.at, position_source = :source
    FROM pick p JOIN locked l ON l.unit_id = p.unit_id
    WHERE u.unit_id = p.unit_id AND ({newer})
    RETURNING p.i
)
SELECT f.i, u.unit_id IS NOT NULL AS known, coalesce({scope}, false) AS in_scope,
       d.i IS NOT NULL AS stored, f.at < :oldest AS stale, (SELECT live FROM caller) AS live
FROM fix f LEFT JOIN units u ON u.unit_id = f.unit_id LEFT JOIN done d ON d.i = f.i
ORDER BY f.i
"""


def _sql(clause: ColumnElement[bool]) -> str:
    return str(clause.compile(dialect=postgresql.dialect()))


# One fix (a unit's own, the commonest): one UPDATE of one row, whose own row lock orders it
# against another fix of the unit (the order rule is re-checked on the newest row). The unit is
# read once more only to say why nothing was stored.
_PG_ONE_FIX = """
WITH caller AS (
    SELECT {live} AS live
), done AS (
    UPDATE units AS u
    SET position = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326),
        position_time = :at, position_source = :source
    WHERE u.unit_id = :unit_id AND {scope} AND ({newer}) AND (SELECT live FROM caller)
    RETURNING 1
)
SELECT (SELECT live FROM caller) AS live, EXISTS (SELECT 1 FROM done) AS stored,
       u.unit_id IS NOT NULL AS known, coalesce({scope}, false) AS in_scope
FROM (SELECT 1) AS one LEFT JOIN units u ON u.unit_id = :unit_id
"""


def _pg_statement(template: str, at: str, scope_column: str, check_caller: bool) -> Any:
    newer = _sql(fix_is_newer(literal_column("u.position_time"), literal_column(at)))
    scope = f"u.{scope_column} = :scope_value" if scope_column else "true"
    live = "true"
    if check_caller:
        rule = credential_is_live(
            lambda name: literal_column(f"c.{name}"),
            literal_column(":credential_id"),
            literal_column(":now"),
        )
        live = f"EXISTS (SELECT 1 FROM credentials c WHERE {_sql(rule)})"
    return text(template.format(scope=scope, newer=newer, live=live))


_PG_STATEMENTS = {
    (many, c, check): _pg_statement(
        _PG_FIXES if many else _PG_ONE_FIX, "p.at" if many else ":at", c, check
    )
    for many in (False, True)
    for c in ("", *_SCOPE_COLUMNS)
    for check in (False, True)
}


def store_fixes(
    engine: Engine,
    fixes: Sequence[FixIn],
    *,
    oldest: datetime,
    unit_filters: Mapping[str, Any] | None = None,
    source: str = "avl",
    credential_id: str | None = None,
    now: datetime | None = None,
) -> list[FixResult]:
    """Store position fixes, each unless a newer one of its unit is stored (or sent along).

    Parameters
    ----------
    engine
        The store.
    fixes
        The fixes (WGS84, aware times), in the order answered.
    oldest
        The oldest fix time that is not stale (``gridgov.dispatch.stale_before``).
    unit_filters
        The caller's scope (``street_code`` or ``unit_id``; empty: every unit). A unit
        outside it is left as it is.
    source
        Where the fixes come from (``avl``...).
    credential_id
        The caller's credential, checked in the same transaction
        (:func:`gridgov.store.access.credential_is_live` at ``now``), or None: not checked.
    now
        The time the credential must be live at (required with ``credential_id``).

    Returns
    -------
    list of FixResult
        One per fix, in order: whether its unit exists and lies in scope, whether it was
        stored, and whether it is older than ``oldest``.

    Raises
    ------
    InputError
        A fix not in WGS84 range, or with a naive time.
    CredentialRefusedError
        ``credential_id`` is not live (unknown, revoked, expired): nothing was stored.
    """
    for fix in fixes:
        _check(fix)
    if credential_id is not None and now is None:
        raise ValueError("checking the caller's credential needs the time to check it at")
    if not fixes:
        return []
    column, value = _scope(unit_filters or {})
    if detect_backend(engine) == "postgresql":
        return _pg_fixes(engine, fixes, oldest, column, value, source, (credential_id, now))
    return _sqlite_fixes(engine, fixes, oldest, column, value, source, (credential_id, now))


def _pg_fixes(
    engine: Engine,
    fixes: Sequence[FixIn],
    oldest: datetime,
    column: str,
    value: Any,
    source: str,
    caller: tuple[str | None, datetime | None],
) -> list[FixResult]:
    credential_id, now = caller
    params: dict[str, Any] = {
        "source": source,
        "scope_value": value,
        "credential_id": credential_id,
        "now": now,
    }
    if len(fixes) == 1:
        (fix,) = fixes
        params.update(unit_id=fix.unit_id, lon=float(fix.lon), lat=float(fix.lat), at=fix.at)
    else:
        params.update(
            idx=list(range(len(fixes))),
            ids=[f.unit_id for f in fixes],
            lons=[float(f.lon) for f in fixes],
            lats=[float(f.lat) for f in fixes],
            ats=[f.at for f in fixes],
            oldest=oldest,
        )
    statement = _PG_STATEMENTS[len(fixes) > 1, column, credential_id is not None]
    rows = write_transaction(engine, lambda c: c.execute(statement, params).all())
    if not rows[0].live:
        raise CredentialRefusedError()
    if len(fixes) == 1:
        (r,) = rows
        return [FixResult(fix.unit_id, r.known, bool(r.in_scope), r.stored, fix.at < oldest)]
    return [
        FixResult(fixes[r.i].unit_id, r.known, bool(r.in_scope), r.stored, r.stale) for r in rows
    ]


def _sqlite_fixes(
    engine: Engine,
    fixes: Sequence[FixIn],
    oldest: datetime,
    column: str,
    value: Any,
    source: str,
    caller: tuple[str | None, datetime | None],
) -> list[FixResult]:
    ids = sorted({f.unit_id for f in fixes})
    with translate_errors(engine), begin_write(engine) as connection:
        credential_id, now = caller
        if credential_id is not None:
            live = credential_is_live(CREDENTIALS.c.__getitem__, credential_id, now)
            if connection.execute(select(CREDENTIALS.c.credential_id).where(live)).first() is None:
                raise CredentialRefusedError()
        streets: dict[str, Any] = {}
        for start in range(0, len(ids), _CHUNK):
            stmt = select(UNITS.c.unit_id, UNITS.c.street_code).where(
                UNITS.c.unit_id.in_(ids[start : start + _CHUNK])
            )
            streets.update((r.unit_id, r.street_code) for r in connection.execute(stmt))

        def in_scope(unit_id: str) -> bool:
            if not column:
                return True
            return (unit_id if column == "unit_id" else streets.get(unit_id)) == value

        # The newest fix of each unit (the last sent among equal times) is the one stored.
        newest: dict[str, int] = {}
        for i, fix in enumerate(fixes):
            if fix.unit_id in streets and in_scope(fix.unit_id):
                j = newest.get(fix.unit_id)
                if j is None or fixes[j].at <= fix.at:
                    newest[fix.unit_id] = i
        stored: set[int] = set()
        for i in newest.values():
            fix = fixes[i]
            result = connection.execute(
                update(UNITS)
                .where(UNITS.c.unit_id == fix.unit_id, fix_is_newer(UNITS.c.position_time, fix.at))
                .values(
                    position=Point(float(fix.lon), float(fix.lat)),
                    position_time=fix.at,
                    position_source=source,
                )
            )
            if result.rowcount:
                stored.add(i)
    return [
        FixResult(
            f.unit_id,
            f.unit_id in streets,
            f.unit_id in streets and in_scope(f.unit_id),
            i in stored,
            f.at < oldest,
        )
        for i, f in enumerate(fixes)
    ]
