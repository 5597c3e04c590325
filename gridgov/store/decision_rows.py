"""Writing checked decisions: the units busy, the dispatch rows, the assignments and the
incidents' state and ``dispatch`` events.

One decision (single dispatch) or many (a batch, the intake's micro-batches) take the same
few statements, so a batch costs about what one decision costs. The callers lock the
incidents and the chosen units and re-check them first (:mod:`gridgov.store.dispatch_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from gridgov import dispatch
from gridgov.model import UnitStatus
from gridgov.store.engine import sent_together
from gridgov.store.journal import append_events, last_events
from gridgov.store.many_rows import RowsInsert, RowsUpdate
from gridgov.store.models import ASSIGNMENTS, DISPATCHES, INCIDENTS, UNITS
from gridgov.workflow import Action, Role


@dataclass
class Attempts:
    """What happened on the way to a committed decision."""

    count: int = 0
    taken: list[str] = field(default_factory=list)
    retried_errors: list[str] = field(default_factory=list)


_SET_BUSY = RowsUpdate(
    UNITS, keys=["unit_id"], sets=["busy_incident_id"], fixed={"status": str(UnitStatus.BUSY)}
)
_DISPATCH_COLUMNS = (
    "incident_id",
    "created_at",
    "level",
    "status",
    "travel_model",
    "attempts",
    "explanation",
)
_INSERT_DISPATCHES = RowsInsert(DISPATCHES, _DISPATCH_COLUMNS, returning=["dispatch_id"])
# Every column but the serial id: insert_assignments gives them all.
_INSERT_ASSIGNMENTS = RowsInsert(
    ASSIGNMENTS, [c.name for c in ASSIGNMENTS.columns if c.name != "assignment_id"]
)
_LAST_END = (
    select(ASSIGNMENTS.c.unit_id, func.max(ASSIGNMENTS.c.released_at))
    .where(ASSIGNMENTS.c.unit_id.in_(bindparam("ids", expanding=True)))
    .group_by(ASSIGNMENTS.c.unit_id)
)
_SET_PLACE = RowsUpdate(
    INCIDENTS,
    keys=["incident_id"],
    sets=["priority", "street_code", "community_code", "grid_code", "microgrid_code", "updated_at"],
)


def write_decisions(
    connection: Connection,
    decisions: Sequence[dispatch.Decision],
    now: datetime,
    *,
    attempts: Sequence[Attempts],
    offices: dict[str, str | None],
    requeued: Sequence[list[dict[str, Any]]],
    by: Sequence[tuple[str, Role | str]],
) -> list[int]:
    """Write checked decisions (their incidents and units locked by the caller): units busy,
    dispatch rows, assignments, and each incident's state. Returns the dispatch ids.

    ``attempts``, ``requeued`` and ``by`` (actor, role) are per decision; ``offices`` maps
    each chosen unit to its office (read when it was locked).
    """
    if not decisions:
        return []
    # First what must be read: the dispatch ids (the assignments and events name them), the
    # units' last ends and the incidents' latest events.
    dispatch_ids = insert_dispatches(connection, decisions, now, attempts, requeued)
    assignments = assignment_rows(connection, decisions, dispatch_ids, now)
    called = [k for k, d in enumerate(decisions) if d.assignments]
    # The street's call: the clocks of the response start here. A decision that found nobody
    # is recorded (dispatch row) but calls no one, so its incident stays queued. The placement
    # goes into the same UPDATE as the status.
    events = [_dispatch_event(decisions[k], dispatch_ids[k], now, offices, by[k]) for k in called]
    lasts = last_events(connection, [e["incident_id"] for e in events])
    quiet = [d for d in decisions if not d.assignments]
    # Then the writes, which read nothing back: one round trip for them all, not one each
    # (the intake's turn is held meanwhile).
    with sent_together(connection):
        # The units were locked and checked by the caller: every one of them is matched.
        _SET_BUSY.write(
            connection,
            [
                {"unit_id": a.unit_id, "busy_incident_id": d.incident.incident_id}
                for d in decisions
                for a in d.assignments
            ],
        )
        insert_assignments(connection, assignments)
        append_events(connection, events, lasts=lasts)
        if quiet:
            _SET_PLACE.write(connection, [_place_params(d, now) for d in quiet])
    return dispatch_ids


def _place(decision: dispatch.Decision) -> dict[str, Any]:
    p = decision.placement
    return {
        "priority": decision.priority,
        "street_code": p.street_code,
        "community_code": p.community_code,
        "grid_code": p.grid_code,
        "microgrid_code": p.microgrid_code,
    }


def _place_params(decision: dispatch.Decision, now: datetime) -> dict[str, Any]:
    return {"incident_id": decision.incident.incident_id, **_place(decision), "updated_at": now}


def _dispatch_event(
    decision: dispatch.Decision,
    dispatch_id: int,
    now: datetime,
    offices: dict[str, str | None],
    by: tuple[str, Role | str],
) -> dict[str, Any]:
    """The ``dispatch`` event of a decision that called at least one unit."""
    unit_ids = [a.unit_id for a in decision.assignments]
    return {
        "incident_id": decision.incident.incident_id,
        "action": Action.DISPATCH,
        "at": now,
        "clamp": True,
        "actor": by[0],
        "role": by[1],
        # The call belongs to the lead unit's office (an assisting one when the lead is unfilled).
        "office_id": offices.get(
            next((a.unit_id for a in decision.assignments if a.role == "lead"), unit_ids[0])
        ),
        "street_code": decision.placement.street_code,
        "level": None if decision.level is None else str(decision.level),
        "data": {
            "dispatch_id": dispatch_id,
            "status": decision.status,
            "units": unit_ids,
            "offices": [offices.get(u) for u in unit_ids],
            "kinds": [str(a.kind) for a in decision.assignments],
            "unfilled": [str(k) for k in decision.unfilled],
        },
        "incident_values": _place(decision),
    }


def insert_dispatches(
    connection: Connection,
    decisions: Sequence[dispatch.Decision],
    now: datetime,
    attempts: Sequence[Attempts],
    requeued: Sequence[list[dict[str, Any]]],
) -> list[int]:
    """One dispatch row per decision, in one INSERT; their ids, in order."""
    rows = []
    for decision, tried, again in zip(decisions, attempts, requeued, strict=True):
        # The explanation part of decision.to_json(): the engine writes it with
        # dispatch.json_text, which converts as it writes (no converted copy first).
        explanation = dict(decision.explanation)
        explanation["store"] = {
            "attempts": tried.count,
            "taken_meanwhile": list(tried.taken),
            "retried_database_errors": list(tried.retried_errors),
            "unfilled": [str(k) for k in decision.unfilled],
            "requeued": again,
        }
        rows.append(
            {
                "incident_id": decision.incident.incident_id,
                "created_at": now,
                "level": None if decision.level is None else str(decision.level),
                "status": decision.status,
                "travel_model": str(decision.explanation.get("travel_model", {}).get("kind", "")),
                "attempts": tried.count,
                "explanation": explanation,
            }
        )
    # Numbered by a sequence in the rows' order (RowsInsert), so ascending ids are that order.
    return sorted(int(r.dispatch_id) for r in _INSERT_DISPATCHES.run(connection, rows))


def assignment_rows(
    connection: Connection,
    decisions: Sequence[dispatch.Decision],
    dispatch_ids: Sequence[int],
    now: datetime,
) -> list[dict[str, Any]]:
    """The rows of the decisions' assignments, for :func:`insert_assignments` (one read: the
    chosen units' last ends)."""
    unit_ids = [a.unit_id for d in decisions for a in d.assignments]
    if not unit_ids:
        return []
    # A unit's history never runs backwards: a job starts no earlier than its last one ended
    # (callers' clocks may differ by a little; the rows are locked, so this is race-free).
    last_end = dict(connection.execute(_LAST_END, {"ids": unit_ids}).all())
    rows = []
    for decision, dispatch_id in zip(decisions, dispatch_ids, strict=True):
        for a in decision.assignments:
            ended = last_end.get(a.unit_id)
            rows.append(
                {
                    "dispatch_id": dispatch_id,
                    "incident_id": decision.incident.incident_id,
                    "unit_id": a.unit_id,
                    "kind": str(a.kind),
                    "role": a.role,
                    "level": str(a.level),
                    "rule": a.rule,
                    "time_s": float(a.time_s),
                    "over_max_travel": bool(a.over_max_travel),
                    "preempts": a.preempts,
                    "route": None if a.route is None else a.route.geometry,
                    "route_length_m": None if a.route is None else float(a.route.length_m),
                    "active": True,
                    "assigned_at": now if ended is None else max(now, ended),
                    "released_at": None,
                    "release_reason": None,
                }
            )
    return rows


def insert_assignments(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the assignment ``rows`` (:func:`assignment_rows`) in one INSERT that reads
    nothing back."""
    _INSERT_ASSIGNMENTS.run(connection, rows)
