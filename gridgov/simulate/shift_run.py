"""The discrete-event run of a simulated shift: incidents through the dispatcher and the
workflow's state machine, units busy, queued and preempted (see the package notes)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from gridgov.dispatch import (
    Decision,
    DispatchContext,
    Incident,
    Placement,
    dispatch_incident,
    locate_incident,
    prepare_units,
)
from gridgov.errors import InputError
from gridgov.model import EscalationLevel, ForceKind, UnitStatus
from gridgov.simulate.arrivals import (
    DEFAULT_RATE_PER_HOUR,
    DEFAULT_START,
    ID_PREFIX,
    SERVICE_SIGMA,
    _profile_weights,
    _service_medians,
    draw_arrivals,
)
from gridgov.simulate.outcome import _LEVEL_ORDER, SimulationResult
from gridgov.simulate.run_state import (
    ACK_MEDIAN_MIN,
    ACK_SIGMA,
    DUPLICATE_RATE,
    DUPLICATE_TRIES,
    EVALUATE_MEDIAN_MIN,
    EVALUATE_RATE,
    EVALUATE_SIGMA,
    RETURN_RATE,
    RETURN_REASONS,
    SATISFACTION_LATE,
    SATISFACTION_ON_TIME,
    VERIFY_FAIL_RATE,
    VERIFY_MEDIAN_MIN,
    VERIFY_SIGMA,
    _Case,
    _Flow,
    _flow,
    _Slot,
)
from gridgov.workflow import Action, Event, Role, Satisfaction, State, frame_from_events, next_event

#: ``incidents.source`` of a simulated incident.
SOURCE = "simulation"
# Metres per degree on the sphere, for the duplicate's small offset (exact to well under 1 %).
_M_PER_DEG = 111_195.0

# Event kinds; the number orders events at the same instant: an acknowledgement due when its unit
# finishes comes first, and a unit freed at t is available to an incident reported at t.
_ACK, _RETURN, _VERIFY, _FREE, _ARRIVE, _INCIDENT = 0, 1, 2, 3, 4, 5


_WORKING = (State.DISPATCHED, State.ACKNOWLEDGED, State.ON_SCENE)
_DISPATCHER = "dispatcher"  # the command centre's actor for register, dispatch, close
_REPORTER = "reporter"
_GRID_WORKER = "grid-worker"  # a grid without a grid worker of its own


class _Run:
    """The state of one simulation: units, incidents, the event heap and the queue."""

    def __init__(
        self,
        ctx: DispatchContext,
        gdf_units: gpd.GeoDataFrame,
        arrivals: pd.DataFrame,
        end_s: float,
        progress: Callable[[float, float], None] | None,
        *,
        start: datetime,
        flow: _Flow,
        rng: np.random.Generator,
        service_median_s: Mapping[int, float],
        service_sigma: float,
    ) -> None:
        self.ctx = ctx
        self.end_s = end_s
        self.progress = progress
        self.start_utc = start.astimezone(UTC)
        self.flow = flow
        self.rng = rng
        self.service_median_s = service_median_s
        self.service_sigma = service_sigma
        n = len(gdf_units)
        geoms = gdf_units.geometry
        dynamic = [geoms.name, "busy_incident", "busy_priority", "position_time"]
        data = pd.DataFrame(gdf_units.drop(columns=dynamic, errors="ignore"))
        self.frame = gpd.GeoDataFrame(
            data.reset_index(drop=True),
            geometry=gpd.GeoSeries(geoms.to_numpy(), crs=geoms.crs),
            crs=geoms.crs,
        )
        self.moved = True
        self.unit_ids = gdf_units["unit_id"].astype(str).to_numpy()
        self.kinds = gdf_units["kind"].astype(str).to_numpy()
        self.index = {u: i for i, u in enumerate(self.unit_ids)}
        self.modes = gdf_units["travel_mode"].astype(str).to_numpy()
        grid = gdf_units["grid_code"] if "grid_code" in gdf_units else pd.Series([None] * n)
        self.grid_codes = np.array([g if isinstance(g, str) and g else None for g in grid])
        office = gdf_units["office_id"] if "office_id" in gdf_units else pd.Series([None] * n)
        self.offices = [o if isinstance(o, str) and o else None for o in office]
        self.office_units: dict[str, list[str]] = {}
        for uid, off in zip(self.unit_ids, self.offices, strict=True):
            if off is not None:
                self.office_units.setdefault(off, []).append(str(uid))
        # The grid worker of each grid verifies its incidents (the first by id, if several).
        self.verifier: dict[str, str] = {}
        for i in np.argsort(self.unit_ids, kind="stable"):
            g = self.grid_codes[i]
            if self.kinds[i] == ForceKind.GRID_WORKER.value and g is not None:
                self.verifier.setdefault(g, str(self.unit_ids[i]))
        self.home_lon = geoms.x.to_numpy(dtype=float)
        self.home_lat = geoms.y.to_numpy(dtype=float)
        self.lon = self.home_lon.copy()
        self.lat = self.home_lat.copy()
        on_duty = gdf_units["on_duty"].fillna(False).astype(bool).to_numpy()
        self.status = np.where(on_duty, UnitStatus.AVAILABLE.value, UnitStatus.OFF_DUTY.value)
        self.status = self.status.astype(object)
        self.busy_incident = np.full(n, None, dtype=object)
        self.busy_priority = np.full(n, np.nan)
        self.token = np.zeros(n, dtype=np.int64)
        self.current: list[_Slot | None] = [None] * n
        self.available: dict[str, int] = {}
        for k in np.unique(self.kinds):
            self.available[str(k)] = int(np.sum((self.kinds == k) & on_duty))

        self.cases: list[_Case] = []
        self.by_id: dict[str, _Case] = {}
        self.slots: list[_Slot] = []
        self.queue: list[_Case] = []
        self.open: dict[str, _Case] = {}  # registered, not yet closed: what a duplicate repeats
        self.preemptions = 0
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        records: list[dict[str, Any]] = arrivals.to_dict(orient="records")  # type: ignore[assignment]
        for row, rec in enumerate(records):
            matter = ctx.catalog.get(str(rec["matter_code"]))
            kinds = tuple(k.value for k in matter.required_kinds)
            case = _Case(
                row=row,
                incident=Incident(
                    incident_id=str(rec["incident_id"]),
                    matter_code=matter.code,
                    lon=float(rec["lon"]),
                    lat=float(rec["lat"]),
                    reported_at=rec["reported_at"],
                ),
                priority=int(rec["priority"]),
                kinds=kinds,
                reported_s=float(rec["t_s"]),
                service_s=float(rec["service_s"]),
                missing=list(kinds),
            )
            case.round_start_s = case.reported_s
            self.cases.append(case)
            self.by_id[case.incident.incident_id] = case
            self._push(case.reported_s, _INCIDENT, row, 0)

    # -- events ----------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, who: int, token: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, who, token))

    def run(self) -> None:
        last_report = -math.inf
        while self.heap and self.heap[0][0] < self.end_s:
            t, kind, _, who, token = heapq.heappop(self.heap)
            if kind == _INCIDENT:
                self._on_incident(t, self.cases[who])
                if self.progress is not None and t - last_report >= 900:
                    last_report = t
                    self.progress(t / 3600.0, self.end_s / 3600.0)
            elif kind in (_ACK, _RETURN, _VERIFY):
                case = self.cases[who]
                if token != case.cycle:
                    continue  # the cycle it belonged to ended (preempted or returned)
                if kind == _ACK:
                    self._on_ack(t, case)
                elif kind == _RETURN:
                    self._on_return(t, case)
                else:
                    self._on_verify(t, case)
            elif token != self.token[who]:
                continue  # the unit was preempted: this event belongs to its old incident
            elif kind == _ARRIVE:
                self._on_arrive(t, who)
            else:
                self._on_free(t, who)

    def _on_incident(self, t: float, case: _Case) -> None:
        if self._is_duplicate(t, case):
            return
        try:
            decision = self._dispatch(case, None)
        except InputError as exc:  # outside the district, or too far from every road
            case.refused = str(exc)
            case.missing = []
            case.placement = self._locate(case.incident)
            self._emit(case, t, Action.REPORT, _REPORTER, Role.REPORTER, street=case.street_code)
            self._emit(
                case,
                t,
                Action.REJECT,
                _DISPATCHER,
                Role.DISPATCHER,
                reason=f"the dispatcher cannot send a unit: {exc}",
                data={"category": "invalid"},
            )
            return
        case.placement = decision.placement
        self._emit(case, t, Action.REPORT, _REPORTER, Role.REPORTER, street=case.street_code)
        self._emit(case, t, Action.REGISTER, _DISPATCHER, Role.DISPATCHER)
        self.open[case.incident.incident_id] = case
        requeued = self._apply(t, case, decision)
        if case.missing:
            self._enqueue(case)
        elif case.assigned_s is None:
            case.assigned_s = t
        if requeued:
            self._serve_queue(t)

    def _on_arrive(self, t: float, u: int) -> None:
        case = self.by_id[str(self.busy_incident[u])]
        self.lon[u], self.lat[u] = case.incident.lon, case.incident.lat
        self.moved = True
        slot = self.current[u]
        if slot is not None and self._is_lead(case, slot):
            slot.arrived = True
            if case.state is State.ACKNOWLEDGED:
                self._emit_unit(case, t, Action.ARRIVE, slot)

    def _on_free(self, t: float, u: int) -> None:
        case = self.by_id[str(self.busy_incident[u])]
        slot = self.current[u]
        if slot is not None and self._is_lead(case, slot):
            self._resolve(t, case, slot)
        stays = (
            self.kinds[u] == ForceKind.GRID_WORKER.value
            and self.grid_codes[u] is not None
            and case.grid_code == self.grid_codes[u]
        )
        self._release(u, home=not stays)
        if self.queue:
            self._serve_queue(t)

    def _release(self, u: int, *, home: bool) -> None:
        if home:
            self.lon[u], self.lat[u] = self.home_lon[u], self.home_lat[u]
            self.moved = True
        self.status[u] = UnitStatus.AVAILABLE.value
        self.busy_incident[u] = None
        self.busy_priority[u] = np.nan
        self.current[u] = None
        self.token[u] += 1
        self.available[self.kinds[u]] += 1

    # -- the workflow ----------------------------------------------------------------------------

    def _at(self, t: float) -> datetime:
        return self.start_utc + timedelta(seconds=t)

    def _emit(
        self,
        case: _Case,
        t: float,
        action: Action,
        actor: str,
        role: Role,
        *,
        street: str | None = None,
        **kwargs: Any,
    ) -> Event:
        # next_event validates every step, so the log replays by construction.
        event = next_event(
            case.events[-1] if case.events else None,
            action,
            incident_id=case.incident.incident_id,
            at=self._at(t),
            actor=actor,
            role=role,
            street_code=street,
            **kwargs,
        )
        case.events.append(event)
        return event

    def _emit_unit(self, case: _Case, t: float, action: Action, slot: _Slot, **kw: Any) -> None:
        office = self.offices[self.index[slot.unit_id]]
        self._emit(case, t, action, slot.unit_id, Role.UNIT, office_id=office, **kw)

    def _is_lead(self, case: _Case, slot: _Slot) -> bool:
        """Whether ``slot`` is the incident's lead unit of its current round (whose workflow)."""
        return case.slots.get(case.lead) is slot and slot.round == case.round

    def _lognormal(self, median_s: float, sigma: float) -> float:
        return float(median_s * math.exp(sigma * self.rng.standard_normal()))

    def _end_cycle(self, case: _Case) -> None:
        case.cycle += 1

    def _start_cycle(self, t: float, case: _Case, slot: _Slot, decision: Decision) -> None:
        """The lead unit is assigned: the dispatch event, then the acknowledge or return timer."""
        u = self.index[slot.unit_id]
        units = sorted(s.unit_id for s in case.slots.values())
        offices = sorted({o for o in (self.offices[self.index[s]] for s in units) if o})
        case.calls += 1
        level = decision.level if decision.level is not None else slot.level
        self._emit(
            case,
            t,
            Action.DISPATCH,
            _DISPATCHER,
            Role.DISPATCHER,
            office_id=self.offices[u],
            level=str(level),
            data={
                "dispatch_id": f"{case.incident.incident_id}/{case.calls}",
                "units": units,
                "offices": offices,
                "round": case.round,
            },
        )
        self._end_cycle(case)
        case.cycle_start_s = t
        if case.first_dispatch_s is None:
            case.first_dispatch_s = t
        delay = self._lognormal(self.flow.ack_median_min * 60.0, ACK_SIGMA)
        returns = self.rng.random() < self.flow.return_rate
        # Grid workers are the street's own staff, not a department's: they do not return work.
        if returns and self.kinds[u] != ForceKind.GRID_WORKER.value:
            # The department declines instead of acknowledging: its unit never sets off (end_s
            # becomes the moment of the return when it comes).
            self.token[u] += 1  # drops the travel and service timers pushed for it
            self._push(t + delay, _RETURN, case.row, case.cycle)
        else:
            # The office's acknowledgement is paperwork that may lag the unit's own response;
            # it cannot come after the unit has finished.
            self._push(min(t + delay, slot.end_s), _ACK, case.row, case.cycle)

    def _on_ack(self, t: float, case: _Case) -> None:
        slot = case.slots[case.lead]
        self._emit_unit(case, t, Action.ACKNOWLEDGE, slot)
        matter = self.ctx.catalog.get(case.incident.matter_code)
        if t - case.cycle_start_s <= matter.acknowledge_min * 60.0:
            case.acknowledged_on_time += 1
        if slot.arrived:  # on scene already: the arrival is recorded once acknowledged
            self._emit_unit(case, t, Action.ARRIVE, slot)

    def _on_return(self, t: float, case: _Case) -> None:
        """The department returns the incident: its unit is released, the dispatcher tries again."""
        slot = case.slots[case.lead]
        u = self.index[slot.unit_id]
        office = self.offices[u]
        reason = RETURN_REASONS[int(self.rng.integers(len(RETURN_REASONS)))]
        self._emit_unit(case, t, Action.RETURN, slot, reason=reason, data={"unit": slot.unit_id})
        self._end_cycle(case)
        slot.returned = True
        slot.end_s = t
        del case.slots[case.lead]
        case.missing = [k for k in case.kinds if k in case.missing or k == case.lead]
        case.assigned_s = None
        case.returns += 1
        if office is not None:
            case.excluded_offices.add(office)
        self._release(u, home=False)  # it never set off
        self._redispatch(t, case)
        if self.queue:
            self._serve_queue(t)

    def _resolve(self, t: float, case: _Case, slot: _Slot) -> None:
        # The timers are ordered so this never triggers; it keeps the log legal if they tie.
        if case.state is State.DISPATCHED:
            self._emit_unit(case, t, Action.ACKNOWLEDGE, slot)
        if case.state is State.ACKNOWLEDGED:
            self._emit_unit(case, t, Action.ARRIVE, slot)
        self._emit_unit(case, t, Action.RESOLVE, slot)
        if case in self.queue:  # an assisting kind never came: the lead finished without it
            self.queue.remove(case)
        self._push(t + self._lognormal(VERIFY_MEDIAN_MIN * 60.0, VERIFY_SIGMA), _VERIFY, case.row,
                   case.cycle)  # fmt: skip

    def _on_verify(self, t: float, case: _Case) -> None:
        grid = case.grid_code
        checker = self.verifier.get(grid, _GRID_WORKER) if grid is not None else _GRID_WORKER
        if self.rng.random() < self.flow.verify_fail_rate:
            self._emit(
                case,
                t,
                Action.REOPEN,
                checker,
                Role.GRID_WORKER,
                reason="verification failed: the problem is still there",
                data={"round": case.round + 1},
            )
            self._end_cycle(case)
            case.reopens += 1
            case.round += 1
            case.round_start_s = t
            case.slots = {}
            case.missing = list(case.kinds)
            case.assigned_s = None
            case.service_s = self._lognormal(
                self.service_median_s[case.priority], self.service_sigma
            )
            self._redispatch(t, case)
            return
        self._emit(case, t, Action.VERIFY, checker, Role.GRID_WORKER)
        self._emit(case, t, Action.CLOSE, _DISPATCHER, Role.DISPATCHER)
        self.open.pop(case.incident.incident_id, None)
        matter = self.ctx.catalog.get(case.incident.matter_code)
        assert case.first_dispatch_s is not None
        case.closed_on_time = t <= case.first_dispatch_s + matter.resolve_h * 3600.0
        if self.rng.random() < self.flow.evaluate_rate:
            at = t + self._lognormal(EVALUATE_MEDIAN_MIN * 60.0, EVALUATE_SIGMA)
            shares = SATISFACTION_ON_TIME if case.closed_on_time else SATISFACTION_LATE
            draw = self.rng.random() * sum(shares)
            pick = int(np.searchsorted(np.cumsum(shares), draw, side="right"))
            satisfaction = tuple(Satisfaction)[min(pick, len(Satisfaction) - 1)]
            if at < self.end_s:  # nothing else can happen to a closed incident: record it now
                self._emit(
                    case, at, Action.EVALUATE, _REPORTER, Role.REPORTER, satisfaction=satisfaction
                )

    def _is_duplicate(self, t: float, case: _Case) -> bool:
        """Make this arrival, by chance, a second report of an open incident nearby."""
        if self.rng.random() >= self.flow.duplicate_rate:
            return False
        since = t - self.flow.window_s
        recent = [c for c in self.open.values() if c.reported_s >= since]
        if not recent:
            return False
        original = recent[int(self.rng.integers(len(recent)))]
        source = original.incident
        # Failing every try (near the district's edge), it is reported at the very same spot.
        moved = replace(case.incident, matter_code=source.matter_code, lon=source.lon,
                        lat=source.lat)  # fmt: skip
        placement = original.placement
        for _ in range(DUPLICATE_TRIES):
            # Uniform in a disc a little inside the radius (the metric approximation is ~0.1%).
            r = 0.9 * self.flow.radius_m * math.sqrt(self.rng.random())
            angle = 2 * math.pi * self.rng.random()
            lat = source.lat + r * math.sin(angle) / _M_PER_DEG
            lon = source.lon + r * math.cos(angle) / (_M_PER_DEG * math.cos(math.radians(lat)))
            there = replace(case.incident, matter_code=source.matter_code, lon=lon, lat=lat)
            found = self._locate(there)
            if found is not None:
                moved, placement = there, found
                break
        case.incident = moved
        case.placement = placement
        case.priority = original.priority
        case.kinds = original.kinds
        case.missing = []
        case.duplicate_of = source.incident_id
        self._emit(case, t, Action.REPORT, _REPORTER, Role.REPORTER, street=case.street_code)
        self._emit(
            case,
            t,
            Action.REJECT,
            _DISPATCHER,
            Role.DISPATCHER,
            reason=f"duplicate of open incident {source.incident_id}",
            data={"category": "duplicate", "duplicate_of": source.incident_id},
        )
        return True

    def _locate(self, incident: Incident) -> Placement | None:
        try:
            return locate_incident(incident, self.ctx)
        except InputError:
            return None

    # -- dispatch --------------------------------------------------------------------------------

    def _frame(self, rows: np.ndarray | None) -> gpd.GeoDataFrame:
        """The units as the dispatcher sees them now (all, or the given rows)."""
        # One frame updated in place: building a GeoDataFrame per call would cost more than the
        # dispatch itself. The dispatcher reads it and keeps nothing.
        frame = self.frame
        # Object columns: pandas would otherwise infer arrow strings on every assignment.
        frame["status"] = pd.Series(self.status, dtype=object)
        frame["busy_incident"] = pd.Series(self.busy_incident, dtype=object)
        frame["busy_priority"] = self.busy_priority
        if self.moved:
            frame["geometry"] = gpd.points_from_xy(self.lon, self.lat, crs=frame.crs)
            self.moved = False
        return frame if rows is None else frame.iloc[rows]

    def _dispatch(self, case: _Case, kinds: Sequence[str] | None) -> Decision:
        # For a retry the dispatcher sees only units of the kinds still missing, so the kinds the
        # incident already has come back unfilled (and are ignored) instead of taking a second unit.
        rows = None if kinds is None else np.flatnonzero(np.isin(self.kinds, list(kinds)))
        case.dispatches += 1
        if not case.excluded_offices:
            return dispatch_incident(case.incident, self._frame(rows), self.ctx, routes=False)
        # Offices that returned the incident are passed over, unless no other unit can lead now.
        exclude = {u for o in sorted(case.excluded_offices) for u in self.office_units.get(o, ())}
        decision = dispatch_incident(
            case.incident, self._frame(rows), self.ctx, routes=False, exclude=exclude
        )
        wants_lead = kinds is None or case.lead in kinds
        if wants_lead and case.lead in {str(k) for k in decision.unfilled}:
            case.dispatches += 1
            again = dispatch_incident(case.incident, self._frame(rows), self.ctx, routes=False)
            if case.lead not in {str(k) for k in again.unfilled}:
                case.exclusion_lifted += 1
                return again
        return decision

    def _redispatch(self, t: float, case: _Case) -> None:
        """Back to the dispatcher (return, reopen): dispatch now if a unit is free, else queue."""
        decision = self._dispatch(case, list(case.missing))
        requeued = self._apply(t, case, decision)
        if case.missing:
            self._enqueue(case)
        else:
            if case.assigned_s is None:
                case.assigned_s = t
            if case in self.queue:  # it was waiting for an assisting kind, now filled too
                self.queue.remove(case)
        if requeued:
            self._serve_queue(t)

    def _apply(self, t: float, case: _Case, decision: Decision) -> bool:
        """Book the decision's assignments; True when it preempted (and so re-queued) another."""
        requeued = False
        lead: _Slot | None = None
        for a in decision.assignments:
            kind = str(a.kind)
            if kind not in case.missing:
                continue
            u = self.index[a.unit_id]
            if a.preempts is not None:
                self._take_from(t, u, a.preempts, case.incident.incident_id)
                requeued = True
            elif self.status[u] != UnitStatus.AVAILABLE.value:
                msg = f"dispatcher assigned unit {a.unit_id}, which is {self.status[u]}"
                raise RuntimeError(msg)
            else:
                self.available[kind] -= 1
            slot = _Slot(
                incident_id=case.incident.incident_id,
                kind=kind,
                role=a.role,
                unit_id=a.unit_id,
                assigned_s=t,
                reported_s=case.round_start_s,
                travel_s=float(a.time_s),
                service_s=case.service_s,
                level=str(a.level),
                rule=a.rule,
                over_max_travel=bool(a.over_max_travel),
                preempts=a.preempts,
                end_s=t + float(a.time_s) + case.service_s,
                round=case.round,
            )
            self.slots.append(slot)
            case.slots[kind] = slot
            case.missing.remove(kind)
            self.status[u] = UnitStatus.BUSY.value
            self.busy_incident[u] = case.incident.incident_id
            self.busy_priority[u] = case.priority
            self.current[u] = slot
            self.token[u] += 1
            self._push(t + slot.travel_s, _ARRIVE, u, int(self.token[u]))
            self._push(slot.end_s, _FREE, u, int(self.token[u]))
            if kind == case.lead:
                lead = slot
        if lead is not None:
            self._start_cycle(t, case, lead, decision)
        return requeued

    def _take_from(self, t: float, u: int, incident_id: str, by: str) -> None:
        """Preemption: unit ``u`` leaves ``incident_id``, which waits again for its kind."""
        old = self.by_id[incident_id]
        slot = self.current[u]
        if slot is None or str(self.busy_incident[u]) != incident_id:
            msg = f"dispatcher preempted unit {self.unit_ids[u]}, not busy on {incident_id}"
            raise RuntimeError(msg)
        slot.preempted = True
        slot.end_s = t
        old.preempted += 1
        self.preemptions += 1
        live = old.slots.get(slot.kind) is slot and slot.round == old.round
        if not live or old.state not in (State.REGISTERED, *_WORKING):
            # An assisting unit still busy after its lead resolved (or after a reopen started a
            # new round): that work is over, nothing waits for it.
            if live:
                del old.slots[slot.kind]
            return
        if slot.kind == old.lead:
            office = self.offices[u]
            self._emit(
                old,
                t,
                Action.REQUEUE,
                _DISPATCHER,
                Role.SYSTEM,
                reason=f"unit {slot.unit_id} was taken for priority-1 incident {by}",
                office_id=office,
                data={"unit": slot.unit_id, "preempted_by": by},
            )
            self._end_cycle(old)
            old.requeues += 1
        del old.slots[slot.kind]
        old.missing = [k for k in old.kinds if k in old.missing or k == slot.kind]
        old.assigned_s = None
        self._enqueue(old)

    def _enqueue(self, case: _Case) -> None:
        case.queued = True
        if case not in self.queue:
            self.queue.append(case)

    def _serve_queue(self, t: float) -> None:
        """Give units that are free to waiting incidents, most urgent and oldest first."""
        progressed = True
        while progressed and self.queue:
            progressed = False
            self.queue.sort(key=lambda c: (c.priority, c.reported_s, c.incident.incident_id))
            for case in list(self.queue):
                if case not in self.queue:
                    continue
                wanted = [k for k in case.missing if self.available.get(k, 0) > 0]
                if not wanted:
                    continue
                decision = self._dispatch(case, wanted)
                before = len(case.missing)
                self._apply(t, case, decision)
                progressed = progressed or len(case.missing) < before
                if not case.missing:
                    case.assigned_s = t
                    self.queue.remove(case)

    # -- results ---------------------------------------------------------------------------------

    def incident_records(self, arrivals: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for case in self.cases:
            if case.duplicate_of is not None:
                dispatch_status = "duplicate"
            elif case.refused is not None:
                dispatch_status = "refused"
            elif case.missing:
                dispatch_status = "unassigned"
            elif case.queued:
                dispatch_status = "queued_then_assigned"
            else:
                dispatch_status = "assigned"
            final = list(case.slots.values())
            level = _widest([s.level for s in final]) if final else None
            lead = case.slots.get(case.kinds[0]) if case.kinds else None
            p = case.placement
            state = case.state
            evaluated = [e for e in case.events if e.action is Action.EVALUATE]
            rows.append(
                {
                    "matter_code": case.incident.matter_code,
                    "priority": case.priority,
                    "lon": case.incident.lon,
                    "lat": case.incident.lat,
                    "status": None if state is None else str(state),
                    "dispatch_status": dispatch_status,
                    "kinds": "+".join(case.kinds),
                    "street_code": None if p is None else p.street_code,
                    "community_code": None if p is None else p.community_code,
                    "grid_code": None if p is None else p.grid_code,
                    "microgrid_code": None if p is None else p.microgrid_code,
                    "duplicate_of": case.duplicate_of,
                    "source": SOURCE,
                    "level": level,
                    "round_start_s": case.round_start_s,
                    "assigned_s": case.assigned_s if not case.missing else np.nan,
                    "wait_s": max((s.wait_s for s in final), default=np.nan),
                    "lead_response_s": lead.response_s if lead is not None else np.nan,
                    "response_s": (
                        max(s.response_s for s in final) if final and not case.missing else np.nan
                    ),
                    "unfilled": "+".join(case.missing),
                    "queued": case.queued,
                    "preempted": case.preempted,
                    "dispatches": case.dispatches,
                    "over_max_travel": any(s.over_max_travel for s in final),
                    "refused": case.refused,
                    "events": len(case.events),
                    "calls": case.calls,
                    "acknowledged_on_time": case.acknowledged_on_time,
                    "returns": case.returns,
                    "requeues": case.requeues,
                    "reopens": case.reopens,
                    "exclusion_lifted": case.exclusion_lifted,
                    "closed_on_time": case.closed_on_time,
                    "satisfaction": str(evaluated[0].satisfaction) if evaluated else None,
                }
            )
        extra = pd.DataFrame(rows, index=arrivals.index)
        drawn = arrivals.rename(columns={"t_s": "reported_s"}).drop(
            columns=["matter_code", "priority", "lon", "lat"]
        )
        records = drawn.join(extra)
        # A duplicate was moved next to the incident it repeats: its area is where it now lies.
        dup = records["duplicate_of"].notna() & records["grid_code"].notna()
        records.loc[dup, "area_code"] = records.loc[dup, "grid_code"]
        columns = [
            "incident_id", "reported_s", "reported_at", "matter_code", "priority", "area_code",
            "lon", "lat", "service_s", "redrawn",
        ]  # fmt: skip
        return records[columns + [c for c in records.columns if c not in columns]]

    def slot_records(self) -> pd.DataFrame:
        columns = [
            "incident_id", "kind", "role", "unit_id", "round", "reported_s", "assigned_s",
            "wait_s", "travel_s", "response_s", "service_s", "end_s", "level", "rule",
            "over_max_travel", "preempts", "preempted", "returned",
        ]  # fmt: skip
        rows = [
            {
                **{c: getattr(s, c) for c in columns if c not in ("wait_s", "response_s")},
                "wait_s": s.wait_s,
                "response_s": s.response_s,
            }
            for s in self.slots
        ]
        return pd.DataFrame(rows, columns=columns)

    def event_records(self) -> pd.DataFrame:
        return frame_from_events(e for case in self.cases for e in case.events)


def _widest(levels: Sequence[str]) -> str:
    return max(levels, key=lambda lv: _LEVEL_ORDER.index(EscalationLevel(lv)))


def simulate(
    ctx: DispatchContext,
    gdf_units: gpd.GeoDataFrame,
    *,
    hours: float,
    seed: int,
    gdf_offices: gpd.GeoDataFrame | None = None,
    start: datetime = DEFAULT_START,
    rate_per_hour: float = DEFAULT_RATE_PER_HOUR,
    grid_weights: Mapping[str, float] | None = None,
    profile: Sequence[float] | None = None,
    matter_weights: Mapping[str, float] | None = None,
    service_median_min: Mapping[int, float] | None = None,
    service_sigma: float = SERVICE_SIGMA,
    verify_fail_rate: float = VERIFY_FAIL_RATE,
    return_rate: float = RETURN_RATE,
    evaluate_rate: float = EVALUATE_RATE,
    duplicate_rate: float = DUPLICATE_RATE,
    ack_median_min: float = ACK_MEDIAN_MIN,
    id_prefix: str = ID_PREFIX,
    progress: Callable[[float, float], None] | None = None,
) -> SimulationResult:
    """Run a shift of random incidents through the dispatcher and the workflow (package notes).

    Parameters
    ----------
    ctx
        The dispatch context (areas, catalogue, travel model); it is read, never changed.
    gdf_units
        The district's units (``UNIT_COLUMNS`` and Point geometry); not changed.
    hours, seed, start, rate_per_hour, grid_weights, profile, matter_weights, service_median_min,
    service_sigma, id_prefix
        See :func:`draw_arrivals`. The workflow's own draws come from a second generator seeded
        from ``seed``, so they do not change the arrivals.
    gdf_offices
        Offices, for units without a position of their own.
    verify_fail_rate
        Probability that the grid worker's verification fails (reopen, rework).
    return_rate
        Probability that a department returns a call instead of acknowledging it.
    evaluate_rate
        Probability that the reporter of a closed incident evaluates it.
    duplicate_rate
        Probability that an arrival is a second report of an open incident nearby.
    ack_median_min
        Median minutes from a dispatch to the department's acknowledgement (lognormal, log-sd
        :data:`ACK_SIGMA`).
    progress
        Called now and then with (simulated hours done, hours in total).

    Returns
    -------
    SimulationResult
        The per-incident, per-assignment and per-event records and the summary.
    """
    flow = _flow(
        verify_fail_rate=verify_fail_rate,
        return_rate=return_rate,
        evaluate_rate=evaluate_rate,
        duplicate_rate=duplicate_rate,
        ack_median_min=ack_median_min,
    )
    # Positions are home positions for the shift: an AVL fix's age means nothing in a simulation.
    units = gdf_units.drop(columns=["position_time"], errors="ignore")
    units = prepare_units(units, gdf_offices, now=start.astimezone(UTC))
    usable = ~(units.geometry.isna() | units.geometry.is_empty)
    left_out = int((~usable).sum())
    units = units[usable].reset_index(drop=True)
    on_duty = units[units["on_duty"].fillna(False).astype(bool)]
    modes = sorted(set(on_duty["travel_mode"].astype(str)) & {m.value for m in ctx.travel.modes})
    arrivals = draw_arrivals(
        ctx.gdf_areas,
        ctx.catalog,
        hours=hours,
        seed=seed,
        start=start,
        rate_per_hour=rate_per_hour,
        grid_weights=grid_weights,
        profile=profile,
        matter_weights=matter_weights,
        service_median_min=service_median_min,
        service_sigma=service_sigma,
        travel=ctx.travel,
        modes=modes,
        id_prefix=id_prefix,
    )
    medians = _service_medians(service_median_min)
    run = _Run(
        ctx,
        units,
        arrivals,
        hours * 3600.0,
        progress,
        start=start,
        flow=flow,
        # A child of the arrivals' seed: the same seed, an independent stream.
        rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))),
        service_median_s={p: m * 60.0 for p, m in medians.items()},
        service_sigma=service_sigma,
    )
    run.run()
    params = {
        "hours": hours,
        "seed": seed,
        "start": start.isoformat(),
        "rate_per_hour": rate_per_hour,
        "profile": [float(x) for x in _profile_weights(profile)],
        "service_median_min": {str(k): v for k, v in medians.items()},
        "service_sigma": service_sigma,
        "grid_weights": "given" if grid_weights is not None else "micro-grid count",
        "matter_weights": "given" if matter_weights is not None else "by priority",
        "travel_model": str(ctx.travel.kind),
        "units_left_out": left_out,
        "points_redrawn": int((arrivals["redrawn"] > 0).sum()),
        "verify_fail_rate": verify_fail_rate,
        "return_rate": return_rate,
        "evaluate_rate": evaluate_rate,
        "duplicate_rate": duplicate_rate,
        "ack_median_min": ack_median_min,
        "duplicate_radius_m": flow.radius_m,
        "duplicate_window_h": flow.window_s / 3600.0,
        "id_prefix": id_prefix,
    }
    return SimulationResult(
        incidents=run.incident_records(arrivals),
        assignments=run.slot_records(),
        events=run.event_records(),
        units_by_kind={str(k): int(v) for k, v in on_duty["kind"].value_counts().items()},
        params=params,
    )
