"""The incident workflow: a state machine over append-only events.

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
passes :func:`replay`. The module is pure: the store persists the events, as rows or as a
DataFrame (:func:`frame_from_events`, :func:`events_from_frame`). The SLA clocks that run over
them are :mod:`gridgov.sla_clocks`; the duplicate rule for new reports is
:mod:`gridgov.duplicates`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import pandas as pd

from gridgov.catalog import Stage
from gridgov.errors import InputError, InvalidTransitionError
from gridgov.model import EscalationLevel

__all__ = [
    "ALLOWED_ROLES",
    "EVENT_COLUMNS",
    "OPEN_STATES",
    "REASON_REQUIRED",
    "REJECT_CATEGORIES",
    "SUPERVISE_LEVELS",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Event",
    "Role",
    "Satisfaction",
    "Stage",
    "State",
    "allowed_actions",
    "events_from_frame",
    "frame_from_events",
    "next_event",
    "replay",
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
            if o is None and not (optional and missing_value(v))
        }
    )
    if bad:
        msg = f"column {column!r} holds {', '.join(bad[:5])}; expected one of {', '.join(lookup)}"
        raise ValueError(msg)
    return out


def _text_column(frame: pd.DataFrame, column: str) -> list[str | None]:
    return [None if missing_value(v) else str(v) for v in frame[column].tolist()]


def missing_value(value: Any) -> bool:
    """None, NaN or NaT: how an events frame leaves a value out (the SLA clocks read frames too)."""
    if value is None or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _data(value: Any) -> dict[str, Any]:
    if missing_value(value) or value == "":
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        msg = f"data must be a mapping, got {type(value).__name__}"
        raise TypeError(msg)
    return dict(value)
