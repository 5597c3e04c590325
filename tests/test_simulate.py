"""The shift simulation: arrivals, the event loop through the real dispatcher, and its summary."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from gridgov.areas import build_locator
from gridgov.catalog import load_catalog
from gridgov.dispatch import DispatchContext, build_context
from gridgov.errors import InputError, UnknownMatterError
from gridgov.network import build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.settings import get_settings
from gridgov.simulate import (
    DEFAULT_START,
    PERCENTILES,
    REDRAW_ROUNDS,
    SimulationResult,
    draw_arrivals,
    format_summary,
    simulate,
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


RUNS = ["ordinary", "stressed"]


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
    assert runs[0].summary() == runs[1].summary()


def test_every_arrival_is_accounted_for(result: SimulationResult) -> None:
    inc = result.incidents
    summary = result.summary()
    assert len(inc) > 0
    assert set(inc["status"]) <= {"assigned", "queued_then_assigned", "unassigned", "refused"}
    counted = sum(summary[s] for s in ("assigned", "queued_then_assigned", "unassigned", "refused"))
    assert counted == summary["arrivals"] == len(inc)
    assert summary["unassigned_at_end"] == summary["unassigned"]
    # A point refused for lying too far from the roads was drawn again and again first, and the
    # reason is kept (test_far_points_are_redrawn_then_refused makes some with a 1 km limit).
    refused = inc[inc["status"] == "refused"]
    assert len(refused) < 0.1 * len(inc)
    assert refused["refused"].str.contains("from the nearest road").all()
    assert (refused["redrawn"] == REDRAW_ROUNDS).all()
    assert (inc.loc[inc["status"] != "refused", "redrawn"] < REDRAW_ROUNDS).all()
    assert summary["params"]["points_redrawn"] == (inc["redrawn"] > 0).sum()
    final = result.final_assignments()
    kinds_by_incident = final.groupby("incident_id")["kind"].apply(set).to_dict()
    for rec in inc.itertuples():
        required = set(rec.kinds.split("+"))
        got = kinds_by_incident.get(rec.incident_id, set())
        if rec.status == "assigned":
            assert got == required and not rec.queued and rec.unfilled == ""
            assert rec.assigned_s == rec.reported_s
        elif rec.status == "queued_then_assigned":
            assert got == required and rec.queued and rec.unfilled == ""
            assert rec.assigned_s >= rec.reported_s
        elif rec.status == "refused":
            assert got == set() and np.isnan(rec.assigned_s)
        else:
            assert rec.status == "unassigned"
            assert got | set(rec.unfilled.split("+")) == required
            assert got.isdisjoint(rec.unfilled.split("+"))
    # One final unit per required kind: never two units for one slot.
    assert not final.duplicated(["incident_id", "kind"]).any()


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
    kept = a[~a["preempted"]]
    np.testing.assert_allclose(
        kept["end_s"], kept["assigned_s"] + kept["travel_s"] + kept["service_s"]
    )
    inc = result.incidents
    done = inc[inc["status"].isin(("assigned", "queued_then_assigned"))]
    assert done["response_s"].notna().all()
    assert (done["response_s"] >= done["lead_response_s"]).all()
    np.testing.assert_allclose(
        done["response_s"],
        result.final_assignments().groupby("incident_id")["response_s"].max()[done["incident_id"]],
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
    done = inc[inc["status"].isin(("assigned", "queued_then_assigned"))]
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
    waited = stressed.incidents.query("status == 'queued_then_assigned'")
    assert (waited["wait_s"] > 0).any()
    # Off-duty units are never sent.
    off = set(thinned.loc[~thinned["on_duty"].astype(bool), "unit_id"])
    assert off and off.isdisjoint(stressed.assignments["unit_id"])
    assert (
        summary["kinds"]["police"]["units"]
        == ((thinned["kind"] == "police") & thinned["on_duty"].astype(bool)).sum()
    )

    # Every preemption: a priority-1 incident takes a unit from a low-priority one, which is
    # re-queued and counted.
    a = stressed.assignments
    takes = a[a["preempts"].notna()]
    assert summary["preemptions"] == len(takes) == a["preempted"].sum()
    assert summary["preemptions"] > 0
    low = get_settings().preempt_min_priority
    for take in takes.itertuples():
        assert take.rule == "preemption"
        assert inc.loc[take.incident_id, "priority"] == 1
        victim = inc.loc[take.preempts]
        assert victim["priority"] >= low
        assert victim["queued"] and victim["preempted"] >= 1
        lost = a[
            (a["incident_id"] == take.preempts) & a["preempted"] & (a["unit_id"] == take.unit_id)
        ]
        assert len(lost) >= 1
        assert (lost["end_s"] == take.assigned_s).any()


def test_the_summary_prints_as_a_table(ordinary: SimulationResult) -> None:
    text = format_summary(ordinary.summary())
    assert "p50 min" in text and "p99 min" in text
    assert "police" in text and "grid_worker" in text
    assert "resolved at: community" in text
    assert "unassigned at the end" in text
    data = ordinary.to_json()
    assert data["summary"]["arrivals"] == len(data["incidents"])
    assert len(data["assignments"]) == len(ordinary.assignments)


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
    refused = inc[inc["status"] == "refused"]
    assert 0 < len(refused) < 0.1 * len(inc)
    assert refused["refused"].str.contains("from the nearest road").all()
    assert (refused["redrawn"] == REDRAW_ROUNDS).all()
    assert result.summary()["params"]["points_redrawn"] > len(refused)
