"""Reads of incidents as Open311 service requests: the facts a GeoReport v2 answer shows.

The Open311 front end (``api/open311_lists.py``) formats what these return and runs no SQL itself.
No reporter's personal data is read here: a service request shows none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from gridgov.store.engine import translate_errors
from gridgov.store.models import ASSIGNMENTS, DATASETS, EVENTS, INCIDENTS, OFFICES, UNITS
from gridgov.workflow import Action

__all__ = ["read_service_requests", "request_for_token", "services_changed_at"]


def services_changed_at(engine: Engine) -> datetime | None:
    """When the services (the catalogue and the district) last changed: the latest dataset
    load, or None before the first."""
    with translate_errors(engine), engine.connect() as connection:
        loaded: datetime | None = connection.execute(
            select(func.max(DATASETS.c.loaded_at))
        ).scalar()
    return loaded


def request_for_token(engine: Engine, token: str, *, source: str) -> str | None:
    """The incident a request token stands for, or None. Requests filed through ``source``
    have their id as token; other channels' incidents have no token."""
    with translate_errors(engine), engine.connect() as connection:
        found: str | None = connection.execute(
            select(INCIDENTS.c.incident_id).where(
                INCIDENTS.c.incident_id == token, INCIDENTS.c.source == source
            )
        ).scalar()
    return found


def read_service_requests(
    engine: Engine,
    *,
    limit: int,
    offset: int = 0,
    incident_ids: Sequence[str] | None = None,
    matter_codes: Sequence[str] = (),
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
    statuses: Sequence[str] | None = None,
    exclude_statuses: Sequence[str] | None = None,
    street_code: str | None = None,
    grid_code: str | None = None,
) -> list[dict[str, Any]]:
    """Incidents as service requests, newest first, at most ``limit`` after the first
    ``offset`` (a page).

    Every filter given must hold. ``incident_ids`` selects by id (the other filters still
    apply when given); ``reported_from``/``reported_to`` bound ``reported_at`` (both
    inclusive); ``statuses`` keeps and ``exclude_statuses`` drops workflow states;
    ``street_code`` and ``grid_code`` confine the answer to a caller's scope.

    Each record holds the incident's ``incident_id``, ``matter_code``, ``status``,
    ``reported_at``, ``updated_at``, ``duplicate_of``, ``description``, ``source``,
    ``street_code``, ``community_code`` and ``geometry`` (a WGS84 point), and, read in the same
    statement: ``note_state`` and ``note_reason`` of its latest event that says something
    (supervision is internal), ``dispatched_at`` (its latest dispatch) and ``agency``, the
    office answering for it as "office (department)" (or whichever of the two is known).

    The per-incident facts are correlated subqueries rather than joins of grouped or windowed
    derived tables: each is then one index lookup per incident (events by incident and seq,
    assignments by incident), where SQLite would scan a materialised derived table per row.
    """
    where = _where(
        incident_ids,
        matter_codes,
        reported_from,
        reported_to,
        statuses,
        exclude_statuses,
        street_code,
        grid_code,
    )
    inc = INCIDENTS
    page = (
        select(
            inc.c.incident_id,
            inc.c.matter_code,
            inc.c.status,
            inc.c.reported_at,
            inc.c.updated_at,
            inc.c.duplicate_of,
            inc.c.description,
            inc.c.source,
            inc.c.street_code,
            inc.c.community_code,
            inc.c.geometry,
        )
        .where(*where)
        .order_by(inc.c.reported_at.desc(), inc.c.incident_id)
        .limit(limit)
        .offset(offset)
        .subquery("page")
    )
    of_incident = EVENTS.c.incident_id == page.c.incident_id

    def latest_event(column: Any, *where: Any) -> Any:
        # ORDER BY seq DESC LIMIT 1: a backward walk of the (incident_id, seq) index.
        return (
            select(column)
            .where(of_incident, *where)
            .order_by(EVENTS.c.seq.desc())
            .limit(1)
            .scalar_subquery()
        )

    said = EVENTS.c.action != str(Action.SUPERVISE)
    lead_unit = (
        select(ASSIGNMENTS.c.unit_id)
        .where(ASSIGNMENTS.c.incident_id == page.c.incident_id, ASSIGNMENTS.c.role == "lead")
        .order_by(ASSIGNMENTS.c.assignment_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # Imported histories have no assignments; their events name the office that acted.
    event_office = latest_event(EVENTS.c.office_id, EVENTS.c.office_id.is_not(None))
    stmt = (
        select(
            page,
            latest_event(EVENTS.c.to_state, said).label("note_state"),
            latest_event(EVENTS.c.reason, said).label("note_reason"),
            # Written out as "action || ''" so that no planner prefers the (action, at) index
            # (every dispatch event of the district) to this incident's few events.
            latest_event(EVENTS.c.at, (EVENTS.c.action + "") == str(Action.DISPATCH)).label(
                "dispatched_at"
            ),
            OFFICES.c.name.label("office_name"),
            func.coalesce(OFFICES.c.department, UNITS.c.department).label("department"),
        )
        .select_from(
            page.outerjoin(UNITS, UNITS.c.unit_id == lead_unit).outerjoin(
                OFFICES, OFFICES.c.office_id == func.coalesce(UNITS.c.office_id, event_office)
            )
        )
        .order_by(page.c.reported_at.desc(), page.c.incident_id)
    )
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).mappings().all()
    out = []
    for row in rows:
        record = dict(row)
        office, department = record.pop("office_name"), record.pop("department")
        if office and department:
            record["agency"] = f"{office} ({department})"
        else:
            record["agency"] = office or department
        out.append(record)
    return out


def _where(
    incident_ids: Sequence[str] | None,
    matter_codes: Sequence[str],
    reported_from: datetime | None,
    reported_to: datetime | None,
    statuses: Sequence[str] | None,
    exclude_statuses: Sequence[str] | None,
    street_code: str | None,
    grid_code: str | None,
) -> list[ColumnElement[bool]]:
    inc = INCIDENTS
    out: list[ColumnElement[bool]] = []
    if incident_ids is not None:
        ids = list(incident_ids)
        out.append(inc.c.incident_id == ids[0] if len(ids) == 1 else inc.c.incident_id.in_(ids))
    if reported_from is not None:
        out.append(inc.c.reported_at >= reported_from)
    if reported_to is not None:
        out.append(inc.c.reported_at <= reported_to)
    if matter_codes:
        out.append(inc.c.matter_code.in_(list(matter_codes)))
    if statuses is not None:
        out.append(inc.c.status.in_(list(statuses)))
    if exclude_statuses is not None:
        out.append(inc.c.status.not_in(list(exclude_statuses)))
    if street_code is not None:
        out.append(inc.c.street_code == street_code)
    if grid_code is not None:
        out.append(inc.c.grid_code == grid_code)
    return out
