"""The shared dispatch rules (gridgov.dispatch.rules), each on cases whose answer is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import test_store_dispatch as tsd
from sqlalchemy import Engine
from test_store import make_tiny_areas

from gridgov import dispatch
from gridgov.coverage import coverage_times
from gridgov.dispatch import rules
from gridgov.network import build_network
from gridgov.store import context_from_store, decide_stored, load_district

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
AGE = timedelta(minutes=15)


# --------------------------------------------------------------------------------------------
# staleness
# --------------------------------------------------------------------------------------------


def test_a_fix_older_than_the_maximum_age_is_stale_and_a_static_post_never() -> None:
    times = [
        NOW - timedelta(minutes=16),  # stale
        NOW - AGE,  # exactly the maximum age: still usable
        NOW - timedelta(minutes=1),
        None,  # a static post
        NOW + timedelta(minutes=5),  # a clock ahead: fresh
    ]
    assert rules.position_is_stale(times, NOW, AGE).tolist() == [True, False, False, False, False]


def test_staleness_reads_naive_times_as_utc_and_converts_other_zones() -> None:
    beijing = timezone(timedelta(hours=8))
    times = [
        datetime(2026, 3, 1, 8, 30),  # naive: UTC, 30 min old
        datetime(2026, 3, 1, 16, 50, tzinfo=beijing),  # 08:50 UTC, 10 min old
        pd.Timestamp("2026-03-01T08:00Z"),
        np.datetime64("2026-03-01T08:59"),
        float("nan"),  # a missing value from a frame
    ]
    assert rules.position_is_stale(times, NOW, AGE).tolist() == [True, False, True, False, False]
    # A naive ``now`` is UTC too.
    naive_now = NOW.replace(tzinfo=None)
    assert rules.position_is_stale(times, naive_now, AGE).tolist() == [
        True,
        False,
        True,
        False,
        False,
    ]


def test_staleness_accepts_a_column_and_an_empty_sequence() -> None:
    col = pd.Series([NOW - timedelta(hours=1), None, NOW], dtype=object)
    assert rules.position_is_stale(col, NOW, AGE).tolist() == [True, False, False]
    assert rules.position_is_stale(pd.to_datetime(col, utc=True), NOW, AGE).tolist() == [
        True,
        False,
        False,
    ]
    out = rules.position_is_stale([], NOW, AGE)
    assert out.dtype == bool and out.shape == (0,)


def test_the_default_maximum_age_is_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from gridgov.settings import get_settings

    times = [NOW - timedelta(minutes=20)]
    monkeypatch.setenv("GRIDGOV_POSITION_MAX_AGE_MIN", "30")
    get_settings.cache_clear()
    try:
        assert rules.position_is_stale(times, NOW).tolist() == [False]
        monkeypatch.setenv("GRIDGOV_POSITION_MAX_AGE_MIN", "10")
        get_settings.cache_clear()
        assert rules.position_is_stale(times, NOW).tolist() == [True]
    finally:
        get_settings.cache_clear()


# --------------------------------------------------------------------------------------------
# effective positions
# --------------------------------------------------------------------------------------------


def test_effective_positions_keep_fresh_fall_back_to_the_office_or_leave_out() -> None:
    nan = np.nan
    stale = NOW - timedelta(hours=2)
    lon = [116.1, 116.2, nan, 116.4, nan, 116.6]
    lat = [39.1, 39.2, nan, 39.4, nan, 39.6]
    times = [NOW, stale, None, stale, None, None]
    office_lon = [116.9, 116.9, 116.8, nan, nan, nan]
    office_lat = [39.9, 39.9, 39.8, nan, nan, nan]
    x, y, note = rules.effective_positions(lon, lat, times, office_lon, office_lat, NOW, AGE)
    np.testing.assert_array_equal(x, [116.1, 116.9, 116.8, nan, nan, 116.6])
    np.testing.assert_array_equal(y, [39.1, 39.9, 39.8, nan, nan, 39.6])
    assert note.tolist() == [
        None,
        "stale position (2026-03-01T07:00Z): office position used",
        "no position: office position used",
        "stale position (2026-03-01T07:00Z): left out",
        "no position: left out",
        None,
    ]


def test_effective_positions_write_the_stale_time_in_utc() -> None:
    beijing = timezone(timedelta(hours=8))
    when = datetime(2026, 3, 1, 15, 0, tzinfo=beijing)  # 07:00 UTC
    _, _, note = rules.effective_positions([1.0], [2.0], [when], [3.0], [4.0], NOW, AGE)
    assert note.tolist() == ["stale position (2026-03-01T07:00Z): office position used"]


def test_effective_positions_need_one_entry_per_unit() -> None:
    with pytest.raises(ValueError, match="one entry per unit"):
        rules.effective_positions([1.0, 2.0], [1.0, 2.0], [None], [0.0, 0.0], [0.0, 0.0], NOW)


# --------------------------------------------------------------------------------------------
# rank and candidate order
# --------------------------------------------------------------------------------------------


def test_unit_rank_is_the_str_order_of_the_ids() -> None:
    ids = ["U10", "U2", "U1", "A9"]
    assert rules.unit_rank(ids).tolist() == [2, 3, 1, 0]
    assert rules.unit_rank(np.array(ids, dtype=object)).tolist() == [2, 3, 1, 0]
    assert rules.unit_rank([]).tolist() == []


def test_ranks_of_a_superset_order_a_subset_as_its_own_ranks() -> None:
    ids = np.array(["U5", "U3", "U9", "U1", "U7"], dtype=object)
    take = np.array([4, 0, 2])
    whole = rules.unit_rank(ids)[take]
    own = rules.unit_rank(ids[take])
    assert np.argsort(whole).tolist() == np.argsort(own).tolist()


def test_candidate_order_is_time_then_rank_with_infinite_times_last() -> None:
    times = np.array([30.0, 10.0, np.inf, 10.0, 20.0])
    ranks = np.array([0, 4, 1, 2, 3])
    assert rules.candidate_order(times, ranks).tolist() == [3, 1, 4, 0, 2]
    # Equal times order by the tie-break alone.
    assert rules.candidate_order(np.zeros(3), [2, 0, 1]).tolist() == [1, 2, 0]
    assert rules.candidate_order(np.zeros(0), np.zeros(0, dtype=np.int64)).tolist() == []


def test_best_candidate_is_the_first_finite_one() -> None:
    assert rules.best_candidate([5.0, 5.0, 7.0], [1, 0, 2]) == 1
    assert rules.best_candidate([np.inf, 9.0], [0, 1]) == 1
    assert rules.best_candidate([np.inf, np.inf], [0, 1]) is None
    assert rules.best_candidate([], []) is None


def test_the_rules_are_part_of_the_package_interface() -> None:
    for name in rules.__all__:
        assert getattr(dispatch, name) is getattr(rules, name)


# --------------------------------------------------------------------------------------------
# one owner: a tie-break changed in the rules module is seen by every path
# --------------------------------------------------------------------------------------------
#
# The tiny district of test_store_dispatch.py with one more enforcement unit, E9, standing on
# E1's lattice node: E1 and E9 tie exactly, from every point, and are the nearest to the
# incident. The rule says E1 (the smaller id); each change below makes E9 win instead, and every
# path must follow. A path that keeps its own order still picks E1 and fails.


def _larger_id_first(times: npt.ArrayLike, ranks: npt.ArrayLike) -> npt.NDArray[np.int64]:
    order = np.lexsort((-np.asarray(ranks), np.asarray(times, dtype=float)))
    return np.asarray(order, dtype=np.int64)


def _reversed_rank(ids: Any) -> npt.NDArray[np.int64]:
    rank = _ORIGINAL_RANK(ids)
    return np.asarray(len(rank) - 1 - rank, dtype=np.int64)


_ORIGINAL_RANK = rules.unit_rank

TIE_CHANGES = {
    "unchanged": (None, None, "E1"),
    "order": ("candidate_order", _larger_id_first, "E9"),
    "rank": ("unit_rank", _reversed_rank, "E9"),
}


def _tie_units() -> gpd.GeoDataFrame:
    units = tsd.make_units()
    twin = units[units["unit_id"] == "E1"].copy()
    twin["unit_id"], twin["name"] = "E9", "单元E9"
    return pd.concat([units, twin], ignore_index=True)


def _tie_incident() -> dispatch.Incident:
    lon, lat = tsd.xy(1, 2)  # E1's and E9's node: both are 0 s plus the same access leg away
    return dispatch.Incident("INC-TIE", "T-ENF", lon + 1e-4, lat + 1e-4, tsd.NOW)


def _apply(monkeypatch: pytest.MonkeyPatch, change: str) -> str:
    name, replacement, winner = TIE_CHANGES[change]
    if name is not None:
        monkeypatch.setattr(rules, name, replacement)
    return winner


@pytest.mark.parametrize("change", list(TIE_CHANGES))
def test_a_tie_break_changed_in_the_rules_is_seen_by_every_core_path(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = _apply(monkeypatch, change)
    gdf_nodes, gdf_links = tsd.make_roads()
    travel = build_network(gdf_nodes, gdf_links)
    areas = make_tiny_areas()
    ctx = dispatch.build_context(areas, tsd.CATALOG, travel)
    units = dispatch.prepare_units(_tie_units(), now=tsd.NOW)
    incident = _tie_incident()

    single = dispatch.dispatch_incident(incident, units, ctx)
    assert [a.unit_id for a in single.assignments] == [winner]
    street = single.explanation["kinds"][0]["tiers"][0]
    assert street["tier"] == "street"
    listed = [c["unit_id"] for c in street["candidates"]]
    assert listed[:2] == [winner, "E9" if winner == "E1" else "E1"]

    batch = dispatch.dispatch_batch([incident], units, ctx)
    assert [a.unit_id for a in batch.decisions[0].assignments] == [winner]
    greedy = dispatch.dispatch_greedy([incident], units, ctx)
    assert [a.unit_id for a in greedy.decisions[0].assignments] == [winner]

    table = coverage_times(areas, units, travel, "enforcement", level="grid")
    # E1/E9 are the nearest enforcement units of some grids (E2 and E3 of the others).
    nearest = set(table["unit_id"].dropna())
    assert winner in nearest
    assert not nearest & ({"E1", "E9"} - {winner})


@pytest.mark.parametrize(
    "change",
    [
        "unchanged",
        "order",
        "rank",
    ],
)
def test_a_tie_break_changed_in_the_rules_is_seen_by_the_store(
    change: str, store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = _apply(monkeypatch, change)
    gdf_nodes, gdf_links = tsd.make_roads()
    load_district(
        store_engine,
        make_tiny_areas(),
        None,
        _tie_units(),
        tsd.CATALOG.matters,
        gdf_nodes=gdf_nodes,
        gdf_links=gdf_links,
        name="ties",
    )
    ctx = context_from_store(store_engine, tsd.CATALOG)
    decision = decide_stored(store_engine, ctx, _tie_incident(), now=tsd.NOW)
    assert [a.unit_id for a in decision.assignments] == [winner]
