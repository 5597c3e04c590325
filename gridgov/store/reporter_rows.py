"""Reporters' contact details, kept apart and erasable, and the audit of every read and erasure.

A reporter's contact (the email, phone, name, account or device a channel gave) is personal
data: it lives in the ``reporters`` table only. Incidents name the reporter by an opaque
``reporter_id``, the report event carries that id in its data, and outcome notices are
addressed to it. Erasing a reporter empties ``contact`` and keeps the row, so the event log
(append-only) and every reference stay whole. The ``privacy_log`` records each read and each
erasure by reporter id, never the details.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, not_, select, update

from gridgov.errors import InputError, NotFoundError
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.models import INCIDENTS, PRIVACY_LOG, REPORTERS
from gridgov.workflow import OPEN_STATES

__all__ = [
    "CONTACT_LABELS",
    "ContactRead",
    "IncidentReporter",
    "contact_values",
    "erase_expired_contacts",
    "erase_reporter",
    "incident_reporter",
    "insert_reporter",
    "privacy_log",
    "read_contact",
]

#: The labels of a contact's parts, as the channels write them ("email:a@b.cn; phone:138...").
CONTACT_LABELS = ("email", "phone", "name", "account", "device", "api_key")
_OPEN = [str(s) for s in OPEN_STATES]


def _new_reporter_id() -> str:
    # Random, so the id says nothing about the person and cannot be guessed from a contact.
    return f"rep-{uuid.uuid4().hex}"


def insert_reporter(connection: Connection, contact: str, now: datetime) -> str:
    """Store one reporter's contact on the caller's transaction; return its opaque id."""
    reporter_id = _new_reporter_id()
    connection.execute(
        insert(REPORTERS).values(reporter_id=reporter_id, contact=contact, created_at=now)
    )
    return reporter_id


def contact_values(contact: str) -> set[str]:
    """The values a contact holds (each ``label:value`` part's value, and the whole text),
    lower-cased: what an erasure request may name."""
    values = {contact.strip().lower()}
    for part in contact.split(";"):
        label, sep, value = part.strip().partition(":")
        if sep and label.strip().lower() in CONTACT_LABELS and value.strip():
            values.add(value.strip().lower())
    return values


def _log(
    connection: Connection,
    kind: str,
    at: datetime,
    actor: str,
    *,
    reporter_id: str | None = None,
    incident_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    connection.execute(
        insert(PRIVACY_LOG).values(
            at=at,
            kind=kind,
            actor=actor,
            reporter_id=reporter_id,
            incident_id=incident_id,
            data=data or {},
        )
    )


@dataclass(frozen=True)
class IncidentReporter:
    """Where an incident lies (for the caller's scope) and who reported it (an opaque id)."""

    incident_id: str
    street_code: str | None
    grid_code: str | None
    reporter_id: str | None


def incident_reporter(engine: Engine, incident_id: str) -> IncidentReporter:
    """The incident's place and reporter id (no personal data).

    Raises
    ------
    NotFoundError
        No such incident.
    """
    stmt = select(INCIDENTS.c.street_code, INCIDENTS.c.grid_code, INCIDENTS.c.reporter_id).where(
        INCIDENTS.c.incident_id == incident_id
    )
    with translate_errors(engine), engine.connect() as connection:
        row = connection.execute(stmt).first()
    if row is None:
        msg = f"no incident {incident_id!r} in the store"
        raise NotFoundError(msg)
    return IncidentReporter(incident_id, row.street_code, row.grid_code, row.reporter_id)


@dataclass(frozen=True)
class ContactRead:
    """A reporter's contact as read (None once erased), and when it was erased."""

    reporter_id: str
    contact: str | None
    erased_at: datetime | None


def read_contact(
    engine: Engine, reporter_id: str, *, incident_id: str | None, actor: str, now: datetime
) -> ContactRead:
    """Read a reporter's contact and record the read in the privacy log, in one transaction
    (no read without its audit entry)."""
    with translate_errors(engine), begin_write(engine) as connection:
        row = connection.execute(
            select(REPORTERS.c.contact, REPORTERS.c.erased_at).where(
                REPORTERS.c.reporter_id == reporter_id
            )
        ).first()
        if row is None:
            msg = f"no reporter {reporter_id!r} in the store"
            raise NotFoundError(msg)
        _log(
            connection,
            "read",
            now,
            actor,
            reporter_id=reporter_id,
            incident_id=incident_id,
            data={"erased": row.erased_at is not None},
        )
    return ContactRead(reporter_id, row.contact, row.erased_at)


def _erase(connection: Connection, reporter_ids: list[str], now: datetime) -> None:
    for start in range(0, len(reporter_ids), 500):
        chunk = reporter_ids[start : start + 500]
        connection.execute(
            update(REPORTERS)
            .where(REPORTERS.c.reporter_id.in_(chunk))
            .values(contact=None, erased_at=now)
        )


def erase_reporter(
    engine: Engine, who: str | Sequence[str], *, actor: str, now: datetime
) -> list[str]:
    """Erase the contact details of every reporter any of ``who`` names (a reporter id, or a
    value of their contact: an email, a phone number, an account...; case is ignored), on
    request.

    The reporters' rows stay (emptied), incidents, events and notices keep their opaque ids,
    and one ``erasure`` entry per reporter records that it happened (with the request's actor,
    not the details). Returns the reporter ids erased (empty when none matched; nothing is
    logged then).

    Raises
    ------
    InputError
        ``who`` names nothing.
    """
    wanted = {w.strip().lower() for w in ([who] if isinstance(who, str) else who)} - {""}
    if not wanted:
        msg = "name the reporter: a reporter id, email, phone number or account"
        raise InputError(msg)
    with translate_errors(engine), begin_write(engine) as connection:
        rows = connection.execute(
            select(REPORTERS.c.reporter_id, REPORTERS.c.contact).where(
                REPORTERS.c.contact.is_not(None)
            )
        ).all()
        ids = sorted(
            r.reporter_id
            for r in rows
            if r.reporter_id.lower() in wanted or wanted & contact_values(r.contact)
        )
        _erase(connection, ids, now)
        for reporter_id in ids:
            _log(connection, "erasure", now, actor, reporter_id=reporter_id)
    return ids


def erase_expired_contacts(
    engine: Engine, *, days: float, now: datetime, actor: str = "retention"
) -> list[str]:
    """Erase the contacts of reporters whose incidents all ended (closed, evaluated, rejected,
    cancelled) more than ``days`` ago: the retention rule. A reporter of any incident still
    open, or ended more recently, keeps theirs (the outcome is still owed). Each erasure is
    logged (kind ``retention``). Returns the reporter ids erased."""
    if days < 0:
        msg = f"the retention period must not be negative, got {days:g} days"
        raise InputError(msg)
    cutoff = now.astimezone(UTC) - timedelta(days=days)
    # An incident still owes its reporter something while open or ended after the cutoff;
    # updated_at is the time of its latest event (for an ended one, how it ended).
    recent = select(INCIDENTS.c.reporter_id).where(
        INCIDENTS.c.reporter_id.is_not(None),
        INCIDENTS.c.status.in_(_OPEN) | (INCIDENTS.c.updated_at > cutoff),
    )
    expired = select(REPORTERS.c.reporter_id).where(
        and_(
            REPORTERS.c.contact.is_not(None),
            REPORTERS.c.reporter_id.in_(select(INCIDENTS.c.reporter_id)),
            not_(REPORTERS.c.reporter_id.in_(recent)),
        )
    )
    with translate_errors(engine), begin_write(engine) as connection:
        ids = sorted(connection.execute(expired).scalars())
        _erase(connection, ids, now)
        for reporter_id in ids:
            _log(connection, "retention", now, actor, reporter_id=reporter_id, data={"days": days})
    return ids


def privacy_log(engine: Engine, reporter_id: str | None = None) -> list[dict[str, Any]]:
    """The privacy log (every read and erasure), oldest first; one reporter's when given."""
    stmt = select(PRIVACY_LOG).order_by(PRIVACY_LOG.c.entry_id)
    if reporter_id is not None:
        stmt = stmt.where(PRIVACY_LOG.c.reporter_id == reporter_id)
    with translate_errors(engine), engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(stmt)]
