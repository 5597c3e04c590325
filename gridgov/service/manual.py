"""Human-in-the-loop dispatch: the recommendation, the units a dispatcher chose, and the units
of an incident at work released, reassigned or added.

The rules, each written once here:

- the recommendation is the dispatcher's own decision taken now (nothing committed);
- a choice is an **override** iff it differs from that recommendation for any force kind, and
  an override needs a reason;
- a choice made against a recommendation that has changed since the caller saw it (a unit
  taken meanwhile, a nearer one freed) is refused as a conflict, with the fresh one, as is a
  unit another dispatcher took between the check and the commit: never a double assignment;
- a release or a reassignment needs a reason, and an incident at work keeps at least one unit
  (the last one is reassigned, or the incident cancelled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridgov import dispatch, store
from gridgov.errors import InputError, InvalidTransitionError, NotFoundError
from gridgov.store import Engine
from gridgov.workflow import Action, Event, Role, State


@dataclass(frozen=True)
class Choice:
    """What became of a choice: committed (``dispatch_id``), or a ``conflict`` with the fresh
    recommendation (``options``)."""

    options: dispatch.Options
    decision: dispatch.Decision | None = None
    dispatch_id: int | None = None
    override: bool = False
    conflict: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "committed": self.decision is not None,
            "override": self.override,
            "dispatch_id": self.dispatch_id,
        }
        if self.decision is not None:
            out["dispatch"] = self.decision.to_json()
        if self.conflict is not None:
            out["conflict"] = self.conflict
            out["recommendation"] = recommendation_json(self.options)
        return out


def is_override(recommended: Mapping[str, str], chosen: Mapping[str, str]) -> bool:
    """Whether a choice (force kind → unit) departs from the recommendation."""
    return dict(chosen) != dict(recommended)


def recommendation_json(options: dispatch.Options) -> dict[str, Any]:
    """The recommendation with its explanation, and every candidate per kind."""
    return {
        "recommended": options.recommended,
        "decision": options.recommendation.to_json(),
        **options.to_json(),
    }


def recommend(
    engine: Engine, ctx: dispatch.DispatchContext, incident_id: str, *, now: datetime | None = None
) -> dispatch.Options:
    """The dispatcher's decision for a stored incident as it would be taken now, with every
    candidate per kind (nothing is committed)."""
    options, _ = store.options_stored(engine, ctx, incident_id, now=_now(now))
    return options


def assign(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    units: Mapping[str, str] | None = None,
    seen: Mapping[str, str] | None = None,
    reason: str | None = None,
    actor: str,
    role: Role | str = Role.DISPATCHER,
    now: datetime | None = None,
) -> Choice:
    """Commit the units a dispatcher chose for a queued incident.

    Parameters
    ----------
    units
        Force kind → unit; None: the recommendation as it stands.
    seen
        The recommendation the caller was shown (kind → unit); when the current one differs,
        the choice is refused as a conflict, with the fresh recommendation.
    reason
        Why, when ``units`` override the recommendation (required then).

    Raises
    ------
    InvalidTransitionError
        The incident is not waiting for dispatch.
    InputError
        An override without a reason, no unit chosen, or a unit that is not a candidate.
    """
    now = _now(now)
    options, state = store.options_stored(engine, ctx, incident_id, now=now)
    if state != str(State.REGISTERED):
        msg = f"incident {incident_id} is {state}, not waiting for dispatch"
        raise InvalidTransitionError(msg, incident_id=incident_id, state=state, action="dispatch")
    recommended = options.recommended
    if seen is not None and dict(seen) != recommended:
        return Choice(options, conflict="the recommendation changed since it was shown")
    chosen = dict(recommended if units is None else units)
    taken = _taken(options, chosen)
    if taken:
        return Choice(options, conflict=f"unit(s) {', '.join(taken)} are no longer available")
    if not chosen:
        msg = f"no unit to send to incident {incident_id}: the recommendation found none"
        raise InputError(msg)
    override = is_override(recommended, chosen)
    if override and not (reason and reason.strip()):
        msg = "a choice other than the recommendation needs a reason"
        raise InputError(msg)
    decision = options.choose(chosen)
    try:
        dispatch_id = store.commit_choice(
            engine,
            decision,
            now=now,
            actor=actor,
            role=role,
            override=override,
            reason=reason if override else None,
            recommended=options.recommendation,
        )
    except store.UnitsTakenError as exc:
        # The other transaction may not have committed yet: its units are left out by name.
        fresh, _ = store.options_stored(
            engine, ctx, incident_id, now=_now(None), taken=exc.unit_ids
        )
        return Choice(fresh, conflict=str(exc))
    return Choice(options, decision, dispatch_id, override)


def _taken(options: dispatch.Options, chosen: Mapping[str, str]) -> list[str]:
    """Chosen units that the snapshot shows working elsewhere (busy, off duty) now."""
    out = []
    for kind, unit_id in chosen.items():
        if unit_id in {a.unit_id for a in options.recommendation.assignments}:
            continue
        if any(o["unit_id"] == unit_id for o in options.left_out.get(kind, [])):
            out.append(unit_id)
    return sorted(out)


def release(
    engine: Engine,
    incident_id: str,
    unit_id: str,
    *,
    reason: str | None,
    actor: str,
    role: Role | str = Role.DISPATCHER,
    now: datetime | None = None,
) -> Event:
    """Release one unit from an incident at work (a ``release`` event); it keeps another."""
    _need_reason(reason, "a release")
    return store.change_units(
        engine,
        incident_id,
        Action.RELEASE,
        now=_now(now),
        actor=actor,
        role=role,
        reason=reason,
        release=unit_id,
    )


def reassign(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    unit_id: str,
    to_unit: str,
    *,
    reason: str | None,
    actor: str,
    role: Role | str = Role.DISPATCHER,
    now: datetime | None = None,
) -> Event:
    """Replace one unit of an incident at work by another of its kind (a ``reassign`` event)."""
    _need_reason(reason, "a reassignment")
    now = _now(now)
    kind = _kind_of(engine, incident_id, unit_id)
    options, _ = store.options_stored(engine, ctx, incident_id, now=now)
    add = options.choose({kind: to_unit})
    return store.change_units(
        engine,
        incident_id,
        Action.REASSIGN,
        now=now,
        actor=actor,
        role=role,
        reason=reason,
        release=unit_id,
        add=add,
    )


def backup(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    unit_id: str | None = None,
    kind: str | None = None,
    reason: str | None = None,
    actor: str,
    role: Role | str = Role.DISPATCHER,
    now: datetime | None = None,
) -> Event:
    """Add a unit to an incident at work (a ``backup`` event): ``unit_id``, or the fastest
    available unit of ``kind`` (default: the matter's lead kind)."""
    now = _now(now)
    options, _ = store.options_stored(engine, ctx, incident_id, now=now)
    kinds = [str(k) for k in options.matter.required_kinds]
    if unit_id is not None and kind is None:
        kind = next(
            (k for k in kinds if any(c.unit_id == unit_id for c in options.candidates[k])),
            kinds[0],
        )
    kind = kind or kinds[0]
    if kind not in kinds:
        msg = f"matter {options.matter.code} needs no {kind} (it needs {', '.join(kinds)})"
        raise InputError(msg)
    if unit_id is None:
        active = set(
            store.read_assignments(engine, incident_id=incident_id, active=True)["unit_id"]
        )
        unit_id = next(
            (c.unit_id for c in options.candidates[kind] if c.unit_id not in active), None
        )
        if unit_id is None:
            msg = f"no available {kind} unit can be added to incident {incident_id}"
            raise InputError(msg)
    add = options.choose({kind: unit_id})
    return store.change_units(
        engine,
        incident_id,
        Action.BACKUP,
        now=now,
        actor=actor,
        role=role,
        reason=reason,
        add=add,
        min_left=0,
    )


def _kind_of(engine: Engine, incident_id: str, unit_id: str) -> str:
    active = store.read_assignments(engine, incident_id=incident_id, active=True)
    rows = active[active["unit_id"] == unit_id]
    if rows.empty:
        msg = f"unit {unit_id} is not working on incident {incident_id}"
        raise NotFoundError(msg)
    return str(rows["kind"].iloc[0])


def _need_reason(reason: str | None, what: str) -> None:
    if not (reason and reason.strip()):
        msg = f"{what} needs a reason"
        raise InputError(msg)


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else now.astimezone(UTC)
