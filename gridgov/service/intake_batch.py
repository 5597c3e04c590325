"""Micro-batched intake: reports that arrive together are stored and dispatched together.

Under load most of a report's cost is per transaction and per unit snapshot, not per report.
So :func:`submit` queues the report, and one of the waiting request threads (the *leader*;
no thread of its own, so a lone report goes straight through) takes everything queued and
(:func:`gridgov.store.store_and_dispatch`):

1. stores the reports in one transaction, each as the single path stores it, with its
   duplicate check and its Idempotency-Key link (one that fails is rolled back alone), and
   reads each street's dispatch mode (:func:`gridgov.service.dispatch_mode.decide_from`);
2. in a second transaction, takes the intake's turn (so that two batches, of this process or
   another, never decide on the same units), then
3. decides the registered reports to dispatch at once on ONE snapshot of the units, read
   under the turn: the priority-1 ones first, each as single dispatch decides it (it may
   preempt a busy unit; :func:`gridgov.dispatch.decide_urgent`), then the others without their
   units (:func:`gridgov.dispatch.decide_together`: the single rule in arrival order, improved
   jointly where they competed for units, never worse in total weighted travel time);
4. commits those decisions: incidents and units locked, every unit re-checked, the partial
   unique index behind it; a preempting decision re-queues the incident it preempts, as
   single dispatch does.

While the leader works, new reports queue for the next batch, so batches grow with the load
and cost nothing when it is light. Each report's thread gets back its own outcome. What a
batch does not decide goes the single path in the report's own thread: a decision whose units
were taken meanwhile (by a writer that takes no turn, such as a dispatcher's manual choice),
and any report the batch could not decide.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gridgov import dispatch, store
from gridgov.errors import StoreError
from gridgov.service import dispatch_mode
from gridgov.store import Engine
from gridgov.workflow import Role, State

log = logging.getLogger(__name__)

#: Threads of one process that may store and decide batches at the same time. One: batches
#: take the intake's turn one after another anyway, and a second leader halves the batches
#: (bench/api_load.py, 2 workers, 32 clients: 96 reports/s with one leader, 72 with two, 62
#: with four).
LEADERS = 1


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
    lead: bool = False


class _Combiner:
    """One queue per store and process; up to :data:`LEADERS` waiting threads drain it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Item] = []
        self._leaders = 0

    def run(self, item: _Item, most: int) -> None:
        with self._cond:
            self._queue.append(item)
            if self._leaders < LEADERS:
                self._leaders += 1
                item.lead = True
            else:
                self._cond.wait_for(lambda: item.done or item.lead)
            if item.done:
                return
        try:
            while self._lead_once(item, most):
                pass
        finally:
            self._hand_over()

    def _lead_once(self, item: _Item, most: int) -> bool:
        """Take and process one batch; False once ``item`` is answered."""
        with self._cond:
            if item.done:
                return False
            # Shared fairly between the leaders at work, at most ``most`` each.
            take = min(most, -(-len(self._queue) // self._leaders))
            batch = self._queue[:take]
            del self._queue[:take]
            if not batch:  # another leader took this report: wait for its answer
                self._cond.wait_for(lambda: item.done)
                return False
        try:
            _process(batch)
        except BaseException as exc:  # recorded on each report of the batch, never lost
            for other in batch:
                if not other.done:
                    other.error, other.done = exc, True
        finally:
            for other in batch:
                if not other.done:  # pragma: no cover - _process answers every report
                    other.error, other.done = StoreError("the report was not stored"), True
            with self._cond:
                self._cond.notify_all()
        return not item.done

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def _hand_over(self) -> None:
        """Pass the lead to the oldest waiting report not leading yet, or give it up."""
        with self._cond:
            for nxt in self._queue:
                if not nxt.lead:
                    nxt.lead = True
                    self._cond.notify_all()
                    return
            self._leaders -= 1


_COMBINERS: weakref.WeakKeyDictionary[Engine, _Combiner] = weakref.WeakKeyDictionary()
_COMBINERS_LOCK = threading.Lock()


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


def _process(batch: list[_Item]) -> None:
    """Store, decide and commit one batch (one transaction per dispatch context: nearly
    always one); every item ends ``done``."""
    for group in _by_context(batch):
        _store_and_dispatch(group)
    for it in batch:
        it.done = True


def _by_context(items: Sequence[_Item]) -> list[list[_Item]]:
    groups: dict[int, list[_Item]] = {}
    for it in items:
        groups.setdefault(id(it.ctx), []).append(it)
    return list(groups.values())


def _store_and_dispatch(group: list[_Item]) -> None:
    """Store the group, then decide and commit its dispatch in the intake's turn
    (:func:`gridgov.store.store_and_dispatch`); what the batch does not dispatch goes the
    single path (the outcome keeps no decision)."""
    ctx = group[0].ctx
    kinds = {str(k) for it in group if not _urgent(it.matter) for k in it.matter.required_kinds}
    urgent_kinds = {str(k) for it in group if _urgent(it.matter) for k in it.matter.required_kinds}

    def decide(
        stored: Sequence[store.StoredIncident | Exception],
        modes: dict[str, tuple[str, bool]],
        pool: dispatch.UnitPool | None,
        urgent_pool: dispatch.UnitPool | None,
    ) -> list[dispatch.Decision | Exception | None]:
        now_ = [
            i
            for i, (it, result) in enumerate(zip(group, stored, strict=True))
            if _dispatched_now(it, result, _mode(it, modes))
        ]
        first = [i for i in now_ if _urgent(group[i].matter)]
        rest = [i for i in now_ if not _urgent(group[i].matter)]
        out: list[dispatch.Decision | Exception | None] = [None] * len(group)
        given: set[str] = set()
        # The urgent ones first, as single dispatch would decide each (with preemption), and
        # the units they take are the rest's no longer.
        if urgent_pool is not None and first:
            urgent = dispatch.decide_urgent([_pending(group[i]) for i in first], urgent_pool, ctx)
            for i, decision in zip(first, urgent, strict=True):
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

    result = store.store_and_dispatch(
        group[0].engine,
        ctx,
        [it.create for it in group],
        kinds=sorted(kinds),
        urgent_kinds=sorted(urgent_kinds),
        decide=decide,
        now=max(it.now for it in group),
        by={it.create["incident"].incident_id: (it.actor, it.role) for it in group},
    )
    for it, stored, decision in zip(group, result.stored, result.decisions, strict=True):
        if isinstance(stored, Exception):
            it.error = stored
            continue
        kept = (
            decision
            if isinstance(decision, dispatch.Decision)
            and decision.incident.incident_id not in result.left_out
            else None
        )
        it.outcome = Outcome(stored, _mode(it, result.modes), kept)
    if result.left_out:
        log.info("%d report(s) of a batch go the single way", len(result.left_out))


def _mode(it: _Item, modes: dict[str, tuple[str, bool]]) -> dispatch_mode.ModeDecision:
    street = it.create["placement"].street_code
    return dispatch_mode.decide_from(street, modes.get(street, ("auto", True)), it.matter.priority)


def _pending(it: _Item) -> dispatch.Pending:
    return dispatch.Pending(it.create["incident"], it.matter, it.create["placement"])


def _dispatched_now(
    it: _Item, stored: store.StoredIncident | Exception, mode: dispatch_mode.ModeDecision
) -> bool:
    """Whether the batch dispatches this report: registered, and to be dispatched now by its
    street's mode."""
    return (
        not isinstance(stored, Exception)
        and stored.state == str(State.REGISTERED)
        and it.dispatch_now
        and mode.at_once
    )


def _urgent(matter: Any) -> bool:
    # A matter that may preempt a busy unit: decided one report at a time, before the others.
    return dispatch.may_preempt(matter.priority)


def waiting(engine: Engine) -> int:
    """Reports of this process queued for the store's next batch (a gauge of intake load)."""
    with _COMBINERS_LOCK:
        combiner = _COMBINERS.get(engine)
    return 0 if combiner is None else combiner.waiting()
