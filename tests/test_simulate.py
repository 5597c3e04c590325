"""The shift simulation: arrivals, the event loop through the real dispatcher, and its summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import groupby

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from gridgov.areas import build_locator
from gridgov.catalog import load_catalog
from gridgov.dispatch import DispatchContext, build_context
from gridgov.duplicates import find_duplicate
from gridgov.errors import InputError, UnknownMatterError
from gridgov.network import build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.settings import get_settings
from gridgov.simulate import (
    DEFAULT_START,
    PERCENTILES,
    REDRAW_ROUNDS,
    SOURCE,
    SimulationResult,
    draw_arrivals,
    format_summary,
    simulate,
)
from gridgov.workflow import (
    EVENT_COLUMNS,
    OPEN_STATES,
    Action,
    Event,
    State,
    events_from_frame,
    replay,
)

# --------------------------------------------------------------------------------------------
# fixtures: one reference context, two runs (ordinary and stressed) shared by the module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def ctx(ref: ReferenceDistrict) -> DispatchContext:
    return build_context(ref.gdf_areas, load_catalog(), build_network(ref.gdf_nodes, ref.gdf_links))


@pytest.fixture(scope="module")
def ordinary(ctx: DispatchContext, ref: ReferenceDistrict) -> SimulationResult:
    """Four morning hours of the default mix on the full reference district."""
    start = DEFAULT_START + timedelta(hours=8)
    return simulate(ctx, ref.gdf_units, gdf_offices=ref.gdf_offices, hours=4, seed=11, start=start)


def _thinned_units(ref: ReferenceDistrict) -> gpd.GeoDataFrame:
    """A quarter of the station units (grid workers all kept), and a few off duty."""
    units = ref.gdf_units
    station = units[units["kind"] != "grid_worker"]
    keep = station[station.groupby("kind").cumcount() % 4 == 0]
    thinned = pd.concat([keep, units[units["kind"] == "grid_worker"]])
    thinned = thinned.sort_values("unit_id").copy()
    off = thinned.index[thinned["kind"] == "police"][:2]
    thinned.loc[off, "on_duty"] = False
    return gpd.GeoDataFrame(thinned, geometry="geometry", crs=units.crs)


@pytest.fixture(scope="module")
def thinned(ref: ReferenceDistrict) -> gpd.GeoDataFrame:
    return _thinned_units(ref)


@pytest.fixture(scope="module")
def stressed(
    ctx: DispatchContext, ref: ReferenceDistrict, thinned: gpd.GeoDataFrame
) -> SimulationResult:
    """Three busy hours with few units: queues and preemptions happen."""
    start = DEFAULT_START + timedelta(hours=9)
    before = thinned.copy()
    result = simulate(
        ctx,
        thinned,
        gdf_offices=ref.gdf_offices,
        hours=3,
        seed=5,
        start=start,
        rate_per_hour=120,
        service_median_min={1: 90, 2: 80, 3: 70, 4: 60},
    )
    pd.testing.assert_frame_equal(thinned, before)  # the input is not changed
    return result


@pytest.fixture(scope="module")
def raised(ctx: DispatchContext, ref: ReferenceDistrict) -> SimulationResult:
    """A busy working day with every side path of the workflow made frequent."""
    start = DEFAULT_START + timedelta(hours=8)
    return simulate(
        ctx,
        ref.gdf_units,
        gdf_offices=ref.gdf_offices,
        hours=8,
        seed=3,
        start=start,
        rate_per_hour=100,
        verify_fail_rate=RAISED_VERIFY_FAIL,
        return_rate=0.1,
        duplicate_rate=0.1,
        evaluate_rate=0.9,
    )


RAISED_VERIFY_FAIL = 0.2
RUNS = ["ordinary", "stressed", "raised"]


@pytest.fixture(params=RUNS)
def result(request: pytest.FixtureRequest) -> SimulationResult:
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------------------------
# arrivals
# --------------------------------------------------------------------------------------------


def test_arrivals_are_deterministic_for_a_seed(ref: ReferenceDistrict) -> None:
    catalog = load_catalog()
    a = draw_arrivals(ref.gdf_areas, catalog, hours=24, seed=3)
    b = draw_arrivals(ref.gdf_areas, catalog, hours=24, seed=3)
    c = draw_arrivals(ref.gdf_areas, catalog, hours=24, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a[["lon", "lat"]].equals(c[["lon", "lat"]])


def test_ids_take_the_prefix(ref: ReferenceDistrict) -> None:
    catalog = load_catalog()
    a = draw_arrivals(ref.gdf_areas, catalog, hours=2, seed=3)
    b = draw_arrivals(ref.gdf_areas, catalog, hours=2, seed=3, id_prefix="SIM-20261130-3-")
    assert a["incident_id"].iloc[0] == "SIM-000001"
    assert (b["incident_id"] == "SIM-20261130-3-" + a["incident_id"].str[4:]).all()
    pd.testing.assert_frame_equal(a.drop(columns="incident_id"), b.drop(columns="incident_id"))


def test_arrivals_fall_in_their_grid_in_time_order(ref: ReferenceDistrict) -> None:
    arrivals = draw_arrivals(ref.gdf_areas, load_catalog(), hours=24, seed=1)
    # A Poisson count with mean 960: far inside 5 standard deviations (±155).
    assert 805 < len(arrivals) < 1115
    assert arrivals["t_s"].is_monotonic_increasing
    assert arrivals["t_s"].between(0, 24 * 3600).all()
    assert arrivals["incident_id"].is_unique
    found = build_locator(ref.gdf_areas).locate(
        arrivals["lon"].to_numpy(), arrivals["lat"].to_numpy()
    )
    assert (found["grid"].to_numpy() == arrivals["area_code"].to_numpy()).all()
    first = arrivals["reported_at"].iloc[0]
    assert first.utcoffset() == timedelta(0)
    assert first == DEFAULT_START + timedelta(seconds=float(arrivals["t_s"].iloc[0]))


def test_the_day_profile_shapes_arrivals(ref: ReferenceDistrict) -> None:
    arrivals = draw_arrivals(ref.gdf_areas, load_catalog(), hours=24, seed=2, rate_per_hour=200)
    per_hour = np.bincount((arrivals["t_s"] // 3600).astype(int), minlength=24)
    assert per_hour[3] < per_hour[10] / 3  # 0.25 against 1.5 of the mean
    assert per_hour[19] > per_hour[13]

    # Only local hour 4 is open; a shift from 03:30 to 05:30 gets its arrivals in 04:00-05:00.
    profile = [0.0] * 24
    profile[4] = 1.0
    start = datetime(2026, 12, 1, 3, 30, tzinfo=timezone(timedelta(hours=8)))
    arrivals = draw_arrivals(
        ref.gdf_areas, load_catalog(), hours=2, seed=2, start=start, profile=profile
    )
    assert len(arrivals) > 0
    assert arrivals["t_s"].between(1800, 5400).all()


def test_weights_pick_grids_and_matters(ref: ReferenceDistrict) -> None:
    grids = ref.gdf_areas[ref.gdf_areas["level"] == "grid"]["code"].tolist()
    arrivals = draw_arrivals(
        ref.gdf_areas,
        load_catalog(),
        hours=6,
        seed=9,
        grid_weights={grids[0]: 1.0, grids[1]: 3.0},
        matter_weights={"FS-01": 1.0},
    )
    assert set(arrivals["area_code"]) == {grids[0], grids[1]}
    assert (arrivals["area_code"] == grids[1]).sum() > (arrivals["area_code"] == grids[0]).sum()
    assert set(arrivals["matter_code"]) == {"FS-01"}
    assert set(arrivals["priority"]) == {1}


def test_the_default_mix_favours_minor_matters(ref: ReferenceDistrict) -> None:
    arrivals = draw_arrivals(ref.gdf_areas, load_catalog(), hours=48, seed=6)
    share = arrivals["priority"].value_counts(normalize=True)
    assert share[1] < share[2] < share[3]
    assert share[4] > share[1]
    minutes = arrivals.groupby("priority")["service_s"].median() / 60
    assert minutes[1] > minutes[4]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"hours": 0}, InputError, "hours"),
        ({"start": datetime(2026, 12, 1)}, InputError, "timezone"),
        ({"rate_per_hour": -1}, InputError, "rate_per_hour"),
        ({"profile": [1.0] * 23}, InputError, "24"),
        ({"grid_weights": {"nowhere": 1.0}}, InputError, "nowhere"),
        ({"matter_weights": {"FS-99": 1.0}}, UnknownMatterError, "FS-99"),
        ({"service_median_min": {1: 0}}, InputError, "service"),
    ],
)
def test_bad_parameters_are_clear_errors(
    ref: ReferenceDistrict, kwargs: dict, error: type[Exception], words: str
) -> None:
    args = {"hours": 1, "seed": 0, **kwargs}
    with pytest.raises(error, match=words):
        draw_arrivals(ref.gdf_areas, load_catalog(), **args)


# --------------------------------------------------------------------------------------------
# the event loop
# --------------------------------------------------------------------------------------------


def test_the_same_seed_gives_identical_records(
    ctx: DispatchContext, ref: ReferenceDistrict
) -> None:
    runs = [
        simulate(ctx, ref.gdf_units, gdf_offices=ref.gdf_offices, hours=1, seed=21)
        for _ in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0].incidents, runs[1].incidents)
    pd.testing.assert_frame_equal(runs[0].assignments, runs[1].assignments)
    pd.testing.assert_frame_equal(runs[0].events, runs[1].events)
    assert runs[0].summary() == runs[1].summary()
    assert len(runs[0].events) > 2 * len(runs[0].incidents)


DISPATCH_STATUSES = ("assigned", "queued_then_assigned", "unassigned", "refused", "duplicate")


def test_every_arrival_is_accounted_for(result: SimulationResult) -> None:
    inc = result.incidents
    summary = result.summary()
    assert len(inc) > 0
    assert set(inc["dispatch_status"]) <= set(DISPATCH_STATUSES)
    counted = sum(summary[s] for s in DISPATCH_STATUSES)
    assert counted == summary["arrivals"] == len(inc)
    assert summary["unassigned_at_end"] == summary["unassigned"]
    # A point refused for lying too far from the roads was drawn again and again first, and the
    # reason is kept (test_far_points_are_redrawn_then_refused makes some with a 1 km limit).
    refused = inc[inc["dispatch_status"] == "refused"]
    assert len(refused) < 0.1 * len(inc)
    assert refused["refused"].str.contains("from the nearest road").all()
    assert (refused["redrawn"] == REDRAW_ROUNDS).all()
    assert (inc.loc[inc["dispatch_status"] != "refused", "redrawn"] < REDRAW_ROUNDS).all()
    assert summary["params"]["points_redrawn"] == (inc["redrawn"] > 0).sum()
    latest = _latest_round(result)
    kinds_by_incident = latest.groupby("incident_id")["kind"].apply(set).to_dict()
    # A unit taken from an assisting kind after the lead resolved is not replaced: its kind
    # counts as assigned.
    ever = _latest_round(result, preempted=True)
    ever_by_incident = ever.groupby("incident_id")["kind"].apply(set).to_dict()
    for rec in inc.itertuples():
        required = set(rec.kinds.split("+"))
        got = kinds_by_incident.get(rec.incident_id, set())
        if rec.dispatch_status in ("assigned", "queued_then_assigned"):
            assert ever_by_incident[rec.incident_id] == required
            assert required - got <= set(rec.kinds.split("+")[1:])
            got = required
        if rec.dispatch_status == "assigned":
            assert got == required and not rec.queued and rec.unfilled == ""
            if rec.returns == 0 and rec.requeues == 0:
                assert rec.assigned_s == rec.round_start_s
            assert rec.round_start_s <= rec.assigned_s
        elif rec.dispatch_status == "queued_then_assigned":
            assert got == required and rec.queued and rec.unfilled == ""
            assert rec.assigned_s >= rec.round_start_s >= rec.reported_s
        elif rec.dispatch_status in ("refused", "duplicate"):
            assert got == set() and np.isnan(rec.assigned_s)
            assert rec.status == State.REJECTED
        else:
            assert rec.dispatch_status == "unassigned"
            assert got | set(rec.unfilled.split("+")) == required
            assert got.isdisjoint(rec.unfilled.split("+"))
    # One final unit per required kind and round: never two units for one slot.
    final = result.final_assignments()
    assert not final.duplicated(["incident_id", "round", "kind"]).any()


def _latest_round(result: SimulationResult, *, preempted: bool = False) -> pd.DataFrame:
    """The assignments that stood in each incident's latest round (or were preempted there)."""
    a = result.assignments
    final = a[~a["returned"]] if preempted else result.final_assignments()
    rounds = result.incidents.set_index("incident_id")["reopens"] + 1
    return final[final["round"].to_numpy() == rounds[final["incident_id"]].to_numpy()]


def test_no_unit_is_ever_on_two_incidents_at_once(
    result: SimulationResult, ref: ReferenceDistrict
) -> None:
    slots = result.assignments.sort_values(["unit_id", "assigned_s", "end_s"])
    for _, rows in slots.groupby("unit_id"):
        starts = rows["assigned_s"].to_numpy()
        ends = rows["end_s"].to_numpy()
        assert (starts[1:] >= ends[:-1] - 1e-6).all(), rows
    kinds = ref.gdf_units.set_index("unit_id")["kind"]
    assert (slots["unit_id"].map(kinds) == slots["kind"]).all()


def test_times_add_up(result: SimulationResult) -> None:
    a = result.assignments
    assert (a["wait_s"] >= 0).all()
    assert (a["travel_s"] >= 0).all()
    np.testing.assert_allclose(a["response_s"], a["wait_s"] + a["travel_s"])
    np.testing.assert_allclose(a["wait_s"], a["assigned_s"] - a["reported_s"])
    kept = result.final_assignments()
    np.testing.assert_allclose(
        kept["end_s"], kept["assigned_s"] + kept["travel_s"] + kept["service_s"]
    )
    # A returned call frees its unit at the return, before it would have finished.
    back = a[a["returned"]]
    assert (back["end_s"] < back["assigned_s"] + back["travel_s"] + back["service_s"]).all()
    inc = result.incidents
    done = inc[inc["dispatch_status"].isin(("assigned", "queued_then_assigned"))]
    assert done["response_s"].notna().all()
    assert (done["response_s"] >= done["lead_response_s"]).all()
    np.testing.assert_allclose(
        done["response_s"],
        _latest_round(result).groupby("incident_id")["response_s"].max()[done["incident_id"]],
    )


def test_percentiles_match_numpy_on_the_records(result: SimulationResult) -> None:
    summary = result.summary()
    final = result.final_assignments()
    for kind, entry in summary["kinds"].items():
        minutes = final.loc[final["kind"] == kind, "response_s"].to_numpy() / 60
        assert entry["assignments"] == len(minutes)
        for q in PERCENTILES:
            if len(minutes):
                assert entry[f"p{q}_min"] == pytest.approx(np.percentile(minutes, q))
            else:
                assert entry[f"p{q}_min"] is None


def test_level_shares_sum_to_one(result: SimulationResult) -> None:
    summary = result.summary()
    shares = summary["levels"]
    assert list(shares) == ["community", "street", "neighbour", "district"]
    assert sum(shares.values()) == pytest.approx(1.0)
    inc = result.incidents
    done = inc[inc["dispatch_status"].isin(("assigned", "queued_then_assigned"))]
    assert shares["community"] == pytest.approx((done["level"] == "community").mean())


def test_an_ordinary_morning_is_mostly_handled_in_the_street(ordinary: SimulationResult) -> None:
    summary = ordinary.summary()
    assert summary["unassigned_at_end"] == 0
    assert summary["levels"]["community"] + summary["levels"]["street"] > 0.5
    grid_matters = ordinary.incidents[ordinary.incidents["kinds"] == "grid_worker"]
    assert (grid_matters["level"] == "community").mean() > 0.5


def test_a_stressed_shift_queues_and_preempts(
    stressed: SimulationResult, thinned: gpd.GeoDataFrame
) -> None:
    summary = stressed.summary()
    inc = stressed.incidents.set_index("incident_id")
    assert summary["ever_queued"] > 0
    assert summary["queued_then_assigned"] > 0
    # Queued incidents waited for a unit.
    waited = stressed.incidents.query("dispatch_status == 'queued_then_assigned'")
    assert (waited["wait_s"] > 0).any()
    # Off-duty units are never sent.
    off = set(thinned.loc[~thinned["on_duty"].astype(bool), "unit_id"])
    assert off and off.isdisjoint(stressed.assignments["unit_id"])
    assert (
        summary["kinds"]["police"]["units"]
        == ((thinned["kind"] == "police") & thinned["on_duty"].astype(bool)).sum()
    )

    # Every preemption: a priority-1 incident takes a unit from a low-priority one, which is
    # re-queued (unless that unit's work no longer mattered: its lead had resolved) and counted.
    # Taking the lead unit sends the incident back to registered with a requeue event.
    a = stressed.assignments
    ev = stressed.events
    takes = a[a["preempts"].notna()]
    assert summary["preemptions"] == len(takes) == a["preempted"].sum()
    assert summary["preemptions"] > 0
    low = get_settings().preempt_min_priority
    requeues = ev[ev["action"] == Action.REQUEUE]
    for take in takes.itertuples():
        assert take.rule == "preemption"
        assert inc.loc[take.incident_id, "priority"] == 1
        victim = inc.loc[take.preempts]
        assert victim["priority"] >= low
        assert victim["preempted"] >= 1
        lost = a[
            (a["incident_id"] == take.preempts) & a["preempted"] & (a["unit_id"] == take.unit_id)
        ]
        assert len(lost) >= 1
        assert (lost["end_s"] == take.assigned_s).any()
        lead = lost[lost["role"] == "lead"]
        said = requeues[
            (requeues["incident_id"] == take.preempts)
            & (requeues["at"] == _utc(stressed, take.assigned_s))
        ]
        if len(lead) and len(said):
            assert said.iloc[0]["data"]["preempted_by"] == take.incident_id
            assert victim["queued"]
    assert len(requeues) > 0
    assert summary["workflow"]["requeued"] == requeues["incident_id"].nunique()
    assert (inc.loc[requeues["incident_id"], "requeues"] >= 1).all()


def test_the_summary_prints_as_a_table(ordinary: SimulationResult) -> None:
    text = format_summary(ordinary.summary())
    assert "p50 min" in text and "p99 min" in text
    assert "police" in text and "grid_worker" in text
    assert "resolved at: community" in text
    assert "unassigned at the end" in text
    assert "workflow: calls" in text and "closed" in text and "state at the end:" in text
    data = ordinary.to_json()
    assert data["summary"]["arrivals"] == len(data["incidents"])
    assert len(data["assignments"]) == len(ordinary.assignments)
    assert len(data["events"]) == len(ordinary.events)
    json.dumps(data)  # JSON-able as it is


def test_far_points_are_redrawn_then_refused(
    ref: ReferenceDistrict, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reference roads are the main roads only: with a 1 km snap limit a few outlying grids
    # lie wholly beyond it, so their points are drawn again, then refused with the reason.
    monkeypatch.setenv("GRIDGOV_MAX_SNAP_M", "1000")
    get_settings.cache_clear()
    try:
        ctx = build_context(
            ref.gdf_areas, load_catalog(), build_network(ref.gdf_nodes, ref.gdf_links)
        )
        result = simulate(ctx, ref.gdf_units, gdf_offices=ref.gdf_offices, hours=24, seed=1)
    finally:
        monkeypatch.delenv("GRIDGOV_MAX_SNAP_M")
        get_settings.cache_clear()
    inc = result.incidents
    refused = inc[inc["dispatch_status"] == "refused"]
    assert 0 < len(refused) < 0.1 * len(inc)
    assert refused["refused"].str.contains("from the nearest road").all()
    assert (refused["redrawn"] == REDRAW_ROUNDS).all()
    assert result.summary()["params"]["points_redrawn"] > len(refused)
    # In the workflow the dispatcher rejects them as invalid, with the reason.
    assert (refused["status"] == State.REJECTED).all()
    ev = result.events[result.events["incident_id"].isin(refused["incident_id"])]
    assert ev["action"].tolist() == [Action.REPORT, Action.REJECT] * len(refused)
    rejects = ev[ev["action"] == Action.REJECT]
    assert rejects["reason"].str.contains("from the nearest road").all()
    assert all(d["category"] == "invalid" for d in rejects["data"])


# --------------------------------------------------------------------------------------------
# the workflow
# --------------------------------------------------------------------------------------------


def _utc(result: SimulationResult, t_s: float) -> pd.Timestamp:
    start = datetime.fromisoformat(result.params["start"]).astimezone(UTC)
    return pd.Timestamp(start + timedelta(seconds=float(t_s)))


def _logs(result: SimulationResult) -> Iterator[tuple[str, list[Event]]]:
    for incident_id, events in groupby(events_from_frame(result.events), lambda e: e.incident_id):
        yield incident_id, list(events)


def test_every_incident_log_replays_to_its_status(result: SimulationResult) -> None:
    ev = result.events
    assert tuple(ev.columns) == EVENT_COLUMNS
    assert str(ev["at"].dt.tz) == "UTC"
    inc = result.incidents.set_index("incident_id")
    seen = set()
    for incident_id, log in _logs(result):
        assert replay(log) == inc.loc[incident_id, "status"]
        assert [e.seq for e in log] == list(range(1, len(log) + 1))
        assert log[0].action is Action.REPORT
        assert log[0].at == inc.loc[incident_id, "reported_at"]
        assert len(log) == inc.loc[incident_id, "events"]
        assert all(e.street_code == inc.loc[incident_id, "street_code"] for e in log)
        seen.add(incident_id)
    assert seen == set(inc.index)  # every arrival has a log
    # Nothing is recorded after the end of the shift.
    assert (ev["at"] < _utc(result, result.params["hours"] * 3600)).all()


def test_the_incidents_frame_is_ready_for_import(result: SimulationResult) -> None:
    inc = result.incidents
    for column in ("incident_id", "matter_code", "priority", "lon", "lat", "reported_at",
                   "status", "street_code", "community_code", "grid_code", "microgrid_code",
                   "duplicate_of", "source"):  # fmt: skip
        assert column in inc.columns, column
    assert inc["incident_id"].is_unique
    assert (inc["source"] == SOURCE).all()
    assert set(inc["status"]) <= {str(s) for s in State}
    assert all(t.utcoffset() == timedelta(0) for t in inc["reported_at"])
    located = inc[inc["dispatch_status"] != "refused"]
    assert located[["street_code", "community_code", "grid_code"]].notna().all().all()
    # Duplicates point at an incident of the same frame.
    assert set(inc["duplicate_of"].dropna()) <= set(inc["incident_id"])


def test_event_counts_match_the_summary(result: SimulationResult) -> None:
    w = result.summary()["workflow"]
    ev = result.events
    inc = result.incidents
    assert w["events"] == len(ev) == inc["events"].sum()
    assert w["actions"] == {str(a): int((ev["action"] == a).sum()) for a in Action}
    assert w["states"] == {str(s): int((inc["status"] == s).sum()) for s in State}
    assert sum(w["states"].values()) == len(inc)

    def having(action: Action) -> int:
        return ev.loc[ev["action"] == action, "incident_id"].nunique()

    assert w["calls"] == w["actions"]["dispatch"] == inc["calls"].sum()
    assert w["dispatched"] == having(Action.DISPATCH)
    assert w["closed"] == having(Action.CLOSE) == inc["closed_on_time"].notna().sum()
    assert w["reworked"] == having(Action.REOPEN) == (inc["reopens"] > 0).sum()
    assert w["actions"]["reopen"] == inc["reopens"].sum()
    assert w["returned"] == having(Action.RETURN) == (inc["returns"] > 0).sum()
    assert w["actions"]["return"] == inc["returns"].sum() == result.assignments["returned"].sum()
    assert w["evaluated"] == having(Action.EVALUATE) == inc["satisfaction"].notna().sum()
    assert w["duplicates"] == result.summary()["duplicate"]
    rejects = ev[ev["action"] == Action.REJECT]
    categories = [d["category"] for d in rejects["data"]]
    assert categories.count("duplicate") == w["duplicates"]
    assert categories.count("invalid") == w["rejected_invalid"]
    # Every report is registered or rejected at once.
    assert w["actions"]["report"] == len(inc)
    assert w["actions"]["register"] + w["actions"]["reject"] == len(inc)


def test_acknowledge_then_arrive_by_the_lead_unit(result: SimulationResult) -> None:
    """Dispatch -> acknowledge -> arrive, all by the lead unit, arriving when it gets there."""
    a = result.assignments
    leads = a[a["role"] == "lead"].set_index(["incident_id", "unit_id", "assigned_s"]).sort_index()
    offices = {}  # unit -> office, from the dispatch events themselves
    start = datetime.fromisoformat(result.params["start"]).astimezone(UTC)
    checked = 0
    for incident_id, log in _logs(result):
        call: Event | None = None
        ack: Event | None = None
        for e in log:
            if e.action is Action.DISPATCH:
                call, ack = e, None
                assert e.level in ("community", "street", "neighbour", "district")
                assert e.office_id is not None and e.office_id in e.data["offices"]
            elif e.action is Action.ACKNOWLEDGE:
                assert call is not None and ack is None
                ack = e
            elif e.action in (Action.ARRIVE, Action.RESOLVE, Action.RETURN):
                assert call is not None
                if e.action is not Action.RETURN:
                    assert ack is not None and ack.at <= e.at  # never arrive before acknowledging
                    assert e.actor == ack.actor and e.office_id == ack.office_id
            elif e.action in (Action.REQUEUE, Action.REOPEN):
                call, ack = None, None
            if e.action in (Action.ACKNOWLEDGE, Action.ARRIVE, Action.RESOLVE, Action.RETURN):
                assert call is not None
                assert e.actor in call.data["units"]
                assert e.office_id == call.office_id
                offices.setdefault(e.actor, e.office_id)
                # The lead's assignment made at the call: its travel gives the arrival.
                t_call = (call.at - start).total_seconds()
                rows = leads.loc[(incident_id, e.actor)]
                slot = rows.iloc[np.argmin(np.abs(rows.index.to_numpy() - t_call))]
                assert abs(slot.name - t_call) < 1e-3
                if e.action is Action.ARRIVE:
                    assert ack is not None
                    there = start + timedelta(seconds=t_call + float(slot["travel_s"]))
                    assert abs((e.at - max(there, ack.at)).total_seconds()) < 1e-3
                    checked += 1
    assert checked > 0
    # The office recorded for a unit's actions is always the same: its own.
    assert all(isinstance(o, str) for o in offices.values())


def test_closed_incidents_were_resolved_verified_then_closed(result: SimulationResult) -> None:
    closed = 0
    for _, log in _logs(result):
        actions = [e.action for e in log]
        if Action.CLOSE not in actions:
            continue
        closed += 1
        i = actions.index(Action.CLOSE)
        assert actions[i - 2 : i + 1] == [Action.RESOLVE, Action.VERIFY, Action.CLOSE]
        assert log[i - 2].at <= log[i - 1].at == log[i].at
        assert log[i - 1].role == "grid_worker"
        assert actions[i + 1 :] in ([], [Action.EVALUATE])
        if len(log) > i + 1:
            assert log[i + 1].satisfaction is not None and log[i + 1].at > log[i].at
    assert closed > 0


def test_reopened_and_returned_incidents_go_back_to_the_dispatcher(
    raised: SimulationResult,
) -> None:
    inc = raised.incidents.set_index("incident_id")
    a = raised.assignments
    reopened = returned = 0
    for incident_id, log in _logs(raised):
        for i, e in enumerate(log):
            if e.action not in (Action.REOPEN, Action.RETURN):
                continue
            assert e.to_state is State.REGISTERED and e.reason
            later = [x for x in log[i + 1 :] if x.action is Action.DISPATCH]
            if e.action is Action.REOPEN:
                reopened += 1
                assert log[i - 1].action is Action.RESOLVE
                assert e.role == "grid_worker"
                # A new round of assignments for every required kind, from the reopen on.
                if later:
                    rnd = e.data["round"]
                    new = a[(a["incident_id"] == incident_id) & (a["round"] == rnd)]
                    assert len(new) > 0
                    t_reopen = (e.at - _utc(raised, 0)).total_seconds()
                    assert (new["reported_s"] - t_reopen).abs().max() < 1e-3
            else:
                returned += 1
                assert e.office_id is not None
                # The returning office is passed over unless no other unit could lead.
                if later and inc.loc[incident_id, "exclusion_lifted"] == 0:
                    assert later[0].office_id != e.office_id
            if not later:  # still waiting at the end of the shift (or a requeue came between)
                assert inc.loc[incident_id, "status"] in {str(s) for s in OPEN_STATES}
    assert reopened > 10 and returned > 10
    assert (a.loc[a["returned"], "role"] == "lead").all()


def test_duplicates_repeat_an_open_incident_nearby(raised: SimulationResult) -> None:
    inc = raised.incidents.set_index("incident_id")
    settings = get_settings()
    dups = inc[inc["duplicate_of"].notna()]
    assert len(dups) > 10
    assert (dups["dispatch_status"] == "duplicate").all()
    assert (dups["status"] == State.REJECTED).all()
    assert set(dups.index).isdisjoint(raised.assignments["incident_id"])
    points = gpd.GeoSeries(
        gpd.points_from_xy(inc["lon"], inc["lat"]), index=inc.index, crs="EPSG:4326"
    ).to_crs(settings.metric_crs)
    logs = dict(_logs(raised))
    for dup_id, dup in dups.iterrows():
        original = inc.loc[dup["duplicate_of"]]
        assert pd.isna(original["duplicate_of"])
        assert original["matter_code"] == dup["matter_code"]
        assert original["priority"] == dup["priority"]
        assert original["reported_at"] <= dup["reported_at"]
        assert points[dup_id].distance(points[dup["duplicate_of"]]) <= settings.duplicate_radius_m
        # The original was open when the duplicate came in.
        before = [e for e in logs[dup["duplicate_of"]] if e.at <= dup["reported_at"]]
        assert before[-1].to_state in OPEN_STATES
        # The workflow's own duplicate check finds it.
        candidates = pd.DataFrame(
            {
                "incident_id": [dup["duplicate_of"]],
                "matter_code": [original["matter_code"]],
                "x_m": [points[dup["duplicate_of"]].x],
                "y_m": [points[dup["duplicate_of"]].y],
                "reported_at": [original["reported_at"]],
            }
        )
        found = find_duplicate(
            dup["matter_code"],
            points[dup_id].x,
            points[dup_id].y,
            dup["reported_at"],
            candidates,
            radius_m=settings.duplicate_radius_m,
            window=timedelta(hours=settings.duplicate_window_h),
        )
        assert found == dup["duplicate_of"]
        reject = logs[dup_id][-1]
        assert reject.action is Action.REJECT
        assert reject.data == {"category": "duplicate", "duplicate_of": dup["duplicate_of"]}


def test_the_raised_rates_show_in_the_figures(raised: SimulationResult) -> None:
    w = raised.summary()["workflow"]
    a = w["actions"]
    for action in ("reopen", "return", "evaluate", "verify", "close", "reject"):
        assert a[action] > 10, action
    # Verification fails at its rate: a binomial share, within 4 standard deviations.
    checks = a["verify"] + a["reopen"]
    assert checks > 300
    sd = np.sqrt(RAISED_VERIFY_FAIL * (1 - RAISED_VERIFY_FAIL) / checks)
    assert abs(a["reopen"] / checks - RAISED_VERIFY_FAIL) < 4 * sd
    # Departments return their calls at their rate (grid workers never do); a return still
    # pending at the end of the shift is not recorded, a bias of a few in a thousand.
    leads = raised.assignments[raised.assignments["role"] == "lead"]
    called = leads[leads["kind"] != "grid_worker"]
    assert len(called) > 300
    assert (raised.assignments.loc[raised.assignments["returned"], "kind"] != "grid_worker").all()
    share = called["returned"].mean()
    assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / len(called))
    # Acknowledgements come after a lognormal delay of median 3 min (log-sd 0.9): the median
    # of n draws lies within 4 standard errors (1.253 * 0.9 / sqrt(n) in log terms).
    ev = raised.events
    delays = []
    for _, log in _logs(raised):
        call = None
        for e in log:
            if e.action is Action.DISPATCH:
                call = e
            elif e.action is Action.ACKNOWLEDGE and call is not None:
                delays.append((e.at - call.at).total_seconds() / 60)
    assert len(delays) == (ev["action"] == Action.ACKNOWLEDGE).sum() > 300
    spread = 4 * 1.253 * 0.9 / np.sqrt(len(delays))
    assert abs(np.log(np.median(delays) / 3.0)) < spread
    # Duplicates: 10 % of arrivals (an arrival with no open incident to repeat stays genuine).
    share = w["duplicates"] / raised.summary()["arrivals"]
    assert 0.05 < share <= 0.15
    # Evaluations: satisfaction is one of the three, and most are satisfied.
    inc = raised.incidents
    assert set(inc["satisfaction"].dropna()) <= {"satisfied", "basically_satisfied", "dissatisfied"}
    assert w["satisfied"] > w["evaluated"] / 2
    assert w["closed_on_time"] <= w["closed"]


def test_zero_rates_leave_only_the_main_path(ctx: DispatchContext, ref: ReferenceDistrict) -> None:
    result = simulate(
        ctx,
        ref.gdf_units,
        gdf_offices=ref.gdf_offices,
        hours=3,
        seed=8,
        start=DEFAULT_START + timedelta(hours=9),
        verify_fail_rate=0,
        return_rate=0,
        duplicate_rate=0,
        evaluate_rate=0,
    )
    actions = set(result.events["action"])
    assert actions.isdisjoint({"reopen", "return", "reject", "evaluate"})
    assert {"report", "register", "dispatch", "acknowledge", "arrive", "resolve"} <= actions
    assert result.incidents["duplicate_of"].isna().all()


def test_the_workflow_does_not_change_the_arrivals(
    raised: SimulationResult, ref: ReferenceDistrict
) -> None:
    """Its draws come from their own stream: only the duplicates differ from the drawn arrivals."""
    arrivals = draw_arrivals(
        ref.gdf_areas,
        load_catalog(),
        hours=8,
        seed=3,
        start=DEFAULT_START + timedelta(hours=8),
        rate_per_hour=100,
    )
    inc = raised.incidents
    assert (inc["redrawn"] == 0).all()  # so the road check of the run drew nothing again
    assert inc["incident_id"].tolist() == arrivals["incident_id"].tolist()
    assert inc["reported_at"].tolist() == arrivals["reported_at"].tolist()
    genuine = inc["duplicate_of"].isna().to_numpy()
    for column in ("matter_code", "lon", "lat", "service_s"):
        assert (inc[column].to_numpy()[genuine] == arrivals[column].to_numpy()[genuine]).all()


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"verify_fail_rate": 1.5}, "verify_fail_rate"),
        ({"return_rate": -0.1}, "return_rate"),
        ({"duplicate_rate": float("nan")}, "duplicate_rate"),
        ({"evaluate_rate": 2}, "evaluate_rate"),
        ({"ack_median_min": 0}, "ack_median_min"),
    ],
)
def test_bad_workflow_rates_are_clear_errors(
    ctx: DispatchContext, ref: ReferenceDistrict, kwargs: dict, words: str
) -> None:
    with pytest.raises(InputError, match=words):
        simulate(ctx, ref.gdf_units, hours=1, seed=0, **kwargs)


def test_a_run_imports_into_the_store(reference_store_url: str) -> None:
    """The incidents and events frames are what the store's import_history takes, as they are."""
    from gridgov import store

    engine = store.open_store(reference_store_url)
    try:
        result = simulate(
            store.context_from_store(engine),
            store.read_units(engine),
            gdf_offices=store.read_offices(engine),
            hours=3,
            seed=4,
            start=DEFAULT_START + timedelta(hours=9),
            rate_per_hour=80,
            verify_fail_rate=0.3,
            return_rate=0.2,
            duplicate_rate=0.2,
            id_prefix="SIM-import-",
        )
        done = store.import_history(engine, result.incidents, result.events)
        assert done == {"incidents": len(result.incidents), "events": len(result.events)}
        stored = store.read_incidents(engine).set_index("incident_id")
        inc = result.incidents.set_index("incident_id")
        assert (stored.loc[inc.index, "status"] == inc["status"]).all()
        assert (
            stored.loc[inc.index, "duplicate_of"].notna().sum() == inc["duplicate_of"].notna().sum()
        )
        events = store.read_events(engine)
        events = events[events["incident_id"].str.startswith("SIM-import-")]
        assert len(events) == len(result.events)
        back = events.sort_values(["incident_id", "seq"]).reset_index(drop=True)
        ours = result.events.sort_values(["incident_id", "seq"]).reset_index(drop=True)
        assert back["action"].tolist() == ours["action"].tolist()
        assert (back["at"] == ours["at"]).all()
        assert back["office_id"].fillna("").tolist() == ours["office_id"].fillna("").tolist()
    finally:
        engine.dispose()
