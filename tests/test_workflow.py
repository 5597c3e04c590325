"""The incident state machine, its event log, the SLA clocks and the duplicate check.

The expected tables below are written out from the issue's spec on purpose, independently of
``gridgov.workflow``, so a slip in the module's tables shows up as a failure here.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from gridgov.catalog import Deadlines, Matter, Stage, load_catalog
from gridgov.duplicates import find_duplicate, nearest_duplicate
from gridgov.errors import InputError, InvalidTransitionError
from gridgov.sla_clocks import Overdue, list_overdue, plan_supervision
from gridgov.workflow import (
    ALLOWED_ROLES,
    EVENT_COLUMNS,
    OPEN_STATES,
    TRANSITIONS,
    Action,
    Event,
    Role,
    Satisfaction,
    State,
    allowed_actions,
    events_from_frame,
    frame_from_events,
    next_event,
    replay,
)

T0 = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)
US = timedelta(microseconds=1)
INC = "I-0001"
STREET = "510106024000"

# ----------------------------------------------------------------------------- the spec, verbatim

WORKING = ("dispatched", "acknowledged", "on_scene")
SPEC_TRANSITIONS: dict[tuple[str | None, str], str] = {
    (None, "report"): "reported",
    ("reported", "register"): "registered",
    ("reported", "reject"): "rejected",
    ("registered", "dispatch"): "dispatched",
    ("dispatched", "acknowledge"): "acknowledged",
    ("acknowledged", "arrive"): "on_scene",
    ("on_scene", "resolve"): "resolved",
    ("resolved", "verify"): "verified",
    ("resolved", "reopen"): "registered",
    ("verified", "close"): "closed",
    ("closed", "evaluate"): "evaluated",
    **{(s, "return"): "registered" for s in WORKING},
    **{(s, "requeue"): "registered" for s in WORKING},
    **{(s, "supervise"): s for s in ("registered", *WORKING)},
    **{(s, "cancel"): "cancelled" for s in ("reported", "registered", *WORKING, "resolved")},
    # A dispatcher changes the units of an incident at work; its state stays.
    **{(s, a): s for s in WORKING for a in ("release", "reassign", "backup")},
}
_FIELD = {"unit", "office", "dispatcher"}
SPEC_ROLES: dict[str, set[str]] = {
    "report": {"reporter", "grid_worker", "unit", "dispatcher", "system"},
    "register": {"dispatcher", "commander", "system"},
    "reject": {"dispatcher", "commander", "system"},
    "dispatch": {"system", "dispatcher", "commander"},
    "requeue": {"system", "dispatcher", "commander"},
    "supervise": {"system", "dispatcher", "commander", "district"},
    "acknowledge": _FIELD,
    "arrive": _FIELD,
    "resolve": _FIELD,
    "return": _FIELD,
    "verify": {"grid_worker", "dispatcher", "commander"},
    "reopen": {"grid_worker", "dispatcher", "commander"},
    "close": {"system", "dispatcher", "commander"},
    "evaluate": {"reporter", "system"},
    "cancel": {"dispatcher", "commander", "reporter"},
    "release": {"dispatcher", "commander"},
    "reassign": {"dispatcher", "commander"},
    "backup": {"dispatcher", "commander"},
}
ALL_STATES: list[str | None] = [None, *(str(s) for s in State)]
# How to reach every state with a valid log, by the shortest path.
PATH_TO: dict[str | None, list[str]] = {
    None: [],
    "reported": ["report"],
    "registered": ["report", "register"],
    "rejected": ["report", "reject"],
    "dispatched": ["report", "register", "dispatch"],
    "acknowledged": ["report", "register", "dispatch", "acknowledge"],
    "on_scene": ["report", "register", "dispatch", "acknowledge", "arrive"],
    "resolved": ["report", "register", "dispatch", "acknowledge", "arrive", "resolve"],
    "verified": ["report", "register", "dispatch", "acknowledge", "arrive", "resolve", "verify"],
    "closed": [
        *["report", "register", "dispatch", "acknowledge", "arrive", "resolve", "verify"],
        "close",
    ],
    "evaluated": [
        *["report", "register", "dispatch", "acknowledge", "arrive", "resolve", "verify"],
        *["close", "evaluate"],
    ],
    "cancelled": ["report", "cancel"],
}


def required_fields(action: str) -> dict[str, Any]:
    """The least each action needs besides the common arguments."""
    if action in ("reject",):
        return {"reason": "not a real problem", "data": {"category": "invalid"}}
    if action in ("reopen", "return", "requeue", "cancel", "release", "reassign"):
        return {"reason": f"why {action}"}
    if action == "evaluate":
        return {"satisfaction": "satisfied"}
    if action == "supervise":
        return {"stage": "acknowledge", "level": "street"}
    if action == "dispatch":
        return {"office_id": "O-1", "level": "street"}
    return {}


def do(
    last: Event | None,
    action: str,
    *,
    at: datetime | None = None,
    role: str | None = None,
    incident_id: str = INC,
    **kw: Any,
) -> Event:
    """Take ``action`` with a valid role and the required fields (overridable)."""
    fields = required_fields(action) | kw
    return next_event(
        last,
        action,
        incident_id=incident_id,
        at=at if at is not None else (T0 if last is None else last.at),
        actor="tester",
        role=role if role is not None else sorted(SPEC_ROLES[action])[0],
        street_code=fields.pop("street_code", STREET if last is None else None),
        **fields,
    )


def run(actions: Sequence[str], *, step: timedelta = timedelta(minutes=1)) -> list[Event]:
    """Build a log taking ``actions`` one minute apart."""
    log: list[Event] = []
    for i, action in enumerate(actions):
        log.append(do(log[-1] if log else None, action, at=T0 + i * step))
    return log


def check_log(log: Sequence[Event]) -> None:
    """seq 1..n, one incident, a from/to chain and time never going backwards."""
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert {e.incident_id for e in log} == {INC}
    assert log[0].from_state is None
    for prev, ev in itertools.pairwise(log):
        assert ev.from_state == prev.to_state
        assert ev.at >= prev.at
        assert SPEC_TRANSITIONS[(str(ev.from_state), str(ev.action))] == ev.to_state


# ----------------------------------------------------------------------------- tables


def test_tables_match_the_spec() -> None:
    got = {(None if s is None else str(s), str(a)): str(t) for (s, a), t in TRANSITIONS.items()}
    assert got == SPEC_TRANSITIONS
    assert {str(a): {str(r) for r in roles} for a, roles in ALLOWED_ROLES.items()} == SPEC_ROLES
    assert set(OPEN_STATES) == {
        State(s)
        for s in (
            *("reported", "registered", "dispatched", "acknowledged", "on_scene"),
            *("resolved", "verified"),
        )
    }
    assert [str(s) for s in Satisfaction] == ["satisfied", "basically_satisfied", "dissatisfied"]
    assert (
        *("incident_id", "seq", "at", "actor", "role", "action", "from_state", "to_state"),
        *("reason", "office_id", "street_code", "level", "stage", "satisfaction", "data"),
    ) == EVENT_COLUMNS


@pytest.mark.parametrize("state", ALL_STATES)
def test_allowed_actions(state: str | None) -> None:
    expected = {a for (s, a) in SPEC_TRANSITIONS if s == state}
    got = allowed_actions(state)
    assert {str(a) for a in got} == expected
    assert list(got) == sorted(got, key=list(Action).index)


def test_terminal_states_allow_nothing() -> None:
    for state in ("rejected", "evaluated", "cancelled"):
        assert allowed_actions(state) == ()
    assert allowed_actions("closed") == (Action.EVALUATE,)


def test_paths_reach_their_state() -> None:
    for state, actions in PATH_TO.items():
        if state is None:
            continue
        log = run(actions)
        assert log[-1].to_state == state
        assert replay(log) == state
        check_log(log)


# ----------------------------------------------------------------------------- exhaustive


@pytest.mark.parametrize("role", [str(r) for r in Role])
@pytest.mark.parametrize("action", [str(a) for a in Action])
@pytest.mark.parametrize("state", ALL_STATES)
def test_every_state_action_role(state: str | None, action: str, role: str) -> None:
    log = run(PATH_TO[state])
    before = copy.deepcopy(log)
    last = log[-1] if log else None
    fields = required_fields(action)
    fields_before = copy.deepcopy(fields)
    at = T0 + timedelta(hours=1)
    target = SPEC_TRANSITIONS.get((state, action))
    allowed = tuple(a for (s, a) in SPEC_TRANSITIONS if s == state)
    ok = target is not None and role in SPEC_ROLES[action]

    def attempt() -> Event:
        return next_event(
            last, action, incident_id=INC, at=at, actor="someone", role=role, **fields
        )

    if ok:
        ev = attempt()
        assert ev.to_state == target
        assert ev.from_state == (None if state is None else State(state))
        assert ev.seq == len(log) + 1
        assert (ev.incident_id, ev.action, ev.role, ev.actor) == (INC, action, role, "someone")
        assert ev.at == at
        assert ev.street_code == (None if last is None else STREET)
        assert replay([*log, ev]) == target
        check_log([*log, ev])
    else:
        with pytest.raises(InvalidTransitionError) as info:
            attempt()
        err = info.value
        assert err.incident_id == INC
        assert err.state == state
        assert err.action == action
        assert set(err.allowed) == set(allowed)
        msg = str(err)
        assert INC in msg and action in msg
        assert (state or "none") in msg
        if target is None:
            for a in allowed:
                assert a in msg
            if not allowed:
                assert "final" in msg
        else:
            assert f"role {role}" in msg
    # Nothing else changed: the log and the arguments are as they were.
    assert log == before
    assert fields == fields_before


# ----------------------------------------------------------------------------- whole paths

MAIN = [
    *("report", "register", "dispatch", "acknowledge", "arrive", "resolve", "verify", "close"),
    "evaluate",
]

PATHS: dict[str, tuple[list[str], str]] = {
    "main": (MAIN, "evaluated"),
    "return_redispatch": (
        [
            *("report", "register", "dispatch", "acknowledge", "return", "dispatch"),
            *("acknowledge", "arrive", "resolve", "verify", "close"),
        ],
        "closed",
    ),
    "return_from_every_working_state": (
        [
            *("report", "register", "dispatch", "return", "dispatch", "acknowledge", "return"),
            *("dispatch", "acknowledge", "arrive", "return", "dispatch"),
        ],
        "dispatched",
    ),
    "reopen_rework": (
        [
            *("report", "register", "dispatch", "acknowledge", "arrive", "resolve", "reopen"),
            *("dispatch", "acknowledge", "arrive", "resolve", "verify", "close", "evaluate"),
        ],
        "evaluated",
    ),
    "requeue": (
        [
            *("report", "register", "dispatch", "requeue", "dispatch", "acknowledge", "requeue"),
            *("dispatch", "acknowledge", "arrive", "requeue", "dispatch", "acknowledge"),
        ],
        "acknowledged",
    ),
    "supervise_self_loops": (
        [
            *("report", "register", "supervise", "dispatch", "supervise", "supervise"),
            *("acknowledge", "supervise", "arrive", "supervise", "resolve"),
        ],
        "resolved",
    ),
    "rejected": (["report", "reject"], "rejected"),
}


@pytest.mark.parametrize("name", list(PATHS))
def test_whole_path(name: str) -> None:
    actions, final = PATHS[name]
    log = run(actions)
    assert replay(log) == final
    check_log(log)
    assert [str(e.action) for e in log] == actions
    for ev in log:
        if ev.action is Action.SUPERVISE:
            assert ev.from_state == ev.to_state
    # The frame round trip keeps the log exactly.
    assert events_from_frame(frame_from_events(log)) == log


@pytest.mark.parametrize(
    "state", ["reported", "registered", "dispatched", "acknowledged", "on_scene", "resolved"]
)
def test_cancel_from_each_allowed_state(state: str) -> None:
    log = run([*PATH_TO[state], "cancel"])
    assert replay(log) == State.CANCELLED
    assert log[-1].from_state == state
    assert log[-1].reason == "why cancel"
    check_log(log)
    with pytest.raises(InvalidTransitionError, match="final"):
        do(log[-1], "register")


@pytest.mark.parametrize("state", ["verified", "closed", "evaluated", "rejected", "cancelled"])
def test_cancel_refused(state: str) -> None:
    with pytest.raises(InvalidTransitionError):
        do(run(PATH_TO[state])[-1], "cancel")


# ----------------------------------------------------------------------------- required fields


@pytest.mark.parametrize("action", ["reject", "reopen", "return", "requeue", "cancel"])
@pytest.mark.parametrize("reason", [None, "", "   "])
def test_reason_required(action: str, reason: str | None) -> None:
    state = {"reject": "reported", "reopen": "resolved", "cancel": "reported"}.get(
        action, "dispatched"
    )
    last = run(PATH_TO[state])[-1]
    with pytest.raises(InvalidTransitionError, match="needs a reason") as info:
        do(last, action, reason=reason)
    assert info.value.action == action
    assert do(last, action, reason="a reason").reason == "a reason"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({}, "category"),
        ({"category": "spam"}, "category"),
        ({"category": "duplicate"}, "duplicate_of"),
        ({"category": "duplicate", "duplicate_of": ""}, "duplicate_of"),
        ({"category": "duplicate", "duplicate_of": INC}, "itself"),
    ],
)
def test_reject_needs_category_and_duplicate_of(data: dict[str, Any], match: str) -> None:
    last = run(["report"])[-1]
    with pytest.raises(InvalidTransitionError, match=match):
        do(last, "reject", data=data)


def test_reject_as_duplicate() -> None:
    last = run(["report"])[-1]
    data = {"category": "duplicate", "duplicate_of": "I-0000"}
    ev = do(last, "reject", reason="same pothole", data=data)
    assert ev.to_state == State.REJECTED
    assert ev.data == data
    data["duplicate_of"] = "changed"  # the event holds its own copy
    assert ev.data["duplicate_of"] == "I-0000"


@pytest.mark.parametrize("satisfaction", [None, "happy"])
def test_evaluate_needs_a_satisfaction(satisfaction: str | None) -> None:
    last = run(PATH_TO["closed"])[-1]
    with pytest.raises(InvalidTransitionError, match="satisfaction"):
        do(last, "evaluate", satisfaction=satisfaction)


@pytest.mark.parametrize("satisfaction", list(Satisfaction))
def test_evaluate_records_the_satisfaction(satisfaction: Satisfaction) -> None:
    ev = do(run(PATH_TO["closed"])[-1], "evaluate", satisfaction=str(satisfaction))
    assert ev.satisfaction is satisfaction
    assert ev.to_row()["satisfaction"] == str(satisfaction)


def test_satisfaction_only_on_evaluate() -> None:
    last = run(PATH_TO["verified"])[-1]
    with pytest.raises(InvalidTransitionError, match="only by evaluate"):
        do(last, "close", satisfaction="satisfied")


@pytest.mark.parametrize(
    ("stage", "level", "match"),
    [
        (None, "street", "needs a stage"),
        ("acknowledge", None, "needs a level"),
        ("acknowledge", "community", "needs a level"),
        ("verify", "street", "stage 'verify'"),
    ],
)
def test_supervise_needs_stage_and_level(stage: str | None, level: str | None, match: str) -> None:
    last = run(PATH_TO["dispatched"])[-1]
    with pytest.raises(InvalidTransitionError, match=match):
        do(last, "supervise", stage=stage, level=level)


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("level", ["street", "district"])
def test_supervise_records_stage_and_level(stage: Stage, level: str) -> None:
    ev = do(run(PATH_TO["dispatched"])[-1], "supervise", stage=str(stage), level=level)
    assert (ev.stage, ev.level, ev.to_state) == (stage, level, State.DISPATCHED)


def test_dispatch_level_must_be_an_escalation_level() -> None:
    last = run(PATH_TO["registered"])[-1]
    with pytest.raises(InvalidTransitionError, match="dispatch level"):
        do(last, "dispatch", level="galaxy")
    for level in ("community", "street", "neighbour", "district"):
        assert do(last, "dispatch", level=level).level == level


def test_time_order() -> None:
    last = run(PATH_TO["registered"])[-1]
    with pytest.raises(InvalidTransitionError, match="before the last event"):
        do(last, "dispatch", at=last.at - US)
    assert do(last, "dispatch", at=last.at).seq == last.seq + 1  # the same instant is fine


def test_naive_time_rejected() -> None:
    with pytest.raises(InvalidTransitionError, match="naive"):
        do(None, "report", at=datetime(2026, 10, 1, 2, 0))
    last = run(["report"])[-1]
    with pytest.raises(InvalidTransitionError, match="naive"):
        do(last, "register", at=datetime(2026, 10, 1, 3, 0))


def test_time_is_stored_in_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    ev = do(None, "report", at=datetime(2026, 10, 1, 10, 0, tzinfo=shanghai))
    assert ev.at == T0
    assert ev.at.utcoffset() == timedelta(0)


def test_actor_must_not_be_empty() -> None:
    with pytest.raises(InvalidTransitionError, match="actor"):
        next_event(None, "report", incident_id=INC, at=T0, actor=" ", role="reporter")


def test_incident_must_match_the_last_event() -> None:
    last = run(["report"])[-1]
    with pytest.raises(InvalidTransitionError, match="belongs to incident"):
        do(last, "register", incident_id="I-other")


def test_unknown_action_and_role() -> None:
    last = run(["report"])[-1]
    with pytest.raises(InvalidTransitionError, match="unknown action") as info:
        do(last, "teleport", role="system")
    assert set(info.value.allowed) == {"register", "reject", "cancel"}
    with pytest.raises(InvalidTransitionError, match="unknown role"):
        do(last, "register", role="mayor")


def test_all_problems_listed_at_once() -> None:
    last = run(PATH_TO["dispatched"])[-1]
    with pytest.raises(InvalidTransitionError) as info:
        next_event(
            last, "return", incident_id=INC, at=datetime(2020, 1, 1), actor="", role="reporter"
        )
    msg = str(info.value)
    for part in ("role reporter", "actor", "naive", "needs a reason"):
        assert part in msg


def test_street_code_defaults_to_the_last_events() -> None:
    log = run(PATH_TO["registered"])
    assert do(log[-1], "dispatch").street_code == STREET
    assert do(log[-1], "dispatch", street_code="510106025000").street_code == "510106025000"


def test_to_row() -> None:
    ev = run(PATH_TO["dispatched"])[-1]
    row = ev.to_row()
    assert tuple(row) == EVENT_COLUMNS
    assert row["role"] == "commander" and type(row["role"]) is str
    assert row["action"] == "dispatch" and type(row["action"]) is str
    assert row["from_state"] == "registered" and type(row["from_state"]) is str
    assert (row["office_id"], row["level"], row["data"]) == ("O-1", "street", {})
    assert run(["report"])[0].to_row()["from_state"] is None


# ----------------------------------------------------------------------------- replay


def test_replay_accepts_any_order() -> None:
    log = run(MAIN)
    assert replay(list(reversed(log))) == State.EVALUATED


def test_replay_rejects_an_empty_log() -> None:
    with pytest.raises(InvalidTransitionError, match="empty"):
        replay([])


def test_replay_rejects_a_gap() -> None:
    log = run(MAIN)
    with pytest.raises(InvalidTransitionError, match="seq"):
        replay([*log[:3], *log[4:]])


def test_replay_rejects_a_forged_state() -> None:
    log = run(MAIN)
    forged = replace(log[4], to_state=State.RESOLVED)
    with pytest.raises(InvalidTransitionError, match="state machine gives"):
        replay([*log[:4], forged, *log[5:]])


def test_replay_rejects_an_illegal_step() -> None:
    log = run(PATH_TO["registered"])
    jump = replace(log[-1], seq=3, action=Action.RESOLVE, from_state=State.REGISTERED)
    with pytest.raises(InvalidTransitionError, match="seq 3") as info:
        replay([*log, jump])
    assert info.value.action == "resolve"


def test_replay_rejects_time_going_back() -> None:
    log = run(PATH_TO["dispatched"])
    back = replace(log[-1], at=log[0].at - US)
    with pytest.raises(InvalidTransitionError, match="before the last event"):
        replay([*log[:-1], back])


def test_replay_rejects_mixed_incidents() -> None:
    log = run(PATH_TO["registered"])
    with pytest.raises(InvalidTransitionError, match="mixes"):
        replay([log[0], replace(log[1], incident_id="I-other")])


def test_replay_rejects_missing_required_fields() -> None:
    log = run(PATH_TO["cancelled"])
    with pytest.raises(InvalidTransitionError, match="needs a reason"):
        replay([log[0], replace(log[1], reason=None)])


# ----------------------------------------------------------------------------- frames


def test_frame_round_trip() -> None:
    log = run(PATHS["reopen_rework"][0]) + [
        replace(e, incident_id="I-0002") for e in run(["report", "register"])
    ]
    df = frame_from_events(log)
    assert tuple(df.columns) == EVENT_COLUMNS
    assert str(df["at"].dt.tz) == "UTC"
    assert df["seq"].dtype == "int64"
    back = events_from_frame(df.sample(frac=1.0, random_state=1))  # order does not matter
    assert back == sorted(log, key=lambda e: (e.incident_id, e.seq))


def test_frame_of_no_events() -> None:
    df = frame_from_events([])
    assert tuple(df.columns) == EVENT_COLUMNS
    assert df.empty
    assert events_from_frame(df) == []


def test_frame_from_storage_shapes() -> None:
    """A frame read back from SQL has NaN for missing values, JSON text and an extra id."""
    log = run(["report", "reject"])
    df = frame_from_events(log)
    df["event_id"] = [10, 11]
    df["data"] = [None, json.dumps(dict(log[1].data))]
    df["office_id"] = float("nan")
    assert events_from_frame(df) == log


def test_frame_checks() -> None:
    df = frame_from_events(run(["report"]))
    with pytest.raises(InputError, match="lacks column"):
        events_from_frame(df.drop(columns=["stage"]))
    naive = df.copy()
    naive["at"] = naive["at"].dt.tz_localize(None)
    with pytest.raises(InputError, match="naive"):
        events_from_frame(naive)
    bad = df.copy()
    bad["role"] = "mayor"
    with pytest.raises(InputError, match="invalid"):
        events_from_frame(bad)


# ----------------------------------------------------------------------------- SLA clocks

ACK, ARRIVE, RESOLVE_H = 10.0, 30.0, 4.0
D = T0 + timedelta(minutes=2)  # the dispatch instant of the logs built by ``sla_log``


@pytest.fixture(scope="module")
def matter() -> Matter:
    base = load_catalog().matters[0]
    return replace(base, deadlines=Deadlines(ACK, ARRIVE, RESOLVE_H))


DEADLINE = {
    Stage.ACKNOWLEDGE: timedelta(minutes=ACK),
    Stage.ARRIVE: timedelta(minutes=ARRIVE),
    Stage.RESOLVE: timedelta(hours=RESOLVE_H),
}


class Log:
    """An incident's log built step by step at chosen instants (the controllable clock)."""

    def __init__(self, incident_id: str = INC) -> None:
        self.incident_id = incident_id
        self.events: list[Event] = []

    def add(self, action: str, at: datetime, **kw: Any) -> Log:
        last = self.events[-1] if self.events else None
        self.events.append(do(last, action, at=at, incident_id=self.incident_id, **kw))
        return self


def sla_log(incident_id: str = INC, *, office: str = "O-1") -> Log:
    """Reported at T0, registered at T0 + 1 min, dispatched at D = T0 + 2 min."""
    return (
        Log(incident_id)
        .add("report", T0)
        .add("register", T0 + timedelta(minutes=1))
        .add("dispatch", D, office_id=office)
    )


def overdue(
    events: Sequence[Event],
    matters: dict[str, Matter],
    at: datetime,
    as_frame: bool,
    district_after: float = 1.0,
) -> list[Overdue]:
    src: Any = frame_from_events(events) if as_frame else list(events)
    return list_overdue(src, matters, at, district_after=district_after)


def stages_of(items: Sequence[Overdue], incident_id: str = INC) -> set[Stage]:
    return {i.stage for i in items if i.incident_id == incident_id}


@pytest.fixture(params=[False, True], ids=["events", "frame"])
def as_frame(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.mark.parametrize("stage", list(Stage))
def test_overdue_exactly_after_the_deadline(stage: Stage, matter: Matter, as_frame: bool) -> None:
    log = sla_log()
    # Meet the earlier stages in time so that only ``stage`` is at stake.
    if stage is not Stage.ACKNOWLEDGE:
        log.add("acknowledge", D + timedelta(minutes=1))
    if stage is Stage.RESOLVE:
        log.add("arrive", D + timedelta(minutes=2))
    due = D + DEADLINE[stage]
    m = {INC: matter}
    assert stages_of(overdue(log.events, m, due - US, as_frame)) == set()
    assert stages_of(overdue(log.events, m, due, as_frame)) == set()
    items = overdue(log.events, m, due + US, as_frame)
    assert [i.stage for i in items] == [stage]
    (item,) = items
    assert item == Overdue(
        incident_id=INC,
        stage=stage,
        state=log.events[-1].to_state,
        street_code=STREET,
        office_id="O-1",
        started_at=D,
        deadline=due,
        overdue_by=US,
        level="street",
    )


def test_all_three_stages_overdue_and_sorted(matter: Matter, as_frame: bool) -> None:
    log = sla_log()
    at = D + timedelta(hours=5)
    items = overdue(log.events, {INC: matter}, at, as_frame)
    assert [i.stage for i in items] == [Stage.ACKNOWLEDGE, Stage.ARRIVE, Stage.RESOLVE]
    assert [i.overdue_by for i in items] == [at - D - DEADLINE[s] for s in Stage]


def test_events_after_the_instant_do_not_count(matter: Matter, as_frame: bool) -> None:
    log = sla_log().add("acknowledge", D + timedelta(minutes=20))
    m = {INC: matter}
    assert Stage.ACKNOWLEDGE in stages_of(
        overdue(log.events, m, D + timedelta(minutes=15), as_frame)
    )
    assert Stage.ACKNOWLEDGE not in stages_of(
        overdue(log.events, m, D + timedelta(minutes=25), as_frame)
    )


def test_met_stages_never_overdue(matter: Matter, as_frame: bool) -> None:
    log = sla_log().add("acknowledge", D + timedelta(minutes=5))
    m = {INC: matter}
    far = D + timedelta(days=30)
    assert stages_of(overdue(log.events, m, far, as_frame)) == {Stage.ARRIVE, Stage.RESOLVE}
    log.add("arrive", D + timedelta(minutes=40))  # late, but met from then on
    assert stages_of(overdue(log.events, m, far, as_frame)) == {Stage.RESOLVE}
    log.add("resolve", D + timedelta(hours=5))
    assert overdue(log.events, m, far, as_frame) == []


def test_ack_and_arrive_restart_at_redispatch_resolve_does_not(
    matter: Matter, as_frame: bool
) -> None:
    returned = D + timedelta(minutes=5)
    redispatch = D + timedelta(minutes=20)
    log = sla_log().add("acknowledge", D + timedelta(minutes=1))
    log.add("return", returned, reason="not ours", office_id="O-1")
    m = {INC: matter}
    # Returned and waiting: the acknowledge/arrive cycle has stopped, the resolve clock has not.
    assert stages_of(overdue(log.events, m, redispatch - US, as_frame)) == set()
    assert stages_of(overdue(log.events, m, D + timedelta(hours=4) + US, as_frame)) == {
        Stage.RESOLVE
    }
    log.add("dispatch", redispatch, office_id="O-2")
    ack_due = redispatch + DEADLINE[Stage.ACKNOWLEDGE]
    assert stages_of(overdue(log.events, m, ack_due, as_frame)) == set()
    items = overdue(log.events, m, ack_due + US, as_frame)
    assert [(i.stage, i.started_at, i.office_id) for i in items] == [
        (Stage.ACKNOWLEDGE, redispatch, "O-2")
    ]
    resolve_due = D + DEADLINE[Stage.RESOLVE]
    assert Stage.RESOLVE not in stages_of(overdue(log.events, m, resolve_due, as_frame))
    (res,) = [i for i in overdue(log.events, m, resolve_due + US, as_frame) if i.stage == "resolve"]
    assert (res.started_at, res.deadline, res.overdue_by) == (D, resolve_due, US)


@pytest.mark.parametrize("action", ["return", "requeue"])
def test_cycle_ends_unmet_on_return_and_requeue(
    action: str, matter: Matter, as_frame: bool
) -> None:
    log = sla_log().add(action, D + timedelta(minutes=3), reason="r")
    items = overdue(log.events, {INC: matter}, D + timedelta(hours=1), as_frame)
    assert stages_of(items) == set()
    assert items == []


def test_reopen_restarts_nothing_but_unmeets_resolve(matter: Matter, as_frame: bool) -> None:
    log = sla_log()
    for action, minutes in (("acknowledge", 1), ("arrive", 5), ("resolve", 60)):
        log.add(action, D + timedelta(minutes=minutes))
    m = {INC: matter}
    far = D + timedelta(hours=10)
    assert overdue(log.events, m, far, as_frame) == []
    log.add("reopen", D + timedelta(minutes=90), reason="still broken")
    items = overdue(log.events, m, far, as_frame)
    assert [(i.stage, i.started_at, i.state) for i in items] == [
        (Stage.RESOLVE, D, State.REGISTERED)
    ]


@pytest.mark.parametrize(
    "tail",
    [
        ["acknowledge", "arrive", "resolve", "verify"],
        ["acknowledge", "arrive", "resolve", "verify", "close"],
        ["acknowledge", "arrive", "resolve", "verify", "close", "evaluate"],
        ["cancel"],
        ["acknowledge", "cancel"],
    ],
)
def test_finished_incidents_never_overdue(tail: list[str], matter: Matter, as_frame: bool) -> None:
    log = sla_log()
    for i, action in enumerate(tail):
        # Every stage late, to show that the state alone stops the clocks.
        log.add(action, D + timedelta(hours=5, minutes=i))
    for at in (D + timedelta(hours=6), D + timedelta(days=400)):
        assert overdue(log.events, {INC: matter}, at, as_frame) == []
    # No matter is needed for them either.
    assert overdue(log.events, {}, D + timedelta(hours=6), as_frame) == []


def test_rejected_and_undispatched_never_overdue(matter: Matter, as_frame: bool) -> None:
    rejected = Log("I-r").add("report", T0).add("reject", T0, data={"category": "invalid"})
    waiting = Log("I-w").add("report", T0).add("register", T0)
    events = rejected.events + waiting.events
    assert overdue(events, {}, T0 + timedelta(days=9), as_frame) == []


@pytest.mark.parametrize("district_after", [1.0, 0.5, 2.5])
@pytest.mark.parametrize("stage", list(Stage))
def test_escalation_street_to_district(
    stage: Stage, district_after: float, matter: Matter, as_frame: bool
) -> None:
    log = sla_log()
    if stage is not Stage.ACKNOWLEDGE:
        log.add("acknowledge", D)
    if stage is Stage.RESOLVE:
        log.add("arrive", D)
    turn = D + DEADLINE[stage] + DEADLINE[stage] * district_after
    m = {INC: matter}

    def level_at(at: datetime) -> str:
        items = overdue(log.events, m, at, as_frame, district_after=district_after)
        (item,) = [i for i in items if i.stage == stage]
        return item.level

    assert level_at(D + DEADLINE[stage] + US) == "street"
    assert level_at(turn - US) == "street"
    assert level_at(turn) == "district"
    assert level_at(turn + timedelta(days=1)) == "district"


def test_responsible_office_and_street(matter: Matter, as_frame: bool) -> None:
    log = sla_log(office="O-7")
    (item, *_) = overdue(log.events, {INC: matter}, D + timedelta(hours=1), as_frame)
    assert (item.office_id, item.street_code, item.state) == ("O-7", STREET, State.DISPATCHED)


def test_sorted_by_overdue_by_then_id(matter: Matter, as_frame: bool) -> None:
    # Same dispatch time for I-b and I-a (ties broken by id), an earlier one for I-c.
    logs = [sla_log("I-b"), sla_log("I-a")]
    early = Log("I-c").add("report", T0).add("register", T0).add("dispatch", T0)
    events = [e for lg in (*logs, early) for e in lg.events]
    m = dict.fromkeys(("I-a", "I-b", "I-c"), matter)
    items = overdue(events, m, D + timedelta(minutes=20), as_frame)
    assert [(i.incident_id, i.stage) for i in items] == [
        ("I-c", Stage.ACKNOWLEDGE),
        ("I-a", Stage.ACKNOWLEDGE),
        ("I-b", Stage.ACKNOWLEDGE),
    ]
    assert items[0].overdue_by - items[1].overdue_by == D - T0


def test_sla_input_checks(matter: Matter, as_frame: bool) -> None:
    events = sla_log().events + sla_log("I-2").events
    with pytest.raises(InputError, match="no matter") as info:
        overdue(events, {INC: matter}, D + timedelta(hours=1), as_frame)
    assert "I-2" in str(info.value) and INC not in str(info.value)
    with pytest.raises(InputError, match="timezone-aware"):
        overdue(events, {INC: matter}, datetime(2026, 10, 2), as_frame)
    with pytest.raises(InputError, match="district_after"):
        overdue(events, {INC: matter}, D, as_frame, district_after=0)


def test_sla_of_no_events(matter: Matter, as_frame: bool) -> None:
    assert overdue([], {}, D, as_frame) == []


def test_frame_and_events_agree_on_many_incidents(matter: Matter) -> None:
    rng = random.Random(4)
    events: list[Event] = []
    matters: dict[str, Matter] = {}
    choices = [
        "acknowledge",
        "arrive",
        "resolve",
        "return",
        "requeue",
        "reopen",
        "verify",
        "close",
        "supervise",
        "cancel",
        "dispatch",
    ]
    for n in range(300):
        iid = f"I-{n:04d}"
        lg = Log(iid).add("report", T0).add("register", T0)
        at = T0
        for _ in range(rng.randint(0, 8)):
            at += timedelta(minutes=rng.choice([1, 3, 7, 12, 40, 200]))
            options = [a for a in choices if (str(lg.events[-1].to_state), a) in SPEC_TRANSITIONS]
            if not options:
                break
            lg.add(rng.choice(options), at)
        events.extend(lg.events)
        matters[iid] = matter
        assert replay(lg.events) == lg.events[-1].to_state
    df = frame_from_events(events)
    for hours in (0.1, 0.5, 1, 3, 5, 30):
        at = T0 + timedelta(hours=hours)
        from_list = list_overdue(events, matters, at, district_after=1.0)
        assert from_list == list_overdue(df, matters, at, district_after=1.0)
        assert plan_supervision(events, matters, at, district_after=1.0) == plan_supervision(
            df, matters, at, district_after=1.0
        )
    assert from_list  # the random logs do produce overdue items


# ----------------------------------------------------------------------------- supervision


def record(log: Log, planned: Sequence[Overdue], at: datetime) -> None:
    for item in planned:
        assert item.incident_id == log.incident_id
        log.add("supervise", at, stage=str(item.stage), level=item.level, role="system")


def plan(log: Log, matter: Matter, at: datetime, as_frame: bool) -> list[Overdue]:
    src: Any = frame_from_events(log.events) if as_frame else log.events
    return plan_supervision(src, {log.incident_id: matter}, at, district_after=1.0)


def test_plan_street_then_district(matter: Matter, as_frame: bool) -> None:
    log = sla_log().add("acknowledge", D).add("arrive", D)
    late = D + DEADLINE[Stage.RESOLVE] + timedelta(minutes=1)
    first = plan(log, matter, late, as_frame)
    assert [(i.stage, i.level) for i in first] == [(Stage.RESOLVE, "street")]
    record(log, first, late)
    assert plan(log, matter, late, as_frame) == []  # idempotent
    assert plan(log, matter, late + timedelta(hours=1), as_frame) == []  # still street level
    later = D + 2 * DEADLINE[Stage.RESOLVE]
    second = plan(log, matter, later, as_frame)
    assert [(i.stage, i.level) for i in second] == [(Stage.RESOLVE, "district")]
    record(log, second, later)
    assert plan(log, matter, later, as_frame) == []
    assert plan(log, matter, later + timedelta(days=3), as_frame) == []
    assert replay(log.events) == State.ON_SCENE


def test_plan_never_supervised_district_item_yields_both(matter: Matter, as_frame: bool) -> None:
    log = sla_log()
    at = D + timedelta(minutes=25)  # acknowledge at district level, arrive not yet due
    planned = plan(log, matter, at, as_frame)
    assert [(i.stage, i.level) for i in planned] == [
        (Stage.ACKNOWLEDGE, "street"),
        (Stage.ACKNOWLEDGE, "district"),
    ]
    assert planned[0].overdue_by == planned[1].overdue_by
    record(log, planned, at)
    assert plan(log, matter, at, as_frame) == []
    # The overdue list itself is unchanged by supervision: it is a fact about the deadlines.
    assert [i.level for i in overdue(log.events, {INC: matter}, at, as_frame)] == ["district"]


def test_plan_is_per_dispatch_cycle_for_ack_and_arrive(matter: Matter, as_frame: bool) -> None:
    log = sla_log()
    at = D + timedelta(minutes=11)
    planned = plan(log, matter, at, as_frame)
    assert [(i.stage, i.level) for i in planned] == [(Stage.ACKNOWLEDGE, "street")]
    record(log, planned, at)
    log.add("requeue", at, reason="preempted for a fire")
    redispatch = at + timedelta(minutes=1)
    log.add("dispatch", redispatch)
    at2 = redispatch + timedelta(minutes=11)
    again = plan(log, matter, at2, as_frame)
    assert [(i.stage, i.level, i.started_at) for i in again] == [
        (Stage.ACKNOWLEDGE, "street", redispatch)
    ]
    record(log, again, at2)
    assert plan(log, matter, at2, as_frame) == []


def test_plan_resolve_is_once_per_incident(matter: Matter, as_frame: bool) -> None:
    log = sla_log().add("acknowledge", D).add("arrive", D)
    late = D + DEADLINE[Stage.RESOLVE] + US
    record(log, plan(log, matter, late, as_frame), late)
    log.add("return", late, reason="wrong department")
    log.add("dispatch", late).add("acknowledge", late).add("arrive", late)
    assert plan(log, matter, late + timedelta(minutes=1), as_frame) == []


def test_plan_many_incidents_idempotent(matter: Matter) -> None:
    logs = {f"I-{n}": sla_log(f"I-{n}") for n in range(5)}
    logs["I-1"].add("acknowledge", D)
    logs["I-2"].add("acknowledge", D).add("arrive", D)
    logs["I-3"].add("acknowledge", D).add("arrive", D).add("resolve", D)
    matters = dict.fromkeys(logs, matter)
    at = D + timedelta(hours=9)
    events = [e for lg in logs.values() for e in lg.events]
    planned = plan_supervision(events, matters, at, district_after=1.0)
    assert {(i.incident_id, i.stage) for i in planned} == {
        *((f"I-{n}", Stage.RESOLVE) for n in (0, 1, 2, 4)),
        *((f"I-{n}", Stage.ARRIVE) for n in (0, 1, 4)),
        *((f"I-{n}", Stage.ACKNOWLEDGE) for n in (0, 4)),
    }
    for item in planned:
        record(logs[item.incident_id], [item], at)
    events = [e for lg in logs.values() for e in lg.events]
    assert plan_supervision(events, matters, at, district_after=1.0) == []
    assert plan_supervision(frame_from_events(events), matters, at, district_after=1.0) == []


# ----------------------------------------------------------------------------- duplicates

WINDOW = timedelta(hours=72)
NOW = datetime(2026, 10, 5, 8, 0, tzinfo=UTC)


def candidates(rows: list[tuple[str, str, float, float, datetime]]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["incident_id", "matter_code", "x_m", "y_m", "reported_at"]
    ).astype({"reported_at": "datetime64[us, UTC]"})


def dup(df: pd.DataFrame, *, matter_code: str = "M1", at: datetime = NOW) -> str | None:
    return find_duplicate(matter_code, 1000.0, 2000.0, at, df, radius_m=250.0, window=WINDOW)


def test_duplicate_radius_boundary() -> None:
    hour_ago = NOW - timedelta(hours=1)
    assert dup(candidates([("A", "M1", 1250.0, 2000.0, hour_ago)])) == "A"
    assert dup(candidates([("A", "M1", 1000.0, 1750.0, hour_ago)])) == "A"
    assert dup(candidates([("A", "M1", 1250.001, 2000.0, hour_ago)])) is None
    assert dup(candidates([("A", "M1", 1150.0, 2200.0, hour_ago)])) == "A"  # 3-4-5: exactly 250


def test_duplicate_window_boundary() -> None:
    def at(when: datetime) -> str | None:
        return dup(candidates([("A", "M1", 1000.0, 2000.0, when)]))

    assert at(NOW - WINDOW) == "A"
    assert at(NOW - WINDOW - US) is None
    assert at(NOW) == "A"
    assert at(NOW + US) is None  # reported after the new report: not what it duplicates


def test_duplicate_needs_the_same_matter() -> None:
    df = candidates([("A", "M2", 1000.0, 2000.0, NOW)])
    assert dup(df) is None
    assert dup(df, matter_code="M2") == "A"
    # Times as Python datetimes (an object column): none of the matter is still no duplicate.
    assert dup(df.astype({"reported_at": object})) is None


def test_duplicate_ignores_closed_incidents() -> None:
    df = candidates([("A", "M1", 1000.0, 2000.0, NOW), ("B", "M1", 1100.0, 2000.0, NOW)]).assign(
        status=["closed", "dispatched"]
    )
    assert dup(df) == "B"
    for status in ("closed", "evaluated", "cancelled", "rejected"):
        assert dup(df.assign(status=status)) is None
    for state in OPEN_STATES:
        assert dup(df.assign(status=str(state))) == "A"


def test_duplicate_nearest_then_smallest_id() -> None:
    hour_ago = NOW - timedelta(hours=1)
    df = candidates(
        [
            ("C", "M1", 1100.0, 2000.0, hour_ago),
            ("B", "M1", 1000.0, 2100.0, hour_ago),
            ("A", "M1", 900.0, 2000.0, hour_ago),
            ("D", "M1", 1050.0, 2000.0, NOW - timedelta(hours=70)),
        ]
    )
    assert dup(df) == "D"  # nearest wins over an earlier id
    assert dup(df[df["incident_id"] != "D"]) == "A"  # equal distances: smallest id


def test_duplicate_input_checks() -> None:
    empty = candidates([])
    assert dup(empty) is None
    with pytest.raises(InputError, match="lack column"):
        dup(empty.drop(columns=["x_m"]))
    with pytest.raises(InputError, match="timezone-aware"):
        find_duplicate("M1", 0.0, 0.0, datetime(2026, 10, 5), empty, radius_m=250.0, window=WINDOW)
    naive = candidates([("A", "M1", 1000.0, 2000.0, NOW)])
    naive["reported_at"] = naive["reported_at"].dt.tz_localize(None)
    with pytest.raises(InputError, match="naive"):
        dup(naive)


def test_duplicate_rule_on_rows_gives_the_distance() -> None:
    """The store's form of the rule: plain rows in, the master and how far it is out; a row
    without coordinates or with a closed status never wins."""
    hour_ago = NOW - timedelta(hours=1)
    rows = [
        ("B", 1030.0, 2040.0, hour_ago, "dispatched"),  # 50 m
        ("A", float("nan"), 2000.0, hour_ago, None),
        ("C", 1000.0, 2010.0, hour_ago, "closed"),  # nearest, but closed
        ("D", 1040.0, 2030.0, NOW, None),  # also 50 m: B has the smaller id
    ]
    found = nearest_duplicate(1000.0, 2000.0, NOW, rows, radius_m=250.0, window=WINDOW)
    assert found == ("B", 50.0)
    assert nearest_duplicate(1000.0, 2000.0, NOW, rows[1:3], radius_m=250.0, window=WINDOW) is None
    assert nearest_duplicate(1000.0, 2000.0, NOW, [], radius_m=250.0, window=WINDOW) is None


def test_duplicate_does_not_mutate_its_input() -> None:
    df = candidates([("A", "M1", 1000.0, 2000.0, NOW)]).assign(status="registered")
    before = df.copy()
    assert dup(df) == "A"
    pd.testing.assert_frame_equal(df, before)


def test_sla_on_a_store_shaped_frame(matter: Matter) -> None:
    """As read back from SQL: an extra event_id, NaN for missing values, JSON text for data."""
    log = sla_log().add("acknowledge", D)
    at = D + timedelta(hours=5)
    df = frame_from_events(log.events)
    df.insert(0, "event_id", range(1, len(df) + 1))
    df["data"] = "{}"
    df["level"] = df["level"].where(df["level"].notna(), float("nan"))
    df["stage"] = float("nan")
    df = df.sample(frac=1.0, random_state=3)  # row order does not matter
    before = df.copy()
    expected = list_overdue(log.events, {INC: matter}, at, district_after=1.0)
    assert [i.stage for i in expected] == [Stage.ARRIVE, Stage.RESOLVE]
    assert list_overdue(df, {INC: matter}, at, district_after=1.0) == expected
    arrive, resolve = expected
    assert (arrive.level, resolve.level) == ("district", "street")
    assert plan_supervision(df, {INC: matter}, at, district_after=1.0) == [
        replace(arrive, level="street"),
        arrive,
        resolve,
    ]
    pd.testing.assert_frame_equal(df, before)  # not mutated
