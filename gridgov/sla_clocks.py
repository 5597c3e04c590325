"""SLA clocks: which stages of open incidents are overdue, and the supervision (督办) to record.

The catalogue gives each matter its deadlines, counted from dispatch (acknowledge and arrive
from the latest dispatch, resolve from the first). :func:`list_overdue` says what is overdue at
an instant, :func:`plan_supervision` what supervision is still to be recorded, street first and
the district once long overdue (:func:`supervision_level`, the one escalation rule, which the
consultations use too). Pure: the event log comes in as :class:`gridgov.workflow.Event` s or as
a DataFrame, and the store records what is planned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from gridgov.catalog import Matter, Stage
from gridgov.errors import InputError
from gridgov.workflow import SUPERVISE_LEVELS, Action, Event, State, missing_value

__all__ = [
    "CLOCK_STATES",
    "Overdue",
    "list_overdue",
    "plan_supervision",
    "supervision_level",
]

#: States in which an SLA clock may run (none runs once verified, closed or ended).
CLOCK_STATES: tuple[State, ...] = (
    State.REPORTED,
    State.REGISTERED,
    State.DISPATCHED,
    State.ACKNOWLEDGED,
    State.ON_SCENE,
    State.RESOLVED,
)


@dataclass(frozen=True)
class Overdue:
    """A stage of an open incident whose deadline has passed at the instant asked about.

    ``office_id`` is the responsible office (that of the latest dispatch); ``deadline`` the
    instant the stage fell due; ``level`` where supervision belongs: ``"street"`` until the stage
    is overdue by ``district_after`` times its own deadline, ``"district"`` from then on.
    """

    incident_id: str
    stage: Stage
    state: State
    street_code: str | None
    office_id: str | None
    started_at: datetime
    deadline: datetime
    overdue_by: timedelta
    level: str


def supervision_level(overdue_by: float, allowed: float, district_after: float) -> str:
    """Where the supervision of something overdue belongs: ``"street"`` until it is overdue by
    ``district_after`` times the time it was allowed, ``"district"`` from then on.

    The one street → district escalation rule: incidents' stages and consultation requests
    both use it (any unit, the same for both arguments).
    """
    return "street" if overdue_by < district_after * allowed else "district"


def list_overdue(
    events: Sequence[Event] | pd.DataFrame,
    matters: Mapping[str, Matter],
    at: datetime,
    *,
    district_after: float,
) -> list[Overdue]:
    """Return every stage that is overdue at instant ``at``.

    Clocks run from dispatch, with the deadlines of the incident's matter:

    - acknowledge and arrive start at the LATEST dispatch; the first acknowledge (arrive) after it
      meets them, and a return, requeue or reopen ends that cycle unmet (the clock stops);
    - resolve starts at the FIRST dispatch and is not restarted by a return; a resolve event not
      followed by a reopen meets it;
    - no clock runs once an incident is verified, closed, evaluated, rejected or cancelled.

    A stage is overdue iff its clock runs, it is not met and ``at > start + deadline``
    (strictly: at the deadline itself it is still on time). Only events at or before ``at``
    count, so the same log answers for any instant.

    Parameters
    ----------
    events
        The events of any number of incidents, as :class:`~gridgov.workflow.Event` s or as a
        DataFrame with :data:`~gridgov.workflow.EVENT_COLUMNS` (``at`` timezone-aware). Grouped
        by incident in one pass.
    matters
        The matter of each incident with a running clock, by incident id.
    at
        The instant asked about (timezone-aware).
    district_after
        Supervision escalates to the district once a stage is overdue by this multiple of its
        own deadline (``settings.supervise_district_after``).

    Returns
    -------
    list of Overdue
        Sorted by ``overdue_by`` (largest first), then incident id, then stage.

    Raises
    ------
    InputError
        If ``at`` is naive, ``district_after`` is not positive, or incidents with a running clock
        have no matter in ``matters`` (all of them are listed).
    """
    return [item for item, _ in _scan_overdue(events, matters, at, district_after)]


def plan_supervision(
    events: Sequence[Event] | pd.DataFrame,
    matters: Mapping[str, Matter],
    at: datetime,
    *,
    district_after: float,
) -> list[Overdue]:
    """Return the supervisions (督办) to record at ``at``: overdue items not yet supervised.

    An item is planned unless its incident already has a supervise event with the same stage and
    level (for acknowledge and arrive: in the current dispatch cycle, i.e. after the latest
    dispatch; a re-dispatch starts afresh). Supervision starts at the street: an item already at
    district level whose street supervision was never recorded yields both, street first. Once
    the planned supervise events are appended to ``events``, planning again at the same instant
    returns nothing.

    Parameters and errors are those of :func:`list_overdue`; the order too (street before
    district within an item).
    """
    planned: list[Overdue] = []
    for item, done in _scan_overdue(events, matters, at, district_after):
        reached = SUPERVISE_LEVELS[: SUPERVISE_LEVELS.index(item.level) + 1]
        planned.extend(
            replace(item, level=level) for level in reached if (item.stage, level) not in done
        )
    return planned


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_STAGE_ORDER = {s: i for i, s in enumerate(Stage)}
_CYCLE_ENDS = frozenset({Action.RETURN, Action.REQUEUE, Action.REOPEN})
_CLOCK_STATE_VALUES = frozenset(str(s) for s in CLOCK_STATES)


def _to_us(at: datetime) -> int:
    return (at - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class _Log:
    """One incident's events up to the instant asked about, as plain columns in seq order."""

    incident_id: str
    actions: list[str]
    at_us: list[int]
    to_states: list[str]
    offices: list[Any]
    streets: list[Any]
    stages: list[Any]
    levels: list[Any]


def _scan_overdue(
    events: Sequence[Event] | pd.DataFrame,
    matters: Mapping[str, Matter],
    at: datetime,
    district_after: float,
) -> list[tuple[Overdue, frozenset[tuple[Stage, str]]]]:
    """Return each overdue item with the (stage, level) supervisions already on record for it."""
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        msg = f"at {at!r} must be a timezone-aware datetime"
        raise InputError(msg)
    if not (isinstance(district_after, int | float) and district_after > 0):
        msg = f"district_after must be a positive number, got {district_after!r}"
        raise InputError(msg)
    t_us = _to_us(at)
    if isinstance(events, pd.DataFrame):
        logs = _logs_from_frame(events, t_us)
    else:
        logs = _logs_from_events(events, t_us)

    found: list[tuple[Overdue, frozenset[tuple[Stage, str]]]] = []
    unknown: list[str] = []
    for log in logs:
        found.extend(_scan_log(log, matters, t_us, district_after, unknown))
    if unknown:
        msg = f"no matter given for incident(s) with a running clock: {', '.join(unknown)}"
        raise InputError(msg)
    found.sort(
        key=lambda pair: (-pair[0].overdue_by, pair[0].incident_id, _STAGE_ORDER[pair[0].stage])
    )
    return found


def _scan_log(
    log: _Log,
    matters: Mapping[str, Matter],
    t_us: int,
    district_after: float,
    unknown: list[str],
) -> list[tuple[Overdue, frozenset[tuple[Stage, str]]]]:
    state = log.to_states[-1]
    if state not in _CLOCK_STATE_VALUES:
        return []
    actions = log.actions
    dispatches = [i for i, a in enumerate(actions) if a == Action.DISPATCH]
    if not dispatches:
        return []
    first, latest = dispatches[0], dispatches[-1]

    # The current cycle: what happened since the latest dispatch, up to a return/requeue/reopen.
    ack_met = arrive_met = ended = False
    for a in actions[latest + 1 :]:
        if a in _CYCLE_ENDS:
            ended = True
            break
        if a == Action.ACKNOWLEDGE:
            ack_met = True
        elif a == Action.ARRIVE:
            arrive_met = True
    resolved = False
    for a in actions[first + 1 :]:
        if a == Action.RESOLVE:
            resolved = True
        elif a == Action.REOPEN:
            resolved = False

    running: list[tuple[Stage, int]] = []
    if not ended and not ack_met:
        running.append((Stage.ACKNOWLEDGE, log.at_us[latest]))
    if not ended and not arrive_met:
        running.append((Stage.ARRIVE, log.at_us[latest]))
    if not resolved:
        running.append((Stage.RESOLVE, log.at_us[first]))
    if not running:
        return []
    matter = matters.get(log.incident_id)
    if matter is None:
        unknown.append(log.incident_id)
        return []

    street = next((s for s in reversed(log.streets) if not missing_value(s)), None)
    office = log.offices[latest]
    office = None if missing_value(office) else str(office)
    out: list[tuple[Overdue, frozenset[tuple[Stage, str]]]] = []
    for stage, start_us in running:
        allowed_us = matter.deadline_for(stage) // _US
        due_us = start_us + allowed_us
        if t_us <= due_us:
            continue
        late_us = t_us - due_us
        level = supervision_level(late_us, allowed_us, district_after)
        # Acknowledge and arrive supervisions belong to one dispatch cycle; resolve's to the case.
        since = latest + 1 if stage is not Stage.RESOLVE else 0
        done = frozenset(
            (Stage(log.stages[i]), str(log.levels[i]))
            for i in range(since, len(actions))
            if actions[i] == Action.SUPERVISE and log.stages[i] == stage
        )
        item = Overdue(
            incident_id=log.incident_id,
            stage=stage,
            state=State(state),
            street_code=None if street is None else str(street),
            office_id=office,
            started_at=_from_us(start_us),
            deadline=_from_us(due_us),
            overdue_by=timedelta(microseconds=late_us),
            level=level,
        )
        out.append((item, done))
    return out


def _logs_from_events(events: Iterable[Event], t_us: int) -> list[_Log]:
    by_incident: dict[str, list[Event]] = {}
    for ev in events:
        if _to_us(ev.at) <= t_us:
            by_incident.setdefault(ev.incident_id, []).append(ev)
    logs = []
    for incident_id, evs in by_incident.items():
        evs.sort(key=lambda e: e.seq)
        logs.append(
            _Log(
                incident_id=incident_id,
                actions=[str(e.action) for e in evs],
                at_us=[_to_us(e.at) for e in evs],
                to_states=[str(e.to_state) for e in evs],
                offices=[e.office_id for e in evs],
                streets=[e.street_code for e in evs],
                stages=[e.stage for e in evs],
                levels=[e.level for e in evs],
            )
        )
    return logs


def _logs_from_frame(df: pd.DataFrame, t_us: int) -> list[_Log]:
    need = ("incident_id", "seq", "at", "action", "to_state", "office_id", "street_code")
    missing = [c for c in (*need, "stage", "level") if c not in df.columns]
    if missing:
        msg = f"events frame lacks column(s) {', '.join(missing)}"
        raise InputError(msg)
    if df.empty:
        return []
    at = pd.to_datetime(df["at"])
    if getattr(at.dt, "tz", None) is None:
        msg = "events frame column 'at' holds naive times; give timezone-aware (UTC) times"
        raise InputError(msg)
    at_us = at.dt.tz_convert(UTC).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    frame = df[["incident_id", "seq", "action", "to_state", "office_id", "street_code"]].copy()
    frame["stage"] = df["stage"]
    frame["level"] = df["level"]
    frame["_at_us"] = at_us.astype(np.int64)
    frame = frame[frame["_at_us"].to_numpy() <= t_us]
    frame = frame.sort_values(["incident_id", "seq"], kind="stable")
    # Keep only incidents that could have a running clock, decided in bulk before the loop.
    last_state = frame.groupby("incident_id", sort=False)["to_state"].transform("last")
    dispatched = (
        (frame["action"] == str(Action.DISPATCH)).groupby(frame["incident_id"]).transform("any")
    )
    frame = frame[last_state.isin(_CLOCK_STATE_VALUES).to_numpy() & dispatched.to_numpy()]
    if frame.empty:
        return []

    ids = frame["incident_id"].astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    cols = {
        c: frame[c].tolist()
        for c in ("action", "to_state", "office_id", "street_code", "stage", "level", "_at_us")
    }
    logs = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        logs.append(
            _Log(
                incident_id=str(ids[lo]),
                actions=cols["action"][lo:hi],
                at_us=cols["_at_us"][lo:hi],
                to_states=cols["to_state"][lo:hi],
                offices=cols["office_id"][lo:hi],
                streets=cols["street_code"][lo:hi],
                stages=cols["stage"][lo:hi],
                levels=cols["level"][lo:hi],
            )
        )
    return logs
