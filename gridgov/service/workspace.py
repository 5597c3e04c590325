"""The dispatcher's workspace: the queue of a caller's scope grouped by stage with the SLA
deadline of each row's current stage, the unit board, and the override KPIs.

The queue's groups, in the order a dispatcher works them: ``dispatch`` (registered: waiting
for dispatch), ``acknowledge`` (dispatched: waiting for the department), ``work`` (acknowledged
or on scene), ``verify`` (resolved: waiting for verification). A row whose current stage is
past its deadline is overdue; the page shows it in the overdue group, red, from that instant.

The current stage and its deadline are the workflow's SLA clocks (:mod:`gridgov.sla_clocks`):
acknowledge and arrive run from the latest dispatch, resolve from the first; a queued or
resolved incident runs no clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from gridgov import dispatch, store
from gridgov.catalog import Matter, Stage
from gridgov.service.scope import Scope
from gridgov.store import Engine
from gridgov.workflow import ALLOWED_ROLES, Action, State, allowed_actions

#: State → queue group.
GROUPS: dict[str, str] = {
    str(State.REGISTERED): "dispatch",
    str(State.DISPATCHED): "acknowledge",
    str(State.ACKNOWLEDGED): "work",
    str(State.ON_SCENE): "work",
    str(State.RESOLVED): "verify",
}
#: State → the stage whose clock the row counts down, and whether it runs from the first
#: dispatch (resolve) or the latest (acknowledge, arrive).
_STAGES: dict[str, tuple[Stage, bool]] = {
    str(State.DISPATCHED): (Stage.ACKNOWLEDGE, False),
    str(State.ACKNOWLEDGED): (Stage.ARRIVE, False),
    str(State.ON_SCENE): (Stage.RESOLVE, True),
}


#: Workflow actions the workspace offers as buttons (dispatch, release, reassign and backup
#: have their own controls; requeue and supervise are the system's).
PAGE_ACTIONS = (
    Action.ACKNOWLEDGE,
    Action.ARRIVE,
    Action.RESOLVE,
    Action.RETURN,
    Action.VERIFY,
    Action.REOPEN,
    Action.CLOSE,
    Action.CANCEL,
)


def actions_for(scope: Scope, state: str) -> list[str]:
    """The workflow actions the caller's role may take on an incident in ``state``."""
    role = scope.workflow_role
    allowed = set(allowed_actions(state))
    return [str(a) for a in PAGE_ACTIONS if a in allowed and role in ALLOWED_ROLES[a]]


def stage_deadline(
    state: str, matter: Matter | None, dispatched: tuple[datetime, datetime] | None
) -> tuple[str | None, datetime | None]:
    """The stage an incident in ``state`` works on and when it falls due (None: no clock runs);
    ``dispatched`` is (first, latest) dispatch time."""
    stage = _STAGES.get(state)
    if stage is None or matter is None or dispatched is None:
        return None, None
    start = dispatched[0] if stage[1] else dispatched[1]
    return str(stage[0]), start + matter.deadline_for(stage[0])


def queue(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    scope: Scope,
    *,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The open incidents of the caller's scope, by priority then age, each with its group,
    current stage, deadline, overdue flag, place and active units."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    gdf, _ = store.query_incidents(
        engine, status=list(GROUPS), limit=None, newest_first=False, **scope.incident_filters()
    )
    ids = gdf["incident_id"].astype(str).tolist()
    times = store.dispatch_times(engine, ids)
    active = store.read_assignments(engine, active=True)
    units_of = active[active["incident_id"].isin(ids)].groupby("incident_id")["unit_id"].agg(list)
    rows = []
    for r in gdf.itertuples(index=False):
        iid = str(r.incident_id)
        code = str(r.matter_code)
        matter = ctx.catalog.get(code) if code in ctx.catalog else None
        stage, deadline = stage_deadline(str(r.status), matter, times.get(iid))
        reported = pd.Timestamp(r.reported_at).to_pydatetime()
        rows.append(
            {
                "incident_id": iid,
                "priority": None if pd.isna(r.priority) else int(r.priority),
                "matter_code": str(r.matter_code),
                "status": str(r.status),
                "group": GROUPS[str(r.status)],
                "stage": stage,
                "deadline": None if deadline is None else deadline.isoformat(),
                "overdue": deadline is not None and now > deadline,
                "reported_at": reported.isoformat(),
                "age_s": max(0.0, (now - reported).total_seconds()),
                "street_code": _code(r.street_code),
                "community_code": _code(r.community_code),
                "grid_code": _code(r.grid_code),
                "lon": float(r.geometry.x),
                "lat": float(r.geometry.y),
                "description": _code(r.description),
                "units": list(units_of.get(iid, [])),
                "actions": actions_for(scope, str(r.status)),
            }
        )
    rows.sort(key=lambda x: (x["priority"] or 99, x["reported_at"], x["incident_id"]))
    return rows


def unit_board(
    engine: Engine, scope: Scope, *, now: datetime | None = None, max_age: timedelta | None = None
) -> list[dict[str, Any]]:
    """Every unit in the caller's scope: kind, status, current incident, since when in that
    status (its current job's start, or its last job's end), stale position, duty."""
    now = datetime.now(UTC) if now is None else now.astimezone(UTC)
    gdf = store.read_units(engine, **scope.unit_filters())
    current, ended = store.unit_jobs(engine, gdf["unit_id"].astype(str).tolist())
    stale = dispatch.position_is_stale(list(gdf["position_time"]), now, max_age)
    out = []
    for i, r in enumerate(gdf.itertuples(index=False)):
        uid = str(r.unit_id)
        incident, since = current.get(uid, (None, ended.get(uid)))
        out.append(
            {
                "unit_id": uid,
                "name": _code(r.name),
                "kind": str(r.kind),
                "street_code": _code(r.street_code),
                "status": str(r.status),
                "on_duty": bool(r.on_duty),
                "incident_id": incident,
                "since": None
                if since is None or pd.isna(since)
                else pd.Timestamp(since).isoformat(),
                "stale": bool(stale[i]) and r.geometry is not None,
                "lon": None if r.geometry is None else float(r.geometry.x),
                "lat": None if r.geometry is None else float(r.geometry.y),
            }
        )
    return out


#: Columns of :func:`override_kpis`.
OVERRIDE_COLUMNS = (
    "group",
    "key",
    "decisions",
    "overrides",
    "override_rate",
    "extra_travel_s",
    "mean_extra_travel_s",
)


def override_kpis(choices: pd.DataFrame, *, street_code: str | None = None) -> pd.DataFrame:
    """Per street and per dispatcher: dispatches a dispatcher chose, how many overrode the
    recommendation, the override rate, and the extra travel time the overrides accepted (the
    chosen units' summed time minus the recommended units', summed and per override; negative
    when the chosen units were faster). ``choices``: :func:`gridgov.store.read_choices`;
    ``street_code``: only that street's incidents."""
    if street_code is not None:
        choices = choices[choices["street_code"] == street_code]
    rows = []
    df = choices.assign(extra=choices["chosen_time_s"] - choices["recommended_time_s"])
    for group, column in (("street", "street_code"), ("dispatcher", "decided_by")):
        for key, g in df.groupby(column, sort=True):
            over = g[g["override"]]
            extra = float(over["extra"].sum()) if len(over) else 0.0
            rows.append(
                {
                    "group": group,
                    "key": str(key),
                    "decisions": len(g),
                    "overrides": len(over),
                    "override_rate": len(over) / len(g),
                    "extra_travel_s": extra,
                    "mean_extra_travel_s": extra / len(over) if len(over) else None,
                }
            )
    return pd.DataFrame(rows, columns=list(OVERRIDE_COLUMNS))


def _code(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and value != value) else str(value)
