"""The micro-batched intake's writes: a batch of reports stored (:func:`store_batch`), then those
their streets dispatch at once decided and committed in the intake's turn
(:func:`dispatch_batch`).

Two batches at once (two worker processes, or two hosts) that each decide on a snapshot read
beforehand choose the same nearest units, and the later one must send its reports the single
way. So a batch's decisions are made and committed in one transaction that first takes the
intake's turn (one PostgreSQL advisory lock; SQLite serialises writers with BEGIN IMMEDIATE
already) and then reads the units' snapshot: the next batch waits for the turn and decides on a
snapshot that holds every earlier batch's assignments. The reports are stored before, in a
transaction of their own, so that the duplicate checks' locks (per matter) are not held while
another batch waits for the turn, and so that a process stores its next batch while this one is
dispatched. The units are still locked and re-checked when committed (a writer that takes no
turn, such as a dispatcher's manual choice, may have taken one), and the partial unique index
on active assignments stays behind it all.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from gridgov import dispatch
from gridgov.errors import InputError, StoreError
from gridgov.settings import get_settings
from gridgov.store.choice_rows import read_street_modes_within
from gridgov.store.dispatch_rows import Checked, _commit_batch_within, _UnitsTaken, check_within
from gridgov.store.engine import begin_write, translate_errors, write_transaction
from gridgov.store.incident_rows import StoredIncident, _aware, store_reports_within
from gridgov.store.journal import SYSTEM_ACTOR
from gridgov.store.unit_snapshot import _snapshot_pools
from gridgov.workflow import Role

__all__ = [
    "TURN_PHASES",
    "DispatchedBatch",
    "StoredBatch",
    "TurnBatch",
    "dispatch_batch",
    "store_batch",
]

log = logging.getLogger(__name__)

#: What the caller's rule gets: the available units of the batch's kinds, and the units of its
#: urgent kinds busy ones included, for preemption (each None when there are none to read). It
#: returns, per report, a decision, the exception single dispatch raised for it, or None (not
#: dispatched by the batch).
Decide = Callable[
    [dispatch.UnitPool | None, dispatch.UnitPool | None],
    Sequence[dispatch.Decision | Exception | None],
]

#: The phases of a turn, in order, as the turn log (setting ``turn_log``) names them: the wait
#: for the turn, taking the reports, the units' snapshot, the decisions, the preempting
#: decisions' checks, the writes and the commit; every one but the wait holds the turn.
TURN_PHASES = ("wait", "collect", "snapshot", "decide", "check", "write", "commit")

# The intake's turn: one key, so that batches never wait for each other in a circle.
_TAKE_INTAKE_TURN = text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), 0)")
_INTAKE_TURN_SPACE = 7_311_004


@dataclass(frozen=True)
class StoredBatch:
    """What storing a batch gave: per report its stored outcome (or why it was not stored),
    and the dispatch mode of each street of the batch."""

    stored: list[StoredIncident | Exception]
    modes: dict[str, tuple[str, bool]]


@dataclass(frozen=True)
class TurnBatch:
    """The reports a dispatch takes once it holds the intake's turn: how many, the force kinds
    they may be dispatched (the snapshot reads those units) and those of the reports that may
    preempt (read with the busy units too), each incident's actor and role for its dispatch
    event, the rule that decides them, and the time of the decisions."""

    count: int
    kinds: Sequence[str]
    urgent_kinds: Sequence[str]
    by: dict[str, tuple[str, Role | str]]
    decide: Decide
    now: datetime


@dataclass(frozen=True)
class DispatchedBatch:
    """What became of a batch's dispatch: per report its decision (None: not decided by the
    batch) and the decisions left out of the commit, with why."""

    decisions: list[dispatch.Decision | Exception | None]
    left_out: dict[str, str]


def store_batch(engine: Engine, reports: Sequence[dict[str, Any]]) -> StoredBatch:
    """Store ``reports`` (each as :func:`gridgov.store.create_incident` stores it) in one
    transaction, and read the dispatch mode of their streets in it.

    A report that cannot be stored is rolled back alone, as
    :func:`gridgov.store.create_incidents` does. A database failure stores nothing
    (:class:`~gridgov.errors.StoreError`). Its own transaction, outside the intake's turn: the
    duplicate checks' locks (per matter) are held only while storing, not while batches wait
    for the turn, and the next batch is stored while this one is dispatched.
    """
    streets = sorted(
        {
            r["placement"].street_code
            for r in reports
            if r.get("placement") is not None and r["placement"].street_code is not None
        }
    )
    with translate_errors(engine), begin_write(engine) as connection:
        stored = store_reports_within(connection, reports)
        modes = read_street_modes_within(connection, streets) if streets else {}
    return StoredBatch(stored, modes)


def dispatch_batch(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    collect: Callable[[], TurnBatch | None],
) -> DispatchedBatch | None:
    """Take the intake's turn, then collect the stored reports to dispatch (``collect``, called
    once, when the turn is first held), decide them on one snapshot of the units and commit.

    Collected in the turn, not before: the reports stored while this process waited for the
    turn go with it, instead of waiting for the next. None when ``collect`` found nothing. A
    decision that preempts is committed first, as single dispatch commits it (the preempted
    incident re-queued), the others together. When the decisions cannot be committed at all,
    none is decided by the batch (every decision is None) and the reports stay stored and
    registered: the caller dispatches them the single way.
    """
    taken: list[TurnBatch | None] = []
    clock = _TurnClock(get_settings().turn_log)

    def work(connection: Connection) -> DispatchedBatch | None:
        _take_intake_turn(connection)
        clock.mark("wait")
        if not taken:  # once: a transaction run again decides the same reports
            taken.append(collect())
        clock.mark("collect")
        batch = taken[0]
        if batch is None:
            return None
        now = _aware(batch.now, "now")
        # Read in this transaction, which has written nothing yet, once the turn is held: it
        # sees every earlier batch's committed assignments, and the state it reads is kept
        # for the process's next snapshots.
        pool, urgent_pool = _pools(engine, ctx, batch, now, connection)
        clock.mark("snapshot")
        decisions = list(batch.decide(pool, urgent_pool))
        clock.mark("decide")
        ready = [d for d in decisions if isinstance(d, dispatch.Decision)]
        left_out: dict[str, str] = {}
        checked: list[Checked] = []
        for d in ready:
            if any(a.preempts is not None for a in d.assignments):
                outcome = _check_preempting(connection, d, now)
                if isinstance(outcome, str):
                    left_out[d.incident.incident_id] = outcome
                else:
                    checked.append(outcome)
        together = [d for d in ready if not any(a.preempts is not None for a in d.assignments)]
        clock.mark("check")
        if together or checked:
            left_out.update(
                _commit_batch_within(
                    connection, together, now, SYSTEM_ACTOR, Role.SYSTEM, batch.by, checked
                )
            )
        clock.mark("write")
        return DispatchedBatch(decisions, left_out)

    try:
        result = write_transaction(engine, work)
        clock.mark("commit")
        if result is not None:
            clock.write(len(result.decisions), len(result.left_out))
        return result
    except (StoreError, InputError) as exc:
        # Stored already: each report is dispatched the single way, which answers for itself
        # (taken now if the turn itself failed, so that none waits for a turn that fails).
        batch = taken[0] if taken else collect()
        if batch is None:
            return None
        log.warning("the dispatch of %d report(s) goes the single way: %s", batch.count, exc)
        return DispatchedBatch([None] * batch.count, {})


def _pools(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    batch: TurnBatch,
    now: datetime,
    connection: Connection,
) -> tuple[dispatch.UnitPool | None, dispatch.UnitPool | None]:
    """The batch's available units, and its urgent kinds' units busy ones included, from one
    read (each None when the batch has no such kinds, or the units were reloaded again and
    again: the single way decides then, later)."""
    wanted = [
        (sorted(set(k)), busy) for k, busy in ((batch.kinds, False), (batch.urgent_kinds, True))
    ]
    asked = [(k, busy) for k, busy in wanted if k]
    if not asked:
        return None, None
    try:
        pools = iter(_snapshot_pools(engine, ctx, asked, now, connection, unwritten=True))
    except StoreError:
        return None, None
    pool, urgent = (next(pools) if k else None for k, _ in wanted)
    return pool, urgent


def _check_preempting(
    connection: Connection, decision: dispatch.Decision, now: datetime
) -> Checked | str:
    """Lock and re-check one preempting decision and re-queue the incidents it preempts, as
    single dispatch does, to a savepoint (its own rows are written with the batch's); why it
    cannot be committed (its units or the preempted incident changed)."""
    try:
        with connection.begin_nested():
            offices, requeued = check_within(connection, decision, now)
    except _UnitsTaken as taken:
        return f"its unit(s) {taken} were taken meanwhile; dispatch it again"
    except InputError as exc:
        return str(exc)
    return Checked(decision, offices, requeued)


def _take_intake_turn(connection: Connection) -> None:
    """Wait for the intake's turn (PostgreSQL), held until the transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.execute(_TAKE_INTAKE_TURN, {"space": _INTAKE_TURN_SPACE})


class _TurnClock:
    """The time of each phase of one turn (:data:`TURN_PHASES`), for the turn log (setting
    ``turn_log``; None: nothing timed, nothing written): a committed line for measurement
    instead of timers added by hand and removed again. Each phase runs from the end of the
    previous one; ``wait`` from the call (a pool checkout and BEGIN included). A transaction
    run again adds its phases to the first run's.

    Per phase: the wall time (``ms``), the turn thread's own CPU time (``cpu_ms``) and, on
    Linux, the time the thread was ready to run but waited for a core (``queued_ms``, from
    the kernel's ``schedstat``). What is left of the wall time is spent waiting for
    PostgreSQL or for the process's GIL: so a held turn can be told apart into its own work,
    the machine's other work, and the database.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.ms: dict[str, float] = {}
        self.cpu_ms: dict[str, float] = {}
        self.queued_ms: dict[str, float] | None = None
        if path is not None:
            self.last = self._now()
            if self.last[2] is not None:
                self.queued_ms = {}

    @staticmethod
    def _now() -> tuple[float, float, float | None]:
        """Wall, thread CPU and run-queue wait, in ms (the last None without ``schedstat``)."""
        wall, cpu = time.perf_counter() * 1e3, time.thread_time() * 1e3
        try:
            # "<on the CPU ns> <waiting on a run queue ns> <time slices>"
            with open("/proc/thread-self/schedstat", "rb") as stat:
                queued: float | None = int(stat.read().split()[1]) / 1e6
        except (OSError, IndexError, ValueError):
            queued = None
        return wall, cpu, queued

    def mark(self, phase: str) -> None:
        if self.path is None:
            return
        (wall, cpu, queued), (wall0, cpu0, queued0) = self._now(), self.last
        self.ms[phase] = self.ms.get(phase, 0.0) + wall - wall0
        self.cpu_ms[phase] = self.cpu_ms.get(phase, 0.0) + cpu - cpu0
        if self.queued_ms is not None and queued is not None and queued0 is not None:
            self.queued_ms[phase] = self.queued_ms.get(phase, 0.0) + queued - queued0
        self.last = (wall, cpu, queued)

    def write(self, reports: int, left_out: int) -> None:
        if self.path is None:
            return
        line: dict[str, Any] = {
            "at": time.time(),  # the end of the turn (epoch s): a run's window selects its turns
            "pid": os.getpid(),
            "reports": reports,
            "left_out": left_out,
            "ms": {k: round(v, 3) for k, v in self.ms.items()},
            "cpu_ms": {k: round(v, 3) for k, v in self.cpu_ms.items()},
        }
        if self.queued_ms is not None:
            line["queued_ms"] = {k: round(v, 3) for k, v in self.queued_ms.items()}
        try:
            # One write of one line in append mode: the processes' lines do not interleave.
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
        except OSError as exc:  # the turn is committed: a diagnostic never fails its reports
            log.warning("the turn log %s cannot be written: %s", self.path, exc)
