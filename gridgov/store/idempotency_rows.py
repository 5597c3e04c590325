"""The Idempotency-Key record: a claim with a lease, the incident it stored, and the answer.

A request that brings a key *claims* it (an INSERT on the key, so of two racing requests exactly
one wins, whichever worker each reaches). The claim is a *lease*: it carries a random claim id
and an expiry (``settings.idempotency_lease_s``). While it runs, a retry is told to wait; once
the answer is stored, every retry gets it back. A claim whose holder crashed (a killed worker, a
lost database connection) is not stuck: after its lease a retry *takes it over* with a new claim
id and runs the request again.

Running again must not store a second incident. So the incident is *linked* to the key in the
incident's own transaction (:func:`link_idempotency`, called by
:func:`gridgov.store.create_incident`): the link succeeds only while the caller's claim id still
holds the key, so a holder whose lease was taken over rolls its incident back, and a take-over
finds the incident the first holder stored (:attr:`Replay.incident_id`) and resumes it instead
of storing another. Once an incident exists its answer can always be given again.

A report needs no claim of its own before it runs: the key can be claimed *with* the incident,
in the incident's own transaction (:func:`claim_with_record`; a :class:`KeyClaim` that carries
its ``fingerprint`` is such a claim, not yet in the store). Of two racing requests the one whose
INSERT of the key loses stores nothing and hears :class:`KeyHeld`; it then takes the way above
(replay, mismatch, "still running", or a take-over). An answer given without storing anything
(a refused report) is kept by :func:`finish_idempotency` inserting the key with the answer.
That saves a transaction and a round trip on every report.

The record lives in the store rather than in one process because a deployment runs several
workers and a phone's retry can reach any of them. Keys are forgotten after
``settings.idempotency_ttl_h``, and the table never holds more than
``settings.idempotency_max_keys`` (:func:`purge_idempotency`, run on a schedule by the API).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from gridgov.errors import StoreError
from gridgov.settings import get_settings
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.group_commit import group_of
from gridgov.store.many_rows import RowsInsert, RowsUpdate
from gridgov.store.models import IDEMPOTENCY

__all__ = [
    "KeyClaim",
    "KeyHeld",
    "Replay",
    "claim_idempotency",
    "claim_with_record",
    "finish_idempotency",
    "link_idempotency",
    "purge_idempotency",
    "release_idempotency",
]


@dataclass(frozen=True)
class KeyClaim:
    """A key held by one run of a request: ``claim_id`` proves the lease is still this run's.

    With a ``fingerprint`` the claim is not in the store yet: the transaction that stores the
    request's record inserts it (:func:`claim_with_record`), or :func:`finish_idempotency`
    does with the answer.
    """

    scope: str
    key: str
    claim_id: str
    fingerprint: str | None = None


class KeyHeld(Exception):
    """A claim made with the record lost its key to another run: nothing of it was stored."""


def claim_with_record(scope: str, key: str, fingerprint: str) -> KeyClaim:
    """A claim of ``key`` to be inserted with the request's record (nothing is written yet)."""
    return KeyClaim(scope, key, secrets.token_hex(16), fingerprint)


@dataclass(frozen=True)
class Replay:
    """What :func:`claim_idempotency` found.

    ``outcome`` is ``claimed`` (go ahead; ``claim`` holds the lease), ``replay`` (the stored
    answer is in ``status``, ``media_type`` and ``body``), ``in_flight`` (another run holds a
    live lease) or ``mismatch`` (the key was used for another request). A claim taken over from
    a run that stored its incident and then failed carries that ``incident_id``.
    """

    outcome: str
    status: int | None = None
    media_type: str | None = None
    body: bytes | None = None
    claim: KeyClaim | None = None
    incident_id: str | None = None


def _lease(now: datetime) -> datetime:
    return now + timedelta(seconds=get_settings().idempotency_lease_s)


@dataclass(frozen=True)
class _Ask:
    scope: str
    key: str
    fingerprint: str
    now: datetime
    claim_id: str


def claim_idempotency(
    engine: Engine, scope: str, key: str, fingerprint: str, *, now: datetime | None = None
) -> Replay:
    """Claim ``key`` for a request, or find what the request that claimed it first left.

    The claims that threads of this process ask for together are inserted in one transaction
    (:mod:`gridgov.store.group_commit`); a key already held takes the way below, alone.

    Raises
    ------
    StoreError
        The store cannot be reached.
    """
    now = now or datetime.now(UTC)
    ask = _Ask(scope, key, fingerprint, now, secrets.token_hex(16))
    with translate_errors(engine):
        if group_of(engine, "idempotency-claim", _claim_together).submit(ask):
            return Replay("claimed", claim=KeyClaim(scope, key, ask.claim_id))
        for _ in range(2):
            with begin_write(engine) as connection:
                found = _claim_existing(connection, scope, key, fingerprint, now)
            if found is not None:
                return found
            # The row was purged or released meanwhile: claim it again.
            claim_id = secrets.token_hex(16)
            try:
                with begin_write(engine) as connection:
                    connection.execute(
                        insert(IDEMPOTENCY).values({**_claim_row(ask), "claim_id": claim_id})
                    )
                return Replay("claimed", claim=KeyClaim(scope, key, claim_id))
            except IntegrityError:
                pass
    return Replay("in_flight")


def _claim_row(ask: _Ask) -> dict[str, object]:
    return _key_row(
        ask.scope, ask.key, ask.fingerprint, ask.now, ask.claim_id, lease_until=_lease(ask.now)
    )


def _key_row(
    scope: str, key: str, fingerprint: str | None, now: datetime, claim_id: str, **more: object
) -> dict[str, object]:
    """A key's row as first inserted, by the run ``claim_id``; ``more`` gives its lease, its
    incident or its answer (the other columns are NULL)."""
    return {
        "scope": scope,
        "key": key,
        "fingerprint": fingerprint,
        "created_at": now,
        "claim_id": claim_id,
        "lease_until": None,
        "incident_id": None,
        "status": None,
        "media_type": None,
        "body": None,
        **more,
    }


def _row_of(claim: KeyClaim, now: datetime, **more: object) -> dict[str, object]:
    """The row of a claim made with the record, as :func:`_key_row` gives it."""
    return _key_row(claim.scope, claim.key, claim.fingerprint, now, claim.claim_id, **more)


_INSERT_KEYS = RowsInsert(
    IDEMPOTENCY,
    [
        "scope",
        "key",
        "fingerprint",
        "created_at",
        "claim_id",
        "lease_until",
        "incident_id",
        "status",
        "media_type",
        "body",
    ],
    returning=["scope", "key", "claim_id"],
    conflict=["scope", "key"],
)


def _insert_keys(connection: Connection, rows: list[dict[str, object]]) -> set[tuple[object, ...]]:
    """Insert key rows where their key is free; (scope, key, claim_id) of those inserted.

    In key order: two transactions that want the same keys wait for each other in one order,
    never in a cycle.
    """
    ordered = sorted(rows, key=lambda r: (str(r["scope"]), str(r["key"])))
    return {(r.scope, r.key, r.claim_id) for r in _INSERT_KEYS.run(connection, ordered)}


def _claim_together(engine: Engine, asks: Sequence[_Ask]) -> list[bool]:
    """Insert the claims of ``asks`` in one transaction; whether each took its key (False: the
    key is held, or another ask of the group has it)."""
    first: dict[tuple[str, str], _Ask] = {}
    for ask in asks:
        first.setdefault((ask.scope, ask.key), ask)
    with begin_write(engine) as connection:
        taken = _insert_keys(connection, [_claim_row(ask) for ask in first.values()])
    return [(a.scope, a.key, a.claim_id) in taken for a in asks]


def _claim_existing(
    connection: Connection, scope: str, key: str, fingerprint: str, now: datetime
) -> Replay | None:
    row = connection.execute(
        select(IDEMPOTENCY)
        .where(IDEMPOTENCY.c.scope == scope, IDEMPOTENCY.c.key == key)
        .with_for_update()
    ).first()
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        return Replay("mismatch")
    if row.status is not None:
        return Replay("replay", status=row.status, media_type=row.media_type, body=row.body)
    if row.lease_until is not None and row.lease_until > now:
        return Replay("in_flight")
    # The holder's lease ran out (it crashed, or lost the database): take the key over.
    claim_id = secrets.token_hex(16)
    connection.execute(
        update(IDEMPOTENCY)
        .where(IDEMPOTENCY.c.scope == scope, IDEMPOTENCY.c.key == key)
        .values(claim_id=claim_id, lease_until=_lease(now))
    )
    return Replay("claimed", claim=KeyClaim(scope, key, claim_id), incident_id=row.incident_id)


def link_idempotency(connection: Connection, claim: KeyClaim, incident_id: str) -> None:
    """Record, inside the transaction that stores the incident, that this key stored it.

    Raises
    ------
    StoreError
        The lease was taken over by a retry meanwhile: the caller's transaction must roll back
        (the retry stores or resumes the incident itself).
    """
    if not _link(connection, [(claim, incident_id)]):
        msg = "this request took too long and a retry with its Idempotency-Key took over"
        raise StoreError(msg)


def link_idempotency_many(connection: Connection, links: list[tuple[KeyClaim, str]]) -> None:
    """:func:`link_idempotency` for many (claim, incident) pairs, in one statement.

    Raises
    ------
    StoreError
        A lease was taken over by a retry meanwhile (nothing must be stored: the caller rolls
        back, and stores its reports one by one to learn which).
    """
    if not _link(connection, links):
        msg = "a retry with an Idempotency-Key of this batch took over"
        raise StoreError(msg)


_LINK = RowsUpdate(
    IDEMPOTENCY,
    keys=["scope", "key", "claim_id"],
    sets=["incident_id"],
    # A key whose answer is stored links nothing more.
    where=[IDEMPOTENCY.c.status.is_(None)],
)


def _link(connection: Connection, links: Sequence[tuple[KeyClaim, str]]) -> bool:
    """Link each claim's key to its incident while the claim still holds it; whether all did.

    A claim not in the store yet is inserted with its incident.

    Raises
    ------
    KeyHeld
        Such a claim's key is held by another run (its transaction must roll back).
    """
    fresh = [(c, i) for c, i in links if c.fingerprint is not None]
    if fresh:
        now = datetime.now(UTC)
        rows = [_row_of(c, now, lease_until=_lease(now), incident_id=i) for c, i in fresh]
        taken = _insert_keys(connection, rows)
        held = [c.key for c, _ in fresh if (c.scope, c.key, c.claim_id) not in taken]
        if held:
            msg = f"another request holds the Idempotency-Key(s) {', '.join(held)}"
            raise KeyHeld(msg)
    stored = [(c, i) for c, i in links if c.fingerprint is None]
    if not stored:
        return True
    linked = _LINK.run(
        connection,
        [
            {"scope": c.scope, "key": c.key, "claim_id": c.claim_id, "incident_id": i}
            for c, i in stored
        ],
    )
    return len(linked) == len(stored)


def finish_idempotency(
    engine: Engine, claim: KeyClaim, status: int, media_type: str | None, body: bytes
) -> bool:
    """Store the answer every retry with this key will get; False when the lease was lost (the
    run that took it over stores its own answer), or, for a claim made with the record that
    stored none, when another run holds the key. The answers that threads of this process
    store together share one transaction (:mod:`gridgov.store.group_commit`)."""
    with translate_errors(engine):
        return group_of(engine, "idempotency-finish", _finish_together).submit(
            (claim, status, media_type, body)
        )


_FINISH = RowsUpdate(
    IDEMPOTENCY,
    keys=["scope", "key", "claim_id"],
    sets=["status", "media_type", "body"],
    fixed={"lease_until": None},
)


def _finish_together(
    engine: Engine, answers: Sequence[tuple[KeyClaim, int, str | None, bytes]]
) -> list[bool]:
    """Store ``answers`` in one transaction (one statement on PostgreSQL, two when a claim
    made with the record stored no record: its key goes in with the answer)."""
    with begin_write(engine) as connection:
        stored = _FINISH.run(
            connection,
            [
                {
                    "scope": c.scope,
                    "key": c.key,
                    "claim_id": c.claim_id,
                    "status": status,
                    "media_type": media_type,
                    "body": body,
                }
                for c, status, media_type, body in answers
            ],
        )
        now = datetime.now(UTC)
        unsaved = [
            _row_of(c, now, status=status, media_type=media_type, body=body)
            for c, status, media_type, body in answers
            if c.fingerprint is not None and (c.scope, c.key, c.claim_id) not in stored
        ]
        if unsaved:
            stored |= _insert_keys(connection, unsaved)
    return [(c.scope, c.key, c.claim_id) in stored for c, *_ in answers]


def release_idempotency(engine: Engine, claim: KeyClaim, *, now: datetime | None = None) -> None:
    """Give a claim up after a failure on our side, so that a retry runs at once.

    A key that stored no incident is forgotten; one that did keeps its incident and only ends
    its lease, so that the retry resumes that incident rather than storing another.
    """
    now = now or datetime.now(UTC)
    mine = (
        IDEMPOTENCY.c.scope == claim.scope,
        IDEMPOTENCY.c.key == claim.key,
        IDEMPOTENCY.c.claim_id == claim.claim_id,
        IDEMPOTENCY.c.status.is_(None),
    )
    with translate_errors(engine), begin_write(engine) as connection:
        connection.execute(delete(IDEMPOTENCY).where(*mine, IDEMPOTENCY.c.incident_id.is_(None)))
        connection.execute(update(IDEMPOTENCY).where(*mine).values(lease_until=now))


def purge_idempotency(
    engine: Engine, *, now: datetime | None = None, max_keys: int | None = None
) -> int:
    """Forget keys older than ``settings.idempotency_ttl_h``, and the oldest beyond
    ``max_keys`` (default ``settings.idempotency_max_keys``); returns how many."""
    settings = get_settings()
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=settings.idempotency_ttl_h)
    max_keys = settings.idempotency_max_keys if max_keys is None else max_keys
    with translate_errors(engine), begin_write(engine) as connection:
        purged = connection.execute(delete(IDEMPOTENCY).where(IDEMPOTENCY.c.created_at < cutoff))
        count = int(purged.rowcount or 0)
        total = connection.execute(select(func.count()).select_from(IDEMPOTENCY)).scalar_one()
        if total > max_keys:
            # The newest max_keys stay (and any sharing the boundary's time).
            boundary = connection.execute(
                select(IDEMPOTENCY.c.created_at)
                .order_by(IDEMPOTENCY.c.created_at.desc())
                .offset(max_keys - 1)
                .limit(1)
            ).scalar_one()
            over = connection.execute(
                delete(IDEMPOTENCY).where(IDEMPOTENCY.c.created_at < boundary)
            )
            count += int(over.rowcount or 0)
    return count
