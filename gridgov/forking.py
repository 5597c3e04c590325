"""A forked child starts clean: no lock held by a thread it does not have, no parent's runtime.

``fork`` copies a process's memory but runs only the thread that called it. A lock that another
thread held at that instant is copied held, and no thread of the child will ever release it;
per-process runtime (a pipeline's queues, the pipe to the turn process, a hub's listening
connection, a pool's connections) belongs to threads and sockets of the parent. gridgov's own
servers spawn their processes, but a server that loads the app and then forks its workers, or
a test that forks workers after using the store, gets such a child.

So each module registers here, once, what a forked child must not inherit, and this module
alone applies the rule: in the child, before anything else runs, each registered attribute gets
a new value (a new lock; a new, empty registry), and each registered action runs (the store's
engines forget their pools without closing them, since the parent still uses those
connections). What a registry held is dropped, not closed, for the same reason: psycopg does
not close a connection from a process other than the one that opened it.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["renew_globals_in_child", "renew_in_child", "run_in_child"]

# id(owner) -> (a weak reference to it, what a child does to it, by name). Keyed by id because
# some owners (dataclasses) are not hashable; the weak reference's callback removes the entry,
# so being registered does not keep an owner alive.
_OWNERS: dict[int, tuple[weakref.ref[Any], dict[str, Callable[[Any], None]]]] = {}
# Taken to register, and by the parent over a fork (so the child copies it free and the table
# whole, never half updated by another thread).
_LOCK = threading.Lock()


def run_in_child(owner: object, name: str, action: Callable[[Any], None]) -> None:
    """In a forked child, call ``action(owner)`` first thing (once per ``name``; a later
    registration under the same name replaces the earlier)."""
    key = id(owner)
    with _LOCK:
        entry = _OWNERS.get(key)
        if entry is None or entry[0]() is not owner:
            entry = _OWNERS[key] = (weakref.ref(owner, _forget(key)), {})
        entry[1][name] = action


def renew_in_child(owner: object, attr: str, make: Callable[[], Any] = threading.Lock) -> None:
    """In a forked child, set ``owner.attr`` to ``make()`` (by default a new lock).

    Code that reads the attribute afresh each time sees the new value; a name imported from a
    module (``from m import _LOCK``) would not, so read such a lock through its module."""

    def renew(obj: Any) -> None:
        object.__setattr__(obj, attr, make())  # object's: some owners are frozen dataclasses

    run_in_child(owner, f"renew {attr}", renew)


def renew_globals_in_child(module: str, **makers: Callable[[], Any]) -> None:
    """:func:`renew_in_child` for globals of the module named ``module``, each made by its
    maker: ``renew_globals_in_child(__name__, _LOCK=threading.Lock)``."""
    for attr, make in makers.items():
        renew_in_child(sys.modules[module], attr, make)


def _forget(key: int) -> Callable[[weakref.ref[Any]], None]:
    def gone(ref: weakref.ref[Any]) -> None:
        # Only this reference's entry: the id may already name a newer owner.
        entry = _OWNERS.get(key)
        if entry is not None and entry[0] is ref:
            del _OWNERS[key]

    return gone


def _before_fork() -> None:
    _LOCK.acquire()


def _after_fork_in_parent() -> None:
    _LOCK.release()


def _after_fork_in_child() -> None:
    for ref, actions in list(_OWNERS.values()):
        owner = ref()
        if owner is not None:
            for action in list(actions.values()):
                action(owner)
    _LOCK.release()


if hasattr(os, "register_at_fork"):  # POSIX only; elsewhere processes are spawned, not forked
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
