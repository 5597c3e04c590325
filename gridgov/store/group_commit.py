"""Group commit: small writes (and reads) that threads of one process ask for together share
a transaction.

Every POST with an Idempotency-Key stores its answer after it runs, and every one but a report
(whose key goes in with it) claims its key before: one-row transactions, each with its own
commit (and WAL flush) and its statements' fixed costs, which under load cost the server more
than the rows themselves; the caller's credential and the dataset version are read once a
request too. A :class:`Group` lets the threads that ask
while one such transaction runs go together in the next: the first waiting thread runs the
whole queue through ``run`` (one transaction) and each thread gets its own item's result back.
A thread is only ever answered by a run that began after it asked, so a read is never older
than the request. No thread of its own: a lone request runs its own item at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine

from gridgov import forking

__all__ = ["Group", "group_of"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "lead", "value", "wake")

    def __init__(self, item: T, lock: threading.Lock) -> None:
        self.item = item
        self.done = False
        self.lead = False  # handed the group's next run
        self.value: R | None = None
        self.error: BaseException | None = None
        # One condition a waiting thread: a run wakes exactly the threads it answered and the
        # next leader, not every thread of the group (a notify_all woke them all each time).
        self.wake = threading.Condition(lock)


class Group(Generic[T, R]):
    """Runs ``run(items)`` for the items asked for together, up to ``most`` at a time.

    ``run`` returns one result per item, in order; what it raises is raised in the thread of
    every item of that run (none of them was written: ``run`` is one transaction).
    """

    def __init__(self, run: Callable[[Sequence[T]], Sequence[R]], most: int = 64) -> None:
        self._run = run
        self._most = max(1, most)
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._busy = False  # a thread leads a run

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item, self._lock)
        with self._lock:
            self._queue.append(slot)
            if not self._busy:
                self._busy = slot.lead = True
            while not (slot.done or slot.lead):
                slot.wake.wait()
        while not slot.done:  # this thread leads until its own item has run
            with self._lock:
                batch = self._queue[: self._most]
                del self._queue[: self._most]
            try:
                results = self._run([s.item for s in batch])
                for s, value in zip(batch, results, strict=True):
                    s.value = value
            except BaseException as exc:  # every item of the run hears of it
                for s in batch:
                    s.error = exc
            finally:
                with self._lock:
                    for s in batch:
                        s.done = True
                        s.wake.notify()
                    if slot.done:  # hand the lead to the oldest waiting item, if any
                        if self._queue:
                            self._queue[0].lead = True
                            self._queue[0].wake.notify()
                        else:
                            self._busy = False
        if slot.error is not None:
            raise slot.error
        return slot.value  # type: ignore[return-value]


_GROUPS: weakref.WeakKeyDictionary[Engine, dict[str, Group[Any, Any]]] = weakref.WeakKeyDictionary()
_GROUPS_LOCK = threading.Lock()
# A forked child's groups are its own: a parent's run may be led by a thread the child lacks.
forking.renew_globals_in_child(
    __name__, _GROUPS=weakref.WeakKeyDictionary, _GROUPS_LOCK=threading.Lock
)


def group_of(
    engine: Engine, name: str, run: Callable[[Engine, Sequence[T]], Sequence[R]]
) -> Group[T, R]:
    """The process's group ``name`` for ``engine`` (made on first use; ``run`` gets the engine)."""
    with _GROUPS_LOCK:
        groups = _GROUPS.setdefault(engine, {})
        group = groups.get(name)
        if group is None:
            # A weak reference: the group lives in the engine's entry and must not keep it.
            ref = weakref.ref(engine)

            def run_on_engine(items: Sequence[T]) -> Sequence[R]:
                owner = ref()
                assert owner is not None  # a caller holds the engine while it asks
                return run(owner, items)

            group = groups[name] = Group(run_on_engine)
        return group
