"""The incident workflow: a state machine over append-only events, SLA clocks and duplicates.

It follows China's digital urban-management standard (信息收集 → 案卷建立 → 任务派遣 → 任务处理 →
处理反馈 → 核查结案 → 综合评价)::

    reported → registered (or rejected) → dispatched → acknowledged → on_scene → resolved
             → verified → closed → evaluated

with side paths: a department returns an incident (back to registered, re-dispatched), a unit is
requeued when preempted for a priority-1 matter, a failed verification reopens it (rework), a
late stage is supervised (督办, a self-loop that records the escalation) and an open incident can
be cancelled.

Every transition is an :class:`Event`. :func:`next_event` is the only way to build one: it checks
the transition, the role and the fields that action needs, so a log built with it always
passes :func:`replay`. The module is pure: the store persists the events, and the SLA clocks
(:func:`list_overdue`, :func:`plan_supervision`) read them as a list or as a DataFrame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from gridgov.catalog import Matter, Stage
from gridgov.errors import InputError, InvalidTransitionError
from gridgov.model import EscalationLevel

__all__ = [
    "ALLOWED_ROLES",
    "CLOCK_STATES",
    "DUPLICATE_COLUMNS",
    "EVENT_COLUMNS",
    "OPEN_STATES",
    "REASON_REQUIRED",
    "REJECT_CATEGORIES",
    "SUPERVISE_LEVELS",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Event",
    "Overdue",
    "Role",
    "Satisfaction",
    "Stage",
    "State",
    "allowed_actions",
    "events_from_frame",
    "find_duplicate",
    "frame_from_events",
    "list_overdue",
    "next_event",
    "plan_supervision",
    "replay",
    "supervision_level",
]


class State(StrEnum):
    """The state of an incident; ``incidents.status`` holds these values."""

    REPORTED = "reported"
    REGISTERED = "registered"
    REJECTED = "rejected"
    DISPATCHED = "dispatched"
    ACKNOWLEDGED = "acknowledged"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    VERIFIED = "verified"
    CLOSED = "closed"
    EVALUATED = "evaluated"
    CANCELLED = "cancelled"


class Action(StrEnum):
    """What someone does to an incident; each action is one event."""

    REPORT = "report"
    REGISTER = "register"
    REJECT = "reject"
    DISPATCH = "dispatch"
    ACKNOWLEDGE = "acknowledge"
    ARRIVE = "arrive"
    RESOLVE = "resolve"
    VERIFY = "verify"
    REOPEN = "reopen"
    CLOSE = "close"
    EVALUATE = "evaluate"
    RETURN = "return"
    REQUEUE = "requeue"
    SUPERVISE = "supervise"
    CANCEL = "cancel"
    # A dispatcher's changes to the units of an incident at work (the state does not change).
    RELEASE = "release"
    REASSIGN = "reassign"
    BACKUP = "backup"


class Role(StrEnum):
    """The capacity in which an actor takes an action."""

    SYSTEM = "system"
    REPORTER = "reporter"
    GRID_WORKER = "grid_worker"
    DISPATCHER = "dispatcher"
    COMMANDER = "commander"
    UNIT = "unit"
    OFFICE = "office"
    DISTRICT = "district"


class Satisfaction(StrEnum):
    """The reporter's evaluation (满意 / 基本满意 / 不满意)."""

    SATISFIED = "satisfied"
    BASIC = "basically_satisfied"
    DISSATISFIED = "dissatisfied"


S, A = State, Action
_WORKING = (S.DISPATCHED, S.ACKNOWLEDGED, S.ON_SCENE)

#: The state machine: ``(state before, action) -> state after``; ``None`` means no event yet.
TRANSITIONS: Mapping[tuple[State | None, Action], State] = MappingProxyType(
    {
        (None, A.REPORT): S.REPORTED,
        (S.REPORTED, A.REGISTER): S.REGISTERED,
        (S.REPORTED, A.REJECT): S.REJECTED,
        (S.REGISTERED, A.DISPATCH): S.DISPATCHED,
        (S.DISPATCHED, A.ACKNOWLEDGE): S.ACKNOWLEDGED,
        (S.ACKNOWLEDGED, A.ARRIVE): S.ON_SCENE,
        (S.ON_SCENE, A.RESOLVE): S.RESOLVED,
        (S.RESOLVED, A.VERIFY): S.VERIFIED,
        (S.RESOLVED, A.REOPEN): S.REGISTERED,
        (S.VERIFIED, A.CLOSE): S.CLOSED,
        (S.CLOSED, A.EVALUATE): S.EVALUATED,
        **{(s, A.RETURN): S.REGISTERED for s in _WORKING},
        **{(s, A.REQUEUE): S.REGISTERED for s in _WORKING},
        **{(s, A.SUPERVISE): s for s in (S.REGISTERED, *_WORKING)},
        **{(s, a): s for s in _WORKING for a in (A.RELEASE, A.REASSIGN, A.BACKUP)},
        **{(s, A.CANCEL): S.CANCELLED for s in (S.REPORTED, S.REGISTERED, *_WORKING, S.RESOLVED)},
    }
)

R = Role
_FIELD = frozenset({R.UNIT, R.OFFICE, R.DISPATCHER})
_COMMAND = frozenset({R.SYSTEM, R.DISPATCHER, R.COMMANDER})

#: Who may take each action. A dispatcher may act on a department's behalf (recorded as such).
ALLOWED_ROLES: Mapping[Action, frozenset[Role]] = MappingProxyType(
    {
        A.REPORT: frozenset({R.REPORTER, R.GRID_WORKER, R.UNIT, R.DISPATCHER, R.SYSTEM}),
        A.REGISTER: frozenset({R.DISPATCHER, R.COMMANDER, R.SYSTEM}),
        A.REJECT: frozenset({R.DISPATCHER, R.COMMANDER, R.SYSTEM}),
        A.DISPATCH: _COMMAND,
        A.REQUEUE: _COMMAND,
        A.SUPERVISE: _COMMAND | {R.DISTRICT},
        A.ACKNOWLEDGE: _FIELD,
        A.ARRIVE: _FIELD,
        A.RESOLVE: _FIELD,
        A.RETURN: _FIELD,
        A.VERIFY: frozenset({R.GRID_WORKER, R.DISPATCHER, R.COMMANDER}),
        A.REOPEN: frozenset({R.GRID_WORKER, R.DISPATCHER, R.COMMANDER}),
        A.CLOSE: _COMMAND,
        # The system evaluates on the reporter's behalf, e.g. when importing a phone survey.
        A.EVALUATE: frozenset({R.REPORTER, R.SYSTEM}),
        A.CANCEL: frozenset({R.DISPATCHER, R.COMMANDER, R.REPORTER}),
        A.RELEASE: frozenset({R.DISPATCHER, R.COMMANDER}),
        A.REASSIGN: frozenset({R.DISPATCHER, R.COMMANDER}),
        A.BACKUP: frozenset({R.DISPATCHER, R.COMMANDER}),
    }
)

# The short aliases only serve the tables above.
del S, A, R

#: States in which an incident still needs work (the duplicate check looks only at these).
OPEN_STATES: tuple[State, ...] = (
    State.REPORTED,
    State.REGISTERED,
    State.DISPATCHED,
    State.ACKNOWLEDGED,
    State.ON_SCENE,
    State.RESOLVED,
    State.VERIFIED,
)
#: States no action leads out of.
TERMINAL_STATES: tuple[State, ...] = (State.REJECTED, State.EVALUATED, State.CANCELLED)
#: States in which an SLA clock may run (none runs once verified, closed or ended).
CLOCK_STATES: tuple[State, ...] = (State.REPORTED, State.REGISTERED, *_WORKING, State.RESOLVED)
#: Actions that must say why.
REASON_REQUIRED: frozenset[Action] = frozenset(
    {
        Action.REJECT,
        Action.REOPEN,
        Action.RETURN,
        Action.REQUEUE,
        Action.CANCEL,
        Action.RELEASE,
        Action.REASSIGN,
    }
)
#: ``data["category"]`` of a reject event.
REJECT_CATEGORIES = ("invalid", "duplicate")
#: ``level`` of a supervise event: supervision starts at the street and escalates to the district.
SUPERVISE_LEVELS = ("street", "district")

#: Columns of an events DataFrame (and of the store's ``events`` table, plus ``event_id`` there).
EVENT_COLUMNS = (
    "incident_id",
    "seq",
    "at",
    "actor",
    "role",
    "action",
    "from_state",
    "to_state",
    "reason",
    "office_id",
    "street_code",
    "level",
    "stage",
    "satisfaction",
    "data",
)


@dataclass(frozen=True)
class Event:
    """One transition of one incident. Build it with :func:`next_event`, which validates it.

    ``at`` is timezone-aware UTC; ``seq`` counts the incident's events from 1; ``from_state`` is
    None for the first (report) event. ``office_id`` is the office concerned (the lead unit's
    office for a dispatch, the returning office for a return), ``level`` the escalation level of a
    dispatch or the supervision level, ``stage`` the supervised stage.
    """

    incident_id: str
    seq: int
    at: datetime
    actor: str
    role: Role
    action: Action
    from_state: State | None
    to_state: State
    reason: str | None = None
    office_id: str | None = None
    street_code: str | None = None
    level: str | None = None
    stage: str | None = None
    satisfaction: Satisfaction | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """Return the event as a row keyed by :data:`EVENT_COLUMNS`, enums as plain strings."""
        return {
            "incident_id": self.incident_id,
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "role": str(self.role),
            "action": str(self.action),
            "from_state": None if self.from_state is None else str(self.from_state),
            "to_state": str(self.to_state),
            "reason": self.reason,
            "office_id": self.office_id,
            "street_code": self.street_code,
            "level": self.level,
            "stage": self.stage,
            "satisfaction": None if self.satisfaction is None else str(self.satisfaction),
            "data": dict(self.data),
        }


def allowed_actions(state: State | str | None) -> tuple[Action, ...]:
    """Return the actions ``state`` allows, in :class:`Action` order (``None``: no event yet)."""
    return _ALLOWED[None if state is None else State(state)]


# Computed once: next_event runs for every event of a simulated month.
_ALLOWED: dict[State | None, tuple[Action, ...]] = {
    st: tuple(a for a in Action if (st, a) in TRANSITIONS) for st in (None, *State)
}
_ESCALATION_LEVELS = frozenset(str(lv) for lv in EscalationLevel)
_STAGES = frozenset(str(st) for st in Stage)


def next_event(
    last: Event | None,
    action: Action | str,
    *,
    incident_id: str,
    at: datetime,
    actor: str,
    role: Role | str,
    reason: str | None = None,
    office_id: str | None = None,
    street_code: str | None = None,
    level: str | None = None,
    stage: str | None = None,
    satisfaction: Satisfaction | str | None = None,
    data: Mapping[str, Any] | None = None,
) -> Event:
    """Return the event that takes ``action`` after ``last`` (None: the incident's first event).

    Parameters
    ----------
    last
        The incident's latest event, or None if it has none yet.
    action
        What is done; must be allowed from ``last.to_state``.
    incident_id
        The incident; must match ``last.incident_id``.
    at
        When; timezone-aware and not before ``last.at``. Stored in UTC.
    actor
        Who (a user, unit or office id, or ``"system"``); non-empty.
    role
        In which capacity; must be in :data:`ALLOWED_ROLES` for ``action``.
    reason
        Why; required for reject, reopen, return, requeue and cancel.
    office_id
        The office concerned (lead unit's office for dispatch, returning office for return).
    street_code
        The incident's street; defaults to ``last.street_code``.
    level
        Escalation level of a dispatch (community, street, neighbour, district) or supervision
        level (street, district; required for supervise).
    stage
        The supervised stage (acknowledge, arrive, resolve); required for supervise.
    satisfaction
        The reporter's evaluation; required for evaluate and only allowed there.
    data
        Extra facts (copied). A reject needs ``category`` (invalid or duplicate) and a duplicate
        reject needs ``duplicate_of``.

    Returns
    -------
    Event
        The new event, ``seq = last.seq + 1`` (1 for the first).

    Raises
    ------
    InvalidTransitionError
        If the transition, the role or any field is not valid; the message lists every problem
        and the error names the incident, the state, the action and the allowed actions.
    """
    state = None if last is None else last.to_state
    allowed = tuple(str(a) for a in _ALLOWED[state])
    state_name = "none (no event yet)" if state is None else str(state)

    def _fail(problems: list[str]) -> InvalidTransitionError:
        msg = f"incident {incident_id!r}: cannot {action} from state {state_name}: " + "; ".join(
            problems
        )
        return InvalidTransitionError(
            msg,
            incident_id=incident_id,
            state=None if state is None else str(state),
            action=str(action),
            allowed=allowed,
        )

    try:
        act = Action(action)
    except ValueError:
        raise _fail(
            [f"unknown action {action!r}; allowed: {', '.join(allowed) or 'none'}"]
        ) from None
    to_state = TRANSITIONS.get((state, act))
    if to_state is None:
        why = f"{state_name} allows {', '.join(allowed)}" if allowed else f"{state_name} is final"
        raise _fail([f"not allowed ({why})"])

    problems: list[str] = []
    if last is not None and last.incident_id != incident_id:
        problems.append(f"the last event belongs to incident {last.incident_id!r}")
    try:
        rol: Role | None = Role(role)
    except ValueError:
        rol = None
        problems.append(f"unknown role {role!r}")
    if rol is not None and rol not in ALLOWED_ROLES[act]:
        who = ", ".join(sorted(ALLOWED_ROLES[act]))
        problems.append(f"role {rol} may not {act} (allowed roles: {who})")
    if not isinstance(actor, str) or not actor.strip():
        problems.append("actor must be a non-empty string")
    at_utc = _check_at(at, last, problems)
    if act in REASON_REQUIRED and not (isinstance(reason, str) and reason.strip()):
        problems.append(f"{act} needs a reason")
    sat = _check_satisfaction(act, satisfaction, problems)
    _check_level_stage(act, level, stage, problems)
    payload = dict(data) if data is not None else {}
    if act is Action.REJECT:
        _check_reject(incident_id, payload, problems)
    if problems:
        raise _fail(problems)

    assert rol is not None and at_utc is not None
    return Event(
        incident_id=incident_id,
        seq=1 if last is None else last.seq + 1,
        at=at_utc,
        actor=actor,
        role=rol,
        action=act,
        from_state=state,
        to_state=to_state,
        reason=reason,
        office_id=office_id,
        street_code=street_code if street_code is not None or last is None else last.street_code,
        level=level,
        stage=None if stage is None else str(stage),
        satisfaction=sat,
        data=payload,
    )


def _check_at(at: datetime, last: Event | None, problems: list[str]) -> datetime | None:
    if not isinstance(at, datetime):
        problems.append(f"at must be a datetime, got {type(at).__name__}")
        return None
    if at.tzinfo is None or at.utcoffset() is None:
        problems.append(f"at {at.isoformat()} is naive; give a timezone-aware datetime")
        return None
    at_utc = at.astimezone(UTC)
    if last is not None and at_utc < last.at:
        problems.append(
            f"at {at_utc.isoformat()} is before the last event (seq {last.seq}) at "
            f"{last.at.isoformat()}"
        )
    return at_utc


def _check_satisfaction(
    act: Action, satisfaction: Satisfaction | str | None, problems: list[str]
) -> Satisfaction | None:
    if act is not Action.EVALUATE:
        if satisfaction is not None:
            problems.append(f"satisfaction is recorded only by evaluate, not by {act}")
        return None
    if satisfaction is None:
        problems.append(f"evaluate needs a satisfaction ({', '.join(Satisfaction)})")
        return None
    try:
        return Satisfaction(satisfaction)
    except ValueError:
        problems.append(f"satisfaction {satisfaction!r} must be one of {', '.join(Satisfaction)}")
        return None


def _check_level_stage(
    act: Action, level: str | None, stage: str | None, problems: list[str]
) -> None:
    if act is Action.SUPERVISE:
        if level not in SUPERVISE_LEVELS:
            problems.append(
                f"supervise needs a level ({' or '.join(SUPERVISE_LEVELS)}), got {level!r}"
            )
        if stage is None:
            problems.append(f"supervise needs a stage ({', '.join(Stage)})")
    elif act is Action.DISPATCH and level is not None and level not in _ESCALATION_LEVELS:
        problems.append(f"dispatch level {level!r} must be one of {', '.join(EscalationLevel)}")
    if stage is not None and stage not in _STAGES:
        problems.append(f"stage {stage!r} must be one of {', '.join(Stage)}")


def _check_reject(incident_id: str, data: Mapping[str, Any], problems: list[str]) -> None:
    category = data.get("category")
    if category not in REJECT_CATEGORIES:
        problems.append(
            f"reject needs data['category'] in {', '.join(REJECT_CATEGORIES)}, got {category!r}"
        )
    elif category == "duplicate":
        dup = data.get("duplicate_of")
        if not (isinstance(dup, str) and dup):
            problems.append("a duplicate reject needs data['duplicate_of'] (the incident id)")
        elif dup == incident_id:
            problems.append("an incident cannot duplicate itself")


def replay(events: Sequence[Event]) -> State:
    """Validate one incident's whole log and return its state after the last event.

    The events may come in any order; sorted by ``seq`` they must number 1..n, belong to one
    incident and each must be exactly the event :func:`next_event` builds from the one before
    (same transition, states, role and required fields, time not going backwards).

    Raises
    ------
    InvalidTransitionError
        At the first event that does not follow, naming its incident and seq.
    """
    if not events:
        msg = "an empty event log has no state"
        raise InvalidTransitionError(msg)
    ordered = sorted(events, key=lambda e: e.seq)
    incident_id = ordered[0].incident_id
    last: Event | None = None
    for i, ev in enumerate(ordered, start=1):
        where = f"incident {ev.incident_id!r} event seq {ev.seq}"
        state = None if last is None else last.to_state
        if ev.incident_id != incident_id:
            msg = f"{where}: the log mixes incidents {incident_id!r} and {ev.incident_id!r}"
            raise InvalidTransitionError(msg, incident_id=incident_id, action=str(ev.action))
        if ev.seq != i:
            msg = f"{where}: expected seq {i} (events must number 1..n without gaps)"
            raise InvalidTransitionError(
                msg, incident_id=incident_id, state=state, action=str(ev.action)
            )
        try:
            expected = next_event(
                last,
                ev.action,
                incident_id=ev.incident_id,
                at=ev.at,
                actor=ev.actor,
                role=ev.role,
                reason=ev.reason,
                office_id=ev.office_id,
                street_code=ev.street_code,
                level=ev.level,
                stage=ev.stage,
                satisfaction=ev.satisfaction,
                data=ev.data,
            )
        except InvalidTransitionError as exc:
            msg = f"{where}: {exc}"
            raise InvalidTransitionError(
                msg,
                incident_id=exc.incident_id,
                state=exc.state,
                action=exc.action,
                allowed=exc.allowed,
            ) from None
        if ev.from_state != expected.from_state or ev.to_state != expected.to_state:
            msg = (
                f"{where}: {ev.action} records {ev.from_state} -> {ev.to_state} but the state "
                f"machine gives {expected.from_state} -> {expected.to_state}"
            )
            raise InvalidTransitionError(
                msg, incident_id=incident_id, state=state, action=str(ev.action)
            )
        last = ev
    assert last is not None
    return last.to_state


# ----------------------------------------------------------------------------- frames


def frame_from_events(events: Iterable[Event]) -> pd.DataFrame:
    """Return the events as a DataFrame with :data:`EVENT_COLUMNS` (``at`` as UTC timestamps)."""
    rows = [e.to_row() for e in events]
    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    df["seq"] = df["seq"].astype("int64")
    df["at"] = pd.to_datetime(df["at"], utc=True)
    for col in EVENT_COLUMNS:
        if col not in ("seq", "at", "data"):
            df[col] = df[col].astype(object)
    return df


def events_from_frame(df: pd.DataFrame) -> list[Event]:
    """Return the events of a DataFrame with :data:`EVENT_COLUMNS`, sorted by incident and seq.

    Missing values (None, NaN, NaT) become None; ``data`` may be a mapping or a JSON string.
    Extra columns (such as the store's ``event_id``) are ignored.

    Raises
    ------
    InputError
        If a column is missing, or a value is not a valid role, action, state or satisfaction, or
        a time is naive.
    """
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        msg = f"events frame lacks column(s) {', '.join(missing)}"
        raise InputError(msg)
    if df.empty:
        return []
    frame = df.sort_values(["incident_id", "seq"], kind="stable")
    at = pd.to_datetime(frame["at"])
    if getattr(at.dt, "tz", None) is None:
        msg = "events frame column 'at' holds naive times; give timezone-aware (UTC) times"
        raise InputError(msg)
    at_list = at.dt.tz_convert(UTC).dt.to_pydatetime().tolist()
    # Convert column by column (one lookup table per enum) rather than value by value: a
    # simulated month has hundreds of thousands of events.
    try:
        roles = _enum_column(frame, "role", Role, optional=False)
        actions = _enum_column(frame, "action", Action, optional=False)
        froms = _enum_column(frame, "from_state", State, optional=True)
        tos = _enum_column(frame, "to_state", State, optional=False)
        sats = _enum_column(frame, "satisfaction", Satisfaction, optional=True)
        texts = {c: _text_column(frame, c) for c in _TEXT_COLUMNS}
        seqs = frame["seq"].astype("int64").tolist()
        datas = [_data(v) for v in frame["data"].tolist()]
    except (ValueError, TypeError) as exc:
        msg = f"events frame is invalid: {exc}"
        raise InputError(msg) from exc
    missing_ids = [n for n, v in enumerate(texts["incident_id"]) if v is None]
    if missing_ids:
        msg = f"events frame rows {missing_ids[:10]} have no incident_id"
        raise InputError(msg)
    return [
        Event(
            incident_id=iid,
            seq=seq,
            at=at_,
            actor=actor,
            role=role,
            action=act,
            from_state=frm,
            to_state=to,
            reason=reason,
            office_id=office,
            street_code=street,
            level=level,
            stage=stage,
            satisfaction=sat,
            data=data,
        )
        for (
            iid,
            seq,
            at_,
            actor,
            role,
            act,
            frm,
            to,
            reason,
            office,
            street,
            level,
            stage,
            sat,
            data,
        ) in zip(
            texts["incident_id"],
            seqs,
            at_list,
            texts["actor"],
            roles,
            actions,
            froms,
            tos,
            texts["reason"],
            texts["office_id"],
            texts["street_code"],
            texts["level"],
            texts["stage"],
            sats,
            datas,
            strict=True,
        )
    ]


_TEXT_COLUMNS = ("incident_id", "actor", "reason", "office_id", "street_code", "level", "stage")


def _enum_column(frame: pd.DataFrame, column: str, kind: Any, *, optional: bool) -> list[Any]:
    lookup = {str(member): member for member in kind}
    values = frame[column].tolist()
    out = [lookup.get(v) if isinstance(v, str) else None for v in values]
    bad = sorted(
        {
            repr(v)
            for v, o in zip(values, out, strict=True)
            if o is None and not (optional and _missing(v))
        }
    )
    if bad:
        msg = f"column {column!r} holds {', '.join(bad[:5])}; expected one of {', '.join(lookup)}"
        raise ValueError(msg)
    return out


def _text_column(frame: pd.DataFrame, column: str) -> list[str | None]:
    return [None if _missing(v) else str(v) for v in frame[column].tolist()]


def _missing(value: Any) -> bool:
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _data(value: Any) -> dict[str, Any]:
    if _missing(value) or value == "":
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        msg = f"data must be a mapping, got {type(value).__name__}"
        raise TypeError(msg)
    return dict(value)


# ----------------------------------------------------------------------------- SLA clocks


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
        The events of any number of incidents, as :class:`Event` s or as a DataFrame with
        :data:`EVENT_COLUMNS` (``at`` timezone-aware). Grouped by incident in one pass.
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

    street = next((s for s in reversed(log.streets) if not _missing(s)), None)
    office = log.offices[latest]
    office = None if _missing(office) else str(office)
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


# ----------------------------------------------------------------------------- duplicates

#: Columns :func:`find_duplicate` needs in its table of open incidents.
DUPLICATE_COLUMNS = ("incident_id", "matter_code", "x_m", "y_m", "reported_at")


def find_duplicate(
    matter_code: str,
    x_m: float,
    y_m: float,
    reported_at: datetime,
    open_incidents: pd.DataFrame,
    *,
    radius_m: float,
    window: timedelta,
) -> str | None:
    """Return the open incident a new report duplicates, or None.

    A duplicate is an open incident of the same matter within ``radius_m`` (inclusive) of the
    report, reported within ``window`` before it (or at the same instant). The nearest one wins;
    ties go to the smaller incident id, so the answer is deterministic.

    Parameters
    ----------
    matter_code
        The new report's matter.
    x_m, y_m
        The new report's position in a metric CRS (UTM 48N), computed by the caller.
    reported_at
        When it was reported (timezone-aware).
    open_incidents
        Candidates with columns :data:`DUPLICATE_COLUMNS` (``x_m``/``y_m`` in the same CRS,
        ``reported_at`` timezone-aware). If it has a ``status`` column, rows whose status is not
        in :data:`OPEN_STATES` are ignored.
    radius_m
        The distance limit in metres (``settings.duplicate_radius_m``).
    window
        How far back a candidate may have been reported, as a timedelta
        (``timedelta(hours=settings.duplicate_window_h)``).

    Raises
    ------
    InputError
        If a column is missing, a time is naive, or ``radius_m``/``window`` is negative.
    """
    missing = [c for c in DUPLICATE_COLUMNS if c not in open_incidents.columns]
    if missing:
        msg = f"open incidents lack column(s) {', '.join(missing)}"
        raise InputError(msg)
    if reported_at.tzinfo is None or reported_at.utcoffset() is None:
        msg = f"reported_at {reported_at.isoformat()} must be timezone-aware"
        raise InputError(msg)
    if radius_m < 0 or window < timedelta(0):
        msg = f"radius_m ({radius_m}) and window ({window}) must not be negative"
        raise InputError(msg)
    if open_incidents.empty:
        return None
    cand = open_incidents
    keep = (cand["matter_code"] == matter_code).to_numpy(dtype=bool, copy=True)
    if "status" in cand.columns:
        keep &= cand["status"].astype(str).isin([str(s) for s in OPEN_STATES]).to_numpy()
    when = pd.to_datetime(cand["reported_at"])
    if getattr(when.dt, "tz", None) is None:
        msg = "open incidents' reported_at holds naive times; give timezone-aware times"
        raise InputError(msg)
    when_us = when.dt.tz_convert(UTC).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    t_us = np.datetime64(_to_us(reported_at), "us")
    keep &= (when_us <= t_us) & (when_us >= t_us - np.timedelta64(window // _US, "us"))
    dist = np.hypot(
        cand["x_m"].to_numpy(dtype=float) - float(x_m),
        cand["y_m"].to_numpy(dtype=float) - float(y_m),
    )
    keep &= dist <= radius_m  # NaN coordinates compare False and drop out
    if not keep.any():
        return None
    ids = cand["incident_id"].astype(str).to_numpy()[keep]
    best = np.lexsort((ids, dist[keep]))[0]
    return str(ids[best])
