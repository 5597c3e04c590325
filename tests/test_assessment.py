"""KPIs, scores and rankings on hand-built event logs whose every number is known by construction.

The main log (:func:`_log`) has seven incidents in October 2026 (Asia/Shanghai), three offices in
two streets, and each incident exercises one rule of the definitions; the expected numbers are
written out by hand in the tests, with the reasoning beside them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from gridgov.assessment import (
    DEFAULT_KPI_WEIGHTS,
    assess,
    assess_departments,
    assess_offices,
    department_scores_from_frame,
    rank_by_score,
    read_department_scores,
    street_score,
    validate_kpi_weights,
    validate_street_weight,
)
from gridgov.catalog import Catalog, Deadlines, load_catalog
from gridgov.errors import AssessmentWeightError, DataFileError, InputError
from gridgov.kpis import GROUPINGS, KPI_COLUMNS, compute_kpis
from gridgov.periods import Period
from gridgov.settings import STREET_WEIGHT_FLOOR_DEPARTMENT, STREET_WEIGHT_FLOOR_OFFICE
from gridgov.workflow import (
    EVENT_COLUMNS,
    REASON_REQUIRED,
    TRANSITIONS,
    Action,
    State,
    events_from_frame,
    replay,
)

SH = ZoneInfo("Asia/Shanghai")
OCT = Period.parse("2026-10")
S1, S2 = "510106024000", "510106025000"
ENF = "综合行政执法局"
POL = "公安分局"


def _catalog() -> Catalog:
    base = load_catalog()
    template = base.matters[0]
    return Catalog(
        version="test",
        source="tests",
        event_majors=base.event_majors,
        domains=base.domains,
        matters=(
            # A: respond within 10 min, on scene within 30, resolved within 24 h.
            replace(template, code="A", deadlines=Deadlines(10, 30, 24)),
            # B: respond within 5 min, on scene within 20, resolved within 2 h.
            replace(template, code="B", deadlines=Deadlines(5, 20, 2)),
        ),
    )


CATALOG = _catalog()
OFFICES = pd.DataFrame(
    {
        "office_id": ["O1", "O2", "O3"],
        "name": ["西安路执法中队", "西华执法中队", "西安路派出所"],
        "kind": ["enforcement", "enforcement", "police"],
        "department": [ENF, ENF, POL],
        "street_code": [S1, S2, S1],
    }
)


def sh(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A Shanghai wall-clock time of 2026, as an aware UTC datetime (as stored)."""
    return datetime(2026, month, day, hour, minute, second, tzinfo=SH).astimezone(UTC)


def step(action: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {"action": action, "at": at, **extra}


def incident(iid: str, street: str, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of one incident's log: seq, states and the street filled in as the workflow does."""
    rows, state = [], None
    for seq, s in enumerate(steps, start=1):
        # An illegal step (one test needs it) keeps the state.
        before = None if state is None else State(state)
        to_state = str(TRANSITIONS.get((before, Action(s["action"])), state))
        row = dict.fromkeys(EVENT_COLUMNS)
        row.update(
            incident_id=iid, seq=seq, actor="tester", from_state=state,
            role="system" if s["action"] == "evaluate" else "dispatcher",
            to_state=to_state, street_code=street, data={"note": "hand-built"},
        )  # fmt: skip
        row.update(s)
        rows.append(row)
        state = to_state
    return rows


def frame(*logs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [r for log in logs for r in log]
    df = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    df["at"] = pd.to_datetime(df["at"], utc=True)
    return df


def _log() -> tuple[pd.DataFrame, pd.DataFrame]:
    d = "dispatch"
    logs = [
        # I1 (A, S1): acknowledged exactly at the 10-minute deadline (on time), closed,
        # evaluated satisfied. Call O1 community: response 10, arrival 25.
        incident("I1", S1, [
            step("report", sh(10, 2, 8)), step("register", sh(10, 2, 8)),
            step(d, sh(10, 2, 8), office_id="O1", level="community"),
            step("acknowledge", sh(10, 2, 8, 10)), step("arrive", sh(10, 2, 8, 25)),
            step("resolve", sh(10, 2, 9)), step("verify", sh(10, 2, 10)),
            step("close", sh(10, 2, 10)),
            step("evaluate", sh(10, 3, 9), satisfaction="satisfied"),
        ]),
        # I2 (A, S1): acknowledged one second late, resolved, verification fails (reopen =
        # rework), re-dispatched to O3 (neighbour) which responds in 2 min; closed after the
        # 24 h deadline of the FIRST dispatch (10-06 08:00); evaluated dissatisfied.
        incident("I2", S1, [
            step("report", sh(10, 5, 7, 50)), step("register", sh(10, 5, 7, 50)),
            step(d, sh(10, 5, 8), office_id="O1", level="street"),
            step("acknowledge", sh(10, 5, 8, 10, 1)), step("arrive", sh(10, 5, 8, 40)),
            step("resolve", sh(10, 5, 12)),
            step("reopen", sh(10, 5, 13), reason="still broken"),
            step(d, sh(10, 5, 14), office_id="O3", level="neighbour"),
            step("acknowledge", sh(10, 5, 14, 2)), step("arrive", sh(10, 5, 14, 20)),
            step("resolve", sh(10, 5, 16)), step("verify", sh(10, 6, 9)),
            step("close", sh(10, 6, 9)),
            step("evaluate", sh(10, 7, 9), satisfaction="dissatisfied"),
        ]),
        # I3 (B, S2): O2 returns it (its cycle ends, never acknowledged); O1 takes it
        # (neighbour), is supervised at 08:36 (a self-loop does not end the cycle) and
        # acknowledges at 08:40: 10 min > 5, late. Resolved, never closed; its 2 h deadline
        # (10-10 10:00) passed before the end of October, so it is due and not on time.
        incident("I3", S2, [
            step("report", sh(10, 10, 8)), step("register", sh(10, 10, 8)),
            step(d, sh(10, 10, 8), office_id="O2", level="district"),
            step("return", sh(10, 10, 8, 3), office_id="O2", reason="not ours"),
            step(d, sh(10, 10, 8, 30), office_id="O1", level="neighbour"),
            step("supervise", sh(10, 10, 8, 36), level="street", stage="acknowledge"),
            step("acknowledge", sh(10, 10, 8, 40)), step("arrive", sh(10, 10, 8, 50)),
            step("resolve", sh(10, 10, 9, 30)),
        ]),
        # I4 (A, S1): dispatched late on 31 October, acknowledged in 5 min; everything after
        # midnight (Shanghai) lies after the period and does not exist for it. Its deadline
        # (11-01 20:00) is after the end: not due.
        incident("I4", S1, [
            step("report", sh(10, 31, 20)), step("register", sh(10, 31, 20)),
            step(d, sh(10, 31, 20), office_id="O1", level="street"),
            step("acknowledge", sh(10, 31, 20, 5)), step("arrive", sh(11, 1, 0, 30)),
            step("resolve", sh(11, 1, 2)), step("verify", sh(11, 1, 3)),
            step("close", sh(11, 1, 3)),
        ]),
        # I5 (A, S1): first dispatched in September (not a case of October), requeued, and
        # dispatched again exactly at the start of October (a call of October: O3, 3 min,
        # arrival 15 min).
        incident("I5", S1, [
            step("report", sh(9, 30, 20)), step("register", sh(9, 30, 20)),
            step(d, sh(9, 30, 20), office_id="O1", level="street"),
            step("requeue", sh(9, 30, 20, 10), reason="preempted"),
            step(d, sh(10, 1, 0), office_id="O3", level="street"),
            step("acknowledge", sh(10, 1, 0, 3)), step("arrive", sh(10, 1, 0, 15)),
            step("resolve", sh(10, 1, 2)), step("verify", sh(10, 1, 3)),
            step("close", sh(10, 1, 3)),
        ]),
        # I6 (B, S1): dispatched exactly at the end of October: not a call, not a case.
        incident("I6", S1, [
            step("report", sh(10, 31, 23, 50)), step("register", sh(10, 31, 23, 50)),
            step(d, sh(11, 1, 0), office_id="O1", level="street"),
            step("acknowledge", sh(11, 1, 0, 1)),
        ]),
        # I7 (A, S2): dispatched to O2 (community), cancelled before anyone responds. Its 24 h
        # deadline passed in October: due, not on time, not closed.
        incident("I7", S2, [
            step("report", sh(10, 15, 8)), step("register", sh(10, 15, 8)),
            step(d, sh(10, 15, 8), office_id="O2", level="community"),
            step("cancel", sh(10, 15, 8, 30), reason="withdrawn"),
        ]),
    ]  # fmt: skip
    incidents = pd.DataFrame(
        {
            "incident_id": ["I1", "I2", "I3", "I4", "I5", "I6", "I7"],
            "matter_code": ["A", "A", "B", "A", "A", "B", "A"],
            "street_code": [S1, S1, S2, S1, S1, S1, S2],
            "priority": [2] * 7,
            "reported_at": [sh(10, 1)] * 7,
        }
    )
    return frame(*logs), incidents


EVENTS, INCIDENTS = _log()


def test_the_hand_built_logs_are_legal_workflow_logs() -> None:
    events = events_from_frame(EVENTS)
    final = {
        iid: str(replay([e for e in events if e.incident_id == iid]))
        for iid in INCIDENTS["incident_id"]
    }
    assert final == {
        "I1": "evaluated", "I2": "evaluated", "I3": "resolved", "I4": "closed",
        "I5": "closed", "I6": "acknowledged", "I7": "cancelled",
    }  # fmt: skip


def kpis(by: str = "office", **kw: Any) -> pd.DataFrame:
    return compute_kpis(EVENTS, INCIDENTS, OFFICES, CATALOG, OCT, by=by, **kw)


def row(df: pd.DataFrame, key: str, value: str) -> dict[str, Any]:
    hits = df[df[key] == value]
    assert len(hits) == 1, f"{key}={value}: {len(hits)} rows"
    return hits.iloc[0].to_dict()


def check(actual: dict[str, Any], expected: dict[str, float]) -> None:
    for name, value in expected.items():
        got = actual[name]
        if isinstance(value, float) and math.isnan(value):
            assert pd.isna(got), f"{name}: {got} (expected NaN)"
        else:
            assert got == pytest.approx(value, abs=1e-9), f"{name}: {got} (expected {value})"


# ---------------------------------------------------------------------------------------------
# periods


def test_period_parses_a_month_a_quarter_and_a_year_in_shanghai() -> None:
    assert OCT.start == datetime(2026, 10, 1, tzinfo=SH)
    assert OCT.end == datetime(2026, 11, 1, tzinfo=SH)
    assert OCT.start_utc == pd.Timestamp("2026-09-30T16:00:00Z")
    q4 = Period.parse("2026-Q4")
    assert (q4.label, q4.start, q4.end) == (
        "2026-Q4",
        datetime(2026, 10, 1, tzinfo=SH),
        datetime(2027, 1, 1, tzinfo=SH),
    )
    year = Period.parse("2026")
    assert (year.start, year.end) == (
        datetime(2026, 1, 1, tzinfo=SH),
        datetime(2027, 1, 1, tzinfo=SH),
    )
    dec = Period.parse("2026-12")
    assert dec.end == datetime(2027, 1, 1, tzinfo=SH)
    assert str(Period.parse("2026-3")) == "2026-03"
    assert OCT.contains(sh(10, 1)) and not OCT.contains(sh(11, 1))
    assert Period.parse("2026-10", tz="UTC").start == datetime(2026, 10, 1, tzinfo=ZoneInfo("UTC"))


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-Q5", "26-10", "October", ""])
def test_period_rejects_what_it_cannot_read(text: str) -> None:
    with pytest.raises(InputError, match="period"):
        Period.parse(text)


# ---------------------------------------------------------------------------------------------
# KPIs by office: every number by hand


def test_columns_and_rows_by_office() -> None:
    df = kpis()
    assert list(df.columns) == [*GROUPINGS["office"], *KPI_COLUMNS]
    assert df["office_id"].tolist() == ["O1", "O2", "O3"]
    assert row(df, "office_id", "O3")["name"] == "西安路派出所"
    assert row(df, "office_id", "O1")["department"] == ENF


def test_office_o1() -> None:
    # Calls: I1 (on time at exactly 10 min), I2 first call (10 min 1 s: late), I3 second call
    # (10 min against a 5-minute deadline: late), I4 (5 min, on time; its arrival is after the
    # period, so it has none).
    # Response times 10, 10+1/60, 10, 5 -> mean 35.01667/4; p90 of sorted [5, 10, 10, 10.01667]
    # at position 2.7: 10 + 0.7 * 1/60. Arrivals 25, 40, 20 -> mean 85/3; p90 at 1.8: 25 + 0.8*15.
    # Cases: I1 (closed on time, resolved, satisfied), I3 (latest dispatch O1: due, late,
    # resolved), I4 (not due, nothing else).
    check(
        row(kpis(), "office_id", "O1"),
        {
            "calls": 4, "responded_on_time": 2, "response_rate": 0.5,
            "response_mean_min": (30 + 1 / 60 + 5) / 4, "response_p90_min": 10 + 0.7 / 60,
            "arrival_mean_min": 85 / 3, "arrival_p90_min": 37.0,
            "share_community": 0.25, "share_street": 0.5, "share_neighbour": 0.25,
            "share_district": 0.0,
            "cases": 3, "closed": 1, "resolution_rate": 1 / 3, "due": 2, "on_time": 1,
            "on_time_closure_rate": 0.5, "resolved": 2, "reworked": 0, "rework_rate": 0.0,
            "evaluated": 1, "satisfied": 1, "satisfaction_rate": 1.0,
        },
    )  # fmt: skip


def test_office_o2_returned_and_cancelled_zero_denominators_are_nan() -> None:
    # Calls: I3 first call (returned after 3 min: its cycle ended without an acknowledge) and
    # I7 (cancelled). No response or arrival time at all -> NaN, not 0.
    # Case: I7 (due, not closed). Nothing resolved or evaluated -> NaN rates.
    check(
        row(kpis(), "office_id", "O2"),
        {
            "calls": 2, "responded_on_time": 0, "response_rate": 0.0,
            "response_mean_min": math.nan, "response_p90_min": math.nan,
            "arrival_mean_min": math.nan, "arrival_p90_min": math.nan,
            "share_community": 0.5, "share_street": 0.0, "share_neighbour": 0.0,
            "share_district": 0.5,
            "cases": 1, "closed": 0, "resolution_rate": 0.0, "due": 1, "on_time": 0,
            "on_time_closure_rate": 0.0, "resolved": 0, "reworked": 0,
            "rework_rate": math.nan, "evaluated": 0, "satisfied": 0,
            "satisfaction_rate": math.nan,
        },
    )  # fmt: skip


def test_office_o3_rework_and_requeue() -> None:
    # Calls: I2 second call (2 min, arrival 20) and I5's dispatch at exactly the period start
    # (3 min, arrival 15). Response mean 2.5, p90 2 + 0.9 = 2.9; arrival mean 17.5, p90 19.5.
    # Case: I2 (its latest dispatch is O3's): closed after the first dispatch's deadline,
    # reworked, evaluated dissatisfied. I5 is no case (first dispatched in September).
    check(
        row(kpis(), "office_id", "O3"),
        {
            "calls": 2, "responded_on_time": 2, "response_rate": 1.0,
            "response_mean_min": 2.5, "response_p90_min": 2.9,
            "arrival_mean_min": 17.5, "arrival_p90_min": 19.5,
            "share_community": 0.0, "share_street": 0.5, "share_neighbour": 0.5,
            "share_district": 0.0,
            "cases": 1, "closed": 1, "resolution_rate": 1.0, "due": 1, "on_time": 0,
            "on_time_closure_rate": 0.0, "resolved": 1, "reworked": 1, "rework_rate": 1.0,
            "evaluated": 1, "satisfied": 0, "satisfaction_rate": 0.0,
        },
    )  # fmt: skip


def test_p90_is_numpy_linear_percentile() -> None:
    o1 = row(kpis(), "office_id", "O1")
    assert o1["response_p90_min"] == pytest.approx(np.percentile([10, 10 + 1 / 60, 10, 5], 90))
    assert o1["arrival_p90_min"] == pytest.approx(np.percentile([25, 40, 20], 90))


# ---------------------------------------------------------------------------------------------
# other groupings


def test_by_department() -> None:
    df = kpis("department")
    assert list(df.columns) == ["department", *KPI_COLUMNS]
    assert df["department"].tolist() == sorted([ENF, POL])
    # O1 + O2: 6 calls, 2 on time; levels community 2, street 2, neighbour 1, district 1.
    # Cases I1, I3, I4, I7: closed 1; due I1, I3, I7 with I1 on time; resolved I1, I3.
    check(
        row(df, "department", ENF),
        {
            "calls": 6, "responded_on_time": 2, "response_rate": 1 / 3,
            "response_mean_min": (30 + 1 / 60 + 5) / 4, "arrival_mean_min": 85 / 3,
            "share_community": 2 / 6, "share_street": 2 / 6, "share_neighbour": 1 / 6,
            "share_district": 1 / 6,
            "cases": 4, "closed": 1, "resolution_rate": 0.25, "due": 3, "on_time": 1,
            "on_time_closure_rate": 1 / 3, "resolved": 2, "reworked": 0, "rework_rate": 0.0,
            "evaluated": 1, "satisfied": 1, "satisfaction_rate": 1.0,
        },
    )  # fmt: skip
    o3 = row(kpis(), "office_id", "O3")
    police = row(df, "department", POL)
    for column in KPI_COLUMNS:
        assert police[column] == pytest.approx(o3[column], nan_ok=True)


def test_by_street() -> None:
    df = kpis("street")
    assert list(df.columns) == ["street_code", *KPI_COLUMNS]
    assert df["street_code"].tolist() == [S1, S2]
    # S1 calls: I1, I2 (twice), I4, I5 -> 5, late only I2's first. Cases I1, I2, I4.
    check(
        row(df, "street_code", S1),
        {
            "calls": 5, "responded_on_time": 4, "response_rate": 0.8,
            "share_community": 0.2, "share_street": 0.6, "share_neighbour": 0.2,
            "cases": 3, "closed": 2, "resolution_rate": 2 / 3, "due": 2, "on_time": 1,
            "on_time_closure_rate": 0.5, "resolved": 2, "reworked": 1, "rework_rate": 0.5,
            "evaluated": 2, "satisfied": 1, "satisfaction_rate": 0.5,
        },
    )  # fmt: skip
    # S2 calls: I3 (twice: returned, then late) and I7. Cases I3, I7.
    check(
        row(df, "street_code", S2),
        {
            "calls": 3, "responded_on_time": 0, "response_rate": 0.0,
            "cases": 2, "closed": 0, "resolution_rate": 0.0, "due": 2, "on_time": 0,
            "resolved": 1, "reworked": 0, "rework_rate": 0.0,
            "evaluated": 0, "satisfaction_rate": math.nan,
        },
    )  # fmt: skip


def test_by_district() -> None:
    df = kpis("district")
    assert list(df.columns) == ["district", *KPI_COLUMNS]
    assert len(df) == 1
    check(
        df.iloc[0].to_dict(),
        {
            "calls": 8, "responded_on_time": 4, "response_rate": 0.5,
            "share_community": 2 / 8, "share_street": 3 / 8, "share_neighbour": 2 / 8,
            "share_district": 1 / 8,
            "cases": 5, "closed": 2, "resolution_rate": 0.4, "due": 4, "on_time": 1,
            "on_time_closure_rate": 0.25, "resolved": 3, "reworked": 1, "rework_rate": 1 / 3,
            "evaluated": 2, "satisfied": 1, "satisfaction_rate": 0.5,
        },
    )  # fmt: skip


def test_street_filter_keeps_that_streets_calls_and_cases() -> None:
    df = kpis("office", street_code=S2)
    # S2's calls: I3 to O2 and O1, I7 to O2. O3 worked only for S1.
    assert df["office_id"].tolist() == ["O1", "O2"]
    check(row(df, "office_id", "O1"), {"calls": 1, "responded_on_time": 0, "cases": 1})
    check(row(df, "office_id", "O2"), {"calls": 2, "cases": 1})
    district = kpis("district", street_code=S2).iloc[0].to_dict()
    street = row(kpis("street"), "street_code", S2)
    for column in KPI_COLUMNS:
        assert district[column] == pytest.approx(street[column], nan_ok=True)


def test_unknown_grouping_is_refused() -> None:
    with pytest.raises(InputError, match="grouping"):
        kpis("community")


# ---------------------------------------------------------------------------------------------
# cut-off and boundaries, one rule at a time


def _one(steps: list[dict[str, Any]], matter: str = "A") -> pd.DataFrame:
    events = frame(incident("X", S1, steps))
    incidents = pd.DataFrame({"incident_id": ["X"], "matter_code": [matter]})
    return compute_kpis(events, incidents, OFFICES, CATALOG, OCT, by="district")


def _dispatch(at: datetime) -> list[dict[str, Any]]:
    return [
        step("report", at),
        step("register", at),
        step("dispatch", at, office_id="O1", level="street"),
    ]


def test_acknowledge_exactly_at_the_deadline_is_on_time_one_microsecond_later_is_not() -> None:
    t = sh(10, 9, 12)
    on = _one([*_dispatch(t), step("acknowledge", t + timedelta(minutes=10))])
    late = _one([*_dispatch(t), step("acknowledge", t + timedelta(minutes=10, microseconds=1))])
    assert (on.at[0, "responded_on_time"], late.at[0, "responded_on_time"]) == (1, 0)
    assert on.at[0, "response_mean_min"] == 10.0


def test_an_acknowledge_after_a_return_belongs_to_no_call() -> None:
    # Not a legal log, but it pins the rule: the return ends the cycle, so nothing after it is
    # the call's response.
    t = sh(10, 9, 12)
    df = _one(
        [
            *_dispatch(t),
            step("return", t + timedelta(minutes=1), reason="x"),
            step("acknowledge", t + timedelta(minutes=2)),
        ]
    )
    assert df.at[0, "responded_on_time"] == 0
    assert pd.isna(df.at[0, "response_mean_min"])


def test_closed_exactly_at_the_deadline_is_on_time() -> None:
    t = sh(10, 9, 12)
    steps = [*_dispatch(t), step("acknowledge", t), step("arrive", t), step("resolve", t)]
    on = _one([*steps, step("verify", t), step("close", t + timedelta(hours=24))])
    late = _one([*steps, step("verify", t), step("close", t + timedelta(hours=24, seconds=1))])
    assert (on.at[0, "on_time"], late.at[0, "on_time"]) == (1, 0)
    assert on.at[0, "due"] == late.at[0, "due"] == 1


def test_due_only_once_the_deadline_is_reached_by_the_period_end() -> None:
    # Deadline 24 h after dispatch: exactly at the end -> due; one second later -> not due.
    end = OCT.end.astimezone(UTC)
    due = _one(_dispatch(end - timedelta(hours=24)))
    not_due = _one(_dispatch(end - timedelta(hours=24) + timedelta(seconds=1)))
    assert (due.at[0, "due"], not_due.at[0, "due"]) == (1, 0)
    assert due.at[0, "on_time_closure_rate"] == 0.0
    assert pd.isna(not_due.at[0, "on_time_closure_rate"])


def test_a_close_after_the_period_end_does_not_count() -> None:
    t = sh(10, 31, 23)
    steps = [*_dispatch(t), step("acknowledge", t), step("arrive", t), step("resolve", t)]
    df = _one([*steps, step("verify", t), step("close", sh(11, 1, 0))], matter="B")
    # Not closed as of the end; deadline (2 h after 23:00) is after the end: not due.
    check(df.iloc[0].to_dict(), {"cases": 1, "closed": 0, "resolved": 1, "due": 0})


def test_basically_satisfied_counts_as_satisfied() -> None:
    t = sh(10, 9, 12)
    steps = [*_dispatch(t), step("acknowledge", t), step("arrive", t), step("resolve", t)]
    df = _one(
        [
            *steps,
            step("verify", t),
            step("close", t),
            step("evaluate", t, satisfaction="basically_satisfied"),
        ]
    )
    check(df.iloc[0].to_dict(), {"evaluated": 1, "satisfied": 1, "satisfaction_rate": 1.0})


def test_an_empty_period_gives_nan_rates_never_zero_or_one() -> None:
    empty = EVENTS.iloc[0:0]
    district = compute_kpis(empty, INCIDENTS, OFFICES, CATALOG, OCT, by="district")
    assert len(district) == 1 and district.at[0, "district"] == "all"
    assert district.at[0, "calls"] == 0 and district.at[0, "cases"] == 0
    for column in ("response_rate", "resolution_rate", "on_time_closure_rate", "rework_rate",
                   "satisfaction_rate", "share_community", "response_mean_min"):  # fmt: skip
        assert pd.isna(district.at[0, column]), column
    offices = compute_kpis(empty, INCIDENTS, OFFICES, CATALOG, OCT, by="office")
    assert offices.empty and list(offices.columns) == [*GROUPINGS["office"], *KPI_COLUMNS]
    # November: only I6's dispatch at its first instant, and I4's events after midnight.
    nov = compute_kpis(EVENTS, INCIDENTS, OFFICES, CATALOG, Period.parse("2026-11"), by="district")
    check(nov.iloc[0].to_dict(), {"calls": 1, "responded_on_time": 1, "cases": 1, "closed": 0})


def test_the_whole_year_sees_septembers_case_too() -> None:
    year = compute_kpis(EVENTS, INCIDENTS, OFFICES, CATALOG, Period.parse("2026"), by="district")
    # Calls: October's 8 + I5's September call + I6's November call; cases 5 + I5 + I6.
    check(year.iloc[0].to_dict(), {"calls": 10, "cases": 7})


# ---------------------------------------------------------------------------------------------
# inputs


class _Action(StrEnum):
    DISPATCH = "dispatch"
    ACKNOWLEDGE = "acknowledge"


def test_enum_actions_and_any_timezone_give_the_same_numbers() -> None:
    events = EVENTS.copy()
    events["action"] = [_Action(a) if a in set(_Action) else a for a in events["action"]]
    events["at"] = events["at"].dt.tz_convert(SH)
    pd.testing.assert_frame_equal(compute_kpis(events, INCIDENTS, OFFICES, CATALOG, OCT), kpis())


def test_rows_in_any_order_give_the_same_numbers() -> None:
    shuffled = EVENTS.sample(frac=1.0, random_state=7)
    pd.testing.assert_frame_equal(compute_kpis(shuffled, INCIDENTS, OFFICES, CATALOG, OCT), kpis())


def test_inputs_are_not_mutated() -> None:
    events, incidents, offices = EVENTS.copy(), INCIDENTS.copy(), OFFICES.copy()
    assess(events, incidents, offices, CATALOG, OCT)
    pd.testing.assert_frame_equal(events, EVENTS)
    pd.testing.assert_frame_equal(incidents, INCIDENTS)
    pd.testing.assert_frame_equal(offices, OFFICES)


def test_naive_times_are_refused() -> None:
    events = EVENTS.copy()
    events["at"] = events["at"].dt.tz_localize(None)
    with pytest.raises(InputError, match="timezone-aware"):
        compute_kpis(events, INCIDENTS, OFFICES, CATALOG, OCT)


def test_missing_columns_and_unknown_matters_are_listed_together() -> None:
    with pytest.raises(InputError) as info:
        compute_kpis(EVENTS.drop(columns=["level"]), INCIDENTS.drop(columns=["matter_code"]),
                     OFFICES, CATALOG, OCT)  # fmt: skip
    assert "events lack column(s) level" in str(info.value)
    assert "incidents lack column(s) matter_code" in str(info.value)
    incidents = INCIDENTS.assign(matter_code=["A", "ZZ-99", "B", "A", "A", "B", "A"])
    with pytest.raises(InputError, match="ZZ-99"):
        compute_kpis(EVENTS, incidents, OFFICES, CATALOG, OCT)
    with pytest.raises(InputError, match=r"1 dispatched incident\(s\) have no matter code: I7"):
        compute_kpis(EVENTS, INCIDENTS[INCIDENTS["incident_id"] != "I7"], OFFICES, CATALOG, OCT)


def test_an_office_missing_from_the_offices_keeps_its_id() -> None:
    df = compute_kpis(EVENTS, INCIDENTS, OFFICES[OFFICES["office_id"] != "O3"], CATALOG, OCT)
    o3 = row(df, "office_id", "O3")
    assert o3["calls"] == 2 and pd.isna(o3["department"]) and pd.isna(o3["name"])
    by_department = compute_kpis(
        EVENTS, INCIDENTS, OFFICES[OFFICES["office_id"] != "O3"], CATALOG, OCT, by="department"
    )
    assert by_department["department"].isna().tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# street score, weights


O1_SCORE = 100 * (0.25 * 0.5 + 0.20 / 3 + 0.20 * 0.5 + 0.15 * 1.0 + 0.20 * 1.0)
O2_SCORE = 0.0  # three rates of 0; rework and satisfaction NaN: dropped
O3_SCORE = 100 * (0.25 * 1.0 + 0.20 * 1.0) / 1.0  # on-time 0, 1 - rework 0, satisfaction 0


def test_street_score_by_hand() -> None:
    df = kpis()
    scores = street_score(df).tolist()
    assert scores == pytest.approx([O1_SCORE, O2_SCORE, O3_SCORE])
    assert pytest.approx(64.1666667) == O1_SCORE


def test_street_score_renormalises_over_present_rates_and_all_nan_is_nan() -> None:
    df = pd.DataFrame(
        {
            "response_rate": [0.8, np.nan, np.nan],
            "resolution_rate": [np.nan, np.nan, np.nan],
            "on_time_closure_rate": [0.6, np.nan, np.nan],
            "rework_rate": [0.5, 0.25, np.nan],
            "satisfaction_rate": [np.nan, np.nan, np.nan],
        }
    )
    s = street_score(df)
    assert s[0] == pytest.approx(100 * (0.25 * 0.8 + 0.2 * 0.6 + 0.15 * 0.5) / 0.6)
    assert s[1] == pytest.approx(75.0)
    assert pd.isna(s[2])


def test_explicit_kpi_weights() -> None:
    df = kpis()
    only_response = dict.fromkeys(DEFAULT_KPI_WEIGHTS, 0.0) | {"response_rate": 1.0}
    assert street_score(df, only_response).tolist() == pytest.approx([50.0, 0.0, 100.0])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"response_rate": 1.0}, "missing weight"),
        (DEFAULT_KPI_WEIGHTS | {"speed": 0.0}, "unknown KPI"),
        (DEFAULT_KPI_WEIGHTS | {"response_rate": -0.25, "resolution_rate": 0.7}, ">= 0"),
        (DEFAULT_KPI_WEIGHTS | {"response_rate": 0.5}, "add up to 1.25, not 1"),
        (DEFAULT_KPI_WEIGHTS | {"response_rate": "a lot"}, "not a number"),
    ],
)
def test_kpi_weights_are_validated(weights: dict[str, Any], message: str) -> None:
    with pytest.raises(AssessmentWeightError, match=message):
        validate_kpi_weights(weights)


def test_weights_below_the_floors_are_refused_and_say_why() -> None:
    with pytest.raises(AssessmentWeightError) as info:
        validate_street_weight(0.49, "office")
    text = str(info.value)
    assert "below the five-powers floor 0.5" in text and "at least 50%" in text
    assert "office" in text
    with pytest.raises(AssessmentWeightError, match=r"floor 0\.3.*at least 30%"):
        validate_street_weight(0.29, "department")
    with pytest.raises(AssessmentWeightError, match="above 1"):
        validate_street_weight(1.2, "office")
    with pytest.raises(AssessmentWeightError, match="number"):
        validate_street_weight(float("nan"), "office")
    assert validate_street_weight(STREET_WEIGHT_FLOOR_OFFICE, "office") == 0.5
    assert validate_street_weight(STREET_WEIGHT_FLOOR_DEPARTMENT, "department") == 0.3
    assert validate_street_weight(1, "department") == 1.0
    df = kpis()
    with pytest.raises(AssessmentWeightError, match="floor"):
        assess_offices(df, weight=0.4)
    with pytest.raises(AssessmentWeightError, match="floor"):
        assess_departments(df, weight=0.2)
    with pytest.raises(AssessmentWeightError, match="floor"):
        assess(EVENTS, INCIDENTS, OFFICES, CATALOG, OCT, office_weight=0.3)


# ---------------------------------------------------------------------------------------------
# department scores, assessment, rankings


def test_office_assessment_with_default_and_raised_weights() -> None:
    scores = department_scores_from_frame(
        pd.DataFrame({"office_id": ["O1", "O2"], "score": ["80", "90.5"]}), OFFICES
    )
    df = assess_offices(kpis(), scores)
    assert df["office_id"].tolist() == ["O1", "O3", "O2"]  # sorted by rank
    o1, o2, o3 = (row(df, "office_id", o) for o in ("O1", "O2", "O3"))
    assert o1["assessment"] == pytest.approx(0.5 * O1_SCORE + 0.5 * 80)
    assert o2["assessment"] == pytest.approx(0.5 * 0.0 + 0.5 * 90.5)
    assert pd.isna(o3["department_score"]) and pd.isna(o3["assessment"])
    raised = assess_offices(kpis(), scores, weight=0.8)
    assert row(raised, "office_id", "O1")["assessment"] == pytest.approx(0.8 * O1_SCORE + 0.2 * 80)


def test_without_department_scores_the_combined_columns_are_nan() -> None:
    df = assess_offices(kpis())
    assert df["department_score"].isna().all() and df["assessment"].isna().all()
    assert df["street_score"].notna().all()
    departments = assess_departments(kpis())
    assert departments["department_own"].isna().all()
    assert departments["performance"].isna().all()


def test_rankings_overall_and_within_kind() -> None:
    df = assess_offices(kpis())
    assert dict(zip(df["office_id"], df["rank"], strict=True)) == {"O1": 1, "O3": 2, "O2": 3}
    assert dict(zip(df["office_id"], df["rank_in_kind"], strict=True)) == {
        "O1": 1, "O3": 1, "O2": 2,
    }  # fmt: skip


def test_ties_go_to_the_smaller_id_and_nan_scores_are_unranked() -> None:
    df = pd.DataFrame(
        {
            "office_id": ["C", "A", "B", "D", "E"],
            "kind": ["x", "y", "x", "x", "y"],
            "street_score": [70.0, 90.0, 70.0, np.nan, 70.0],
        }
    )
    assert rank_by_score(df, "street_score", "office_id").tolist() == [3, 1, 2, pd.NA, 4]
    within = rank_by_score(df, "street_score", "office_id", within="kind")
    assert within.tolist() == [2, 1, 1, pd.NA, 2]


def test_department_performance_by_office_scores_and_by_department_scores() -> None:
    # Street part: calls-weighted mean of the offices' street scores: ENF (4 × O1 + 2 × O2) / 6.
    enf_part = (4 * O1_SCORE + 2 * O2_SCORE) / 6
    by_office = department_scores_from_frame(
        pd.DataFrame({"office_id": ["O1", "O2", "O3"], "score": [80, 90, 60]}), OFFICES
    )
    df = assess_departments(kpis(), department_scores=by_office, weight=0.4)
    enf, pol = row(df, "department", ENF), row(df, "department", POL)
    # Own score per office -> the department's own score is their plain mean: (80 + 90) / 2.
    check(enf, {"street_part": enf_part, "department_own": 85.0})
    assert enf["performance"] == pytest.approx(0.4 * enf_part + 0.6 * 85)
    assert pol["street_part"] == pytest.approx(O3_SCORE)
    assert pol["performance"] == pytest.approx(0.4 * O3_SCORE + 0.6 * 60)
    assert df["department"].tolist() == [POL, ENF]  # 45 beats 42.78
    by_department = department_scores_from_frame(
        pd.DataFrame({"department": [ENF], "score": [70]}), OFFICES
    )
    df = assess_departments(kpis(), department_scores=by_department)
    assert row(df, "department", ENF)["performance"] == pytest.approx(0.3 * enf_part + 0.7 * 70)
    assert pd.isna(row(df, "department", POL)["performance"])
    offices = assess_offices(kpis(), by_department)
    assert row(offices, "office_id", "O2")["department_score"] == 70.0


def test_assess_builds_every_table() -> None:
    a = assess(EVENTS, INCIDENTS, OFFICES, CATALOG, OCT, office_weight=0.6)
    assert a.office_weight == 0.6 and a.department_weight == 0.3
    assert not a.has_department_scores
    assert a.offices["office_id"].tolist() == ["O1", "O3", "O2"]
    assert a.offices["street_score"].tolist() == pytest.approx([O1_SCORE, O3_SCORE, O2_SCORE])
    assert set(a.departments["department"]) == {ENF, POL}
    assert a.departments.loc[a.departments["department"] == POL, "calls"].item() == 2
    assert a.streets["street_code"].tolist() == [S1, S2]
    assert a.streets["rank"].tolist() == [1, 2]
    assert a.district["calls"].tolist() == [8]
    assert a.district["street_score"].notna().all()


# ---------------------------------------------------------------------------------------------
# the department scores file


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scores.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_department_scores_per_office_and_per_department(tmp_path: Path) -> None:
    df = read_department_scores(
        _write(tmp_path, "\ufeffoffice_id,score\nO1,80\nO3, 65.5\n"), OFFICES
    )
    assert df.to_dict("list") == {
        "office_id": ["O1", "O3"], "department": [ENF, POL], "score": [80.0, 65.5],
    }  # fmt: skip
    df = read_department_scores(
        _write(tmp_path, f"department,score\n{POL},100\n{ENF},0\n"), OFFICES
    )
    assert df.to_dict("list") == {"department": [POL, ENF], "score": [100.0, 0.0]}


def test_department_scores_problems_are_listed_in_one_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "office_id,score\nO1,80\nO9,70\nO2,101\nO3,abc\nO1,50\n,40\nO2,\nO3,-1\n"
    )
    with pytest.raises(DataFileError) as info:
        read_department_scores(path, OFFICES)
    text = str(info.value)
    # Nine: rows 8 and 9 repeat O2 and O3 besides their own faults.
    assert text.startswith(f"9 problem(s) in the department scores {path}")
    for part in (
        "row 3: unknown office 'O9'",
        "row 4: score 101 is outside 0-100",
        "row 5: score 'abc' is not a number",
        "row 6: office_id O1 repeats row 2",
        "row 7: empty office_id",
        "row 8: office_id O2 repeats row 4",
        "row 8: missing score",
        "row 9: office_id O3 repeats row 5",
        "row 9: score -1 is outside 0-100",
    ):
        assert part in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("office,score\nO1,1\n", "expected the columns office_id,score or department,score"),
        ("office_id,department,score\nO1,x,1\n", "found both"),
        ("office_id,points\nO1,1\n", "missing column 'score'"),
        ("office_id,score,comment\nO1,1,ok\n", "unknown column"),
        ("department,score\n司法部,50\n", "unknown department '司法部'"),
    ],
)
def test_department_scores_columns(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        read_department_scores(_write(tmp_path, text), OFFICES)


def test_an_unreadable_scores_file_is_a_data_file_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read"):
        read_department_scores(tmp_path / "missing.csv", OFFICES)
    with pytest.raises(DataFileError, match="cannot read"):
        read_department_scores(_write(tmp_path, ""), OFFICES)


# ---------------------------------------------------------------------------------------------
# random legal logs against a plain loop over each incident (the definitions read literally)

_BREAKERS = {"dispatch", "return", "requeue", "reopen"}
_STEPS_MIN = (0, 0, 1, 2, 5, 10, 10, 20, 30, 60, 120, 24 * 60)
_MAIN_PATH = ("report", "register", "dispatch", "acknowledge", "arrive", "resolve", "verify",
              "close", "evaluate")  # fmt: skip


@functools.cache
def _random_logs(seed: int, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random walks through the state machine, with times that often land on a deadline."""
    rng = np.random.default_rng(seed)
    logs, matters, streets = [], [], []
    for i in range(n):
        iid, street = f"R{i:04d}", (S1, S2)[int(rng.integers(2))]
        at = sh(9, 29) + timedelta(minutes=int(rng.integers(0, 36 * 24 * 60)))
        state: State | None = None
        steps: list[dict[str, Any]] = []
        while len(steps) < 25:
            actions = sorted(str(a) for (s, a) in TRANSITIONS if s == state)
            if not actions:
                break
            # Mostly along the main path, sometimes a side path (return, reopen, cancel...).
            main = [a for a in _MAIN_PATH if a in actions]
            pool = main if main and rng.random() < 0.75 else actions
            action = pool[int(rng.integers(len(pool)))]
            at = at + timedelta(minutes=int(rng.choice(_STEPS_MIN)))
            extra: dict[str, Any] = {}
            if action == "dispatch":
                extra = {
                    "office_id": ("O1", "O2", "O3", "O9")[int(rng.integers(4))],
                    "level": ("community", "street", "neighbour", "district")[int(rng.integers(4))],
                }
            elif action == "evaluate":
                extra = {"satisfaction": str(rng.choice(list(_SATISFACTIONS)))}
            elif Action(action) in REASON_REQUIRED:
                extra = {"reason": "random", "data": {"category": "invalid"}}
            elif action == "supervise":
                extra = {"level": "street", "stage": "acknowledge"}
            steps.append(step(action, at, **extra))
            state = TRANSITIONS[(state, Action(action))]
        logs.append(incident(iid, street, steps))
        matters.append(("A", "B")[int(rng.integers(2))])
        streets.append(street)
    incidents = pd.DataFrame(
        {"incident_id": [f"R{i:04d}" for i in range(n)], "matter_code": matters}
    )
    return frame(*logs), incidents


_SATISFACTIONS = ("satisfied", "basically_satisfied", "dissatisfied")


def _naive(
    events: pd.DataFrame, incidents: pd.DataFrame, period: Period, by: str
) -> dict[str, dict[str, float]]:
    start, end = period.start.astimezone(UTC), period.end.astimezone(UTC)
    matter = dict(zip(incidents["incident_id"], incidents["matter_code"], strict=True))
    department = dict(zip(OFFICES["office_id"], OFFICES["department"], strict=True))

    def key(office: Any, street: Any) -> str:
        if by == "office":
            return str(office)
        if by == "department":
            return str(department.get(office))
        return str(street) if by == "street" else "all"

    groups: dict[str, dict[str, list[Any]]] = {}

    def group(k: str) -> dict[str, list[Any]]:
        return groups.setdefault(k, {"calls": [], "cases": []})

    for iid, log in events.groupby("incident_id"):
        evs = [e for e in log.sort_values("seq").to_dict("records") if e["at"] < end]
        deadlines = CATALOG.get(matter[str(iid)]).deadlines
        for i, e in enumerate(evs):
            if e["action"] != "dispatch" or not start <= e["at"] < end:
                continue
            cycle = []
            for f in evs[i + 1 :]:
                if f["action"] in _BREAKERS:
                    break
                cycle.append(f)
            ack = next((f["at"] for f in cycle if f["action"] == "acknowledge"), None)
            arrive = next((f["at"] for f in cycle if f["action"] == "arrive"), None)
            limit = timedelta(minutes=deadlines.acknowledge_min)
            group(key(e["office_id"], e["street_code"]))["calls"].append(
                {
                    "on_time": ack is not None and ack - e["at"] <= limit,
                    "response": None if ack is None else (ack - e["at"]).total_seconds() / 60,
                    "arrival": None if arrive is None else (arrive - e["at"]).total_seconds() / 60,
                    "level": e["level"],
                }
            )
        dispatches = [e for e in evs if e["action"] == "dispatch"]
        if not dispatches or dispatches[0]["at"] < start:
            continue
        close = next((e["at"] for e in evs if e["action"] == "close"), None)
        deadline = dispatches[0]["at"] + timedelta(hours=deadlines.resolve_h)
        evaluation = [e for e in evs if e["action"] == "evaluate"]
        group(key(dispatches[-1]["office_id"], dispatches[-1]["street_code"]))["cases"].append(
            {
                "closed": close is not None,
                "due": close is not None or deadline <= end,
                "on_time": close is not None and close <= deadline,
                "resolved": any(e["action"] == "resolve" for e in evs),
                "reworked": any(e["action"] == "reopen" for e in evs),
                "evaluated": bool(evaluation),
                "satisfied": bool(evaluation)
                and evaluation[0]["satisfaction"] in ("satisfied", "basically_satisfied"),
            }
        )

    def rate(num: float, den: float) -> float:
        return num / den if den else math.nan

    def stats(values: list[float | None]) -> tuple[float, float]:
        xs = [v for v in values if v is not None]
        return (float(np.mean(xs)), float(np.percentile(xs, 90))) if xs else (math.nan, math.nan)

    out = {}
    for k, g in groups.items():
        calls, cases = g["calls"], g["cases"]
        r_mean, r_p90 = stats([c["response"] for c in calls])
        a_mean, a_p90 = stats([c["arrival"] for c in calls])
        count = {f: sum(c[f] for c in cases) for f in cases[0]} if cases else {}
        n = len(calls)
        row_: dict[str, float] = {
            "calls": n,
            "responded_on_time": sum(c["on_time"] for c in calls),
            "response_mean_min": r_mean, "response_p90_min": r_p90,
            "arrival_mean_min": a_mean, "arrival_p90_min": a_p90,
            "cases": len(cases),
            **{f: count.get(f, 0) for f in ("closed", "due", "on_time", "resolved", "reworked",
                                            "evaluated", "satisfied")},
        }  # fmt: skip
        for level in ("community", "street", "neighbour", "district"):
            row_[f"share_{level}"] = rate(sum(c["level"] == level for c in calls), n)
        row_["response_rate"] = rate(row_["responded_on_time"], n)
        row_["resolution_rate"] = rate(row_["closed"], row_["cases"])
        row_["on_time_closure_rate"] = rate(row_["on_time"], row_["due"])
        row_["rework_rate"] = rate(row_["reworked"], row_["resolved"])
        row_["satisfaction_rate"] = rate(row_["satisfied"], row_["evaluated"])
        out[k] = row_
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_logs_are_legal_and_cover_every_action(seed: int) -> None:
    events, _ = _random_logs(seed, 150)
    for _, log in events.groupby("incident_id"):
        replay(events_from_frame(log))
    assert set(events["action"]) == {str(a) for a in Action}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("by", ["office", "department", "street", "district"])
def test_random_logs_match_a_plain_loop_over_the_definitions(seed: int, by: str) -> None:
    events, incidents = _random_logs(seed, 150)
    got = compute_kpis(events, incidents, OFFICES, CATALOG, OCT, by=by)
    expected = _naive(events, incidents, OCT, by)
    key = GROUPINGS[by][0]
    got_keys = [str(k) if not pd.isna(k) else "None" for k in got[key]]
    assert sorted(got_keys) == sorted(expected)
    for k, record in zip(got_keys, got.to_dict("records"), strict=True):
        check(record, expected[k])
