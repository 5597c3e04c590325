"""Reporters' personal data: who may read it (audited), erasure on request, and retention.

The CLI (``gridgov privacy ...``), the API's contact route and the service's retention sweep
call these functions; none of them holds a privacy rule of its own. Contacts are kept apart by
the store (:mod:`gridgov.store.reporter_rows`); the one rule of who reads them is
:meth:`gridgov.service.scope.Scope.reads_contacts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from gridgov.errors import ForbiddenError, NotFoundError
from gridgov.service.scope import Scope
from gridgov.settings import Settings
from gridgov.store import Engine
from gridgov.store.incident_rows import query_incidents
from gridgov.store.reporter_rows import (
    ContactRead,
    erase_expired_contacts,
    erase_reporter,
    incident_reporter,
    read_contact,
)

__all__ = ["apply_retention", "erase", "reporter_contact"]


def reporter_contact(
    engine: Engine, scope: Scope, incident_id: str, *, actor: str, now: datetime | None = None
) -> ContactRead:
    """The contact details of an incident's reporter, for a caller allowed to call them back;
    the read is recorded in the privacy log (who, when, which reporter and incident).

    Raises
    ------
    NotFoundError
        No such incident, it lies outside the caller's scope, or it has no reporter.
    ForbiddenError
        The caller sees the incident but may not read contacts.
    """
    found = incident_reporter(engine, incident_id)
    # Visibility by the scope's own filters (a unit sees the incidents it was assigned to).
    _, visible = query_incidents(
        engine, incident_ids=[incident_id], limit=0, **scope.incident_filters()
    )
    if not visible:
        msg = f"no incident {incident_id!r} in the store"
        raise NotFoundError(msg)
    if not scope.reads_contacts(found.street_code):
        msg = "only the street's dispatcher reads a reporter's contact details"
        raise ForbiddenError(msg)
    if found.reporter_id is None:
        msg = f"incident {incident_id!r} has no reporter to call back"
        raise NotFoundError(msg)
    return read_contact(
        engine,
        found.reporter_id,
        incident_id=incident_id,
        actor=actor,
        now=now or datetime.now(UTC),
    )


def erase(
    engine: Engine, who: str | Sequence[str], *, actor: str, now: datetime | None = None
) -> list[str]:
    """Erase one person's contact details on request (every reporter row that any of ``who``
    names: a reporter id, an email, a phone number...); events stay, the privacy log records
    it. Returns the reporter ids erased."""
    return erase_reporter(engine, who, actor=actor, now=now or datetime.now(UTC))


def apply_retention(
    engine: Engine, settings: Settings, *, now: datetime | None = None
) -> list[str]:
    """Erase the contacts ``settings.contact_retention_days`` after their incidents ended."""
    return erase_expired_contacts(
        engine, days=settings.contact_retention_days, now=now or datetime.now(UTC)
    )
