"""Reporters' contact details move to their own table, referenced by an opaque id.

Until now an incident kept its reporter's contact (email, phone, name, device...) in
``incidents.reporter``, outcome notices were addressed to it, and stores written before the
report event named the role wrote it as that event's ``actor`` too, where the append-only log
would have kept it for ever. This revision:

1. creates ``reporters`` (one row per distinct contact, with a random ``reporter_id``) and
   ``privacy_log`` (the audit of reads and erasures);
2. adds ``incidents.reporter_id`` and fills it; ``incidents.reporter`` is dropped;
3. readdresses reporters' notices to the id;
4. rewrites the events that carry a contact as actor: the actor becomes ``reporter`` and the
   event's data gains the ``reporter_id`` (the append-only triggers are suspended for this
   one statement set, inside the migration's transaction, and restored);
5. records what it did, counts only, as a ``migration`` entry of ``privacy_log``.

The downgrade puts the contacts back on the incidents and notices; the events keep the id.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ACTOR = "migration-0010"
_REPORTER_ACTOR = "reporter"
_FK = "fk_incidents_reporter_id_reporters"
_LOG_KINDS = ("read", "erasure", "retention", "migration")

_incidents = sa.table(
    "incidents",
    sa.column("incident_id", sa.String()),
    sa.column("reporter", sa.Text()),
    sa.column("reporter_id", sa.String()),
    sa.column("created_at", sa.DateTime()),
)
_events = sa.table(
    "events",
    sa.column("event_id", sa.Integer()),
    sa.column("incident_id", sa.String()),
    sa.column("actor", sa.Text()),
    sa.column("role", sa.String()),
    sa.column("action", sa.String()),
    sa.column("data", sa.JSON()),
)
_notices = sa.table(
    "notices",
    sa.column("notice_id", sa.Integer()),
    sa.column("recipient_kind", sa.String()),
    sa.column("recipient", sa.Text()),
)
_reporters = sa.table(
    "reporters",
    sa.column("reporter_id", sa.String()),
    sa.column("contact", sa.Text()),
    sa.column("created_at", UTCDateTime()),
)
_log = sa.table(
    "privacy_log",
    sa.column("at", UTCDateTime()),
    sa.column("kind", sa.String()),
    sa.column("actor", sa.Text()),
    sa.column("data", sa.JSON()),
)


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.create_table(
        "reporters",
        sa.Column("reporter_id", sa.String(40), nullable=False),
        sa.Column("contact", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("erased_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("reporter_id", name="pk_reporters"),
        sa.CheckConstraint(
            "contact IS NULL OR erased_at IS NULL", name=op.f("ck_reporters_erased")
        ),
    )
    op.create_index("ix_reporters_erased_at", "reporters", ["erased_at"])
    op.create_table(
        "privacy_log",
        sa.Column("entry_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reporter_id", sa.String(40), nullable=True),
        sa.Column("incident_id", sa.String(64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name="pk_privacy_log"),
        sa.CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in _LOG_KINDS) + ")",
            name=op.f("ck_privacy_log_kind"),
        ),
    )
    op.create_index("ix_privacy_log_reporter_id", "privacy_log", ["reporter_id"])
    op.create_index("ix_privacy_log_kind_at", "privacy_log", ["kind", "at"])
    # ADD COLUMN ... REFERENCES works on both backends without rebuilding incidents.
    if postgres:
        op.add_column("incidents", sa.Column("reporter_id", sa.String(40), nullable=True))
        op.create_foreign_key(_FK, "incidents", "reporters", ["reporter_id"], ["reporter_id"])
    else:
        op.execute(
            f"ALTER TABLE incidents ADD COLUMN reporter_id VARCHAR(40) "
            f"CONSTRAINT {_FK} REFERENCES reporters (reporter_id)"
        )
    op.create_index("ix_incidents_reporter_id", "incidents", ["reporter_id"])
    counts = _move_contacts(bind, postgres)
    op.execute("ALTER TABLE incidents DROP COLUMN reporter")
    bind.execute(
        sa.insert(_log).values(at=datetime.now(UTC), kind="migration", actor=_ACTOR, data=counts)
    )


def _move_contacts(bind: sa.Connection, postgres: bool) -> dict[str, Any]:
    ids: dict[str, str] = {}  # contact -> reporter id (one per distinct contact)
    now = datetime.now(UTC)

    def reporter_id(contact: str) -> str:
        if contact not in ids:
            ids[contact] = f"rep-{uuid.uuid4().hex}"
            bind.execute(
                sa.insert(_reporters).values(
                    reporter_id=ids[contact], contact=contact, created_at=now
                )
            )
        return ids[contact]

    contacts: dict[str, str] = {}  # incident -> contact
    incidents = 0
    for incident_id, contact in bind.execute(
        sa.select(_incidents.c.incident_id, _incidents.c.reporter).where(
            _incidents.c.reporter.is_not(None), _incidents.c.reporter != ""
        )
    ).all():
        contacts[incident_id] = contact
        bind.execute(
            sa.update(_incidents)
            .where(_incidents.c.incident_id == incident_id)
            .values(reporter_id=reporter_id(contact))
        )
        incidents += 1
    notices = 0
    for notice_id, recipient in bind.execute(
        sa.select(_notices.c.notice_id, _notices.c.recipient).where(
            _notices.c.recipient_kind == "reporter", _notices.c.recipient.is_not(None)
        )
    ).all():
        bind.execute(
            sa.update(_notices)
            .where(_notices.c.notice_id == notice_id)
            .values(recipient=reporter_id(recipient))
        )
        notices += 1
    # Events naming a person: the report event of a reporter written with the contact as
    # actor, or any event whose actor is its incident's reporter's contact.
    rewrites = []
    for event_id, incident_id, actor, role, action, data in bind.execute(
        sa.select(
            _events.c.event_id,
            _events.c.incident_id,
            _events.c.actor,
            _events.c.role,
            _events.c.action,
            _events.c.data,
        ).where(_events.c.actor != _REPORTER_ACTOR)
    ).all():
        by_reporter = role == "reporter" and action == "report"
        if by_reporter or contacts.get(incident_id) == actor:
            rid = reporter_id(contacts.get(incident_id) or actor)
            rewrites.append((event_id, {**(data or {}), "reporter_id": rid}))
    if rewrites:
        _suspend_append_only(postgres, suspend=True)
        for event_id, data in rewrites:
            bind.execute(
                sa.update(_events)
                .where(_events.c.event_id == event_id)
                .values(actor=_REPORTER_ACTOR, data=data)
            )
        _suspend_append_only(postgres, suspend=False)
    return {
        "reporters_created": len(ids),
        "incidents_linked": incidents,
        "notices_readdressed": notices,
        "events_rewritten": len(rewrites),
        "event_ids_rewritten": sorted(e for e, _ in rewrites),
    }


_SQLITE_UPDATE_TRIGGER = (
    "CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
    "BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE on events is not allowed'); END"
)


def _suspend_append_only(postgres: bool, *, suspend: bool) -> None:
    # Within this migration's transaction only: a failure rolls the triggers back as well.
    if postgres:
        verb = "DISABLE" if suspend else "ENABLE"
        op.execute(f"ALTER TABLE events {verb} TRIGGER events_no_update_delete")
    elif suspend:
        op.execute("DROP TRIGGER events_no_update")
    else:
        op.execute(_SQLITE_UPDATE_TRIGGER)


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.add_column("incidents", sa.Column("reporter", sa.Text(), nullable=True))
    contact_of = dict(bind.execute(sa.select(_reporters.c.reporter_id, _reporters.c.contact)).all())
    for incident_id, rid in bind.execute(
        sa.select(_incidents.c.incident_id, _incidents.c.reporter_id).where(
            _incidents.c.reporter_id.is_not(None)
        )
    ).all():
        bind.execute(
            sa.update(_incidents)
            .where(_incidents.c.incident_id == incident_id)
            .values(reporter=contact_of.get(rid))
        )
    for notice_id, rid in bind.execute(
        sa.select(_notices.c.notice_id, _notices.c.recipient).where(
            _notices.c.recipient_kind == "reporter"
        )
    ).all():
        bind.execute(
            sa.update(_notices)
            .where(_notices.c.notice_id == notice_id)
            .values(recipient=contact_of.get(rid))
        )
    op.drop_index("ix_incidents_reporter_id", table_name="incidents")
    if postgres:
        op.drop_constraint(_FK, "incidents", type_="foreignkey")
    op.execute("ALTER TABLE incidents DROP COLUMN reporter_id")
    op.drop_table("privacy_log")
    op.drop_table("reporters")
