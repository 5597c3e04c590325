"""Single-incident dispatch: the tiers of escalation, preemption, and the explanation.

See :mod:`gridgov.dispatch` and DESIGN.md "Dispatch semantics".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

import geopandas as gpd
import numpy as np

from gridgov.catalog import Matter
from gridgov.dispatch import rules
from gridgov.dispatch.pool import DispatchContext, FloatArray, IntArray, UnitPool
from gridgov.dispatch.records import Assignment, Decision, Incident, Placement
from gridgov.dispatch.search import Target, incident_target
from gridgov.errors import OutsideDistrictError
from gridgov.model import EscalationLevel, ForceKind, HandlingLevel, UnitStatus
from gridgov.settings import get_settings
from gridgov.travel_model import Snapped, TravelModel

#: Tiers of single dispatch, in the order they are tried.
TIERS: tuple[str, ...] = ("own_grid", "street", "neighbour", "district")
#: The rule recorded for an assignment accepted at each tier.
TIER_RULES: dict[str, str] = {
    "own_grid": "own_grid_worker",
    "street": "nearest_in_street",
    "neighbour": "nearest_in_neighbours",
    "district": "nearest_in_district",
}
RULE_OVER_MAX = "best_over_max_travel"
RULE_PREEMPTION = "preemption"

#: Candidates listed per tier in an explanation (the count of all of them is always given);
#: the district tier of grid workers would otherwise list a thousand units.
EXPLAIN_MAX_CANDIDATES = 25

# A route's time and the field's time come from different searches; they may differ by float
# rounding only.
_ROUTE_TOL_S = 1e-3

_LEVEL_RANK: dict[EscalationLevel, int] = {lv: i for i, lv in enumerate(EscalationLevel)}
ROLE_LEAD = "lead"
ROLE_ASSIST = "assist"


def locate_incident(incident: Incident, ctx: DispatchContext) -> Placement:
    """Find the incident's street, community, grid and micro-grid.

    Raises
    ------
    OutsideDistrictError
        If the point lies outside every street of the loaded district.
    """
    codes = ctx.locator.locate_one(incident.lon, incident.lat)
    street = codes.get("street")
    if street is None:
        raise OutsideDistrictError(float(incident.lon), float(incident.lat), "wgs84")
    return Placement(
        district_code=codes.get("district"),
        street_code=street,
        community_code=codes.get("community"),
        grid_code=codes.get("grid"),
        microgrid_code=codes.get("microgrid"),
    )


def dispatch_incident(
    incident: Incident,
    gdf_units: gpd.GeoDataFrame,
    ctx: DispatchContext,
    *,
    exclude: Collection[str] = frozenset(),
    routes: bool = True,
    allow_preemption: bool = True,
) -> Decision:
    """Choose the units for one incident (DESIGN.md "Dispatch semantics").

    Parameters
    ----------
    incident
        The incident (WGS84).
    gdf_units
        Units with their current status (best passed through :func:`prepare_units` first);
        optional ``busy_incident`` / ``busy_priority`` columns make busy units preemptable.
    ctx
        The dispatch context.
    exclude
        Unit ids not to use (e.g. units that declined); recorded as left out.
    routes
        Compute the chosen units' routes (geometry for the map).
    allow_preemption
        Let a priority-1 matter take a unit busy on a low-priority incident.

    Raises
    ------
    UnknownMatterError
        If the matter code is not in the catalogue.
    OutsideDistrictError
        If the point lies outside every street.
    InputError
        If the point lies farther than ``max_snap_m`` from the roads of a travel mode that
        units of the matter's kinds use.
    """
    matter = ctx.catalog.get(incident.matter_code)
    placement = locate_incident(incident, ctx)
    pool = UnitPool(gdf_units, {k.value for k in matter.required_kinds}, ctx)
    return dispatch_pool(
        incident,
        pool,
        ctx,
        matter,
        placement,
        exclude=exclude,
        routes=routes,
        allow_preemption=allow_preemption,
    )


def dispatch_pool(
    incident: Incident,
    pool: UnitPool,
    ctx: DispatchContext,
    matter: Matter,
    placement: Placement,
    *,
    exclude: Collection[str] = frozenset(),
    routes: bool = True,
    allow_preemption: bool = True,
) -> Decision:
    """:func:`dispatch_incident` on a pool built already (the store builds it from arrays)."""
    kinds = matter.required_kinds
    target = incident_target(pool, ctx, incident, kinds)
    exclude = frozenset(exclude)
    taken: set[str] = set()
    assignments: list[Assignment] = []
    unfilled: list[ForceKind] = []
    kind_notes: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        role = ROLE_LEAD if i == 0 else ROLE_ASSIST
        found, note = _dispatch_kind(
            pool, target, matter, placement, kind, role, exclude, taken, allow_preemption
        )
        kind_notes.append(note)
        if found is None:
            unfilled.append(kind)
            continue
        row, assignment = found
        taken.add(assignment.unit_id)
        if routes:
            assignment = with_route(pool, target, row, assignment)
        assignments.append(assignment)
    return build_decision(
        ctx, incident, matter, placement, target, assignments, unfilled, kind_notes, "single"
    )


def build_decision(
    ctx: DispatchContext,
    incident: Incident,
    matter: Matter,
    placement: Placement,
    target: Target,
    assignments: Sequence[Assignment],
    unfilled: Sequence[ForceKind],
    kind_notes: Any,
    method: str,
) -> Decision:
    """The decision and its explanation, the same for single, batch and greedy dispatch."""
    explanation = {
        "method": method,
        "travel_model": ctx.describe_travel(),
        "incident": _incident_note(incident, placement, target.snaps, target.travel),
        "matter": _matter_note(matter),
        "kinds": kind_notes,
        "searches": target.searches,
    }
    return Decision(
        incident=incident,
        matter_code=matter.code,
        priority=matter.priority,
        placement=placement,
        assignments=tuple(assignments),
        unfilled=tuple(unfilled),
        level=widest_level(a.level for a in assignments),
        explanation=explanation,
    )


def _dispatch_kind(
    pool: UnitPool,
    target: Target,
    matter: Matter,
    placement: Placement,
    kind: ForceKind,
    role: str,
    exclude: frozenset[str],
    taken: set[str],
    allow_preemption: bool,
) -> tuple[tuple[int, Assignment] | None, dict[str, Any]]:
    cap = matter.max_travel_min * 60.0
    rows = pool.rows_of_kind(kind)
    scope = scopes(pool, rows, matter, placement, kind, target.pool.ctx.neighbours)
    note: dict[str, Any] = {"kind": kind.value, "role": role, "tiers": []}
    checked = np.zeros(pool.n, dtype=bool)
    usable = np.zeros(pool.n, dtype=bool)
    left_out: list[tuple[IntArray, str]] = []  # (rows, tier); why is said of the listed only
    cand = np.zeros(0, dtype=np.int64)
    for tier, tier_rows in scope.items():
        # Each unit is checked once, in the narrowest tier that holds it.
        new = tier_rows[~checked[tier_rows]]
        pool.ensure_snaps(new[pool.available[new]])
        ok = pool.usable(new, exclude, taken)
        usable[new[ok]] = True
        left_out.append((new[~ok], tier))
        checked[new] = True
        cand = tier_rows[usable[tier_rows]]
        times, bound = target.best_times(cand, cap)
        best = rules.best_candidate(times, pool.rank[cand])
        accepted = best is not None and times[best] <= cap
        note["tiers"].append(_tier_note(pool, tier, cand, times, bound, accepted))
        if accepted and best is not None:
            r, t = int(cand[best]), float(times[best])
            level = _tier_level(tier, pool, r, kind, placement)
            note.update(accepted_tier=tier, rule=TIER_RULES[tier], unit_id=pool.ids[r], time_s=t)
            note.update(_left_out(pool, left_out, exclude, taken))
            return (r, make_assignment(pool, r, kind, role, level, TIER_RULES[tier], t, cap)), note
    note["accepted_tier"] = None
    note.update(_left_out(pool, left_out, exclude, taken))
    if allow_preemption and rules.may_preempt(matter.priority):
        pre = _preempt(pool, target, rows, kind, role, cap, exclude, taken)
        note["preemption"] = pre[1]
        if pre[0] is not None:
            r, a = pre[0]
            note.update(rule=RULE_PREEMPTION, unit_id=a.unit_id, time_s=a.time_s)
            return (r, a), note
    else:
        why = "matter is not priority 1" if allow_preemption else "preemption not allowed"
        note["preemption"] = {"considered": False, "reason": why}
    # ``cand`` is the district tier's: the best of them, however far, is the fallback.
    times, _ = target.best_times(cand, math.inf)
    best = rules.best_candidate(times, pool.rank[cand])
    if best is None:
        note.update(
            rule=None,
            unit_id=None,
            unfilled_reason=(
                "no usable unit of this kind in the district"
                if len(cand) == 0
                else "no usable unit of this kind can reach the incident"
            ),
        )
        return None, note
    r, t = int(cand[best]), float(times[best])
    note.update(rule=RULE_OVER_MAX, unit_id=pool.ids[r], time_s=t)
    note["over_max_travel"] = list_candidates(pool, "district", cand, times)
    level = EscalationLevel.DISTRICT
    return (r, make_assignment(pool, r, kind, role, level, RULE_OVER_MAX, t, cap)), note


def scopes(
    pool: UnitPool,
    rows: IntArray,
    matter: Matter,
    placement: Placement,
    kind: ForceKind,
    neighbours: dict[str, list[str]],
) -> dict[str, IntArray]:
    """The rows of each tier (every unit of the kind, whatever its state), in tier order.

    The command rule of single dispatch; a batch keeps each slot to the tier its single
    decision reached (:mod:`gridgov.dispatch.together`)."""
    street = placement.street_code
    out: dict[str, IntArray] = {}
    if (
        matter.level is HandlingLevel.GRID
        and kind is ForceKind.GRID_WORKER
        and placement.grid_code is not None
    ):
        out["own_grid"] = rows[np.isin(rows, pool.rows_in_grid(placement.grid_code))]
    out["street"] = rows[pool.in_streets((street,))[rows]]
    out["neighbour"] = rows[pool.in_streets((street, *neighbours.get(street, [])))[rows]]
    out["district"] = rows
    return out


def refused_decision(
    incident: Incident, ctx: DispatchContext, matter: Matter, placement: Placement, reason: str
) -> Decision:
    """The decision for a point inside the district that the road network cannot serve
    (farther than ``max_snap_m`` from the roads its units drive on): unassigned, with the
    reason, for a human to handle; an answer, not a lost incident."""
    return Decision(
        incident=incident,
        matter_code=matter.code,
        priority=matter.priority,
        placement=placement,
        assignments=(),
        unfilled=tuple(matter.required_kinds),
        level=None,
        explanation={
            "method": "single",
            "travel_model": ctx.describe_travel(),
            "refused": reason,
        },
    )


def _tier_level(
    tier: str, pool: UnitPool, row: int, kind: ForceKind, placement: Placement
) -> EscalationLevel:
    if tier == "own_grid":
        return EscalationLevel.COMMUNITY
    if tier == "street":
        return member_level(pool, row, kind, placement)
    return EscalationLevel(tier)


def member_level(
    pool: UnitPool, row: int, kind: ForceKind, placement: Placement
) -> EscalationLevel:
    """Community for a grid worker of the incident's community, street for the street's units."""
    if pool.street[row] != placement.street_code:
        return EscalationLevel.NEIGHBOUR
    grid = pool.grid[row]
    community = placement.community_code
    if kind is ForceKind.GRID_WORKER and grid and community and grid[:12] == community:
        return EscalationLevel.COMMUNITY
    return EscalationLevel.STREET


def make_assignment(
    pool: UnitPool,
    row: int,
    kind: ForceKind,
    role: str,
    level: EscalationLevel,
    rule: str,
    time_s: float,
    cap: float,
    preempts: str | None = None,
) -> Assignment:
    return Assignment(
        unit_id=pool.ids[row],
        kind=kind,
        role=role,
        level=level,
        rule=rule,
        time_s=time_s,
        over_max_travel=time_s > cap,
        preempts=preempts,
        route=None,
    )


def _preempt(
    pool: UnitPool,
    target: Target,
    rows: IntArray,
    kind: ForceKind,
    role: str,
    cap: float,
    exclude: frozenset[str],
    taken: set[str],
) -> tuple[tuple[int, Assignment] | None, dict[str, Any]]:
    """The nearest unit busy on a low-priority incident within the maximum travel time."""
    min_priority = get_settings().preempt_min_priority
    busy = rows[
        (pool.status[rows] == UnitStatus.BUSY.value)
        & pool.on_duty[rows]
        & pool.positioned[rows]
        & pool.supported[rows]
    ]
    if exclude or taken:
        busy = busy[~pool.marked(exclude, taken)[busy]]
    pool.ensure_snaps(busy)
    busy = busy[~pool.far[busy]]
    prio = pool.busy_priority[busy]
    has_inc = np.not_equal(pool.busy_incident[busy], np.array(None, dtype=object))
    ok = np.isfinite(prio) & (prio >= min_priority) & has_inc
    cand = busy[ok]
    times, _ = target.best_times(cand, cap)
    listed = list_candidates(
        pool, "district", cand, times, note=lambda r: f"busy{pool.busy_text(r)}: preemptable"
    )
    not_ok_rows = busy[~ok]
    # No times to compare: listed in the tie-break order of units.
    not_ok_rows = not_ok_rows[
        rules.candidate_order(np.zeros(len(not_ok_rows)), pool.rank[not_ok_rows])
    ]
    not_ok = [
        pool.candidate_json(r, "district", None, f"busy{pool.busy_text(r)}: not preemptable")
        for r in not_ok_rows[:EXPLAIN_MAX_CANDIDATES].tolist()
    ]
    note: dict[str, Any] = {
        "considered": True,
        "min_priority": min_priority,
        "preemptable": listed,
        "not_preemptable": not_ok,
        "not_preemptable_total": len(not_ok_rows),
    }
    best = rules.best_candidate(times, pool.rank[cand])
    if best is None or times[best] > cap:
        note["result"] = "no unit busy on a low-priority incident within the maximum travel time"
        return None, note
    r, t = int(cand[best]), float(times[best])
    preempts = pool.busy_incident[r]
    note["result"] = f"{pool.ids[r]} preempted from incident {preempts}"
    a = make_assignment(
        pool, r, kind, role, EscalationLevel.DISTRICT, RULE_PREEMPTION, t, cap, preempts
    )
    return (r, a), note


def with_route(pool: UnitPool, target: Target, row: int, a: Assignment) -> Assignment:
    mode = pool.mode[row]
    source = pool.snapped(np.array([row]), mode)
    field = target.fields.get(mode)
    if field is not None and a.time_s <= field.limit_s:
        # The search that timed the unit holds its route: no search of its own.
        route = field.route_from(source)
    else:
        # The exact time bounds the route's search: one search instead of a growing series.
        route = target.travel.route(source, target.snaps[mode], limit_s=a.time_s)
    # The route is drawn apart from the time that chose the unit; they must agree.
    assert abs(route.time_s - a.time_s) <= _ROUTE_TOL_S * max(1.0, a.time_s), (route, a)
    return replace(a, route=route)


def _tier_note(
    pool: UnitPool,
    tier: str,
    rows: IntArray,
    times: FloatArray,
    bound: float,
    accepted: bool,
) -> dict[str, Any]:
    finite = times[np.isfinite(times)]
    return {
        "tier": tier,
        "n_candidates": len(rows),
        "exact_up_to_s": bound,
        "best_s": float(np.min(finite)) if len(finite) else None,
        "accepted": accepted,
        "candidates": list_candidates(pool, tier, rows, times),
    }


def list_candidates(
    pool: UnitPool,
    tier: str,
    rows: IntArray,
    times: FloatArray,
    limit: int = EXPLAIN_MAX_CANDIDATES,
    note: Callable[[int], str] | None = None,
) -> list[dict[str, Any]]:
    """The first candidates by (time, unit_id), as JSON; the note defaults to the position's."""
    order = rules.candidate_order(times, pool.rank[rows])[:limit]
    out = []
    for i in order.tolist():
        r = int(rows[i])
        text = note(r) if note is not None else pool.note[r]
        out.append(pool.candidate_json(r, tier, float(times[i]), text))
    return out


def _left_out(
    pool: UnitPool,
    items: list[tuple[IntArray, str]],
    exclude: frozenset[str],
    taken: set[str],
) -> dict[str, Any]:
    """The units left out (``(rows, tier)`` per tier): the first
    :data:`EXPLAIN_MAX_CANDIDATES` as JSON, with why, by tier, then in candidate order, and how
    many there were.

    Capped as the candidates are: every dispatch row keeps its explanation, and a kind with
    hundreds of units off duty or busy made it hundreds of KB (the console lists every unit
    of a kind and why, on demand, from the options of :mod:`gridgov.dispatch.choice`). Only
    the listed units' reasons are written: when a kind is all busy, saying why of every unit
    was most of a decision's time.
    """
    # Every scope has the district tier, so there is at least one array.
    rows = np.concatenate([r for r, _ in items])
    # The tier stands in for the time: candidate order then breaks ties within a tier.
    tiers = np.repeat([float(TIERS.index(t)) for _, t in items], [len(r) for r, _ in items])
    order = rules.candidate_order(tiers, pool.rank[rows])[:EXPLAIN_MAX_CANDIDATES]
    whys = pool.reasons(rows[order], exclude, taken)
    out = [
        pool.candidate_json(int(rows[i]), TIERS[int(tiers[i])], None, why)
        for i, why in zip(order.tolist(), whys, strict=True)
    ]
    return {"left_out": out, "left_out_total": len(rows)}


def _incident_note(
    incident: Incident, placement: Placement, snaps: dict[str, Snapped], travel: TravelModel
) -> dict[str, Any]:
    return {
        "incident_id": incident.incident_id,
        "lon": incident.lon,
        "lat": incident.lat,
        "placement": placement.to_json(),
        "snap": {
            mode: {
                "access_m": float(s.access_m[0]),
                "edge": int(s.edge[0]),
                "links": travel.joined_links(s),
            }
            for mode, s in snaps.items()
        },
    }


def _matter_note(matter: Matter) -> dict[str, Any]:
    return {
        "code": matter.code,
        "priority": matter.priority,
        "max_travel_min": matter.max_travel_min,
        "level": matter.level.value,
        "required_kinds": [k.value for k in matter.required_kinds],
    }


def widest_level(levels: Iterable[EscalationLevel]) -> EscalationLevel | None:
    """The widest escalation level of ``levels`` (None: no level)."""
    return max(levels, key=_LEVEL_RANK.__getitem__, default=None)
