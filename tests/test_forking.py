"""A forked child starts with none of its parent's held locks, runtime or pooled connections.

A process that forks after using the store (a server that loads the app and then forks its
workers; the fork-context workers of the concurrency tests) copies every lock as it is at that
instant. Here a thread holds every lock gridgov keeps while the process forks, and the child
must still take each of them, find the per-process registries empty, and open its own database
connections rather than share the parent's pooled ones.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from api import live_stream, wall_display
from gridgov import forking
from gridgov.areas.locator import _LevelIndex
from gridgov.model import TravelMode
from gridgov.network import build_network
from gridgov.service import intake_batch, turn_process
from gridgov.store import group_commit, statement_guard, travel_context
from gridgov.store.engine import create_engine_from_url
from gridgov.store.read_routing import ReadRouting

ROOT = Path(__file__).resolve().parents[1]

# The per-process registries a child must find empty: (module, registry, its lock).
REGISTRIES = [
    (intake_batch, "_COMBINERS", "_COMBINERS_LOCK"),
    (turn_process, "_CHILDREN", "_CHILDREN_LOCK"),
    (group_commit, "_GROUPS", "_GROUPS_LOCK"),
    (live_stream, "_HUBS", "_HUBS_LOCK"),
]
# Module locks over caches a child keeps (the cached data is plain and shared).
CACHE_LOCKS = [(travel_context, "_CACHE_LOCK"), (wall_display, "_PAGE_LOCK")]


def _in_child(work: Callable[[], str], timeout_s: float = 20.0) -> str:
    """Fork; run ``work`` in the child and return what it returned (or raised, as text)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's clean-ups
        code = 0
        try:
            os.close(read_end)
            try:
                said = work()
            except BaseException as exc:
                said, code = f"raised {exc!r}", 1
            os.write(write_end, said.encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the forked child was still blocked after {timeout_s:.0f} s")
            time.sleep(0.02)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    said = b"".join(chunks).decode()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, said
    return said


def _tiny_network() -> Any:
    points = {1: (104.000, 30.700), 2: (104.010, 30.700), 3: (104.010, 30.710)}
    nodes = gpd.GeoDataFrame(
        {"node_id": list(points)}, geometry=[shapely.Point(p) for p in points.values()], crs=4326
    )
    pairs = [(1, 2), (2, 1), (2, 3), (3, 2)]
    links = gpd.GeoDataFrame(
        {
            "u": [u for u, _ in pairs],
            "v": [v for _, v in pairs],
            "road_class": "residential",
            "speed_drive_kmh": 30.0,
            "speed_bike_kmh": 15.0,
            "speed_walk_kmh": 5.0,
        },
        geometry=[shapely.LineString([points[u], points[v]]) for u, v in pairs],
        crs=4326,
    )
    links["length_m"] = links.geometry.to_crs(32648).length
    return build_network(nodes, links)


@pytest.fixture
def held_locks() -> Iterator[dict[str, Any]]:
    """Every kind of lock gridgov keeps, held by a thread that is not the one that forks."""
    network = _tiny_network()
    graph = network._graph(TravelMode.DRIVE)
    copied = pickle.loads(pickle.dumps(graph))  # a graph sent to another process
    locator = _LevelIndex(np.array([shapely.box(0, 0, 1, 1)], dtype=object))
    routing = ReadRouting(create_engine_from_url("sqlite://"))
    owners: dict[str, tuple[Any, str]] = {
        "the statement guard": (statement_guard._WATCHDOG, "_lock"),
        "a road graph": (graph, "lock"),
        "a road graph unpickled": (copied, "lock"),
        "a locator": (locator, "_lock"),
        "the read routing": (routing, "_lock"),
    }
    for module, _, lock in REGISTRIES:
        owners[f"{module.__name__}.{lock}"] = (module, lock)
    for module, lock in CACHE_LOCKS:
        owners[f"{module.__name__}.{lock}"] = (module, lock)
    held, release = threading.Event(), threading.Event()

    def hold_them_all() -> None:
        with ExitStack() as stack:
            for owner, attr in owners.values():
                stack.enter_context(getattr(owner, attr))
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_them_all)
    holder.start()
    assert held.wait(10)
    try:
        yield owners
    finally:
        release.set()
        holder.join()


def test_a_child_forked_while_every_lock_is_held_takes_each_and_starts_with_empty_registries(
    held_locks: dict[str, Any],
) -> None:
    sentinel = object()
    parents: dict[str, Any] = {}
    key = create_engine_from_url("sqlite://")  # any weak-referenceable key
    for module, registry, _ in REGISTRIES:
        parents[module.__name__] = getattr(module, registry)
        getattr(module, registry)[key] = sentinel  # as if the parent had used it
    try:

        def child() -> str:
            stuck = [
                name
                for name, (owner, attr) in held_locks.items()
                if not getattr(owner, attr).acquire(timeout=0.5)
            ]
            kept = [
                module.__name__
                for module, registry, _ in REGISTRIES
                if len(getattr(module, registry))
                or getattr(module, registry) is parents[module.__name__]
            ]
            return f"stuck={stuck} kept={kept}"

        assert _in_child(child) == "stuck=[] kept=[]"
    finally:
        for module, registry, _ in REGISTRIES:
            getattr(module, registry).pop(key, None)
    # The parent's own are untouched: still the same objects, and still held by the thread.
    for name, (owner, attr) in held_locks.items():
        assert getattr(owner, attr).locked(), name


def test_a_forked_child_arms_the_statement_guard_while_its_parent_holds_the_guards_lock(
    held_locks: dict[str, Any],
) -> None:
    """The watchdog's thread takes its lock ten times a second, so a fork now and then copies it
    held: the child's first statement then waited for ever (seen as a hung concurrency test)."""
    watchdog = statement_guard._WATCHDOG
    assert held_locks["the statement guard"] == (watchdog, "_lock") and watchdog._lock.locked()

    def child() -> str:  # as every guarded statement does: arm, then disarm
        token = watchdog.arm(-1, 60.0)  # a deadline a minute away: nothing is cut
        watchdog.disarm(token)
        return f"armed {token}, {len(watchdog._armed)} left armed"

    assert _in_child(child).endswith(", 0 left armed")


def test_a_forked_child_opens_its_own_connections(store_url: str) -> None:
    engine = create_engine_from_url(store_url)
    try:
        with engine.connect() as connection:
            parent_session = _session(connection)
        pool = engine.pool
        assert isinstance(pool, QueuePool) and pool.checkedin() == 1  # waiting in the pool

        def child() -> str:
            with engine.connect() as connection:
                return str(_session(connection))

        child_session = _in_child(child)
        assert child_session != str(parent_session)
        # The parent's pooled connection still answers, and it is the same session.
        with engine.connect() as connection:
            assert _session(connection) == parent_session
            assert connection.execute(text("SELECT 41 + 1")).scalar() == 42
    finally:
        engine.dispose()


def _session(connection: Any) -> object:
    """Which database session ``connection`` is: PostgreSQL's backend pid; SQLite's handle."""
    if connection.dialect.name == "postgresql":
        return connection.execute(text("SELECT pg_backend_pid()")).scalar()
    return id(connection.connection.dbapi_connection)


def test_every_lock_in_the_code_is_renewed_in_a_forked_child() -> None:
    """A module that makes a lock registers what a forked child does with it (gridgov.forking)."""
    made = re.compile(r"threading\.Lock\(\)")
    missing = []
    for path in sorted([*ROOT.glob("gridgov/**/*.py"), *ROOT.glob("api/**/*.py")]):
        source = path.read_text(encoding="utf-8")
        if path.name == "forking.py":
            continue
        registered = any(
            f"forking.{how}(" in source for how in ("renew_in_child", "renew_globals_in_child")
        )
        if made.search(source) and not registered:
            missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_registrations_do_not_keep_their_owners_alive() -> None:
    class Owner:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            forking.renew_in_child(self, "lock")

    owner = Owner()
    ref = weakref.ref(owner)
    key = id(owner)
    assert forking._OWNERS[key][0] is not None
    del owner
    assert ref() is None
    assert key not in forking._OWNERS
