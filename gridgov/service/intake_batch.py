"""Micro-batched intake: reports that arrive together are stored and dispatched together.

Under load most of a report's cost is per transaction and per unit snapshot, not per report.
So :func:`submit` queues the report, and the waiting request threads themselves (no thread of
its own, so a lone report goes straight through) work the queue in two stages, one thread per
stage and process at a time, so that a process stores its next batch while this one is
dispatched:

1. **store**: everything queued is stored in one transaction, each report as the single path
   stores it, with its duplicate check and its Idempotency-Key link (one that fails is rolled
   back alone), and each street's dispatch mode is read
   (:func:`gridgov.store.store_batch`, :func:`gridgov.service.dispatch_mode.decide_from`);
   a report its street does not dispatch at once is answered here;
2. **dispatch**: everything stored and waiting is decided and committed in one transaction
   that takes the intake's turn (so that two batches, of this process or another, never decide
   on the same units) and then reads ONE snapshot of the units
   (:func:`gridgov.store.dispatch_batch`): the priority-1 reports first, each as single
   dispatch decides it (it may preempt a busy unit; :func:`gridgov.dispatch.decide_urgent`),
   then the others without their units (:func:`gridgov.dispatch.decide_together`: the single
   rule in arrival order, improved jointly where they competed for units, never worse in total
   weighted travel time). The commit locks incidents and units, re-checks every unit, and the
   partial unique index is behind it; a preempting decision re-queues the incident it preempts,
   as single dispatch does. On PostgreSQL the turn runs in the process's turn process
   (:mod:`gridgov.service.turn_process`), with its own GIL, when one is ready.

While a stage works, new reports queue for its next batch, so batches grow with the load and
cost nothing when it is light. Each report's thread gets back its own outcome. What a batch
does not decide goes the single path in the report's own thread: a decision whose units were
taken meanwhile (by a writer that takes no turn, such as a dispatcher's manual choice), and
any report the batch could not decide.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from gridgov import dispatch, forking, store
from gridgov.service import dispatch_mode, turn_process
from gridgov.store import Engine
from gridgov.workflow import Role, State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the batch made of one report: stored (and in which state), the street's mode, and
    the committed decision (None: not dispatched by the batch; see :func:`submit`)."""

    stored: store.StoredIncident
    mode: dispatch_mode.ModeDecision
    decision: dispatch.Decision | None = None


@dataclass
class _Item:
    engine: Engine
    ctx: dispatch.DispatchContext
    create: dict[str, Any]  # create_incident's arguments
    matter: Any
    now: datetime
    dispatch_now: bool
    actor: str
    role: Role | str
    outcome: Outcome | None = None
    error: BaseException | None = None
    done: bool = False
    # The item's thread waits on its own condition (of the combiner's lock): a stage wakes the
    # threads it answered and one thread for each stage left with work, never all of them.
    wake: threading.Condition | None = None


_STORE, _DISPATCH = "store", "dispatch"


class _Combiner:
    """One pipeline per store and process: reports waiting to be stored, and reports stored and
    waiting for their dispatch; a waiting request thread works each stage, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[_Item]] = {_STORE: [], _DISPATCH: []}
        self._busy: set[str] = set()
        self._idle: list[_Item] = []  # items whose threads wait for their outcome or a stage

    def run(self, item: _Item, most: int) -> None:
        item.wake = threading.Condition(self._lock)
        with self._lock:
            self._queues[_STORE].append(item)
        while True:
            with self._lock:
                while not item.done and self._vacant() is None:
                    self._idle.append(item)
                    item.wake.wait()
                    # Identity, not equality: items are dataclasses compared field by field.
                    self._idle = [it for it in self._idle if it is not item]
                if item.done:
                    return
                stage = self._vacant()
                assert stage is not None
                # The dispatch stage takes its reports once it holds the intake's turn.
                batch = self._take(_STORE, most) if stage == _STORE else []
                self._busy.add(stage)
            try:
                if stage == _STORE:
                    _store(self, batch)
                else:
                    batch = _dispatch(self, most)
            except BaseException as exc:  # recorded on each report of the batch, never lost
                for other in batch:
                    if not other.done:
                        other.error, other.done = exc, True
            finally:
                with self._lock:
                    self._busy.discard(stage)
                    # Every waiting thread whose report is done now (a failed dispatch stage
                    # ends reports it never handed back), then the workers the stages need.
                    for other in self._idle:
                        if other.done and other.wake is not None:
                            other.wake.notify()
                    self._call_workers(item)

    def _call_workers(self, running: _Item) -> None:
        """Wake one waiting thread for each stage left with work and nobody at it (the running
        thread, when its report is not done yet, goes back to the stages itself)."""
        vacant = sum(
            1 for stage in (_DISPATCH, _STORE) if stage not in self._busy and self._queues[stage]
        )
        if not running.done:
            vacant -= 1
        while vacant > 0 and self._idle:
            other = self._idle.pop(0)
            if not other.done and other.wake is not None:
                other.wake.notify()
                vacant -= 1

    def _vacant(self) -> str | None:
        """A stage with work and nobody at it; the dispatch first, which answers reports."""
        for stage in (_DISPATCH, _STORE):
            if stage not in self._busy and self._queues[stage]:
                return stage
        return None

    def _take(self, stage: str, most: int) -> list[_Item]:
        batch = self._queues[stage][:most]
        del self._queues[stage][:most]
        return batch

    def take_stored(self, most: int, ctx: dispatch.DispatchContext) -> list[_Item]:
        """Up to ``most`` stored reports of dispatch context ``ctx``, in the order stored."""
        with self._lock:
            queue = self._queues[_DISPATCH]
            batch = [it for it in queue if it.ctx is ctx][:most]
            chosen = {id(it) for it in batch}
            queue[:] = [it for it in queue if id(it) not in chosen]
            return batch

    def first_stored(self) -> _Item | None:
        """The report that has waited longest for its dispatch."""
        with self._lock:
            queue = self._queues[_DISPATCH]
            return queue[0] if queue else None

    def stored(self, items: Sequence[_Item]) -> None:
        """Hand stored reports on to the dispatch stage."""
        with self._lock:
            self._queues[_DISPATCH].extend(items)

    def waiting(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())


_COMBINERS: weakref.WeakKeyDictionary[Engine, _Combiner] = weakref.WeakKeyDictionary()
_COMBINERS_LOCK = threading.Lock()
# A forked child's pipeline is its own: the parent's queued items wait on the parent's threads.
forking.renew_globals_in_child(
    __name__, _COMBINERS=weakref.WeakKeyDictionary, _COMBINERS_LOCK=threading.Lock
)


def submit(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    create: dict[str, Any],
    *,
    matter: Any,
    now: datetime,
    dispatch_now: bool,
    actor: str,
    role: Role | str,
    most: int,
) -> Outcome:
    """Store (and, when its street dispatches at once, dispatch) one report in a batch.

    ``create`` holds :func:`gridgov.store.create_incident`'s arguments. Returns the report's
    outcome; raises what storing it raised (nothing of it was stored then). An outcome
    without a decision for a registered report whose street dispatches at once means the
    caller dispatches it the single way.
    """
    with _COMBINERS_LOCK:
        combiner = _COMBINERS.get(engine)
        if combiner is None:
            combiner = _COMBINERS[engine] = _Combiner()
    item = _Item(engine, ctx, create, matter, now, dispatch_now, actor, role)
    combiner.run(item, max(1, most))
    if item.error is not None:
        raise item.error
    assert item.outcome is not None
    return item.outcome


def _store(combiner: _Combiner, batch: list[_Item]) -> None:
    """Stage 1: store the batch in one transaction; answer the reports it does not dispatch
    now, and hand the others on to the dispatch stage."""
    result = store.store_batch(batch[0].engine, [it.create for it in batch])
    onward: list[_Item] = []
    for it, stored in zip(batch, result.stored, strict=True):
        if isinstance(stored, Exception):
            it.error, it.done = stored, True
            continue
        mode = _mode(it, result.modes)
        it.outcome = Outcome(stored, mode)
        if _dispatched_now(it, stored, mode):
            onward.append(it)
        else:
            it.done = True
    combiner.stored(onward)


def _dispatch(combiner: _Combiner, most: int) -> list[_Item]:
    """Stage 2: take the intake's turn, then every stored report waiting (of one dispatch
    context: nearly always all), and decide and commit their dispatch
    (:func:`gridgov.store.dispatch_batch`); what the batch does not dispatch goes the single
    path (the outcome keeps no decision)."""
    first = combiner.first_stored()
    if first is None:
        return []
    ctx = first.ctx
    taken: list[_Item] = []

    def take(snaps: bool = False) -> list[turn_process.Report]:
        taken.extend(combiner.take_stored(most, ctx))
        return [_report(it, snaps) for it in taken]

    def collect() -> store.TurnBatch | None:
        reports = take()
        return turn_batch(reports, ctx) if reports else None

    try:
        # In this process's turn process when it has one ready (the reports take their snaps
        # there; here they are in the context already), else here.
        result = turn_process.run_turn(first.engine, ctx, partial(take, snaps=True))
        if result is turn_process.NOT_HERE:
            result = store.dispatch_batch(first.engine, ctx, collect)
    except turn_process.ChildLost as exc:
        # Maybe committed there: each report goes the single way, which answers for itself.
        log.warning("the dispatch of %d report(s) goes the single way: %s", len(taken), exc)
        result = store.DispatchedBatch([None] * len(taken), {})
    except BaseException as exc:  # recorded on each report, never lost
        if not taken:  # failed before the turn: the waiting reports get the error, not a retry
            taken.extend(combiner.take_stored(most, ctx))
        for it in taken:
            it.error, it.done = exc, True
        raise
    if result is not None:
        for it, decision in zip(taken, result.decisions, strict=True):
            assert it.outcome is not None
            if (
                isinstance(decision, dispatch.Decision)
                and decision.incident.incident_id not in result.left_out
            ):
                it.outcome = replace(it.outcome, decision=decision)
        if result.left_out:
            log.info("%d report(s) of a batch go the single way", len(result.left_out))
    for it in taken:
        it.done = True
    return taken


def _report(it: _Item, snaps: bool) -> turn_process.Report:
    incident = it.create["incident"]
    return turn_process.Report(
        incident,
        it.create["placement"],
        it.matter,
        it.now,
        it.actor,
        it.role,
        it.ctx.kept_snaps(incident.lon, incident.lat, it.matter.required_kinds) if snaps else {},
    )


def turn_batch(
    group: Sequence[turn_process.Report], ctx: dispatch.DispatchContext
) -> store.TurnBatch:
    """What the turn decides for ``group``: the priority-1 reports first, each as single
    dispatch decides it, then the others together without the units those took."""
    urgent = [i for i, it in enumerate(group) if _urgent(it.matter)]
    rest = [i for i, it in enumerate(group) if not _urgent(it.matter)]

    def decide(
        pool: dispatch.UnitPool | None, urgent_pool: dispatch.UnitPool | None
    ) -> list[dispatch.Decision | Exception | None]:
        out: list[dispatch.Decision | Exception | None] = [None] * len(group)
        given: set[str] = set()
        # The urgent ones first, as single dispatch would decide each (with preemption), and
        # the units they take are the rest's no longer.
        if urgent_pool is not None and urgent:
            decided = dispatch.decide_urgent([_pending(group[i]) for i in urgent], urgent_pool, ctx)
            for i, decision in zip(urgent, decided, strict=True):
                out[i] = decision
                if isinstance(decision, dispatch.Decision):
                    given.update(a.unit_id for a in decision.assignments)
        if pool is not None and rest:
            decisions = dispatch.decide_together(
                [_pending(group[i]) for i in rest], pool, ctx, exclude=frozenset(given)
            )
            for i, decision in zip(rest, decisions, strict=True):
                out[i] = decision
        return out

    return store.TurnBatch(
        count=len(group),
        kinds=sorted({str(k) for i in rest for k in group[i].matter.required_kinds}),
        urgent_kinds=sorted({str(k) for i in urgent for k in group[i].matter.required_kinds}),
        by={it.incident.incident_id: (it.actor, it.role) for it in group},
        decide=decide,
        now=max(it.now for it in group),
    )


def _mode(it: _Item, modes: dict[str, tuple[str, bool]]) -> dispatch_mode.ModeDecision:
    street = it.create["placement"].street_code
    return dispatch_mode.decide_from(street, modes.get(street, ("auto", True)), it.matter.priority)


def _pending(it: turn_process.Report) -> dispatch.Pending:
    return dispatch.Pending(it.incident, it.matter, it.placement)


def _dispatched_now(
    it: _Item, stored: store.StoredIncident, mode: dispatch_mode.ModeDecision
) -> bool:
    """Whether the batch dispatches this report: registered, and to be dispatched now by its
    street's mode."""
    return stored.state == str(State.REGISTERED) and it.dispatch_now and mode.at_once


def _urgent(matter: Any) -> bool:
    # A matter that may preempt a busy unit: decided one report at a time, before the others.
    return dispatch.may_preempt(matter.priority)


def waiting(engine: Engine) -> int:
    """Reports of this process queued for the store's next batch (a gauge of intake load)."""
    with _COMBINERS_LOCK:
        combiner = _COMBINERS.get(engine)
    return 0 if combiner is None else combiner.waiting()
