"""The workflow against the store: events, side effects, duplicates, supervision, history and
consultations, on SQLite and on PostGIS (``store_engine``).

The district is test_store_dispatch.py's tiny lattice, with the enforcement units in three
offices (two in street 1, one in street 2) so that a returning office can be left out. Clocks
are plain datetimes passed in: nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
from pyproj import Geod
from shapely.geometry import Point
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from test_store import STREET_1, STREET_2, make_tiny_areas
from test_store_dispatch import CATALOG, NOW, make_roads, xy
from test_store_dispatch import make_units as make_lattice_units

from gridgov import dispatch
from gridgov.errors import (
    ConsultationError,
    InputError,
    InvalidTransitionError,
    NotFoundError,
)
from gridgov.settings import get_settings
from gridgov.store import (
    NOTICE_COLUMNS,
    apply_action,
    check_head_move,
    context_from_store,
    create_incident,
    detect_backend,
    dispatch_stored,
    import_history,
    list_overdue_stored,
    load_district,
    load_units,
    read_assignments,
    read_consultations,
    read_dispatch,
    read_events,
    read_incidents,
    read_notices,
    read_units,
    record_consultation,
    record_street_opinion,
    supervise_stored,
)
from gridgov.store.models import EVENTS, INCIDENTS, REPORTERS
from gridgov.workflow import EVENT_COLUMNS, Event, events_from_frame, frame_from_events, next_event

GEOD = Geod(ellps="WGS84")
T_ENF = CATALOG.get("T-ENF")
ACK = timedelta(minutes=T_ENF.acknowledge_min)

# enforcement unit -> office; E1 and E2 in street 1, E3 in street 2.
OFFICE_OF = {"E1": "OF-ENF-A", "E2": "OF-ENF-B", "E3": "OF-ENF-C"}


def make_offices() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "office_id": ["OF-ENF-A", "OF-ENF-B", "OF-ENF-C"],
            "name": ["执法中队甲", "执法中队乙", "执法中队丙"],
            "kind": ["enforcement"] * 3,
            "department": ["综合执法局", "综合执法局", "综合执法局"],
            "street_code": [STREET_1, STREET_1, STREET_2],
            "generated": [True] * 3,
        },
        geometry=[Point(*xy(1, 2)), Point(*xy(2, 3)), Point(*xy(6, 6))],
        crs="EPSG:4326",
    )


def make_units() -> gpd.GeoDataFrame:
    gdf = make_lattice_units()
    gdf["office_id"] = gdf["unit_id"].map(OFFICE_OF)
    gdf.loc[gdf["office_id"].notna(), "department"] = "综合执法局"
    return gdf


@pytest.fixture
def district(store_engine: Engine) -> Engine:
    gdf_nodes, gdf_links = make_roads()
    load_district(
        store_engine,
        make_tiny_areas(),
        make_offices(),
        make_units(),
        CATALOG.matters,
        gdf_nodes=gdf_nodes,
        gdf_links=gdf_links,
        name="tiny",
    )
    return store_engine


@pytest.fixture
def ctx(district: Engine) -> dispatch.DispatchContext:
    return context_from_store(district, CATALOG)


@pytest.fixture
def manual_register(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRIDGOV_AUTO_REGISTER", "false")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("GRIDGOV_AUTO_REGISTER")
    get_settings.cache_clear()


_COUNTER = iter(range(1_000_000))


def report(
    engine: Engine,
    matter: str = "T-ENF",
    node: tuple[int, int] = (1, 1),
    *,
    at: datetime = NOW,
    east_m: float = 0.0,
    reporter: str | None = None,
    incident_id: str | None = None,
) -> str:
    """Report an incident near a lattice node (``east_m`` metres east of it)."""
    lon, lat = xy(*node)
    lon, lat = lon + 1e-4, lat + 1e-4
    if east_m:
        lon, lat, _ = GEOD.fwd(lon, lat, 90.0, east_m)
    incident_id = incident_id or f"WF-{next(_COUNTER):05d}"
    create_incident(
        engine,
        dispatch.Incident(incident_id, matter, lon, lat, at),
        source="test",
        now=at,
        reporter=reporter,
        description="垃圾堆放 / rubbish dumped",
    )
    return incident_id


def status(engine: Engine, incident_id: str) -> str:
    return str(read_incidents(engine).set_index("incident_id").loc[incident_id, "status"])


def actions(engine: Engine, incident_id: str) -> list[str]:
    return read_events(engine, incident_id=incident_id)["action"].tolist()


def count_events(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(EVENTS)).scalar_one())


def unit(engine: Engine, unit_id: str) -> dict[str, Any]:
    row = read_units(engine).set_index("unit_id").loc[unit_id]
    return {"status": row["status"], "busy_incident_id": row["busy_incident_id"]}


def act(engine: Engine, incident_id: str, action: str, at: datetime, **kwargs: Any) -> Event:
    defaults = {
        "acknowledge": ("E-unit", "unit"),
        "arrive": ("E-unit", "unit"),
        "resolve": ("E-unit", "unit"),
        "return": ("E-office", "office"),
        "verify": ("grid-1", "grid_worker"),
        "reopen": ("grid-1", "grid_worker"),
        "close": ("dispatcher-1", "dispatcher"),
        "evaluate": ("citizen", "reporter"),
        "cancel": ("dispatcher-1", "dispatcher"),
        "register": ("dispatcher-1", "dispatcher"),
        "reject": ("dispatcher-1", "dispatcher"),
        "supervise": ("commander-1", "commander"),
    }
    actor, role = defaults[action]
    kwargs.setdefault("actor", actor)
    kwargs.setdefault("role", role)
    return apply_action(engine, incident_id, action, at=at, **kwargs)


# --------------------------------------------------------------------------------------------
# the append-only log
# --------------------------------------------------------------------------------------------


def test_events_cannot_be_updated_or_deleted(district: Engine) -> None:
    incident_id = report(district)
    before = read_events(district, incident_id=incident_id)
    for sql in (
        "UPDATE events SET reason = 'forged' WHERE incident_id = :i",
        "UPDATE events SET at = at WHERE incident_id = :i",
        "DELETE FROM events WHERE incident_id = :i",
        "DELETE FROM events",
    ):
        with pytest.raises(DBAPIError, match="append-only"), district.begin() as connection:
            connection.execute(text(sql), {"i": incident_id})
    if detect_backend(district) == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), district.begin() as connection:
            connection.execute(text("TRUNCATE events"))
        with pytest.raises(DBAPIError, match="append-only"), district.begin() as connection:
            connection.execute(text("TRUNCATE events, incidents CASCADE"))
    pd.testing.assert_frame_equal(read_events(district, incident_id=incident_id), before)


def reporter_id(engine: Engine, incident_id: str) -> str:
    """The opaque id an incident names its reporter by."""
    return str(read_incidents(engine).set_index("incident_id").loc[incident_id, "reporter_id"])


def test_a_new_report_is_reported_then_registered(district: Engine) -> None:
    incident_id = report(district, reporter="138-0000-0001")
    events = read_events(district, incident_id=incident_id)
    assert list(events.columns) == [*EVENT_COLUMNS, "event_id"]
    assert events["action"].tolist() == ["report", "register"]
    assert events["seq"].tolist() == [1, 2]
    assert events["from_state"].tolist() == [None, "reported"]
    assert events["to_state"].tolist() == ["reported", "registered"]
    # The reporter's phone is kept apart for outcome notices, never written into the
    # append-only log, which names the reporter by an opaque id.
    assert events["actor"].tolist() == ["reporter", "gridgov"]
    assert not events.astype(str).apply(lambda c: c.str.contains("138-0000-0001")).any().any()
    assert events["role"].tolist() == ["reporter", "system"]
    assert (events["at"] == pd.Timestamp(NOW)).all()
    assert events["at"].dt.tz is not None
    row = read_incidents(district).set_index("incident_id").loc[incident_id]
    assert row["status"] == "registered"
    assert row["reporter_id"].startswith("rep-")
    assert events["data"].iloc[0]["reporter_id"] == row["reporter_id"]
    assert "138-0000-0001" not in row.astype(str).tolist()
    assert row["description"] == "垃圾堆放 / rubbish dumped"
    assert pd.isna(row["duplicate_of"])


@pytest.mark.usefixtures("manual_register")
def test_without_auto_register_a_dispatcher_registers_or_rejects(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    kept, bogus = report(district), report(district, "T-HRSS", (5, 5))
    assert status(district, kept) == "reported"
    with pytest.raises(InputError, match="register it first"):
        dispatch_stored(district, ctx, kept, now=NOW)
    act(district, kept, "register", NOW)
    assert [a.unit_id for a in dispatch_stored(district, ctx, kept, now=NOW).assignments] == ["E1"]
    with pytest.raises(InvalidTransitionError, match="category"):
        act(district, bogus, "reject", NOW, reason="not a real matter")
    act(district, bogus, "reject", NOW, reason="prank call", data={"category": "invalid"})
    assert status(district, bogus) == "rejected"
    with pytest.raises(InputError, match="it was rejected"):
        dispatch_stored(district, ctx, bogus, now=NOW)


# --------------------------------------------------------------------------------------------
# every action through apply_action, with its side effects
# --------------------------------------------------------------------------------------------


def test_the_main_path_from_report_to_evaluation(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district, reporter="alice")
    decision = dispatch_stored(district, ctx, incident_id, now=NOW, actor="dispatcher-1")
    assert [a.unit_id for a in decision.assignments] == ["E1"]
    dispatched = read_events(district, incident_id=incident_id).iloc[-1]
    assert (dispatched["action"], dispatched["office_id"], dispatched["level"]) == (
        "dispatch",
        "OF-ENF-A",
        "street",
    )
    assert (dispatched["actor"], dispatched["role"]) == ("dispatcher-1", "system")
    assert dispatched["street_code"] == STREET_1
    stored = read_dispatch(district, incident_id)
    assert dispatched["data"]["dispatch_id"] == stored["dispatch_id"]
    assert dispatched["data"]["units"] == ["E1"]
    assert dispatched["data"]["offices"] == ["OF-ENF-A"]

    t = NOW
    for action, state in [
        ("acknowledge", "acknowledged"),
        ("arrive", "on_scene"),
        ("resolve", "resolved"),
        ("verify", "verified"),
        ("close", "closed"),
    ]:
        t += timedelta(minutes=5)
        event = act(district, incident_id, action, t, unit_id="E1" if action == "arrive" else None)
        assert (event.action, event.to_state) == (action, state)
        assert status(district, incident_id) == state
        if action == "resolve":
            # The work is done: the unit is free again and its assignment ended.
            assert unit(district, "E1") == {"status": "available", "busy_incident_id": None}
            a = read_assignments(district, incident_id=incident_id).iloc[0]
            assert not a["active"] and a["released_at"] == pd.Timestamp(t)
            assert a["release_reason"] == "resolve"
    with pytest.raises(InvalidTransitionError, match="satisfaction"):
        act(district, incident_id, "evaluate", t)
    act(district, incident_id, "evaluate", t + timedelta(days=1), satisfaction="satisfied")

    events = read_events(district, incident_id=incident_id)
    assert events["action"].tolist() == [
        "report",
        "register",
        "dispatch",
        "acknowledge",
        "arrive",
        "resolve",
        "verify",
        "close",
        "evaluate",
    ]
    assert events["seq"].tolist() == list(range(1, 10))
    assert events["from_state"].tolist()[1:] == events["to_state"].tolist()[:-1]
    # The department's actions name the office: of the latest dispatch, or of the acting unit.
    by_action = events.set_index("action")
    for action in ("acknowledge", "arrive", "resolve"):
        assert by_action.loc[action, "office_id"] == "OF-ENF-A"
    assert by_action.loc["arrive", "data"] == {"unit_id": "E1"}
    assert by_action.loc["evaluate", "satisfaction"] == "satisfied"
    assert status(district, incident_id) == "evaluated"
    # The reporter was told when it closed.
    notices = read_notices(district, incident_id=incident_id)
    assert list(notices.columns) == list(NOTICE_COLUMNS)
    # Addressed to the reporter's opaque id: the notice holds no contact.
    assert notices[["kind", "recipient_kind", "recipient"]].values.tolist() == [
        ["outcome", "reporter", reporter_id(district, incident_id)]
    ]
    assert "alice" not in notices.astype(str).to_numpy().tolist()
    assert notices.iloc[0]["data"]["outcome"] == "closed"
    with pytest.raises(InvalidTransitionError, match="final"):
        act(district, incident_id, "cancel", t + timedelta(days=2), reason="too late")


def test_an_invalid_transition_changes_nothing(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    dispatch_stored(district, ctx, incident_id, now=NOW)
    before_events = count_events(district)
    before = read_incidents(district).set_index("incident_id").loc[incident_id]
    later = NOW + timedelta(minutes=1)
    attempts: list[tuple[str, dict[str, Any], str]] = [
        ("resolve", {}, "dispatched allows"),  # must be acknowledged and on scene first
        ("verify", {}, "dispatched allows"),
        ("acknowledge", {"role": "reporter"}, "may not acknowledge"),
        ("return", {}, "needs a reason"),
        ("cancel", {"at": NOW - timedelta(minutes=1), "reason": "x"}, "before the last event"),
        ("fly", {}, "unknown action"),
    ]
    for action, kwargs, words in attempts:
        at = kwargs.pop("at", later)
        with pytest.raises(InvalidTransitionError, match=words) as info:
            if action == "fly":
                apply_action(district, incident_id, action, at=at, actor="x", role="dispatcher")
            else:
                act(district, incident_id, action, at, **kwargs)
        assert info.value.incident_id == incident_id
        assert info.value.state == "dispatched"
        assert "acknowledge" in info.value.allowed
    assert count_events(district) == before_events
    after = read_incidents(district).set_index("incident_id").loc[incident_id]
    assert (after["status"], after["updated_at"]) == (before["status"], before["updated_at"])
    assert unit(district, "E1") == {"status": "busy", "busy_incident_id": incident_id}
    with pytest.raises(NotFoundError):
        act(district, "NO-SUCH", "acknowledge", later)
    with pytest.raises(InputError, match="dispatch_stored"):
        apply_action(district, incident_id, "dispatch", at=later, actor="x", role="dispatcher")
    assert count_events(district) == before_events


def test_a_return_is_redispatched_without_the_returning_office(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    t = NOW
    expected = [("E1", "OF-ENF-A"), ("E2", "OF-ENF-B"), ("E3", "OF-ENF-C")]
    for k, (unit_id, office) in enumerate(expected):
        decision = dispatch_stored(district, ctx, incident_id, now=t)
        assert [a.unit_id for a in decision.assignments] == [unit_id]
        returned = decision.explanation.get("returned")
        if k == 0:
            assert returned is None
        else:
            assert returned["offices"] == sorted(o for _, o in expected[:k])
            assert returned["readmitted_kinds"] == []
        t += timedelta(minutes=2)
        if k == 1:
            act(district, incident_id, "acknowledge", t)
            t += timedelta(minutes=1)
        event = act(district, incident_id, "return", t, reason="not our remit")
        assert event.office_id == office  # the returning office: that of the latest dispatch
        assert status(district, incident_id) == "registered"
        # Its unit is free again and its assignment ended.
        assert unit(district, unit_id) == {"status": "available", "busy_incident_id": None}
        assert read_assignments(district, incident_id=incident_id)["active"].sum() == 0
        t += timedelta(minutes=1)
    # Every enforcement office has returned it: nobody else can take it, so they are asked
    # again rather than leaving it unfilled, and the explanation says so.
    decision = dispatch_stored(district, ctx, incident_id, now=t)
    assert [a.unit_id for a in decision.assignments] == ["E1"]
    returned = read_dispatch(district, incident_id)["explanation"]["returned"]
    assert returned["offices"] == ["OF-ENF-A", "OF-ENF-B", "OF-ENF-C"]
    assert returned["readmitted_kinds"] == ["enforcement"]
    assert "no other unit of that kind" in returned["note"]
    assert actions(district, incident_id)[2:] == [
        "dispatch",
        "return",
        "dispatch",
        "acknowledge",
        "return",
        "dispatch",
        "return",
        "dispatch",
    ]


def test_reopen_sends_it_back_to_registered_for_a_new_dispatch(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    dispatch_stored(district, ctx, incident_id, now=NOW)
    t = NOW
    for action in ("acknowledge", "arrive", "resolve"):
        t += timedelta(minutes=10)
        act(district, incident_id, action, t)
    with pytest.raises(InvalidTransitionError, match="needs a reason"):
        act(district, incident_id, "reopen", t)
    act(district, incident_id, "reopen", t, reason="rubbish still there")
    assert status(district, incident_id) == "registered"
    decision = dispatch_stored(district, ctx, incident_id, now=t + timedelta(minutes=1))
    assert [a.unit_id for a in decision.assignments] == ["E1"]  # no office returned it
    assert status(district, incident_id) == "dispatched"
    assert actions(district, incident_id).count("dispatch") == 2
    assert read_dispatch(district, incident_id)["dispatches"] == 2


def test_cancel_frees_the_units_and_tells_the_reporters(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    master = report(district, reporter="alice")
    copy = report(district, at=NOW + timedelta(minutes=3), reporter="bob")
    dispatch_stored(district, ctx, master, now=NOW + timedelta(minutes=4))
    with pytest.raises(InvalidTransitionError, match="may not cancel"):
        act(district, master, "cancel", NOW + timedelta(minutes=5), role="unit", reason="x")
    act(district, master, "cancel", NOW + timedelta(minutes=5), reason="owner cleared it")
    assert status(district, master) == "cancelled"
    assert unit(district, "E1") == {"status": "available", "busy_incident_id": None}
    a = read_assignments(district, incident_id=master).iloc[0]
    assert a["release_reason"] == "cancel: owner cleared it"
    notices = read_notices(district, kind="outcome").set_index("recipient")
    alice, bob = reporter_id(district, master), reporter_id(district, copy)
    assert sorted(notices.index) == sorted([alice, bob])
    assert notices.loc[bob, "incident_id"] == copy
    assert notices.loc[bob, "data"] == {
        "outcome": "cancelled",
        "incident_id": master,
        "duplicate": True,
    }
    assert "cancelled" in notices.loc[bob, "message"]


def test_preemption_and_reload_record_requeue_events(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    low = report(district, "T-LOW", (2, 1))
    dispatch_stored(district, ctx, low, now=NOW)
    fire = report(district, "T-FIRE", (1, 1))
    later = NOW + timedelta(minutes=5)
    dispatch_stored(district, ctx, fire, now=later)
    requeue = read_events(district, incident_id=low).iloc[-1]
    assert (requeue["action"], requeue["role"], requeue["to_state"]) == (
        "requeue",
        "system",
        "registered",
    )
    assert requeue["reason"].startswith(f"preempted by {fire}")
    assert requeue["at"] == pd.Timestamp(later)
    assert actions(district, fire)[-1] == "dispatch"

    # A reload replaces the units: the fire's work is interrupted and goes back to the queue.
    load_units(district, make_units())
    last = read_events(district, incident_id=fire).iloc[-1]
    assert (last["action"], last["reason"]) == ("requeue", "dataset reload removed its unit")
    assert status(district, fire) == "registered"


def test_a_dispatch_that_finds_nobody_records_no_dispatch_event(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    nobody = report(district, "T-HRSS", (5, 5))
    assert dispatch_stored(district, ctx, nobody, now=NOW).status == "unassigned"
    assert actions(district, nobody) == ["report", "register"]
    assert status(district, nobody) == "registered"
    joint = report(district, "T-JOINT", (1, 1))
    assert dispatch_stored(district, ctx, joint, now=NOW).status == "partial"
    assert actions(district, joint)[-1] == "dispatch"
    assert read_events(district, incident_id=joint).iloc[-1]["data"]["unfilled"] == ["hrss"]


# --------------------------------------------------------------------------------------------
# duplicates
# --------------------------------------------------------------------------------------------


def test_duplicates_are_linked_rejected_and_told_the_outcome(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    radius = get_settings().duplicate_radius_m
    window = timedelta(hours=get_settings().duplicate_window_h)
    master = report(district, reporter="alice")
    near = report(district, at=NOW + timedelta(hours=1), east_m=radius - 10, reporter="bob")
    far = report(district, at=NOW + timedelta(hours=1), east_m=radius + 10, reporter="carol")
    other_matter = report(district, "T-HRSS", at=NOW + timedelta(hours=1), reporter="dan")
    late = report(district, at=NOW + window + timedelta(minutes=1), reporter="erin")
    before = report(district, at=NOW - timedelta(minutes=1), incident_id="WF-EARLIER")

    incidents = read_incidents(district).set_index("incident_id")
    assert incidents.loc[near, "status"] == "rejected"
    assert incidents.loc[near, "duplicate_of"] == master
    for kept in (master, far, other_matter, late, before):
        assert incidents.loc[kept, "status"] == "registered", kept
        assert pd.isna(incidents.loc[kept, "duplicate_of"])
    reject = read_events(district, incident_id=near).iloc[-1]
    assert (reject["action"], reject["role"]) == ("reject", "system")
    assert reject["data"]["category"] == "duplicate"
    assert reject["data"]["duplicate_of"] == master
    assert reject["data"]["distance_m"] == pytest.approx(radius - 10, abs=1.0)
    assert reject["reason"].startswith(f"duplicate of {master}")
    with pytest.raises(InputError, match="rejected"):
        dispatch_stored(district, ctx, near, now=NOW + timedelta(hours=2))

    # A closed incident is no longer open: a new report there duplicates the other open one
    # on the spot (which would lose the tie on id to the master, were the master still open).
    t = NOW + timedelta(hours=2)
    dispatch_stored(district, ctx, master, now=t)
    for action in ("acknowledge", "arrive", "resolve", "verify", "close"):
        t += timedelta(minutes=5)
        act(district, master, action, t)
    again = report(district, at=t + timedelta(minutes=1), reporter="fay")
    assert read_incidents(district).set_index("incident_id").loc[again, "duplicate_of"] == before

    outcome = read_notices(district, kind="outcome").set_index("recipient")
    alice, bob = reporter_id(district, master), reporter_id(district, near)
    # The master's reporter and the duplicate's, by their opaque ids.
    assert sorted(outcome.index) == sorted([alice, bob])
    assert outcome.loc[bob, "incident_id"] == near
    assert outcome.loc[bob, "data"]["incident_id"] == master
    assert outcome.loc[alice, "created_at"] == pd.Timestamp(t)
    assert f"a duplicate of incident {master}" in outcome.loc[bob, "message"]


def test_a_dispatcher_can_mark_a_duplicate_by_hand(district: Engine) -> None:
    master = report(district)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDGOV_AUTO_REGISTER", "false")
        get_settings.cache_clear()
        try:
            copy = report(district, "T-ENF", (6, 6))  # far away: no automatic link
        finally:
            get_settings.cache_clear()
    with pytest.raises(InputError, match="no such incident"):
        act(
            district,
            copy,
            "reject",
            NOW,
            reason="same dumping",
            data={"category": "duplicate", "duplicate_of": "NOPE"},
        )
    assert status(district, copy) == "reported"
    act(
        district,
        copy,
        "reject",
        NOW,
        reason="same dumping",
        data={"category": "duplicate", "duplicate_of": master},
    )
    row = read_incidents(district).set_index("incident_id").loc[copy]
    assert (row["status"], row["duplicate_of"]) == ("rejected", master)


# --------------------------------------------------------------------------------------------
# supervision with a controllable clock
# --------------------------------------------------------------------------------------------


def test_supervision_appears_exactly_when_the_deadline_passes(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    dispatch_stored(district, ctx, incident_id, now=NOW)
    us = timedelta(microseconds=1)
    after = get_settings().supervise_district_after

    # Nothing at the deadline itself.
    assert supervise_stored(district, NOW + ACK, CATALOG) == []
    assert list_overdue_stored(district, NOW + ACK, CATALOG) == []
    assert read_notices(district).empty

    # Just after it: the street supervises the acknowledgement.
    t1 = NOW + ACK + us
    (item,) = supervise_stored(district, t1, CATALOG)
    assert (str(item.stage), item.level, item.office_id) == ("acknowledge", "street", "OF-ENF-A")
    assert item.overdue_by == us
    # Idempotent: the same instant again records nothing.
    assert supervise_stored(district, t1, CATALOG) == []
    assert [(str(i.stage), i.level) for i in list_overdue_stored(district, t1, CATALOG)] == [
        ("acknowledge", "street")
    ]
    event = read_events(district, incident_id=incident_id).iloc[-1]
    assert (event["action"], event["stage"], event["level"], event["to_state"]) == (
        "supervise",
        "acknowledge",
        "street",
        "dispatched",
    )
    assert event["at"] == pd.Timestamp(t1)
    (notice,) = read_notices(district, kind="supervision").itertuples()
    assert (notice.recipient_kind, notice.recipient, notice.level, notice.stage) == (
        "office",
        "OF-ENF-A",
        "street",
        "acknowledge",
    )

    # Before the district multiple: nothing new; from it on, the district.
    t2 = NOW + ACK + ACK * after
    assert supervise_stored(district, t2 - us, CATALOG) == []
    (item,) = supervise_stored(district, t2, CATALOG)
    assert (str(item.stage), item.level) == ("acknowledge", "district")
    assert supervise_stored(district, t2, CATALOG) == []
    district_notice = read_notices(district, kind="supervision").iloc[-1]
    assert (district_notice["recipient_kind"], district_notice["recipient"]) == (
        "department",
        "综合执法局",
    )
    assert district_notice["level"] == "district"

    # Acknowledged: the acknowledgement clock is met, and nothing more is recorded for it.
    act(district, incident_id, "acknowledge", t2 + timedelta(minutes=1))
    assert supervise_stored(district, t2 + timedelta(minutes=2), CATALOG) == []
    assert actions(district, incident_id).count("supervise") == 2
    assert status(district, incident_id) == "acknowledged"


def test_a_commander_can_supervise_by_hand(district: Engine, ctx: dispatch.DispatchContext) -> None:
    incident_id = report(district)
    dispatch_stored(district, ctx, incident_id, now=NOW)
    at = NOW + timedelta(minutes=3)
    with pytest.raises(InvalidTransitionError, match="needs a level"):
        act(district, incident_id, "supervise", at, stage="acknowledge")
    event = act(district, incident_id, "supervise", at, stage="acknowledge", level="street")
    assert (event.office_id, event.to_state) == ("OF-ENF-A", "dispatched")
    (notice,) = read_notices(district, incident_id=incident_id).itertuples()
    assert (notice.kind, notice.recipient_kind, notice.recipient) == (
        "supervision",
        "office",
        "OF-ENF-A",
    )
    # The automatic run does not supervise that stage at street level again.
    items = supervise_stored(district, NOW + ACK + timedelta(seconds=1), CATALOG)
    assert items == []


def test_a_stage_already_at_district_level_is_supervised_street_first(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    dispatch_stored(district, ctx, incident_id, now=NOW)
    act(district, incident_id, "acknowledge", NOW + timedelta(minutes=1))
    arrive = timedelta(minutes=T_ENF.arrive_min)
    at = NOW + 3 * arrive
    items = supervise_stored(district, at, CATALOG)
    assert [(str(i.stage), i.level) for i in items] == [
        ("arrive", "street"),
        ("arrive", "district"),
    ]
    assert supervise_stored(district, at, CATALOG) == []
    notices = read_notices(district, incident_id=incident_id)
    assert notices["level"].tolist() == ["street", "district"]


# --------------------------------------------------------------------------------------------
# importing a history
# --------------------------------------------------------------------------------------------


def _history(incident_ids: list[str]) -> tuple[gpd.GeoDataFrame, list[Event]]:
    events: list[Event] = []
    for k, incident_id in enumerate(incident_ids):
        t = NOW + timedelta(minutes=k)
        last = None
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("report", "reporter", {}),
            ("register", "system", {}),
            ("dispatch", "system", {"office_id": "OF-ENF-A", "level": "street"}),
            ("acknowledge", "unit", {}),
            ("arrive", "unit", {}),
            ("resolve", "unit", {}),
            ("verify", "grid_worker", {}),
            ("close", "system", {}),
        ]
        for action, role, extra in steps:
            t += timedelta(minutes=3)
            last = next_event(
                last,
                action,
                incident_id=incident_id,
                at=t,
                actor="sim",
                role=role,
                street_code=STREET_1 if action == "report" else None,
                **extra,
            )
            events.append(last)
    lon, lat = xy(1, 1)
    gdf = gpd.GeoDataFrame(
        {
            "incident_id": incident_ids,
            "matter_code": "T-ENF",
            "priority": 3,
            "reported_at": [NOW + timedelta(minutes=k + 3) for k in range(len(incident_ids))],
            "status": "closed",
            "street_code": STREET_1,
            "duplicate_of": None,
            "source": "simulation",
        },
        geometry=[Point(lon, lat)] * len(incident_ids),
        crs="EPSG:4326",
    )
    return gdf, events


def test_import_history_stores_every_incident_and_event(district: Engine) -> None:
    gdf, events = _history(["SIM-1", "SIM-2"])
    assert import_history(district, gdf, frame_from_events(events)) == {
        "incidents": 2,
        "events": 16,
    }
    stored = read_incidents(district).set_index("incident_id")
    assert stored.loc["SIM-1", "status"] == "closed"
    assert stored.loc["SIM-2", "source"] == "simulation"
    assert events_from_frame(read_events(district)) == events
    assert stored["reporter_id"].isna().all()  # no contact given, no reporter row
    # Already there: refused as a whole.
    with pytest.raises(InputError, match="already stored: SIM-1, SIM-2"):
        import_history(district, gdf, frame_from_events(events))


def test_import_history_keeps_a_contact_apart(district: Engine) -> None:
    gdf, events = _history(["SIM-C"])
    gdf["reporter"] = "phone:138-1111-2222"
    import_history(district, gdf, frame_from_events(events))
    stored = read_incidents(district).set_index("incident_id")
    assert stored.loc["SIM-C", "reporter_id"].startswith("rep-")
    assert "138-1111-2222" not in stored.astype(str).to_numpy().ravel().tolist()
    with district.connect() as connection:
        contact = connection.execute(select(REPORTERS.c.contact)).scalar_one()
    assert contact == "phone:138-1111-2222"


def test_import_history_lists_every_problem_and_writes_nothing(district: Engine) -> None:
    gdf, events = _history(["SIM-1", "SIM-2", "SIM-3"])
    # SIM-1: a gap in its log; SIM-2: its status disagrees with its log; SIM-3 fine;
    # SIM-4: events but no incident row.
    broken = [e for e in events if not (e.incident_id == "SIM-1" and e.seq == 4)]
    gdf.loc[gdf["incident_id"] == "SIM-2", "status"] = "evaluated"
    _, stray = _history(["SIM-4"])
    with pytest.raises(InputError) as info:
        import_history(district, gdf, frame_from_events(broken + stray))
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "'SIM-1' event seq 5" in message
    assert "SIM-2: status evaluated but its events end in closed" in message
    assert "unknown incident(s): SIM-4" in message
    assert read_incidents(district).empty
    assert count_events(district) == 0


# --------------------------------------------------------------------------------------------
# appointment consultations (power 1)
# --------------------------------------------------------------------------------------------


def test_a_head_move_needs_an_answered_consultation(district: Engine) -> None:
    move_at = NOW + timedelta(days=30)
    with pytest.raises(ConsultationError, match="has not consulted the street"):
        check_head_move(district, "OF-ENF-A", move_at)
    consultation_id = record_consultation(
        district,
        office_id="OF-ENF-A",
        head_name="张三",
        proposed_move="调任区综合执法局法制科科长",
        letter="关于张三同志职务调整征求街道意见的函……",
        consulted_at=NOW,
        recorded_by="dept-hr",
    )
    with pytest.raises(ConsultationError, match="not given its opinion"):
        check_head_move(district, "OF-ENF-A", move_at)
    with pytest.raises(InputError, match="needs its text"):
        record_street_opinion(district, consultation_id, opinion="conditional", opinion_at=NOW)
    with pytest.raises(InputError, match="must be one of"):
        record_street_opinion(district, consultation_id, opinion="maybe", opinion_at=NOW)
    with pytest.raises(InputError, match="before the consultation"):
        record_street_opinion(
            district, consultation_id, opinion="agree", opinion_at=NOW - timedelta(days=1)
        )
    answered = NOW + timedelta(days=3)
    record_street_opinion(
        district, consultation_id, opinion="agree", opinion_text="同意", opinion_at=answered
    )
    with pytest.raises(ConsultationError, match="answered already"):
        record_street_opinion(
            district,
            consultation_id,
            opinion="disagree",
            opinion_text="不同意",
            opinion_at=answered,
        )
    with pytest.raises(NotFoundError):
        record_street_opinion(district, 999, opinion="agree", opinion_at=answered)

    with pytest.raises(ConsultationError):
        check_head_move(district, "OF-ENF-A", answered - timedelta(seconds=1))
    assert check_head_move(district, "OF-ENF-A", answered)["consultation_id"] == consultation_id
    with pytest.raises(ConsultationError):
        check_head_move(district, "OF-ENF-B", move_at)  # another office: never consulted

    records = read_consultations(district, street_code=STREET_1)
    (row,) = records.itertuples()
    assert (row.office_id, row.department, row.street_code) == ("OF-ENF-A", "综合执法局", STREET_1)
    assert (row.opinion, row.opinion_text) == ("agree", "同意")
    assert row.opinion_at == pd.Timestamp(answered)
    assert row.consulted_at == pd.Timestamp(NOW)
    assert row.letter.startswith("关于张三")
    assert read_consultations(district, office_id="OF-ENF-C").empty
    assert len(read_consultations(district, department="综合执法局")) == 1
    with pytest.raises(InputError, match="give its department and street_code"):
        record_consultation(
            district,
            office_id="OF-NOPE",
            head_name="李四",
            proposed_move="免职",
            letter="函",
            consulted_at=NOW,
            recorded_by="dept-hr",
        )


def test_read_events_filters_by_time(district: Engine, ctx: dispatch.DispatchContext) -> None:
    incident_id = report(district)
    dispatch_stored(district, ctx, incident_id, now=NOW + timedelta(minutes=10))
    window = read_events(
        district, since=NOW + timedelta(minutes=1), until=NOW + timedelta(minutes=11)
    )
    assert window["action"].tolist() == ["dispatch"]
    assert read_events(district, until=NOW)["action"].tolist() == []
    with pytest.raises(InputError, match="timezone-aware"):
        read_events(district, since=datetime(2026, 1, 1))
    with district.connect() as connection:
        stored = connection.execute(
            select(INCIDENTS.c.status).where(INCIDENTS.c.incident_id == incident_id)
        ).scalar_one()
    assert stored == "dispatched"
    assert NOW.tzinfo is UTC
