"""Travel searches from an incident: its snaps, its travel fields grown as a query needs, and
the batch's search runner (half of a large round in a forked worker).

A tier first asks for times up to a little more than the smallest typical time of its
candidates (:func:`first_limit`); while that finds nothing, the limit doubles up to the
maximum travel time. A field with limit ``L`` is exact for every time up to ``L``, so the
minimum found within the limit is the true minimum.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from gridgov.dispatch.pool import DispatchContext, FloatArray, IntArray, UnitPool
from gridgov.dispatch.records import Incident
from gridgov.errors import InputError
from gridgov.model import ForceKind
from gridgov.settings import get_settings
from gridgov.travel_model import Snapped, TravelField, TravelModel

# First search limit of a tier: this factor times the smallest typical time (lower bound ×
# the travel model's typical ratio, about the median time), or the smallest lower bound plus
# the slack when that is larger (near units: one-way detours and access legs weigh more).
# Search cost grows with the square of the limit, a failed search costs a second one: on the
# megacity benchmark 1.15-1.3 beat both smaller factors and the former 3 × lower bound + 120 s
# (single decisions: p99 -30 %; batch: -15 %).
_LIMIT_FACTOR = 1.25
_LIMIT_SLACK_S = 60.0
# While a search finds nothing, its limit grows by this factor, up to this many times the first.
_LIMIT_GROW = 2.0
_MAX_GROWTH = 16.0


def first_limit(estimate: float, lower_bound: float) -> float:
    """The first search limit for a unit (or the best of a tier) with these times."""
    return max(_LIMIT_FACTOR * estimate, lower_bound + _LIMIT_SLACK_S)


class Target:
    """One incident's snaps per mode and its travel fields, grown only when a query needs it."""

    def __init__(self, pool: UnitPool, snaps: dict[str, Snapped]) -> None:
        self.pool = pool
        self.travel = pool.ctx.travel
        self.snaps = snaps
        self.fields: dict[str, TravelField] = {}
        self.searches: list[dict[str, Any]] = []
        self._lb = np.full(pool.n, np.nan)
        self._est = np.full(pool.n, np.nan)

    def field(self, mode: str, limit: float) -> TravelField:
        f = self.fields.get(mode)
        if f is None or f.limit_s < limit:
            f = self.travel.field_to(self.snaps[mode], limit)
            self.fields[mode] = f
            self.searches.append({"mode": mode, "limit_s": limit})
        return f

    def lower_bounds(self, rows: IntArray) -> FloatArray:
        self._bound(rows)
        return self._lb[rows]

    def estimates(self, rows: IntArray) -> FloatArray:
        """Typical times of ``rows`` (a guess where searches start, never a bound)."""
        self._bound(rows)
        return self._est[rows]

    def set_bounds(self, rows: IntArray, lb: FloatArray, est: FloatArray) -> None:
        """Lower bounds and typical times of ``rows``, computed elsewhere (batch: all at once)."""
        self._lb[rows] = lb
        self._est[rows] = est

    def _bound(self, rows: IntArray) -> None:
        todo = rows[np.isnan(self._lb[rows])]
        if len(todo):
            modes = self.pool.mode[todo]
            for mode in sorted(set(modes.tolist())):
                r = todo[modes == mode]
                lb = self.travel.lower_bound_s(self.pool.snapped(r, mode), self.snaps[mode])
                self._lb[r] = lb
                self._est[r] = lb * self.travel.typical_ratio(mode)

    def times_within(self, rows: IntArray, limit: float) -> FloatArray:
        """Times of ``rows``: exact for every value <= ``limit``; inf or exact above it."""
        out = np.full(len(rows), np.inf)
        modes = self.pool.mode[rows]
        for mode in sorted(set(modes.tolist())):
            sel = np.flatnonzero(modes == mode)
            r = rows[sel]
            f = self.fields.get(mode)
            if f is None or f.limit_s < limit:
                # A mode whose every unit is provably beyond the limit needs no search at all.
                if float(np.min(self.lower_bounds(r))) > limit:
                    continue
                f = self.field(mode, limit)
            out[sel] = f.times_from(self.pool.snapped(r, mode))
        return out

    def best_times(self, rows: IntArray, cap: float) -> tuple[FloatArray, float]:
        """Times of ``rows``, exact for every value <= the returned bound.

        The minimum is exact whenever it is <= ``cap``. The first search goes only as far as a
        few times the smallest lower bound; while it finds nothing, the limit doubles (capped
        at ``cap``, and at the best time already known from a larger search), so the last
        search is at most about twice as wide as the answer needs.
        """
        if len(rows) == 0:
            return np.zeros(0), cap
        first = first_limit(
            float(np.min(self.estimates(rows))), float(np.min(self.lower_bounds(rows)))
        )
        limit = min(cap, first)
        while True:
            times = self.times_within(rows, limit)
            best = float(np.min(times))
            if limit >= cap or best <= limit:
                return times, limit
            # Unbounded (the fallback): after a few doublings, one search settles it.
            grown = _LIMIT_GROW * limit if limit < _MAX_GROWTH * first else math.inf
            limit = min(cap, grown, best)


def snap_incident(
    ctx: DispatchContext, incident: Incident, modes: Iterable[str]
) -> dict[str, Snapped]:
    """Snap the incident for each mode; InputError when it is far from that mode's roads.

    Through the context's kept snaps (:meth:`DispatchContext.snap_point`): a report snapped
    before its dispatch turn (:func:`presnap`) is not snapped again in it.
    """
    out: dict[str, Snapped] = {}
    for mode in sorted(set(modes)):
        snap = ctx.snap_point(incident.lon, incident.lat, mode)
        check_not_far(incident, snap)
        out[mode] = snap
    return out


def presnap(ctx: DispatchContext, incident: Incident, kinds: Sequence[ForceKind]) -> None:
    """Snap a report, ahead of its dispatch, for the modes the last dispatch of ``kinds``
    needed (outside the intake's turn, so that the turn does less)."""
    for mode in ctx.modes_for(kinds):
        ctx.snap_point(incident.lon, incident.lat, mode)


def incident_target(
    pool: UnitPool, ctx: DispatchContext, incident: Incident, kinds: Sequence[ForceKind]
) -> Target:
    """The incident's :class:`Target` for the units of ``kinds`` in ``pool``."""
    modes = needed_modes(pool, kinds)
    ctx.note_modes(kinds, modes)
    return Target(pool, snap_incident(ctx, incident, modes))


def check_not_far(incident: Incident, snap: Snapped) -> None:
    if bool(snap.far[0]):
        max_snap = get_settings().max_snap_m
        msg = (
            f"incident {incident.incident_id} at ({incident.lon:.6f}, {incident.lat:.6f}) "
            f"lies {float(snap.access_m[0]):.0f} m from the nearest road usable by "
            f"{snap.mode.value} units (max_snap_m = {max_snap:.0f} m); it cannot be dispatched "
            "over the road network"
        )
        raise InputError(msg)


def needed_modes(pool: UnitPool, kinds: Iterable[ForceKind]) -> list[str]:
    """Modes of the positioned, routable units of ``kinds``: the incident must reach them all."""
    return pool.modes_of(kinds)


#: A batch round runs its searches in two processes when it has at least this many (a fork
#: costs ~20-40 ms on a megacity-sized process; 200 searches take ~0.2 s).
_PARALLEL_MIN_SEARCHES = 200


class Searches:
    """Runs a batch round's travel searches, half of them in a forked worker when that pays.

    scipy's Dijkstra holds the GIL, so threads cannot share the work. On Linux, with an idle
    second CPU and no other thread in the process (a fork copies locks that another thread
    might hold; see :func:`_can_fork`), a round with :data:`_PARALLEL_MIN_SEARCHES` searches
    or more forks one worker (once per batch; it inherits the road network and shares its
    memory) and sends it every other search; the caller runs the rest meanwhile. Each search
    is ``travel.field_to(target, limit).times_from(sources)`` wherever it runs, so the times
    are the same bits either way, and any trouble with the worker falls back to running here.
    On the megacity benchmark (1,000 incidents, 2,112 units, idle machine) the first round's
    ~1,150 searches take 0.55-0.6 s instead of 0.85-0.9 s, the batch ~1.6 s instead of ~1.9 s.
    """

    def __init__(self, travel: TravelModel) -> None:
        self.travel = travel
        self._worker: Any = None
        self._conn: Any = None
        self._failed = False

    def __enter__(self) -> Searches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, tasks: Sequence[tuple[Snapped, float, Snapped]]) -> list[FloatArray]:
        """``times_from`` of each ``(target, limit, sources)``, in order."""
        if len(tasks) < _PARALLEL_MIN_SEARCHES or not self._start():
            return [self._times(t) for t in tasks]
        theirs = list(tasks[1::2])
        try:
            self._conn.send(theirs)
        except (OSError, ValueError):
            self._stop()
            return [self._times(t) for t in tasks]
        mine = [self._times(t) for t in tasks[0::2]]
        try:
            done: list[FloatArray] = self._conn.recv()
        except (EOFError, OSError):
            self._stop()
            done = [self._times(t) for t in theirs]
        out: list[FloatArray] = []
        for i in range(len(tasks)):
            out.append(mine[i // 2] if i % 2 == 0 else done[i // 2])
        return out

    def _times(self, task: tuple[Snapped, float, Snapped]) -> FloatArray:
        target, limit, sources = task
        return self.travel.field_to(target, limit).times_from(sources)

    def _start(self) -> bool:
        if self._worker is not None:
            return True
        if self._failed or not _can_fork():
            return False
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        worker = context.Process(target=_search_worker, args=(theirs, self.travel), daemon=True)
        try:
            worker.start()
        except (OSError, AssertionError):  # AssertionError: a daemonic process has no children
            self._failed = True
            return False
        theirs.close()
        self._worker, self._conn = worker, ours
        return True

    def _stop(self) -> None:
        self._failed = True
        self.close()

    def close(self) -> None:
        """Stop the worker, if any."""
        if self._worker is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._conn.close()
        self._worker.join(timeout=5)
        if self._worker.is_alive():
            self._worker.kill()
            self._worker.join()
        self._worker = self._conn = None


def _can_fork() -> bool:
    """Forking is safe and useful here: Linux, one thread, a second CPU that is idle.

    Idle as far as the one-minute load average tells (this process counts about 1): with the
    other CPU busy, the worker only competes for it, and the fork and the copy-on-write pages
    it leaves behind make the batch slower (measured on the megacity benchmark with another
    process running: 2.4 s against 2.2 s without the worker).
    """
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False
    cpus = len(os.sched_getaffinity(0))
    return cpus >= 2 and os.getloadavg()[0] < cpus - 0.5


def _search_worker(conn: Any, travel: TravelModel) -> None:
    """The forked worker: answer lists of searches until told to stop (None or a closed pipe)."""
    while True:
        try:
            tasks = conn.recv()
        except (EOFError, OSError):
            return
        if tasks is None:
            return
        conn.send([travel.field_to(t, limit).times_from(src) for t, limit, src in tasks])
