"""What a field worker's "my tasks" list reads: the incidents a unit is on now, and the
reports a credential filed from the field page."""

from __future__ import annotations

from sqlalchemy import Engine, select

from gridgov.store.engine import translate_errors
from gridgov.store.models import ASSIGNMENTS, INCIDENTS

__all__ = ["active_incidents_of_unit", "incidents_from_source"]


def active_incidents_of_unit(engine: Engine, unit_id: str) -> list[str]:
    """The incidents the unit holds an active assignment on, oldest assignment first."""
    query = (
        select(ASSIGNMENTS.c.incident_id)
        .where(ASSIGNMENTS.c.unit_id == unit_id, ASSIGNMENTS.c.active.is_(True))
        .order_by(ASSIGNMENTS.c.assignment_id)
    )
    with translate_errors(engine), engine.connect() as connection:
        return [str(v) for v in connection.execute(query).scalars()]


def incidents_from_source(engine: Engine, source: str, limit: int = 50) -> list[str]:
    """The newest incidents stored with this ``source`` (a field page's credential)."""
    query = (
        select(INCIDENTS.c.incident_id)
        .where(INCIDENTS.c.source == source)
        .order_by(INCIDENTS.c.created_at.desc())
        .limit(limit)
    )
    with translate_errors(engine), engine.connect() as connection:
        return [str(v) for v in connection.execute(query).scalars()]
