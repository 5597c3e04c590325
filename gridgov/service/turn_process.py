"""The intake's turn in a process of its own, one beside each server process (PostgreSQL).

The turn (one snapshot of the units, the batch's decisions and its writes) is taken by one
batch at a time across every process of a store, so its wall time sets the intake's rate. Run
in the request process, its Python shares that process's GIL with the request threads, and
took about twice its CPU time. So each process that dispatches batches starts a child (spawned,
so that it copies no thread's lock) that opens the same store and waits for work:

1. the parent's dispatch stage asks it to take the turn;
2. once it holds the turn, it asks back for the stored reports waiting (so that the reports
   stored meanwhile go with this batch, as in the parent);
3. it decides and commits them as the parent would (:func:`gridgov.store.dispatch_batch` with
   :func:`gridgov.service.intake_batch.turn_batch`, the same functions) on the store's own
   dispatch context, and sends back the decisions.

The parent's own turn stays the fallback: while the child starts (it builds the context once,
seconds), when the caller's context is not the store's own, on SQLite, with
``intake_turn_process`` off, and after a child failed (a new one is started after a pause).
A child lost after it took reports leaves them to the single path, which finds an incident the
child did commit no longer queued and answers it as stored. The child ends when its parent
closes the pipe or dies (it reads end-of-file).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gridgov import dispatch, forking, store
from gridgov.errors import StoreError
from gridgov.settings import get_settings
from gridgov.store import Engine
from gridgov.travel_model import Snapped
from gridgov.workflow import Role

log = logging.getLogger(__name__)

#: Seconds a child may take to start (import, open the store, build the context) before it is
#: given up; and to answer one step of a turn (far above a turn's tens of milliseconds: a
#: statement that hangs is cancelled by the statement timeout first).
_START_S = 180.0
_STEP_S = 120.0
#: After a child failed, the turn stays in the parent this long before another is started.
_PAUSE_S = 30.0


@dataclass(frozen=True)
class Report:
    """What the child needs of one stored report to decide it (picklable)."""

    incident: dispatch.Incident
    placement: dispatch.Placement
    matter: Any
    now: datetime
    actor: str
    role: Role | str
    # The report's snaps made in its request thread (dispatch.presnap), so that the turn does
    # not snap it again; empty when the parent did not know the modes yet.
    snaps: dict[str, Snapped] = field(default_factory=dict)


class ChildLost(Exception):
    """The child failed after it took reports: whether it committed them is not known."""


#: What :func:`run_turn` returns when the turn must run in the parent.
NOT_HERE: Any = object()


class _Child:
    """One child process and the pipe to it; used by one dispatch stage at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None
        self.proc: Any = None
        self.ready = threading.Event()
        self.failed_at: float | None = None
        self._starting = False
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """Whether the child is ready; starts one (in the background) when there is none."""
        if self.ready.is_set():
            if self.proc is not None and self.proc.is_alive():
                return True
            self._lose("it exited")
        with self._lock:
            paused = self.failed_at is not None and time.monotonic() - self.failed_at < _PAUSE_S
            if not self._starting and not paused:
                self._starting = True
                threading.Thread(target=self._start, name="gridgov-turn-start", daemon=True).start()
        return False

    def _start(self) -> None:
        mp = multiprocessing.get_context("spawn")
        parent, child = mp.Pipe()
        proc = mp.Process(
            target=_child_main, args=(self.url, child), name="gridgov-turn", daemon=True
        )
        try:
            proc.start()
            child.close()
            if not parent.poll(_START_S) or parent.recv() != "ready":
                raise ChildLost("it did not start")
        except BaseException as exc:  # the parent keeps its own turn; logged, retried later
            log.warning("the intake's turn process could not start: %s", exc)
            if proc.is_alive():
                proc.kill()
            with self._lock:
                self.failed_at, self._starting = time.monotonic(), False
            return
        self.conn, self.proc = parent, proc
        with self._lock:
            self._starting = False
        self.ready.set()

    def _lose(self, why: str) -> None:
        log.warning("the intake's turn process is lost (%s); the turn runs here for now", why)
        self.ready.clear()
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        with self._lock:
            self.failed_at = time.monotonic()
        self.conn = self.proc = None

    def recv(self) -> Any:
        if not self.conn.poll(_STEP_S):
            raise TimeoutError(f"no answer in {_STEP_S:.0f} s")
        return self.conn.recv()

    def turn(
        self, ctx: dispatch.DispatchContext, version: Any, take: Callable[[], Sequence[Report]]
    ) -> store.DispatchedBatch | None:
        """Run one turn in the child on the context of dataset ``version`` (``ctx``'s); ``take``
        is called at most once, when it holds it."""
        took = False
        try:
            self.conn.send(("turn", version))
            while True:
                kind, value = self.recv()
                if kind != "collect":
                    break
                took = True
                self.conn.send(list(take()))
        except (EOFError, OSError) as exc:  # TimeoutError included
            self._lose(str(exc) or type(exc).__name__)
            if took:
                raise ChildLost(str(exc)) from exc
            return NOT_HERE
        if kind == "error":  # what the turn raised there, raised here as it would have been
            raise value
        result, modes = value
        # The modes the child's dispatches needed: the next reports are snapped for them here.
        for kinds, needed in modes.items():
            ctx.note_modes(kinds, needed)
        return result


_CHILDREN: weakref.WeakKeyDictionary[Engine, _Child] = weakref.WeakKeyDictionary()
_CHILDREN_LOCK = threading.Lock()
# A forked child starts its own turn process: two processes on one pipe would mix their messages.
forking.renew_globals_in_child(
    __name__, _CHILDREN=weakref.WeakKeyDictionary, _CHILDREN_LOCK=threading.Lock
)


def start(engine: Engine, wait_s: float = 0.0) -> bool:
    """Start this process's turn process for ``engine`` unless it runs already (a server does
    so as it warms up, so that its first batches need not run here); whether it is ready,
    after waiting up to ``wait_s`` for it. False when the turn stays here (SQLite, or
    ``intake_turn_process`` off)."""
    child = _child_of(engine)
    if child is None:
        return False
    deadline = time.monotonic() + wait_s
    while not child.usable():  # starts one, or another once a failed one's pause is over
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        child.ready.wait(min(left, 0.1))
    return True


def stop(engine: Engine) -> None:
    """End this process's turn process for ``engine``, if any (it exits once its pipe closes;
    the turn runs here again until :func:`start`)."""
    with _CHILDREN_LOCK:
        child = _CHILDREN.pop(engine, None)
    if child is not None and child.ready.is_set():
        child.ready.clear()
        child.conn.close()
        child.proc.join(10)


def run_turn(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    take: Callable[[], Sequence[Report]],
) -> store.DispatchedBatch | None:
    """The batch's turn in this process's child: what :func:`gridgov.store.dispatch_batch`
    returns, or :data:`NOT_HERE` when the turn must run in the caller (``take`` not called).

    Raises
    ------
    ChildLost
        The child failed after ``take`` gave it reports.
    """
    child = _child_of(engine)
    if child is None:
        return NOT_HERE
    # Another context (a test's catalogue, a what-if travel model) is not the child's.
    own, version = store.store_context_version(engine, ctx)
    if not own or not child.usable():
        return NOT_HERE
    return child.turn(ctx, version, take)


def _child_of(engine: Engine) -> _Child | None:
    if not get_settings().intake_turn_process or engine.dialect.name != "postgresql":
        return None
    with _CHILDREN_LOCK:
        child = _CHILDREN.get(engine)
        if child is None:
            child = _CHILDREN[engine] = _Child(engine.url.render_as_string(hide_password=False))
        return child


def _child_main(url: str, conn: Any) -> None:
    """The child: open the store, build its context, then run turns until the pipe closes."""
    # The server's Ctrl-C reaches the whole process group; the child ends with its pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    engine = store.open_store(url)
    store.context_from_store(engine)
    store.settle_heap()  # a full collection would stop the child with the turn held
    conn.send("ready")
    while True:
        try:
            _, version = conn.recv()
            answer = _child_turn(engine, conn, version)
        except (EOFError, OSError):
            return
        try:
            conn.send(answer)
        except Exception as exc:  # an answer that does not pickle: why, in a few words
            why = answer[1] if answer[0] == "error" else exc
            conn.send(("error", StoreError(f"{type(why).__name__}: {why}"[:500])))


def _child_turn(engine: Engine, conn: Any, version: Any) -> tuple[str, Any]:
    """One turn in the child, on the context of the parent's dataset ``version``: ("done",
    what dispatch_batch returned) or ("error", why)."""
    from gridgov.service.intake_batch import turn_batch

    # The parent checked its context against the store for this request already: the same
    # version here needs no read of its own (a read and a pool checkout a turn).
    ctx = store.context_of_version(engine, version)

    def collect() -> store.TurnBatch | None:
        conn.send(("collect", None))
        reports: list[Report] = conn.recv()
        for r in reports:
            ctx.keep_snaps(r.incident.lon, r.incident.lat, r.snaps)
        return turn_batch(reports, ctx) if reports else None

    try:
        return "done", (store.dispatch_batch(engine, ctx, collect), ctx.noted_modes())
    except (EOFError, OSError):
        raise
    except Exception as exc:  # raised in the parent, as an in-process turn raises it
        return "error", exc
