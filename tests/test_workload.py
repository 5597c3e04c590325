"""Workload, utilisation and balance from the event log (gridgov.analysis.workload)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from gridgov.analysis.workload import gini, workload
from gridgov.periods import Period

SHANGHAI_MIDNIGHT = datetime.fromisoformat("2026-10-01T00:00:00+08:00")


def _at(hours: float) -> datetime:
    return SHANGHAI_MIDNIGHT + timedelta(hours=hours)


def _units() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "unit_id": ["A1", "A2", "B1"],
            "kind": ["police", "police", "fire"],
            "office_id": ["OA", "OA", "OB"],
            "street_code": ["S1", "S1", "S2"],
        }
    )


def _events() -> pd.DataFrame:
    rows = [
        # i1: A1 dispatched at 1 h, arrives 10 min later, resolves at 3 h: 2 h busy.
        ("i1", 1, -1.0, "report", {}),
        ("i1", 2, 1.0, "dispatch", {"units": ["A1"]}),
        ("i1", 3, 1.0 + 10 / 60, "arrive", {}),
        ("i1", 4, 3.0, "resolve", {}),
        # i2: A1 and B1 at 5 h; returned at 5.5 h, sent again (B1 alone) until 7 h.
        ("i2", 1, 4.9, "report", {}),
        ("i2", 2, 5.0, "dispatch", {"units": ["A1", "B1"]}),
        ("i2", 3, 5.5, "return", {}),
        ("i2", 4, 5.5, "dispatch", {"units": ["B1"]}),
        ("i2", 5, 5.75, "arrive", {}),
        ("i2", 6, 7.0, "resolve", {}),
        # i3: dispatched in September, resolved 1 h into October: only that hour counts.
        ("i3", 1, -3.0, "dispatch", {"units": ["B1"]}),
        ("i3", 2, 1.0, "resolve", {}),
    ]
    return pd.DataFrame(
        [
            {"incident_id": i, "seq": s, "at": _at(h), "action": a, "data": d}
            for i, s, h, a, d in rows
        ]
    )


def test_busy_time_utilisation_and_response_by_hand() -> None:
    result = workload(_events(), _units(), "2026-10")
    hours = 31 * 24
    assert result.summary["hours"] == hours
    units = result.units.set_index("unit_id")
    assert units.loc["A1", "calls"] == 2
    assert units.loc["A1", "busy_h"] == pytest.approx(2.0 + 0.5)
    assert units.loc["A1", "utilisation"] == pytest.approx(2.5 / hours)
    assert units.loc["A1", "response_p50_min"] == pytest.approx(10.0)
    assert units.loc["B1", "calls"] == 2  # the September call is not counted as a call
    assert units.loc["B1", "busy_h"] == pytest.approx(1.0 + 0.5 + 1.5)
    assert units.loc["B1", "response_p50_min"] == pytest.approx(15.0)
    assert units.loc["A2", "calls"] == 0 and units.loc["A2", "busy_h"] == 0.0
    offices = result.offices.set_index("office_id")
    assert offices.loc["OA", "utilisation"] == pytest.approx(2.5 / (2 * hours))
    streets = result.streets.set_index("street_code")
    assert streets.loc["S1", "calls_per_unit"] == pytest.approx(1.0)
    assert streets.loc["S1", "gini_utilisation"] == pytest.approx(0.5)
    assert result.summary["incidents"] == 2
    assert result.summary["calls"] == 3


def test_the_period_end_cuts_open_calls() -> None:
    events = _events()
    events = events[~((events["incident_id"] == "i1") & (events["action"] == "resolve"))]
    result = workload(events, _units(), Period.parse("2026-10"))
    busy = result.units.set_index("unit_id").loc["A1", "busy_h"]
    assert busy == pytest.approx(31 * 24 - 1.0 + 0.5)


def test_gini() -> None:
    assert gini([1, 1, 1, 1]) == 0.0
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)
    assert gini([0, 0]) == 0.0


def test_a_period_without_calls_is_all_zeros() -> None:
    result = workload(_events().iloc[0:0], _units(), "2026-10")
    assert result.summary["calls"] == 0 and result.summary["gini_units"] == 0.0
    assert (result.units["busy_h"] == 0).all() and (result.offices["calls"] == 0).all()
