"""A dispatcher's choice: every candidate with its travel time, and the decision for the units
a person chose instead of (or as) the recommendation.

:func:`dispatch_options` runs the dispatcher (:func:`~gridgov.dispatch.dispatch_pool`) for the
recommendation, then times every usable unit of each kind the matter needs, without the
tiers' search limits, so that a picker can list them all; the units that cannot go are listed
with the reason. :meth:`Options.choose` turns a choice (one unit per kind) into a
:class:`~gridgov.dispatch.Decision` the store commits like any other, the recommended
assignment kept where the choice agrees with it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridgov.catalog import Matter
from gridgov.dispatch import rules
from gridgov.dispatch.pool import DispatchContext, UnitPool
from gridgov.dispatch.records import Assignment, Decision, Incident, Placement, json_float
from gridgov.dispatch.search import Target, needed_modes, snap_incident
from gridgov.dispatch.single import (
    ROLE_ASSIST,
    ROLE_LEAD,
    dispatch_pool,
    make_assignment,
    member_level,
    with_route,
)
from gridgov.errors import InputError
from gridgov.model import EscalationLevel, ForceKind

#: The rule of an assignment a dispatcher chose against the recommendation.
RULE_CHOSEN = "dispatcher_choice"
#: Why a unit another dispatcher is committing is left out.
TAKEN = "taken meanwhile by another dispatcher"


@dataclass(frozen=True)
class Candidate:
    """A unit that could go, with its travel time (inf: it cannot reach the incident)."""

    unit_id: str
    kind: str
    street_code: str
    mode: str
    time_s: float
    row: int = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "kind": self.kind,
            "street_code": self.street_code,
            "mode": self.mode,
            "time_s": json_float(self.time_s),
        }


@dataclass
class Options:
    """The recommendation, and per force kind every candidate (fastest first) and every unit
    left out with the reason."""

    recommendation: Decision
    matter: Matter
    candidates: dict[str, list[Candidate]]
    left_out: dict[str, list[dict[str, Any]]]
    _pool: UnitPool = field(repr=False)
    _target: Target | None = field(repr=False)

    @property
    def recommended(self) -> dict[str, str]:
        """Force kind → the recommended unit."""
        return {str(a.kind): a.unit_id for a in self.recommendation.assignments}

    def to_json(self) -> dict[str, Any]:
        return {
            "kinds": [
                {
                    "kind": str(k),
                    "role": ROLE_LEAD if i == 0 else ROLE_ASSIST,
                    "recommended": self.recommended.get(str(k)),
                    "candidates": [c.to_json() for c in self.candidates.get(str(k), [])],
                    "left_out": self.left_out.get(str(k), []),
                }
                for i, k in enumerate(self.matter.required_kinds)
            ]
        }

    def choose(self, chosen: Mapping[str, str]) -> Decision:
        """The decision that sends ``chosen`` (force kind → unit id; a kind left out is not
        filled). A recommended unit keeps its recommended assignment (and rule); another one
        is assigned with rule :data:`RULE_CHOSEN` at the level its street gives it.

        Raises
        ------
        InputError
            A kind the matter does not need, a unit that is not a candidate of its kind, or one
            unit chosen twice.
        """
        kinds = [str(k) for k in self.matter.required_kinds]
        unknown = sorted(set(chosen) - set(kinds))
        if unknown:
            msg = f"matter {self.matter.code} needs no {', '.join(unknown)} (it needs {kinds})"
            raise InputError(msg)
        if len(set(chosen.values())) != len(chosen):
            msg = "one unit cannot fill two force kinds"
            raise InputError(msg)
        by_kind = {str(a.kind): a for a in self.recommendation.assignments}
        cap = self.matter.max_travel_min * 60.0
        placement = self.recommendation.placement
        assignments: list[Assignment] = []
        for i, kind in enumerate(kinds):
            unit_id = chosen.get(kind)
            if unit_id is None:
                continue
            recommended = by_kind.get(kind)
            if recommended is not None and recommended.unit_id == unit_id:
                assignments.append(recommended)
                continue
            cand = next((c for c in self.candidates.get(kind, []) if c.unit_id == unit_id), None)
            if cand is None or not math.isfinite(cand.time_s):
                why = next(
                    (o["note"] for o in self.left_out.get(kind, []) if o["unit_id"] == unit_id),
                    "not a unit of this kind that can reach the incident",
                )
                msg = f"unit {unit_id} cannot be sent as {kind}: {why}"
                raise InputError(msg)
            role = ROLE_LEAD if i == 0 else ROLE_ASSIST
            level = _level(self._pool, cand.row, ForceKind(kind), placement)
            a = make_assignment(
                self._pool, cand.row, ForceKind(kind), role, level, RULE_CHOSEN, cand.time_s, cap
            )
            if self._target is not None:
                a = with_route(self._pool, self._target, cand.row, a)
            assignments.append(a)
        filled = {str(a.kind) for a in assignments}
        unfilled = [ForceKind(k) for k in kinds if k not in filled]
        explanation = dict(self.recommendation.explanation)
        explanation["method"] = "dispatcher"
        return Decision(
            incident=self.recommendation.incident,
            matter_code=self.recommendation.matter_code,
            priority=self.recommendation.priority,
            placement=placement,
            assignments=tuple(assignments),
            unfilled=tuple(unfilled),
            level=max(
                (a.level for a in assignments),
                key=list(EscalationLevel).index,
                default=None,
            ),
            explanation=explanation,
        )


def _level(pool: UnitPool, row: int, kind: ForceKind, placement: Placement) -> EscalationLevel:
    street = pool.street[row]
    if street == placement.street_code:
        return member_level(pool, row, kind, placement)
    near = pool.ctx.neighbours.get(placement.street_code, [])
    return EscalationLevel.NEIGHBOUR if street in near else EscalationLevel.DISTRICT


def dispatch_options(
    incident: Incident,
    pool: UnitPool,
    ctx: DispatchContext,
    matter: Matter,
    placement: Placement,
    *,
    taken: Collection[str] = frozenset(),
) -> Options:
    """The recommendation and every candidate of each kind with its travel time; ``taken``
    are units another dispatcher is committing (left out, with that reason).

    Raises
    ------
    InputError
        The point lies too far from the roads of a mode the units use (as the dispatcher).
    """
    taken = frozenset(taken)
    recommendation = dispatch_pool(incident, pool, ctx, matter, placement, exclude=taken)
    kinds = matter.required_kinds
    modes = needed_modes(pool, kinds)
    target = Target(pool, snap_incident(ctx, incident, modes)) if modes else None
    candidates: dict[str, list[Candidate]] = {}
    left_out: dict[str, list[dict[str, Any]]] = {}
    busy_for_preemption = {a.unit_id for a in recommendation.assignments if a.preempts is not None}
    for kind in kinds:
        rows = pool.rows_of_kind(kind)
        pool.ensure_snaps(rows[pool.available[rows]])
        reasons = [
            TAKEN if pool.ids[r] in taken else why
            for r, why in zip(rows.tolist(), pool.reasons(rows, frozenset(), set()), strict=True)
        ]
        ok = np.array([why is None for why in reasons], dtype=bool)
        usable = rows[ok] if len(rows) else rows
        out: list[dict[str, Any]] = []
        for r, why in zip(rows.tolist(), reasons, strict=True):
            if why is not None and pool.ids[r] not in busy_for_preemption:
                out.append({"unit_id": pool.ids[r], "street_code": pool.street[r], "note": why})
        left_out[str(kind)] = out
        if target is None or len(usable) == 0:
            candidates[str(kind)] = []
            continue
        # Unbounded: the picker shows every unit's exact time, the slowest too.
        times = target.times_within(usable, math.inf)
        order = rules.candidate_order(times, pool.rank[usable])
        candidates[str(kind)] = [
            Candidate(
                unit_id=pool.ids[int(usable[i])],
                kind=str(kind),
                street_code=pool.street[int(usable[i])],
                mode=pool.mode[int(usable[i])],
                time_s=float(times[i]),
                row=int(usable[i]),
            )
            for i in order.tolist()
        ]
    return Options(recommendation, matter, candidates, left_out, pool, target)


__all__ = ["RULE_CHOSEN", "Candidate", "Options", "dispatch_options"]
