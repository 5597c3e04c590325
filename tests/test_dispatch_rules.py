"""The shared dispatch rules (gridgov.dispatch.rules), each on cases whose answer is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from gridgov import dispatch
from gridgov.dispatch import rules

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
