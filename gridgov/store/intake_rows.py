"""The micro-batched intake's writes: a batch of reports stored, then those their streets
dispatch at once decided and committed in the intake's turn.

Two batches at once (two leaders, or two worker processes) that each decide on a snapshot read
beforehand choose the same nearest units, and the later one must send its reports the single
way. So a batch's decisions are made and committed in one transaction that first takes the
intake's turn (one PostgreSQL advisory lock; SQLite serialises writers with BEGIN IMMEDIATE
already) and then reads the units' snapshot: the next batch waits for the turn and decides on a
snapshot that holds every earlier batch's assignments. The reports are stored before, in a
transaction of their own, so that the duplicate checks' locks (per matter) are not held while
another batch waits for the turn. The units are still locked and re-checked when committed (a
writer that takes no turn, such as a dispatcher's manual choice, may have taken one), and the
partial unique index on active assignments stays behind it all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from gridgov import dispatch
from gridgov.errors import InputError, StoreError
from gridgov.store.choice_rows import read_street_modes_within
from gridgov.store.decision_rows import Attempts as _Attempts
from gridgov.store.dispatch_rows import _commit_batch_within, _commit_within, _UnitsTaken
from gridgov.store.engine import begin_write, translate_errors, write_transaction
from gridgov.store.incident_rows import StoredIncident, _aware, store_reports_within
from gridgov.store.journal import SYSTEM_ACTOR
from gridgov.store.unit_snapshot import _snapshot_pool
from gridgov.workflow import Role

__all__ = ["BatchOutcome", "store_and_dispatch"]

log = logging.getLogger(__name__)

#: What the caller's rule gets: each report's stored outcome (or why it was not stored), the
#: dispatch mode of each street of the batch, the available units of the batch's kinds, and the
#: units of its urgent kinds busy ones included, for preemption (each None when there are none
#: to read). It returns, per report, a decision, the exception single dispatch raised for it,
#: or None (not dispatched by the batch).
Decide = Callable[
    [
        Sequence[StoredIncident | Exception],
        dict[str, tuple[str, bool]],
        dispatch.UnitPool | None,
        dispatch.UnitPool | None,
    ],
    Sequence[dispatch.Decision | Exception | None],
]

# The intake's turn: one key, so that batches never wait for each other in a circle.
_TAKE_INTAKE_TURN = text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), 0)")
_INTAKE_TURN_SPACE = 7_311_004


@dataclass(frozen=True)
class BatchOutcome:
    """What became of a batch: per report its stored outcome and its decision (None: not
    decided by the batch), the dispatch mode of each street of the batch, and the decisions
    left out of the commit, with why."""

    stored: list[StoredIncident | Exception]
    modes: dict[str, tuple[str, bool]]
    decisions: list[dispatch.Decision | Exception | None]
    left_out: dict[str, str]


def store_and_dispatch(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    reports: Sequence[dict[str, Any]],
    *,
    kinds: Sequence[str],
    urgent_kinds: Sequence[str] = (),
    decide: Decide,
    now: datetime,
    by: dict[str, tuple[str, Role | str]],
) -> BatchOutcome:
    """Store ``reports`` (each as :func:`gridgov.store.create_incident` stores it), then decide
    (``decide``) and commit their dispatch in the intake's turn.

    ``kinds`` are the force kinds the batch may dispatch (the snapshot reads those units),
    ``urgent_kinds`` those of its reports that may preempt (read with the busy units too);
    ``by`` gives each incident's actor and role for its dispatch event. A decision that preempts
    is committed first, as single dispatch commits it (the preempted incident re-queued), the
    others together. A report that cannot be
    stored is rolled back alone, as :func:`gridgov.store.create_incidents` does. When the
    decisions cannot be committed at all, none is decided by the batch (every decision is
    None) and the reports stay stored and registered: the caller dispatches them the single
    way. A database failure while storing stores nothing (:class:`~gridgov.errors.StoreError`).
    """
    now = _aware(now, "now")
    wanted, urgent = sorted(set(kinds)), sorted(set(urgent_kinds))

    def store(connection: Connection) -> tuple[list[Any], dict[str, tuple[str, bool]]]:
        stored = store_reports_within(connection, reports)
        streets = [
            r["placement"].street_code
            for r in reports
            if r.get("placement") is not None and r["placement"].street_code is not None
        ]
        return stored, read_street_modes_within(connection, streets) if streets else {}

    # Stored first, in a transaction of its own: the duplicate checks' locks (per matter) are
    # held only while storing, not while another batch waits for the turn.
    with translate_errors(engine), begin_write(engine) as connection:
        stored, modes = store(connection)

    def work(connection: Connection) -> BatchOutcome:
        _take_intake_turn(connection)
        # Read on a connection of its own once the turn is held: it sees every earlier
        # batch's committed assignments, and the state it reads is kept for the process's
        # next snapshots (a state read inside a write transaction never is).
        pool = _pool_or_none(engine, ctx, wanted, False, now)
        urgent_pool = _pool_or_none(engine, ctx, urgent, True, now)
        decisions = list(decide(stored, modes, pool, urgent_pool))
        ready = [d for d in decisions if isinstance(d, dispatch.Decision)]
        left_out: dict[str, str] = {}
        for d in ready:
            if any(a.preempts is not None for a in d.assignments):
                why = _commit_preempting(connection, d, now, by)
                if why is not None:
                    left_out[d.incident.incident_id] = why
        together = [d for d in ready if not any(a.preempts is not None for a in d.assignments)]
        if together:
            left_out.update(
                _commit_batch_within(connection, together, now, SYSTEM_ACTOR, Role.SYSTEM, by)
            )
        return BatchOutcome(stored, modes, decisions, left_out)

    try:
        return write_transaction(engine, work)
    except (StoreError, InputError) as exc:
        # Stored already: each report is dispatched the single way, which answers for itself.
        log.warning("a batch of %d report(s) goes the single way: %s", len(reports), exc)
        return BatchOutcome(stored, modes, [None] * len(stored), {})


def _pool_or_none(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    kinds: Sequence[str],
    with_busy: bool,
    now: datetime,
) -> dispatch.UnitPool | None:
    if not kinds:
        return None
    try:
        pool: dispatch.UnitPool = _snapshot_pool(engine, ctx, kinds, with_busy, now)
    except StoreError:  # units reloaded again and again: the single way decides, later
        return None
    return pool


def _commit_preempting(
    connection: Connection,
    decision: dispatch.Decision,
    now: datetime,
    by: dict[str, tuple[str, Role | str]],
) -> str | None:
    """Commit one preempting decision as single dispatch does, to a savepoint; why it could
    not be (its units or the preempted incident changed), or None."""
    actor, role = by.get(decision.incident.incident_id, (SYSTEM_ACTOR, Role.SYSTEM))
    try:
        with connection.begin_nested():
            _commit_within(connection, decision, now, _Attempts(count=1), actor=actor, role=role)
    except _UnitsTaken as taken:
        return f"its unit(s) {taken} were taken meanwhile; dispatch it again"
    except InputError as exc:
        return str(exc)
    return None


def _take_intake_turn(connection: Connection) -> None:
    """Wait for the intake's turn (PostgreSQL), held until the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(_TAKE_INTAKE_TURN, {"space": _INTAKE_TURN_SPACE})
