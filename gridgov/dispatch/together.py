"""Reports that arrive together, decided together (the intake's micro-batches).

:func:`decide_together` first decides each report as single dispatch would, in arrival order,
each unit taken once: report *k* sees the pool less the units reports 1..k-1 took, which is
what the single path sees after their commits. That sequence is then improved where reports of
the batch competed for the same units: per force kind, the slots decided by a plain
nearest-unit rule are re-assigned by one rectangular assignment problem
(:func:`scipy.optimize.linear_sum_assignment`) minimising ``sum(PRIORITY_WEIGHT[priority] *
time_s)``, and the result is kept only when it is strictly better. So a batch is never worse in
total weighted travel time than the single path on the same sequence, and never escalates
further: each slot may only take units of the scope its single decision reached (a slot decided
in its street keeps to the street's units, and only units that arrive within the matter's
maximum travel time are eligible).

Not re-assigned, as single dispatch decided them: an own-grid worker (a rule of place, not of
time), a unit sent over the maximum travel time, and preemption (priority-1 matters are
decided one by one by the intake, never batched).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from gridgov.catalog import Matter
from gridgov.dispatch.batch import PRIORITY_WEIGHT
from gridgov.dispatch.pool import DispatchContext, IntArray, UnitPool
from gridgov.dispatch.records import Assignment, Decision, Incident, Placement
from gridgov.dispatch.search import Target, incident_target
from gridgov.dispatch.single import (
    TIER_RULES,
    dispatch_pool,
    make_assignment,
    member_level,
    refused_decision,
    scopes,
    widest_level,
    with_route,
)
from gridgov.errors import InputError, OutsideDistrictError, UnknownMatterError
from gridgov.model import EscalationLevel, ForceKind

#: The rule of an assignment the joint step moved to another unit.
RULE_JOINT = "joint_nearest"

# Rules whose unit the joint step may change, and the tier (scope) each keeps to.
_MOVABLE: dict[str, str] = {rule: tier for tier, rule in TIER_RULES.items() if tier != "own_grid"}
# Larger than any sum of real weighted times: "not eligible" in the assignment matrix.
_NOT_ELIGIBLE = 1e15
# A joint assignment replaces the sequence only when it saves more than this (float noise).
_GAIN_TOL_S = 1e-6


@dataclass(frozen=True)
class Pending:
    """A stored, registered report waiting for its decision."""

    incident: Incident
    matter: Matter
    placement: Placement


@dataclass
class _Slot:
    report: int
    index: int  # of the assignment in the report's decision
    kind: ForceKind
    tier: str
    weight: float
    cap: float
    rows: IntArray  # eligible units
    times: np.ndarray  # their times (inf: beyond the cap)
    row: int  # the unit the sequence gave it


def decide_together(
    pending: Sequence[Pending],
    pool: UnitPool,
    ctx: DispatchContext,
    *,
    routes: bool = True,
    exclude: frozenset[str] = frozenset(),
) -> list[Decision | Exception]:
    """Decisions for ``pending`` (in arrival order) on one pool of available units.

    Returns one decision per report, or the exception single dispatch raised for it (the
    caller handles those one by one). A point the roads cannot serve is a refused decision,
    as in single dispatch. Every decision's explanation gains a ``batch`` part: the batch's
    size, the report's place in it, the units earlier reports of the batch took, and what the
    joint step changed. ``exclude``: units the batch gave away already (to its urgent reports,
    :func:`decide_urgent`), which no report here may take.
    """
    out = _in_order(pending, pool, ctx, exclude, routes)
    for position, (decision, earlier) in enumerate(out, start=1):
        if isinstance(decision, Decision):
            decision.explanation["batch"] = {
                "reports": len(pending),
                "position": position,
                "units_taken_earlier": sorted(earlier),
            }
    decisions = [d for d, _ in out]
    _improve(pending, decisions, pool, ctx, routes, exclude)
    return decisions


def decide_urgent(
    pending: Sequence[Pending], pool: UnitPool, ctx: DispatchContext, *, routes: bool = True
) -> list[Decision | Exception]:
    """Decisions for reports that may preempt (priority 1), one after another, each exactly
    as single dispatch decides it on ``pool`` (busy units included, for preemption), without
    the units (available or preempted) an earlier one took. No joint step: a preemption is
    decided for one report at a time."""
    return [d for d, _ in _in_order(pending, pool, ctx, frozenset(), routes)]


def _in_order(
    pending: Sequence[Pending],
    pool: UnitPool,
    ctx: DispatchContext,
    exclude: frozenset[str],
    routes: bool,
) -> list[tuple[Decision | Exception, frozenset[str]]]:
    """Single dispatch's decision for each report in turn, each without ``exclude`` and the
    units the earlier ones took (which it is given along with its decision)."""
    out: list[tuple[Decision | Exception, frozenset[str]]] = []
    taken = set(exclude)
    for p in pending:
        earlier = frozenset(taken)
        decision = decide_one(p, pool, ctx, exclude=earlier, routes=routes)
        if isinstance(decision, Decision):
            taken.update(a.unit_id for a in decision.assignments)
        out.append((decision, earlier))
    return out


def decide_one(
    p: Pending,
    pool: UnitPool,
    ctx: DispatchContext,
    *,
    exclude: frozenset[str],
    routes: bool,
    allow_preemption: bool = True,
) -> Decision | Exception:
    """Single dispatch's decision for one report, or the exception it raised (a point outside
    the district, an unknown matter); a point the roads cannot serve is a refused decision.
    Busy units are preempted only when ``pool`` holds them (a pool read with them, for a
    priority-1 report)."""
    try:
        return dispatch_pool(
            p.incident,
            pool,
            ctx,
            p.matter,
            p.placement,
            exclude=exclude,
            routes=routes,
            allow_preemption=allow_preemption,
        )
    except (OutsideDistrictError, UnknownMatterError) as exc:
        return exc
    except InputError as exc:
        return refused_decision(p.incident, ctx, p.matter, p.placement, str(exc))


def weighted_time_s(decisions: Sequence[Decision | Exception]) -> float:
    """``sum(PRIORITY_WEIGHT[priority] * time_s)`` over the assignments of ``decisions``."""
    return sum(
        PRIORITY_WEIGHT[d.priority] * a.time_s
        for d in decisions
        if isinstance(d, Decision)
        for a in d.assignments
    )


def _improve(
    pending: Sequence[Pending],
    decisions: list[Decision | Exception],
    pool: UnitPool,
    ctx: DispatchContext,
    routes: bool,
    exclude: frozenset[str],
) -> None:
    """Re-assign the movable slots of each kind jointly, in place, where that is better."""
    movable = [
        (k, j, a)
        for k, d in enumerate(decisions)
        if isinstance(d, Decision)
        for j, a in enumerate(d.assignments)
        if a.rule in _MOVABLE and a.preempts is None
    ]
    kinds: dict[ForceKind, list[tuple[int, int, Assignment]]] = {}
    for item in movable:
        kinds.setdefault(item[2].kind, []).append(item)
    contested = {kind: items for kind, items in kinds.items() if len(items) > 1}
    if not contested:
        return
    # Units no movable slot may take: those of the slots that stay as decided, and those
    # the batch gave away before.
    fixed = set(exclude) | {
        a.unit_id
        for d in decisions
        if isinstance(d, Decision)
        for a in d.assignments
        if not (a.rule in _MOVABLE and a.preempts is None)
    }
    row_of = pool.row_of
    targets: dict[int, Target] = {}
    for kind in sorted(contested, key=lambda k: k.value):
        items = contested[kind]
        if not _overlap(pending, pool, ctx, row_of, items):
            continue
        slots = [_slot(pending, pool, ctx, targets, row_of, fixed, k, j, a) for k, j, a in items]
        moved = _solve(slots)
        for slot, row, time_s in moved:
            _move(pending, decisions, pool, ctx, targets, slot, row, time_s, routes)


def _overlap(
    pending: Sequence[Pending],
    pool: UnitPool,
    ctx: DispatchContext,
    row_of: dict[str, int],
    items: Sequence[tuple[int, int, Assignment]],
) -> bool:
    """Whether some slot's scope holds a unit another slot of the batch took.

    When none does, no slot could have had another's unit: each has its nearest free one
    already, and the sequence is optimal without a single search (the usual case: reports
    of a batch mostly lie in different streets).
    """
    units = np.array([row_of[a.unit_id] for _, _, a in items], dtype=np.int64)
    for i, (k, _, a) in enumerate(items):
        p = pending[k]
        tiers = scopes(
            pool, pool.rows_of_kind(a.kind), p.matter, p.placement, a.kind, ctx.neighbours
        )
        if np.isin(np.delete(units, i), tiers[_MOVABLE[a.rule]]).any():
            return True
    return False


def _target(
    pending: Sequence[Pending],
    pool: UnitPool,
    ctx: DispatchContext,
    targets: dict[int, Target],
    k: int,
) -> Target:
    target = targets.get(k)
    if target is None:
        p = pending[k]
        target = incident_target(pool, ctx, p.incident, p.matter.required_kinds)
        targets[k] = target
    return target


def _slot(
    pending: Sequence[Pending],
    pool: UnitPool,
    ctx: DispatchContext,
    targets: dict[int, Target],
    row_of: dict[str, int],
    fixed: set[str],
    k: int,
    j: int,
    a: Assignment,
) -> _Slot:
    p = pending[k]
    tier = _MOVABLE[a.rule]
    cap = p.matter.max_travel_min * 60.0
    rows = scopes(pool, pool.rows_of_kind(a.kind), p.matter, p.placement, a.kind, ctx.neighbours)[
        tier
    ]
    pool.ensure_snaps(rows[pool.available[rows]])
    rows = rows[pool.usable(rows, fixed, ())]
    times = _target(pending, pool, ctx, targets, k).times_within(rows, cap)
    times[times > cap] = np.inf
    return _Slot(
        report=k,
        index=j,
        kind=a.kind,
        tier=tier,
        weight=PRIORITY_WEIGHT[p.matter.priority],
        cap=cap,
        rows=rows,
        times=times,
        row=row_of[a.unit_id],
    )


def _solve(slots: list[_Slot]) -> list[tuple[_Slot, int, float]]:
    """The slots whose unit changes in the optimal assignment, when it beats the sequence."""
    # Each slot already has its nearest eligible unit: the sequence is optimal as it is.
    best = [float(np.min(s.times)) if len(s.times) else np.inf for s in slots]
    current = [_time_of(s, s.row) for s in slots]
    if all(c <= b for c, b in zip(current, best, strict=True)):
        return []
    columns = np.unique(np.concatenate([s.rows for s in slots]))
    col = {int(r): c for c, r in enumerate(columns.tolist())}
    cost = np.full((len(slots), len(columns)), _NOT_ELIGIBLE)
    for i, s in enumerate(slots):
        finite = np.isfinite(s.times)
        cost[i, [col[int(r)] for r in s.rows[finite].tolist()]] = s.weight * s.times[finite]
    rows, cols = linear_sum_assignment(cost)
    before = sum(s.weight * t for s, t in zip(slots, current, strict=True))
    after = float(cost[rows, cols].sum())
    if after >= before - _GAIN_TOL_S:
        return []
    out = []
    for i, c in zip(rows.tolist(), cols.tolist(), strict=True):
        s, r = slots[i], int(columns[c])
        if r != s.row:
            out.append((s, r, _time_of(s, r)))
    return out


def _time_of(slot: _Slot, row: int) -> float:
    hit = np.flatnonzero(slot.rows == row)
    return float(slot.times[hit[0]]) if len(hit) else np.inf


def _move(
    pending: Sequence[Pending],
    decisions: list[Decision | Exception],
    pool: UnitPool,
    ctx: DispatchContext,
    targets: dict[int, Target],
    slot: _Slot,
    row: int,
    time_s: float,
    routes: bool,
) -> None:
    decision = decisions[slot.report]
    assert isinstance(decision, Decision)
    p = pending[slot.report]
    old = decision.assignments[slot.index]
    level = _level(pool, row, slot.kind, p.placement, ctx.neighbours)
    new = make_assignment(pool, row, slot.kind, old.role, level, RULE_JOINT, time_s, slot.cap)
    if routes:
        new = with_route(pool, _target(pending, pool, ctx, targets, slot.report), row, new)
    assignments = list(decision.assignments)
    assignments[slot.index] = new
    batch: dict[str, Any] = decision.explanation["batch"]
    batch.setdefault("moved", []).append(
        {
            "kind": slot.kind.value,
            "from_unit": old.unit_id,
            "from_time_s": old.time_s,
            "to_unit": new.unit_id,
            "to_time_s": new.time_s,
            "note": "reports of this batch competed for these units; the joint assignment "
            "lowers the batch's total priority-weighted travel time",
        }
    )
    decisions[slot.report] = replace(
        decision,
        assignments=tuple(assignments),
        level=widest_level(x.level for x in assignments),
    )


def _level(
    pool: UnitPool,
    row: int,
    kind: ForceKind,
    placement: Placement,
    neighbours: dict[str, list[str]],
) -> EscalationLevel:
    """The level of sending unit ``row`` to ``placement``: its command relation, as the tiers
    of single dispatch record it."""
    street = pool.street[row]
    if street == placement.street_code:
        return member_level(pool, row, kind, placement)
    if street in neighbours.get(str(placement.street_code), []):
        return EscalationLevel.NEIGHBOUR
    return EscalationLevel.DISTRICT
