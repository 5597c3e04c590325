"""Unit state in the store: release, status and position fixes, each atomic."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from shapely.geometry import Point
from sqlalchemy import (
    Connection,
    Engine,
    select,
    update,
)

from gridgov.errors import (
    InputError,
    NotFoundError,
)
from gridgov.model import UnitStatus
from gridgov.store.district_load import (
    end_active_assignments,
)
from gridgov.store.engine import (
    begin_write,
    translate_errors,
)
from gridgov.store.incident_rows import _aware
from gridgov.store.models import (
    ASSIGNMENTS,
    UNITS,
)
from gridgov.store.position_fixes import fix_is_newer


def _free_status(on_duty: Any) -> str:
    return str(UnitStatus.AVAILABLE) if on_duty else str(UnitStatus.OFF_DUTY)


def _lock_unit(connection: Connection, unit_id: str) -> Any:
    row = connection.execute(
        select(UNITS.c.unit_id, UNITS.c.status, UNITS.c.on_duty, UNITS.c.busy_incident_id)
        .where(UNITS.c.unit_id == unit_id)
        .with_for_update()
    ).first()
    if row is None:
        msg = f"no unit {unit_id!r} in the store"
        raise NotFoundError(msg)
    return row


def release_unit(
    engine: Engine,
    unit_id: str,
    *,
    now: datetime,
    reason: str = "released",
    incident_id: str | None = None,
) -> str | None:
    """Free a unit and end its active assignment, atomically.

    Parameters
    ----------
    engine
        The store.
    unit_id
        The unit.
    now
        When it became free (timezone-aware); an assignment never ends before it began.
    reason
        Recorded on the assignment (``done``, ``cancelled``...).
    incident_id
        Only release the unit from this incident: when it has been preempted and moved on
        meanwhile, nothing changes and None is returned.

    Returns
    -------
    str or None
        The incident the unit was released from (None when it was on none, or not on
        ``incident_id``). A busy unit becomes ``available`` (``off_duty`` when off duty).

    Raises
    ------
    NotFoundError
        No such unit.
    """
    now = _aware(now, "now")
    with translate_errors(engine), begin_write(engine) as connection:
        row = _lock_unit(connection, unit_id)
        if incident_id is not None and row.busy_incident_id != incident_id:
            return None
        # The unit's work ends; the incident keeps its status (finishing it is the workflow's).
        end_active_assignments(
            connection, now, reason, ASSIGNMENTS.c.unit_id == unit_id, requeue=False
        )
        if row.status == str(UnitStatus.BUSY):
            connection.execute(
                update(UNITS)
                .where(UNITS.c.unit_id == unit_id)
                .values(status=_free_status(row.on_duty), busy_incident_id=None)
            )
        return row.busy_incident_id if row.busy_incident_id is not None else None


def set_unit_status(
    engine: Engine,
    unit_id: str,
    status: UnitStatus | str,
    *,
    on_duty: bool | None = None,
) -> None:
    """Set a unit's status (and on-duty flag) by hand, atomically.

    ``busy`` marks it busy on something outside this store (no incident). A unit working on
    an incident is freed with :func:`release_unit` instead, which ends its assignment.

    Raises
    ------
    InputError
        An unknown status, or the unit is on an incident and would stop being busy.
    NotFoundError
        No such unit.
    """
    try:
        new = UnitStatus(status)
    except ValueError:
        msg = f"unknown unit status {status!r}; expected one of {', '.join(UnitStatus)}"
        raise InputError(msg) from None
    with translate_errors(engine), begin_write(engine) as connection:
        row = _lock_unit(connection, unit_id)
        if row.busy_incident_id is not None and new is not UnitStatus.BUSY:
            msg = (
                f"unit {unit_id} is working on incident {row.busy_incident_id}; "
                "release it (release_unit) instead of setting its status"
            )
            raise InputError(msg)
        values: dict[str, Any] = {"status": str(new)}
        if on_duty is not None:
            values["on_duty"] = bool(on_duty)
        connection.execute(update(UNITS).where(UNITS.c.unit_id == unit_id).values(**values))


def update_unit_position(
    engine: Engine,
    unit_id: str,
    lon: float,
    lat: float,
    at: datetime,
    *,
    source: str = "avl",
) -> bool:
    """Record a unit's position fix (WGS84), unless a newer one is stored already.

    AVL messages can arrive out of order; an older fix never overwrites a newer one.

    Returns
    -------
    bool
        Whether the position was stored.

    Raises
    ------
    InputError
        Not a WGS84 point, or ``at`` is not timezone-aware.
    NotFoundError
        No such unit.
    """
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        msg = f"({lon}, {lat}) is not a WGS84 longitude/latitude"
        raise InputError(msg)
    at = _aware(at, "at")
    with translate_errors(engine), begin_write(engine) as connection:
        result = connection.execute(
            update(UNITS)
            .where(
                UNITS.c.unit_id == unit_id,
                fix_is_newer(UNITS.c.position_time, at),
            )
            .values(position=Point(lon, lat), position_time=at, position_source=source)
        )
        if result.rowcount:
            return True
        exists = connection.execute(
            select(UNITS.c.unit_id).where(UNITS.c.unit_id == unit_id)
        ).first()
    if exists is None:
        msg = f"no unit {unit_id!r} in the store"
        raise NotFoundError(msg)
    return False
