"""The result of a simulated shift: its records, summary and plain-text report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gridgov.model import EscalationLevel
from gridgov.workflow import Action, Satisfaction, State

#: Percentiles reported per force kind.
PERCENTILES = (50, 90, 99)

_LEVEL_ORDER = tuple(EscalationLevel)
_STATUSES = ("assigned", "queued_then_assigned", "unassigned", "refused", "duplicate")


@dataclass(frozen=True)
class SimulationResult:
    """What a simulated shift produced.

    Attributes
    ----------
    incidents
        One row per arrival, ready for the store's ``import_history``: the drawn incident
        (``incident_id``, ``reported_s``, ``reported_at`` (UTC), ``matter_code``, ``priority``,
        ``lon``, ``lat``, ``service_s``, ...), its ``status`` (the final workflow state,
        :class:`gridgov.workflow.State`), where it lies (``street_code``, ``community_code``,
        ``grid_code``, ``microgrid_code``), ``duplicate_of`` and ``source`` ("simulation").
        The dispatcher's view: ``dispatch_status`` (``assigned``, ``queued_then_assigned``,
        ``unassigned`` (a required kind never came in the latest round), ``refused`` by the
        dispatcher with the reason in ``refused``, or ``duplicate`` (never dispatched)),
        ``level`` (widest over the latest round's assignments), ``round_start_s`` (the report,
        or the last reopen), ``assigned_s`` (when the last required unit was assigned),
        ``wait_s``, ``lead_response_s`` and ``response_s`` (until the whole team has arrived),
        ``unfilled`` kinds, ``queued``, ``preempted`` (times), ``dispatches`` (dispatcher
        calls). The workflow's counts: ``events``, ``calls`` (dispatch events),
        ``acknowledged_on_time``, ``returns``, ``requeues``, ``reopens``,
        ``exclusion_lifted`` (re-dispatches that had to go back to an office that returned it),
        ``closed_on_time`` (None unless closed) and ``satisfaction``.
    assignments
        One row per unit assignment, including those later preempted (``preempted`` True, ``end_s``
        the moment the unit was taken) or returned by its department (``returned`` True, ``end_s``
        the moment of the return): ``incident_id``, ``kind``, ``role``, ``unit_id``, ``round``
        (1, then 2 after a reopen...), ``reported_s`` (the round's start), ``assigned_s``,
        ``wait_s``, ``travel_s``, ``response_s`` (= wait + travel), ``service_s``, ``end_s`` (when
        the unit is free again), ``level``, ``rule``, ``over_max_travel``, ``preempts``. Times are
        seconds from the start of the shift.
    events
        Every incident's workflow log (:data:`gridgov.workflow.EVENT_COLUMNS`, ``at`` tz-aware
        UTC), incident by incident in report order, then by ``seq``; each log replays cleanly.
    units_by_kind
        On-duty units per kind that took part.
    params
        The run's parameters (JSON-able).
    """

    incidents: pd.DataFrame
    assignments: pd.DataFrame
    events: pd.DataFrame
    units_by_kind: dict[str, int]
    params: dict[str, Any]

    def final_assignments(self) -> pd.DataFrame:
        """The assignments that stood (not taken away by a preemption nor returned)."""
        a = self.assignments
        return a[~(a["preempted"].astype(bool) | a["returned"].astype(bool))]

    def summary(self) -> dict[str, Any]:
        """Counts, response-time percentiles (minutes) per kind, level shares, and the workflow's
        figures (JSON-able)."""
        inc = self.incidents
        status = inc["dispatch_status"].value_counts()
        hours = float(self.params["hours"])
        final = self.final_assignments()
        kinds: dict[str, dict[str, Any]] = {}
        for kind in sorted(set(self.units_by_kind) | set(final["kind"])):
            part = final[final["kind"] == kind]
            minutes = part["response_s"].to_numpy(dtype=float) / 60.0
            entry: dict[str, Any] = {
                "units": self.units_by_kind.get(kind, 0),
                "assignments": len(part),
            }
            for q in PERCENTILES:
                entry[f"p{q}_min"] = float(np.percentile(minutes, q)) if len(minutes) else None
            entry["over_max_travel"] = int(part["over_max_travel"].sum())
            every = self.assignments[self.assignments["kind"] == kind]
            busy = (np.minimum(every["end_s"], hours * 3600) - every["assigned_s"]).clip(lower=0)
            units = self.units_by_kind.get(kind, 0)
            entry["utilisation"] = float(busy.sum() / (units * hours * 3600)) if units else None
            kinds[kind] = entry
        done = inc[inc["dispatch_status"].isin(("assigned", "queued_then_assigned"))]
        counts = done["level"].value_counts()
        levels = {
            lv.value: (float(counts.get(lv.value, 0)) / len(done) if len(done) else 0.0)
            for lv in _LEVEL_ORDER
        }
        return {
            "params": self.params,
            "arrivals": len(inc),
            **{s: int(status.get(s, 0)) for s in _STATUSES},
            "unassigned_at_end": int(status.get("unassigned", 0)),
            "ever_queued": int(inc["queued"].sum()),
            "preemptions": int(inc["preempted"].sum()),
            "over_max_travel": int(final["over_max_travel"].sum()),
            "levels": levels,
            "kinds": kinds,
            "workflow": self._workflow_summary(),
        }

    def _workflow_summary(self) -> dict[str, Any]:
        inc, ev = self.incidents, self.events
        actions = ev["action"].value_counts()
        states = inc["status"].value_counts()

        def having(action: Action) -> int:
            return int(ev.loc[ev["action"] == action.value, "incident_id"].nunique())

        satisfied = inc["satisfaction"].isin(
            (Satisfaction.SATISFIED.value, Satisfaction.BASIC.value)
        )
        calls = int(actions.get(Action.DISPATCH.value, 0))
        on_time = int(inc["acknowledged_on_time"].sum())
        return {
            "events": len(ev),
            "actions": {a.value: int(actions.get(a.value, 0)) for a in Action},
            "states": {s.value: int(states.get(s.value, 0)) for s in State},
            "duplicates": int(inc["duplicate_of"].notna().sum()),
            "rejected_invalid": int(inc["refused"].notna().sum()),
            "dispatched": having(Action.DISPATCH),
            "calls": calls,
            "acknowledged_on_time": on_time,
            "response_rate": on_time / calls if calls else None,
            "resolved": having(Action.RESOLVE),
            "closed": having(Action.CLOSE),
            "closed_on_time": int(inc["closed_on_time"].map(lambda v: v is True).sum()),
            "reworked": having(Action.REOPEN),
            "returned": having(Action.RETURN),
            "requeued": having(Action.REQUEUE),
            "evaluated": having(Action.EVALUATE),
            "satisfied": int(satisfied.sum()),
        }

    def to_json(self) -> dict[str, Any]:
        """The summary and every record (incidents, assignments, events), JSON-able."""
        incidents = self.incidents.assign(reported_at=self.incidents["reported_at"].astype(str))
        events = self.events.assign(at=self.events["at"].map(lambda t: t.isoformat()))
        return {
            "summary": self.summary(),
            "incidents": _records(incidents),
            "assignments": _records(self.assignments),
            "events": _records(events),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = df.astype(object).where(df.notna(), None)
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in out.to_dict(orient="records")
    ]


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a plain-text report (what ``gridgov simulate`` prints)."""
    p = summary["params"]
    lines = [
        f"simulated {p['hours']:g} h from {p['start']} (seed {p['seed']}, "
        f"{p['rate_per_hour']:g} incidents/h on average, {p['travel_model']} travel)",
        f"arrivals {summary['arrivals']}: assigned at once {summary['assigned']}, "
        f"queued then assigned {summary['queued_then_assigned']}, "
        f"unassigned at the end {summary['unassigned_at_end']}, refused {summary['refused']}, "
        f"duplicates {summary.get('duplicate', 0)}",
        f"ever queued {summary['ever_queued']}, preemptions {summary['preemptions']}, "
        f"assignments over max travel {summary['over_max_travel']}, "
        f"points drawn again near a road {p.get('points_redrawn', 0)}",
        "",
    ]
    header = ("kind", "units", "assigned", "p50 min", "p90 min", "p99 min", "over max", "busy")
    rows = []
    for kind, e in summary["kinds"].items():
        rows.append(
            (
                kind,
                str(e["units"]),
                str(e["assignments"]),
                *(_fmt(e[f"p{q}_min"]) for q in PERCENTILES),
                str(e["over_max_travel"]),
                "-" if e["utilisation"] is None else f"{100 * e['utilisation']:.0f}%",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, r in enumerate([header, *rows]):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    shares = ", ".join(f"{lv} {100 * s:.1f}%" for lv, s in summary["levels"].items())
    lines.append(f"resolved at: {shares}")
    w = summary.get("workflow")
    if w is not None:
        rate = "-" if w["response_rate"] is None else f"{100 * w['response_rate']:.1f}%"
        lines += [
            "",
            f"workflow: calls {w['calls']} (acknowledged in time {w['acknowledged_on_time']}, "
            f"{rate}), resolved {w['resolved']}, closed {w['closed']} "
            f"(on time {w['closed_on_time']}), reworked {w['reworked']}, "
            f"returned {w['returned']}, requeued {w['requeued']}, evaluated {w['evaluated']} "
            f"(satisfied {w['satisfied']}), duplicates {w['duplicates']}, "
            f"rejected as invalid {w['rejected_invalid']}; {w['events']} events",
            "state at the end: " + ", ".join(f"{s} {n}" for s, n in w["states"].items() if n),
        ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
