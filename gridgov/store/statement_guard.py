"""Statement timeouts that hold even when the database server stops answering altogether.

PostgreSQL's own ``statement_timeout`` is enforced by the server, so a server that is frozen
(stopped, or behind a network that holds the packets) never enforces it, and psycopg waits on
the socket for ever: every request thread, then every pooled connection, then the whole service
hangs. :func:`guard_engine` wraps the dialect calls that talk to the server (execute, commit,
rollback and the pool's ping) so that a call still waiting a second after the statement timeout
has its socket shut down from a watchdog thread. psycopg then fails at once with a disconnect,
SQLAlchemy drops the connection from the pool, and the caller gets a
:class:`~gridgov.errors.StoreError` (503) instead of hanging.

On SQLite, which runs in the process, the same wrapper installs a progress handler that
interrupts a statement running past the timeout.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from gridgov import forking

__all__ = ["guard_engine", "guarded_call"]

#: How much longer than the statement timeout the client waits before cutting the connection
#: (the server's own timeout, when it is alive, answers first with a clean error).
_GRACE_S = 1.0
#: How often the watchdog looks at the clock.
_TICK_S = 0.1
#: SQLite: the progress handler runs every this many virtual-machine instructions.
_SQLITE_STEPS = 10_000


class _Watchdog:
    """One daemon thread per process that cuts connections whose call has run too long."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._next = 0
        self._pid = -1
        # The thread takes the lock ten times a second, so a fork often copies it held. The
        # armed calls are the parent's, on the parent's sockets: none is a child's to cut.
        forking.renew_in_child(self, "_lock")
        forking.renew_in_child(self, "_armed", dict)

    def _start(self) -> None:
        # Started lazily, and again in a forked child (threads do not survive a fork).
        if self._pid != os.getpid():
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="gridgov-statement-guard", daemon=True).start()

    def arm(self, fd: int, timeout_s: float) -> int:
        with self._lock:
            self._start()
            self._next += 1
            self._armed[self._next] = (time.monotonic() + timeout_s, fd)
            return self._next

    def disarm(self, token: int) -> None:
        with self._lock:
            self._armed.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK_S)
            now = time.monotonic()
            with self._lock:
                late = [t for t, (deadline, _) in self._armed.items() if deadline <= now]
                fds = [self._armed.pop(t)[1] for t in late]
                # Cut under the lock: a disarmed call's fd may be reused as soon as it returns.
                for fd in fds:
                    _shutdown(fd)


def _shutdown(fd: int) -> None:
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        # shutdown acts on the connection itself, so psycopg's own descriptor sees the end too.
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()


_WATCHDOG = _Watchdog()


def _pg_fd(dbapi_connection: Any) -> int | None:
    try:
        return int(dbapi_connection.fileno())
    except Exception:  # closed, or not a psycopg connection
        return None


@contextmanager
def _pg_guard(dbapi_connection: Any, timeout_s: float) -> Iterator[None]:
    fd = _pg_fd(dbapi_connection)
    if fd is None:
        yield
        return
    token = _WATCHDOG.arm(fd, timeout_s + _GRACE_S)
    try:
        yield
    finally:
        _WATCHDOG.disarm(token)


def guarded_call(dbapi_connection: Any, timeout_s: float) -> Any:
    """A context that cuts the PostgreSQL connection when the block runs ``timeout_s`` (and
    the grace) or longer: for a wait on the server that is not a dialect call (the end of a
    pipeline, :func:`gridgov.store.engine.sent_together`)."""
    return _pg_guard(dbapi_connection, timeout_s)


@contextmanager
def _sqlite_guard(dbapi_connection: Any, timeout_s: float) -> Iterator[None]:
    deadline = time.monotonic() + timeout_s

    def too_long() -> int:
        return 1 if time.monotonic() > deadline else 0

    dbapi_connection.set_progress_handler(too_long, _SQLITE_STEPS)
    try:
        yield
    finally:
        dbapi_connection.set_progress_handler(None, 0)


def guard_engine(engine: Engine, timeout_s: float) -> None:
    """Bound every server call of ``engine`` by ``timeout_s`` (see the module docstring)."""
    dialect = engine.dialect
    guard = _pg_guard if dialect.name == "postgresql" else _sqlite_guard

    def on_cursor(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            with guard(cursor.connection, timeout_s):
                return method(cursor, *args, **kwargs)

        return call

    def on_connection(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(dbapi_connection: Any, *args: Any, **kwargs: Any) -> Any:
            with guard(dbapi_connection, timeout_s):
                return method(dbapi_connection, *args, **kwargs)

        return call

    # Instance attributes shadow the dialect's methods for this engine only.
    for name in ("do_execute", "do_executemany", "do_execute_no_params"):
        setattr(dialect, name, on_cursor(getattr(dialect, name)))
    names = ("do_commit", "do_rollback", "do_ping") if guard is _pg_guard else ("do_ping",)
    for name in names:
        setattr(dialect, name, on_connection(getattr(dialect, name)))
