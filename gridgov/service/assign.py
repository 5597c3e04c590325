"""Dispatch commit: one incident, or the jointly optimal assignment of the whole queue.

:func:`dispatch_one` is the store's decide-and-commit cycle for one stored incident.
:func:`dispatch_queue` is the batch door (``POST /api/v1/incidents/dispatch``,
``gridgov dispatch-batch``): the queued incidents are assigned together by
:func:`gridgov.dispatch.dispatch_batch` (minimum total priority-weighted travel time, each unit
at most once), compared with the greedy nearest-first baseline on the same snapshot, and
committed in ONE transaction with the units locked (:func:`gridgov.store.commit_batch`). An
incident that changed state meanwhile (cancelled, dispatched by someone else) or whose unit was
taken meanwhile is left out and listed as skipped; the others commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from gridgov import dispatch, store
from gridgov.errors import InputError
from gridgov.store import Engine
from gridgov.workflow import Role, State

#: Why an id the caller named is not in the batch.
NOT_QUEUED = "not queued for dispatch, or not in your scope"


@dataclass(frozen=True)
class BatchItem:
    """One incident of a batch: ``assigned``, ``partial``, ``unassigned`` or ``skipped``."""

    incident_id: str
    status: str
    units: tuple[str, ...] = ()
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The item as a JSON-able dict."""
        return {
            "incident_id": self.incident_id,
            "status": self.status,
            "units": list(self.units),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch dispatch committed, and what the optimisation gained over greedy.

    ``items`` are in dispatch order (priority, then the oldest report), the skipped ones last.
    ``gain`` is :meth:`gridgov.dispatch.BatchResult.gain_over` of the optimal result against
    greedy nearest-first on the same incidents and units (0.1 = a 10 % lower objective);
    ``objective_s`` and ``greedy_objective_s`` are the two objectives (priority-weighted
    seconds, open slots included), before anything was left out at commit time.
    """

    items: tuple[BatchItem, ...]
    objective_s: float = 0.0
    greedy_objective_s: float = 0.0
    gain: float = 0.0
    decisions: tuple[dispatch.Decision, ...] = field(default=(), repr=False)

    @property
    def dispatched(self) -> int:
        """Incidents committed with at least one unit."""
        return sum(1 for i in self.items if i.status in ("assigned", "partial"))

    @property
    def unassigned(self) -> int:
        """Incidents committed without any unit (they stay queued)."""
        return sum(1 for i in self.items if i.status == "unassigned")

    @property
    def skipped(self) -> int:
        """Incidents left out (not queued, out of scope, changed meanwhile)."""
        return sum(1 for i in self.items if i.status == "skipped")

    def to_json(self) -> dict[str, Any]:
        """The outcome as a JSON-able dict (decisions as their JSON, without routes)."""
        return {
            "items": [i.to_json() for i in self.items],
            "dispatched": self.dispatched,
            "unassigned": self.unassigned,
            "skipped": self.skipped,
            "method": "optimal",
            "objective_s": self.objective_s,
            "greedy_objective_s": self.greedy_objective_s,
            "gain": self.gain,
        }


def dispatch_one(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    now: datetime,
    actor: str = store.SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> dispatch.Decision:
    """Dispatch one stored, queued incident and commit the decision
    (:func:`gridgov.store.dispatch_stored`)."""
    return store.dispatch_stored(engine, ctx, incident_id, now=now, actor=actor, role=role)


def dispatch_queue(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    *,
    incident_ids: Sequence[str] | None = None,
    filters: dict[str, Any] | None = None,
    now: datetime | None = None,
    actor: str = store.SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> BatchOutcome:
    """Dispatch the queued incidents together, optimally, and commit them in one transaction.

    Parameters
    ----------
    engine
        The store.
    ctx
        The dispatch context.
    incident_ids
        The incidents to dispatch (default: every queued one the filters leave). Ids that are
        not queued, or outside the filters, are listed as skipped.
    filters
        The caller's scope as incident filters
        (:meth:`gridgov.service.scope.Scope.incident_filters`).
    now
        The dispatch time (default: now).
    actor, role
        Recorded on the dispatch events.

    Returns
    -------
    BatchOutcome
    """
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    gdf, _ = store.query_incidents(
        engine,
        status=[str(State.REGISTERED)],
        incident_ids=None if incident_ids is None else list(incident_ids),
        limit=None,
        newest_first=False,
        **(filters or {}),
    )
    gdf = gdf.assign(_p=gdf["priority"].fillna(99)).sort_values(
        ["_p", "reported_at", "incident_id"], kind="stable"
    )
    incidents = [
        dispatch.Incident(
            incident_id=str(r.incident_id),
            matter_code=str(r.matter_code),
            lon=float(r.geometry.x),
            lat=float(r.geometry.y),
            reported_at=pd.Timestamp(r.reported_at).to_pydatetime(),
        )
        for r in gdf.itertuples(index=False)
    ]
    found = {i.incident_id for i in incidents}
    not_queued = [
        BatchItem(i, "skipped", reason=NOT_QUEUED) for i in (incident_ids or []) if i not in found
    ]
    if not incidents:
        return BatchOutcome(tuple(not_queued))
    gdf_units = dispatch.prepare_units(
        store.read_units(engine), store.read_offices(engine), now=now
    )
    result, greedy, refused = _optimise(incidents, gdf_units, ctx)
    left_out = store.commit_batch(engine, result.decisions, now=now, actor=actor, role=role)
    items: list[BatchItem] = []
    for inc in incidents:
        if inc.incident_id in refused:
            items.append(BatchItem(inc.incident_id, "skipped", reason=refused[inc.incident_id]))
            continue
        decision = next(d for d in result.decisions if d.incident.incident_id == inc.incident_id)
        if inc.incident_id in left_out:
            items.append(BatchItem(inc.incident_id, "skipped", reason=left_out[inc.incident_id]))
            continue
        items.append(
            BatchItem(
                inc.incident_id,
                decision.status,
                tuple(a.unit_id for a in decision.assignments),
                _unfilled_reason(decision),
            )
        )
    return BatchOutcome(
        items=(*items, *not_queued),
        objective_s=result.objective_s,
        greedy_objective_s=greedy.objective_s,
        gain=result.gain_over(greedy),
        decisions=tuple(d for d in result.decisions if d.incident.incident_id not in left_out),
    )


def _optimise(
    incidents: list[dispatch.Incident], gdf_units: Any, ctx: dispatch.DispatchContext
) -> tuple[dispatch.BatchResult, dispatch.BatchResult, dict[str, str]]:
    """The optimal and the greedy results; incidents the dispatcher refuses (a point too far
    from the roads, a matter no longer in the catalogue) are left out, with the reason."""
    refused: dict[str, str] = {}
    try:
        return (*_both(incidents, gdf_units, ctx), refused)
    except InputError:
        pass
    # Rare: find the incidents at fault one by one, then optimise the rest together.
    for inc in incidents:
        try:
            dispatch.dispatch_batch([inc], gdf_units, ctx)
        except InputError as exc:
            refused[inc.incident_id] = str(exc)
    kept = [i for i in incidents if i.incident_id not in refused]
    return (*_both(kept, gdf_units, ctx), refused)


def _both(
    incidents: list[dispatch.Incident], gdf_units: Any, ctx: dispatch.DispatchContext
) -> tuple[dispatch.BatchResult, dispatch.BatchResult]:
    return (
        dispatch.dispatch_batch(incidents, gdf_units, ctx),
        dispatch.dispatch_greedy(incidents, gdf_units, ctx),
    )


def _unfilled_reason(decision: dispatch.Decision) -> str | None:
    for note in decision.explanation.get("kinds", []):
        reason = note.get("unfilled_reason")
        if reason:
            return f"{note.get('kind')}: {reason}"
    return None
