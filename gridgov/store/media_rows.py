"""Evidence photo rows: stored with the event they document, read per incident, removed.

Persistence only: which event a photo belongs to, the limits and the files on disk are
:mod:`gridgov.service.media`'s. A removal keeps the row (who, when, why) and clears nothing
else, so the incident's history still says a photo was there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update

from gridgov.errors import InputError, NotFoundError
from gridgov.store.engine import translate_errors, write_transaction
from gridgov.store.models import EVENTS, MEDIA

__all__ = [
    "MEDIA_FIELDS",
    "add_media",
    "latest_event_seq",
    "public_media",
    "read_media",
    "read_media_item",
    "record_removal",
    "sha_in_use",
]

#: The fields of a media row as read back.
MEDIA_FIELDS = tuple(c.name for c in MEDIA.columns)


def _item(row: Any) -> dict[str, Any]:
    return dict(zip(MEDIA_FIELDS, row, strict=True))


def latest_event_seq(
    connection: Connection, incident_id: str, actions: Iterable[str]
) -> int | None:
    """The ``seq`` of the incident's latest event among ``actions``; None when it has none."""
    query = select(func.max(EVENTS.c.seq)).where(
        EVENTS.c.incident_id == incident_id, EVENTS.c.action.in_(list(actions))
    )
    value = connection.execute(query).scalar()
    return None if value is None else int(value)


def add_media(
    engine: Engine,
    incident_id: str,
    actions: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    max_per_event: int,
    event_seq: int | None = None,
) -> list[dict[str, Any]]:
    """Store photos of one event: ``event_seq``, or the incident's latest of ``actions``.

    A photo already stored for that event (the same SHA-256: a retry) is not stored twice;
    its row is returned as it is. The event may hold at most ``max_per_event`` photos that
    are not removed, counted in the same transaction.

    Raises
    ------
    NotFoundError
        The incident has no such event (no resolve yet for a resolve photo...).
    InputError
        The event would hold more than ``max_per_event`` photos, or one of them was removed
        from it before; nothing was stored.
    """

    def work(connection: Connection) -> list[dict[str, Any]]:
        seq = event_seq
        if seq is None:
            seq = latest_event_seq(connection, incident_id, actions)
        if seq is None:
            msg = f"incident {incident_id} has no {' or '.join(actions)} event to attach to"
            raise NotFoundError(msg)
        kept = connection.execute(
            select(MEDIA.c.sha256).where(
                MEDIA.c.incident_id == incident_id,
                MEDIA.c.event_seq == seq,
                MEDIA.c.removed_at.is_(None),
            )
        ).scalars()
        held = set(kept)
        if len(held | {r["sha256"] for r in rows}) > max_per_event:
            msg = (
                f"event {seq} of incident {incident_id} already has {len(held)} photo(s); "
                f"an event holds at most {max_per_event}"
            )
            raise InputError(msg)
        out = []
        for row in rows:
            where = and_(
                MEDIA.c.incident_id == incident_id,
                MEDIA.c.event_seq == seq,
                MEDIA.c.sha256 == row["sha256"],
            )
            found = connection.execute(select(MEDIA).where(where)).first()
            if found is not None and found.removed_at is not None:
                msg = (
                    f"this photo was removed from event {seq} of incident {incident_id} "
                    f"({found.removed_reason}); it cannot be added to it again"
                )
                raise InputError(msg)
            if found is None:
                values = {**row, "incident_id": incident_id, "event_seq": seq}
                connection.execute(MEDIA.insert().values(**values))
                found = connection.execute(select(MEDIA).where(where)).one()
            out.append(_item(found))
        return out

    return write_transaction(engine, work)


def read_media(engine: Engine, incident_id: str) -> list[dict[str, Any]]:
    """Every photo of an incident, removed ones included, in the order of its events."""
    query = (
        select(MEDIA)
        .where(MEDIA.c.incident_id == incident_id)
        .order_by(MEDIA.c.event_seq, MEDIA.c.media_id)
    )
    with translate_errors(engine), engine.connect() as connection:
        return [_item(r) for r in connection.execute(query)]


def read_media_item(engine: Engine, incident_id: str, media_id: int) -> dict[str, Any]:
    """One photo of an incident (NotFoundError when the incident has no such photo)."""
    query = select(MEDIA).where(MEDIA.c.incident_id == incident_id, MEDIA.c.media_id == media_id)
    with translate_errors(engine), engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        msg = f"incident {incident_id} has no photo {media_id}"
        raise NotFoundError(msg)
    return _item(row)


def record_removal(
    engine: Engine, incident_id: str, media_id: int, *, at: datetime, by: str, reason: str
) -> dict[str, Any]:
    """Mark a photo removed (who, when, why); a photo already removed stays as it was."""

    def work(connection: Connection) -> dict[str, Any]:
        where = and_(MEDIA.c.incident_id == incident_id, MEDIA.c.media_id == media_id)
        connection.execute(
            update(MEDIA)
            .where(where, MEDIA.c.removed_at.is_(None))
            .values(removed_at=at, removed_by=by, removed_reason=reason, public=False)
        )
        row = connection.execute(select(MEDIA).where(where)).first()
        if row is None:
            msg = f"incident {incident_id} has no photo {media_id}"
            raise NotFoundError(msg)
        return _item(row)

    return write_transaction(engine, work)


def sha_in_use(engine: Engine, incident_id: str, sha256: str) -> bool:
    """Whether a photo of the incident that is not removed still uses these bytes' files."""
    query = select(func.count()).where(
        MEDIA.c.incident_id == incident_id,
        MEDIA.c.sha256 == sha256,
        MEDIA.c.removed_at.is_(None),
    )
    with translate_errors(engine), engine.connect() as connection:
        return bool(connection.execute(query).scalar())


def public_media(engine: Engine, incident_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The first photo each incident's reporter agreed to publish (and not removed)."""
    if not incident_ids:
        return {}
    query = (
        select(MEDIA)
        .where(
            MEDIA.c.incident_id.in_(list(incident_ids)),
            MEDIA.c.public.is_(True),
            MEDIA.c.removed_at.is_(None),
        )
        .order_by(MEDIA.c.media_id.desc())
    )
    with translate_errors(engine), engine.connect() as connection:
        # Newest first: the oldest is written last, so each incident keeps its first photo.
        return {r.incident_id: _item(r) for r in connection.execute(query)}
