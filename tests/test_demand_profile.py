"""Measured demand profiles: derived from requests, stored, and driving simulated arrivals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gridgov.analysis.demand_profile import derive_profile, load_profile
from gridgov.catalog import load_catalog
from gridgov.cli import app
from gridgov.errors import InputError
from gridgov.reference import read_reference_district
from gridgov.simulate import DEFAULT_START, draw_arrivals


def _requests() -> pd.DataFrame:
    # 2026-11-30 is a Monday. Four requests Monday 09:xx, one Saturday 23:xx.
    rows = [
        ("11/30/2026 09:05:00 AM", "11/30/2026 11:05:00 AM", "11/30/2026 10:00:00 AM", "Trees"),
        ("11/30/2026 09:10:00 AM", "11/30/2026 09:40:00 AM", "11/30/2026 10:00:00 AM", "Trees"),
        ("11/30/2026 09:20:00 AM", None, "11/30/2026 10:00:00 AM", "Trees"),
        ("11/30/2026 09:30:00 AM", "12/01/2026 09:30:00 AM", None, "Graffiti"),
        ("12/05/2026 11:15:00 PM", "12/06/2026 01:15:00 AM", None, "Graffiti"),
    ]
    return pd.DataFrame(rows, columns=["open_dt", "closed_dt", "target_dt", "reason"])


def test_derived_by_hand() -> None:
    profile = derive_profile(_requests(), name="t", source="hand-made")
    week = np.array(profile["hour_of_week"])
    assert len(week) == 168 and week.mean() == pytest.approx(1.0, abs=1e-3)
    assert week[9] == pytest.approx(4 * 168 / 5, rel=1e-3)  # Monday 09:00
    assert week[5 * 24 + 23] == pytest.approx(168 / 5, rel=1e-3)  # Saturday 23:00
    assert profile["day_of_week"]["Sun"] == 0.0
    trees = profile["resolution"]["Trees"]
    assert trees["requests"] == 3 and trees["closed_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert trees["p50_h"] == pytest.approx(1.25)  # 2 h and 0.5 h
    # Of three with a target: one closed late, one on time, one still open.
    assert trees["with_target"] == 3 and trees["on_time_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert profile["figures"]["requests"] == 5


def test_missing_columns_are_named() -> None:
    with pytest.raises(InputError, match="target_dt"):
        derive_profile(_requests().drop(columns="target_dt"), name="t", source="s")


def test_the_shipped_boston_profile() -> None:
    boston = load_profile("boston311")
    assert "Boston" in boston.source and "PDDL" in boston.source
    assert len(boston.hour_of_week) == 168
    assert np.mean(boston.hour_of_week) == pytest.approx(1.0, abs=1e-3)
    # Office hours: mid-morning weekdays far above nights and weekends.
    assert boston.hour_of_day[10] > 5 * boston.hour_of_day[3]
    assert boston.day_of_week["Tue"] > 2 * boston.day_of_week["Sun"]
    assert boston.figures["requests"] == 121_145
    assert 0.5 < boston.figures["on_time_share"] < 0.9
    assert {"p50_h", "p90_h", "on_time_share"} <= set(boston.resolution.columns)
    with pytest.raises(InputError, match="boston311"):
        load_profile("chicago")


def test_a_weekly_profile_shapes_simulated_arrivals() -> None:
    ref = read_reference_district()
    boston = load_profile("boston311")
    arrivals = draw_arrivals(
        ref.gdf_areas,
        load_catalog(),
        hours=24 * 7,
        seed=5,
        rate_per_hour=60,
        profile=boston.hour_of_week,
        start=DEFAULT_START,
    )
    local = pd.to_datetime(arrivals["reported_at"]).dt.tz_convert(DEFAULT_START.tzinfo)
    weekend = local.dt.day_of_week >= 5
    assert weekend.mean() < 0.2  # Boston's weekends are quiet; a flat week would give 2/7
    assert (local.dt.hour.between(8, 15)).mean() > 0.55


def test_simulate_with_the_profile_names_its_source(tmp_path: Path) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'gridgov.db'}"
    for args in (["init", "--url", url], ["load", "--url", url]):
        assert runner.invoke(app, args).exit_code == 0
    target = tmp_path / "run.json"
    result = runner.invoke(
        app,
        ["simulate", "--hours", "6", "--rate", "5", "--profile", "boston311", "--json",
         str(target), "--url", url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "arrival timing: boston311 (City of Boston 311" in result.output
    record = json.loads(target.read_text(encoding="utf-8"))
    assert record["demand_profile"]["name"] == "boston311"
    bad = runner.invoke(app, ["simulate", "--hours", "1", "--profile", "nowhere", "--url", url])
    assert bad.exit_code == 1 and "known: boston311" in bad.output
