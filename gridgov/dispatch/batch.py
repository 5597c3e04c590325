"""Batch dispatch: the jointly optimal assignment of many incidents, and the greedy baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from gridgov.catalog import Matter
from gridgov.dispatch import rules
from gridgov.dispatch.pool import (
    KIND_ID,
    BoolArray,
    DispatchContext,
    FloatArray,
    IntArray,
    ObjArray,
    UnitPool,
)
from gridgov.dispatch.records import Assignment, BatchResult, Decision, Incident, Placement
from gridgov.dispatch.search import Searches, Target, check_not_far, first_limit, needed_modes
from gridgov.dispatch.single import (
    EXPLAIN_MAX_CANDIDATES,
    ROLE_ASSIST,
    ROLE_LEAD,
    build_decision,
    list_candidates,
    make_assignment,
    member_level,
)
from gridgov.errors import OutsideDistrictError
from gridgov.model import ForceKind

#: Batch mode minimises sum(weight[priority] * travel seconds). Priority 1 is the most urgent.
PRIORITY_WEIGHT: dict[int, float] = {1: 8.0, 2: 4.0, 3: 2.0, 4: 1.0}

RULE_BATCH = "batch_optimal"
RULE_GREEDY = "greedy_nearest"

#: Batch eligibility: a unit is eligible for a slot when it arrives within this many times the
#: matter's maximum travel time (the horizon). Beyond the maximum, so the optimiser has room to
#: trade one incident's time against another's, but bounded, so that no search is unbounded and
#: an open slot has a finite cost (weight × horizon).
BATCH_HORIZON_FACTOR = 2.0

# Batch searches: each extension of an incident's search at least multiplies its limit by this
# (1.5 searched ~8 % less than 2 on the megacity benchmark).
_BATCH_GROW = 1.5
# Eligible units listed per slot in a batch explanation (a batch has many slots).
_BATCH_LISTED = 5


class _Open:
    """One incident of a batch: its eligible units, with times known per mode up to a limit.

    Nothing is searched up front: a unit's time is its straight-line lower bound until the
    assignment wants it, and only then is the incident's search for that unit's mode run (or
    extended). A batch so costs about one small search per incident and mode actually used,
    instead of one per incident and mode up to the horizon.
    """

    def __init__(self, target: Target, rows: IntArray, horizon: float) -> None:
        self.target = target
        self.rows: IntArray = rows
        self.horizon = horizon
        self.limits: dict[str, float] = {}
        self.version = 0
        self.lb: FloatArray = np.zeros(0)
        self.est: FloatArray = np.zeros(0)
        self.mode: ObjArray = np.zeros(0, dtype=object)
        self.row_limit: FloatArray = np.zeros(0)
        self.times: FloatArray = np.zeros(0)

    def set_bounds(self, lb: FloatArray, est: FloatArray) -> None:
        """The rows' lower bounds and typical times (a batch computes all incidents' at once).

        Rows that a straight line already puts beyond the horizon are dropped.
        """
        self.target.set_bounds(self.rows, lb, est)
        keep = lb <= self.horizon
        self.rows = self.rows[keep]
        self.lb = lb[keep]
        self.est = est[keep]
        self.mode = self.target.pool.mode[self.rows]
        self.row_limit = np.zeros(len(self.rows))
        self.times = np.full(len(self.rows), np.inf)

    def extend(self, mode: str, wanted: float) -> None:
        """Know the times of ``mode`` at least up to ``wanted`` (first search or a larger one)."""
        planned = self.plan(mode, wanted)
        if planned is not None:
            limit, sel = planned
            self.record(mode, limit, sel, self.target.times_within(self.rows[sel], limit))

    def plan(self, mode: str, wanted: float) -> tuple[float, IntArray] | None:
        """The limit :meth:`extend` would search ``mode`` to, and the rows of that mode.

        None when the times are already known that far.
        """
        old = self.limits.get(mode, 0.0)
        grown = _BATCH_GROW * old if old > 0 else 0.0
        limit = min(self.horizon, max(wanted, grown))
        if limit <= old:
            return None
        return limit, np.flatnonzero(self.mode == mode)

    def record(self, mode: str, limit: float, sel: IntArray, times: FloatArray) -> None:
        """The times of ``rows[sel]`` (all of ``mode``), exact up to ``limit``."""
        self.limits[mode] = limit
        self.version += 1
        self.row_limit[sel] = limit
        self.times[sel] = times

    def first_limit(self, sel_index: int, bound: float) -> float:
        """The first search limit for the unit at ``rows[sel_index]``, whose time is >= bound.

        As single dispatch: the unit's typical time with some room (see
        :func:`~gridgov.dispatch.search.first_limit`).
        """
        return max(first_limit(float(self.est[sel_index]), float(self.lb[sel_index])), bound)

    def bounds(self, sel: IntArray) -> tuple[FloatArray, BoolArray]:
        """Time of ``rows[sel]`` if known (exact), else a lower bound; inf beyond the horizon."""
        t = self.times[sel]
        exact = np.isfinite(t)
        # An unknown time exceeds its mode's limit and its straight-line bound: the larger one
        # relaxes it. Searched up to the horizon and still unknown: not eligible.
        limit = self.row_limit[sel]
        relaxed = np.where(limit >= self.horizon, np.inf, np.maximum(limit, self.lb[sel]))
        out = np.where(exact, t, relaxed)
        out[out > self.horizon] = np.inf
        return out, exact

    def wanted(self, sel_index: int, bound: float) -> tuple[str, float]:
        """The mode and limit to search to resolve ``rows[sel_index]`` (time so far >= bound)."""
        mode = str(self.mode[sel_index])
        if self.limits.get(mode, 0.0) > 0:
            return mode, 1.5 * bound
        return mode, self.first_limit(sel_index, bound)

    def want(self, sel_index: int, bound: float) -> None:
        """Resolve the unit at ``rows[sel_index]``, whose time is so far only ``bound``."""
        self.extend(*self.wanted(sel_index, bound))


@dataclass
class _Slot:
    """One (incident, required kind) to fill; ``sel`` indexes its incident's eligible rows."""

    incident: int
    kind: ForceKind
    role: str
    weight: float
    sel: IntArray


@dataclass
class _Batch:
    incidents: list[Incident]
    matters: list[Matter]
    placements: list[Placement]
    opens: list[_Open]
    slots: list[_Slot]
    pool: UnitPool
    left_out: list[dict[ForceKind, dict[str, Any]]]
    _parts: dict[int, tuple[int, IntArray, FloatArray, BoolArray]] = field(default_factory=dict)

    def part(self, i: int) -> tuple[IntArray, FloatArray, BoolArray]:
        """Slot ``i``'s feasible units with their times (or bounds), cached until a search grows."""
        s = self.slots[i]
        o = self.opens[s.incident]
        hit = self._parts.get(i)
        if hit is None or hit[0] != o.version:
            bound, exact = o.bounds(s.sel)
            ok = np.isfinite(bound)
            hit = (o.version, o.rows[s.sel][ok], bound[ok], exact[ok])
            self._parts[i] = hit
        return hit[1], hit[2], hit[3]


def dispatch_batch(
    incidents: Sequence[Incident], gdf_units: gpd.GeoDataFrame, ctx: DispatchContext
) -> BatchResult:
    """Assign many pending incidents at once, minimising priority-weighted travel time.

    Each (incident, required kind) is a slot, and each unit fills at most one slot. A slot's
    eligible units are the available units of its kind commanded by the incident's street or a
    touching street (the command rule of single dispatch, up to the ``neighbour`` tier) that
    arrive within the horizon, :data:`BATCH_HORIZON_FACTOR` × the matter's maximum travel time.
    The objective is ``sum(PRIORITY_WEIGHT[priority] * time_s)`` over the filled slots plus
    ``PRIORITY_WEIGHT[priority] * horizon`` for every open slot (see :class:`BatchResult`). As a
    unit has one kind, kinds never compete: each kind is one rectangular assignment problem,
    solved exactly by :func:`scipy.optimize.linear_sum_assignment`.

    Times are searched lazily and the result is still exact: the problem is first solved with
    every time beyond an incident's current search limit replaced by a lower bound (the limit,
    or the unit's straight-line bound if larger). A solution that uses only known times is then
    optimal for the true times too, as they are never lower; otherwise the searches of the
    incidents whose slots used a bound are extended and the kind is solved again. The searches
    of one such round are independent; a large round runs half of them in a forked worker
    process when the machine has a second CPU (see :class:`Searches`), with the same result.

    Slots with no eligible unit left stay open and are reported as ``unfilled``, so single
    dispatch can escalate them later. No routes are computed, and grid-level matters get no
    own-grid preference here: the optimiser sees travel times only.

    Raises
    ------
    UnknownMatterError, OutsideDistrictError, InputError
        As :func:`dispatch_incident`, for the first incident that has the problem.
    """
    batch = _build_batch(incidents, gdf_units, ctx)
    with Searches(ctx.travel) as searches:
        chosen = _solve_batch(batch, searches)
    return _batch_result(batch, chosen, RULE_BATCH, "optimal")


def _solve_batch(batch: _Batch, searches: Searches) -> dict[int, tuple[int, float]]:
    """The optimal assignment of every slot (see :func:`dispatch_batch`): ``{slot: (row, t)}``."""
    by_kind: dict[ForceKind, list[int]] = {}
    for i, s in enumerate(batch.slots):
        by_kind.setdefault(s.kind, []).append(i)
    chosen: dict[int, tuple[int, float]] = {}
    todo = sorted(by_kind, key=lambda k: k.value)
    while todo:
        grow: dict[tuple[int, int], float] = {}
        for kind in todo:
            for i in by_kind[kind]:
                chosen.pop(i, None)
            for i, (row, t, exact) in _solve_kind(batch, by_kind[kind]).items():
                chosen[i] = (row, t)
                if not exact:
                    grow[(batch.slots[i].incident, row)] = t
        # One search per incident and mode, as far as its farthest want: two slots of one
        # incident (joint enforcement) often want units of the same mode.
        limits: dict[tuple[int, str], float] = {}
        for (k, row), t in grow.items():
            o = batch.opens[k]
            mode, limit = o.wanted(int(np.flatnonzero(o.rows == row)[0]), t)
            limits[(k, mode)] = max(limit, limits.get((k, mode), 0.0))
        _extend_all(batch, sorted(limits.items()), searches)
        touched = {k for k, _ in grow}
        todo = sorted(
            {s.kind for s in batch.slots if s.incident in touched}, key=lambda kind: kind.value
        )
    return chosen


def _extend_all(
    batch: _Batch, requests: Sequence[tuple[tuple[int, str], float]], searches: Searches
) -> None:
    """:meth:`_Open.extend` for many ``((incident, mode), wanted)``, the searches run together.

    Same outcome as extending one after the other: each request is a different incident and
    mode, and a batch never reuses a field (every extension searches farther than the last).
    """
    pool = batch.pool
    todo: list[tuple[_Open, str, float, IntArray]] = []
    for (k, mode), wanted in requests:
        o = batch.opens[k]
        planned = o.plan(mode, wanted)
        if planned is None:
            continue
        limit, sel = planned
        rows = o.rows[sel]
        # Every unit of the mode provably beyond the limit: nothing to search.
        if len(rows) == 0 or float(np.min(o.target.lower_bounds(rows))) > limit:
            o.record(mode, limit, sel, np.full(len(rows), np.inf))
        else:
            todo.append((o, mode, limit, sel))
    found = searches.run(
        [
            (o.target.snaps[mode], limit, pool.snapped(o.rows[sel], mode))
            for o, mode, limit, sel in todo
        ]
    )
    for (o, mode, limit, sel), times in zip(todo, found, strict=True):
        o.target.searches.append({"mode": mode, "limit_s": limit})
        o.record(mode, limit, sel, times)


def dispatch_greedy(
    incidents: Sequence[Incident], gdf_units: gpd.GeoDataFrame, ctx: DispatchContext
) -> BatchResult:
    """The greedy baseline: in arrival order, each slot takes its nearest free eligible unit.

    Incidents are taken by ``reported_at`` (ties by ``incident_id``), their slots lead first;
    eligibility, horizon and exact times are those of :func:`dispatch_batch`, so the comparison
    is fair.
    """
    batch = _build_batch(incidents, gdf_units, ctx)
    order = sorted(
        range(len(batch.slots)),
        key=lambda i: (
            _utc(batch.incidents[batch.slots[i].incident].reported_at),
            batch.incidents[batch.slots[i].incident].incident_id,
            batch.slots[i].incident,
            i,
        ),
    )
    pool = batch.pool
    used = np.zeros(pool.n, dtype=bool)
    chosen: dict[int, tuple[int, float]] = {}
    for i in order:
        slot = batch.slots[i]
        o = batch.opens[slot.incident]
        while True:
            bound, exact = o.bounds(slot.sel)
            rows = o.rows[slot.sel]
            free = ~used[rows] & np.isfinite(bound)
            known = np.flatnonzero(free & exact)
            unknown = np.flatnonzero(free & ~exact)
            best = rules.best_candidate(bound[known], pool.rank[rows[known]])
            # The nearest unknown one: its time is at least its bound, and above its limit.
            u = int(unknown[np.argmin(bound[unknown])]) if len(unknown) else -1
            if best is not None:
                j = int(known[best])
                if u < 0 or bound[j] < bound[u]:
                    used[rows[j]] = True
                    chosen[i] = (int(rows[j]), float(bound[j]))
                    break
                # Is the unknown one nearer? Search its mode at least as far as the known best.
                o.want(int(slot.sel[u]), max(float(bound[u]), float(bound[j]) / 1.5))
            elif u >= 0:
                o.want(int(slot.sel[u]), float(bound[u]))
            else:
                break
    return _batch_result(batch, chosen, RULE_GREEDY, "greedy")


def _build_batch(
    incidents: Sequence[Incident], gdf_units: gpd.GeoDataFrame, ctx: DispatchContext
) -> _Batch:
    incidents = list(incidents)
    matters = [ctx.catalog.get(inc.matter_code) for inc in incidents]
    placements = _locate_many(incidents, ctx)
    kinds = {k.value for m in matters for k in m.required_kinds}
    pool = UnitPool(gdf_units, kinds, ctx)
    usable = pool.available & pool.positioned & pool.supported
    pool.ensure_snaps(np.flatnonzero(usable))
    usable &= ~pool.far
    # All incidents are snapped per mode in one call.
    lon = np.array([inc.lon for inc in incidents], dtype=float)
    lat = np.array([inc.lat for inc in incidents], dtype=float)
    mode_snaps = {
        mode: ctx.travel.snap(lon, lat, mode)
        for mode in needed_modes(pool, (ForceKind(k) for k in kinds))
    }
    unique = {m.code: m for m in matters}
    needed_of = {c: needed_modes(pool, m.required_kinds) for c, m in unique.items()}
    for i, (inc, matter) in enumerate(zip(incidents, matters, strict=True)):
        for mode in needed_of[matter.code]:
            if mode_snaps[mode].far[i]:
                check_not_far(inc, mode_snaps[mode].take(i))
    scopes = _BatchScopes(pool, usable, ctx.neighbours)
    opens: list[_Open] = []
    slots: list[_Slot] = []
    left_out: list[dict[ForceKind, dict[str, Any]]] = []
    pair_inc: list[IntArray] = []
    pair_row: list[IntArray] = []
    for i, (matter, place) in enumerate(zip(matters, placements, strict=True)):
        snaps = {mode: mode_snaps[mode].take(i) for mode in needed_of[matter.code]}
        rows = scopes.usable_rows(place.street_code, matter.required_kinds)
        horizon = BATCH_HORIZON_FACTOR * matter.max_travel_min * 60.0
        opens.append(_Open(Target(pool, snaps), rows, horizon))
        pair_inc.append(np.full(len(rows), i, dtype=np.int64))
        pair_row.append(rows)
        outs: dict[ForceKind, dict[str, Any]] = {}
        for j, kind in enumerate(matter.required_kinds):
            slots.append(
                _Slot(
                    incident=i,
                    kind=kind,
                    role=ROLE_LEAD if j == 0 else ROLE_ASSIST,
                    weight=PRIORITY_WEIGHT[matter.priority],
                    sel=np.zeros(0, dtype=np.int64),
                )
            )
            # Capped as single dispatch caps it (EXPLAIN_MAX_CANDIDATES), with the count.
            every = scopes.left_out(place.street_code, kind)
            outs[kind] = {
                "left_out": [dict(c) for c in every[:EXPLAIN_MAX_CANDIDATES]],
                "left_out_total": len(every),
            }
        left_out.append(outs)
    # Lower bounds of every (incident, unit) pair, one call per mode instead of one per incident.
    inc_of = np.concatenate([*pair_inc, np.zeros(0, dtype=np.int64)])
    row_of = np.concatenate([*pair_row, np.zeros(0, dtype=np.int64)])
    lb = np.zeros(len(row_of))
    est = np.zeros(len(row_of))
    modes = pool.mode[row_of]
    for mode in sorted(set(modes.tolist())):
        at = np.flatnonzero(modes == mode)
        sources = pool.snapped(row_of[at], mode)
        lb[at] = ctx.travel.lower_bound_s(sources, mode_snaps[mode].take(inc_of[at]))
        est[at] = lb[at] * ctx.travel.typical_ratio(mode)
    bounds = np.cumsum([0, *(len(r) for r in pair_row)])
    for i, o in enumerate(opens):
        part = slice(bounds[i], bounds[i + 1])
        o.set_bounds(lb[part], est[part])
    for s in slots:
        o = opens[s.incident]
        s.sel = np.flatnonzero(pool.kind[o.rows] == s.kind.value)
    return _Batch(incidents, matters, placements, opens, slots, pool, left_out)


class _BatchScopes:
    """Per street, the usable units it commands with its touching streets (batch eligibility)."""

    def __init__(self, pool: UnitPool, usable: BoolArray, neighbours: dict[str, list[str]]) -> None:
        self.pool = pool
        self.usable = usable
        self.neighbours = neighbours
        self._out: dict[tuple[str, ForceKind], list[dict[str, Any]]] = {}

    def _in_scope(self, street: str) -> BoolArray:
        # The same street set, kept by the pool, as single dispatch's neighbour tier.
        return self.pool.in_streets((street, *self.neighbours.get(street, [])))

    def usable_rows(self, street: str, kinds: Sequence[ForceKind]) -> IntArray:
        want = np.zeros(len(ForceKind), dtype=bool)
        want[[KIND_ID[k] for k in kinds]] = True
        return np.flatnonzero(self.usable & self._in_scope(street) & want[self.pool.kind_id])

    def left_out(self, street: str, kind: ForceKind) -> list[dict[str, Any]]:
        """The units of ``kind`` in scope that cannot serve, with the reason (shared: copy)."""
        key = (street, kind)
        out = self._out.get(key)
        if out is None:
            pool = self.pool
            scope = np.flatnonzero(
                self._in_scope(street) & (pool.kind == kind.value) & ~self.usable
            )
            reasons = pool.reasons(scope, frozenset(), frozenset())
            out = [
                pool.candidate_json(r, "neighbour", None, why or "unusable")
                for r, why in zip(scope.tolist(), reasons, strict=True)
            ]
            self._out[key] = out
        return out


def _locate_many(incidents: Sequence[Incident], ctx: DispatchContext) -> list[Placement]:
    """:func:`locate_incident` for many incidents in one vectorised lookup."""
    lon = np.array([inc.lon for inc in incidents], dtype=float)
    lat = np.array([inc.lat for inc in incidents], dtype=float)
    codes = ctx.locator.locate(lon, lat)
    outside = np.flatnonzero(codes["street"].isna().to_numpy())
    if len(outside):
        i = int(outside[0])
        raise OutsideDistrictError(float(lon[i]), float(lat[i]), "wgs84")
    columns = {
        level: [None if v is None or pd.isna(v) else str(v) for v in codes[level].tolist()]
        for level in ("district", "street", "community", "grid", "microgrid")
    }
    return [
        Placement(
            district_code=columns["district"][i],
            street_code=str(columns["street"][i]),
            community_code=columns["community"][i],
            grid_code=columns["grid"][i],
            microgrid_code=columns["microgrid"][i],
        )
        for i in range(len(incidents))
    ]


def _solve_kind(batch: _Batch, slot_idx: list[int]) -> dict[int, tuple[int, float, bool]]:
    """Optimal assignment of one kind's slots: min sum over slots of w·t, or w·horizon if open.

    Returns ``{slot: (row, time, exact)}``; ``exact`` is False where the time is a lower bound.
    """
    pool = batch.pool
    # Slots with no feasible unit stay open whatever the others do.
    slot_idx = [i for i in slot_idx if len(batch.part(i)[0])]
    parts = [batch.part(i) for i in slot_idx]
    rows = np.unique(np.concatenate([p[0] for p in parts] + [np.zeros(0, np.int64)]))
    if len(rows) == 0:
        return {}
    # Columns in the tie-break order of units (equal times: candidate order by rank alone):
    # the solver takes the first of equally good columns, so the answer follows the rule and
    # not the frame's row order.
    rows = rows[rules.candidate_order(np.zeros(len(rows)), pool.rank[rows])]
    col = np.full(pool.n, -1, dtype=np.int64)
    col[rows] = np.arange(len(rows))
    times = np.full((len(slot_idx), len(rows)), np.inf)
    known = np.zeros((len(slot_idx), len(rows)), dtype=bool)
    at = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
    flat = col[np.concatenate([p[0] for p in parts])]
    times[at, flat] = np.concatenate([p[1] for p in parts])
    known[at, flat] = np.concatenate([p[2] for p in parts])
    feasible = np.isfinite(times)
    weight = np.array([batch.slots[i].weight for i in slot_idx])
    horizon = np.array([batch.opens[batch.slots[i].incident].horizon for i in slot_idx])
    # Saving of filling a slot against leaving it open (<= 0); an infeasible pair saves nothing,
    # and is dropped below if the solver pairs it anyway.
    saving = np.where(feasible, weight[:, None] * (times - horizon[:, None]), 0.0)
    r_idx, c_idx = linear_sum_assignment(saving)
    out: dict[int, tuple[int, float, bool]] = {}
    for i, j in zip(r_idx.tolist(), c_idx.tolist(), strict=True):
        if feasible[i, j]:
            out[slot_idx[i]] = (int(rows[j]), float(times[i, j]), bool(known[i, j]))
    return out


def _batch_result(
    batch: _Batch, chosen: dict[int, tuple[int, float]], rule: str, method: str
) -> BatchResult:
    pool = batch.pool
    ctx = pool.ctx
    per_incident: list[list[int]] = [[] for _ in batch.incidents]
    for i, s in enumerate(batch.slots):
        per_incident[s.incident].append(i)
    decisions: list[Decision] = []
    cost = open_cost = 0.0
    assigned = unassigned = 0
    for k, inc in enumerate(batch.incidents):
        matter, place, o = batch.matters[k], batch.placements[k], batch.opens[k]
        cap = matter.max_travel_min * 60.0
        assignments: list[Assignment] = []
        unfilled: list[ForceKind] = []
        notes: list[dict[str, Any]] = []
        for i in per_incident[k]:
            s = batch.slots[i]
            bound, exact = o.bounds(s.sel)
            listed = exact & np.isfinite(bound)
            note: dict[str, Any] = {
                "kind": s.kind.value,
                "role": s.role,
                "horizon_s": o.horizon,
                # Per travel mode: times up to this are exact (lower bounds stood in beyond).
                "exact_up_to_s": dict(o.limits),
                # Available units of the kind in the street and touching streets that a straight
                # line does not already put beyond the horizon.
                "n_in_scope": len(s.sel),
                "eligible": list_candidates(
                    pool, "neighbour", o.rows[s.sel][listed], bound[listed], _BATCH_LISTED
                ),
                **batch.left_out[k][s.kind],
            }
            if i in chosen:
                r, t = chosen[i]
                level = member_level(pool, r, s.kind, place)
                assignments.append(make_assignment(pool, r, s.kind, s.role, level, rule, t, cap))
                note.update(rule=rule, unit_id=pool.ids[r], time_s=t)
                cost += s.weight * t
                assigned += 1
            else:
                unfilled.append(s.kind)
                note.update(
                    rule=None,
                    unit_id=None,
                    unfilled_reason=(
                        "no eligible unit within the horizon in the street and touching streets"
                        if not np.isfinite(bound).any()
                        else "every eligible unit went to another incident"
                    ),
                )
                open_cost += s.weight * o.horizon
                unassigned += 1
            notes.append(note)
        decisions.append(
            build_decision(ctx, inc, matter, place, o.target, assignments, unfilled, notes, method)
        )
    return BatchResult(
        decisions=tuple(decisions),
        weighted_cost_s=cost,
        assigned=assigned,
        unassigned=unassigned,
        unassigned_cost_s=open_cost,
        method=method,
    )


def _utc(when: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
