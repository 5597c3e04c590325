"""The workflow and assessment commands: act, history, supervise, simulate --save, report."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gridgov import store
from gridgov.catalog import load_catalog
from gridgov.cli import app
from gridgov.dispatch import Incident

runner = CliRunner()

# A fire at the demo's spot.
FIRE = ("FS-01", 104.05, 30.69)


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference district on SQLite with one saved simulated October day."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cliwf') / 'gridgov.db'}"
    _ok("init", "--url", url)
    _ok("load", "--url", url)
    output = _ok(
        "simulate", "--start", "2026-10-01", "--hours", "24", "--rate", "10", "--seed", "2",
        "--save", "--url", url,
    )  # fmt: skip
    assert "stored " in output and " events" in output
    yield url


def _fire(url: str, incident_id: str, at: datetime) -> None:
    engine = store.open_store(url)
    matter, lon, lat = FIRE
    store.create_incident(
        engine, Incident(incident_id, matter, lon, lat, at), now=at, check_duplicates=False
    )
    store.dispatch_stored(engine, store.context_from_store(engine), incident_id, now=at)


def test_act_walks_an_incident_and_history_shows_every_event(url: str) -> None:
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    _fire(url, "CLI-WF-1", t0)
    for action, minutes, role, extra in (
        ("acknowledge", 2, "unit", []),
        ("arrive", 8, "unit", []),
        ("resolve", 40, "unit", []),
        ("verify", 60, "grid_worker", []),
        ("close", 61, "dispatcher", []),
        ("evaluate", 90, "reporter", ["--satisfaction", "basically_satisfied"]),
    ):
        at = (t0 + timedelta(minutes=minutes)).isoformat()
        output = _ok("act", "CLI-WF-1", action, "--role", role, "--at", at, *extra, "--url", url)
        assert f"({action}," in output
    output = _ok("history", "CLI-WF-1", "--url", url)
    actions = [line.split()[3] for line in output.splitlines()[1:] if line.strip()]
    assert actions == [
        "report", "register", "dispatch", "acknowledge", "arrive", "resolve", "verify", "close",
        "evaluate",
    ]  # fmt: skip
    # Times are shown in Asia/Shanghai: 09:00 UTC is 17:00 there.
    assert "2026-11-02 17:00" in output


def test_a_refused_action_exits_1_naming_what_is_allowed_and_changes_nothing(url: str) -> None:
    t0 = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    _fire(url, "CLI-WF-2", t0)
    before = len(store.read_events(store.open_store(url), incident_id="CLI-WF-2"))
    result = runner.invoke(
        app, ["act", "CLI-WF-2", "close", "--at", (t0 + timedelta(minutes=1)).isoformat(),
              "--url", url],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "acknowledge" in result.output and "close" in result.output
    assert "Traceback" not in result.output
    after = len(store.read_events(store.open_store(url), incident_id="CLI-WF-2"))
    assert after == before


def test_a_returned_call_is_dispatched_again_to_another_office(url: str) -> None:
    t0 = datetime(2026, 11, 4, 9, 0, tzinfo=UTC)
    _fire(url, "CLI-WF-3", t0)
    engine = store.open_store(url)
    first = store.read_events(engine, incident_id="CLI-WF-3").iloc[-1]["office_id"]
    at = (t0 + timedelta(minutes=3)).isoformat()
    output = _ok(
        "act", "CLI-WF-3", "return", "--role", "office", "--reason", "not our station's area",
        "--at", at, "--url", url,
    )  # fmt: skip
    assert "dispatched again" in output
    events = store.read_events(engine, incident_id="CLI-WF-3")
    assert list(events["action"])[-2:] == ["return", "dispatch"]
    assert events.iloc[-1]["office_id"] != first


def test_supervise_lists_overdue_exactly_after_the_deadline_and_records_once(url: str) -> None:
    t0 = datetime(2026, 11, 5, 9, 0, tzinfo=UTC)
    _fire(url, "CLI-WF-4", t0)
    matter = load_catalog().get(FIRE[0])
    deadline = t0 + timedelta(minutes=matter.acknowledge_min)
    at_deadline = _ok("supervise", "--dry-run", "--at", deadline.isoformat(), "--url", url)
    assert "CLI-WF-4" not in at_deadline
    later = (deadline + timedelta(seconds=1)).isoformat()
    listed = _ok("supervise", "--dry-run", "--at", later, "--url", url)
    assert "CLI-WF-4" in listed and "recorded" not in listed
    first = _ok("supervise", "--at", later, "--url", url)
    assert "recorded 0 " not in first
    again = _ok("supervise", "--at", later, "--url", url)
    assert "recorded 0 supervision(s)" in again
    notices = store.read_notices(store.open_store(url))
    assert (notices["incident_id"] == "CLI-WF-4").any()
    listed = _ok("notices", "--incident", "CLI-WF-4", "--kind", "supervision", "--url", url)
    assert "CLI-WF-4" in listed and "to office" in listed


def test_report_writes_csv_and_html_for_the_simulated_month(url: str, tmp_path: Path) -> None:
    output = _ok("report", "--period", "2026-10", "--url", url)
    rows = list(csv.DictReader(io.StringIO(output)))
    assert len(rows) > 10
    assert {"office_id", "response_rate", "resolution_rate", "street_score"} <= set(rows[0])
    assert sum(int(r["calls"]) for r in rows) > 100
    target = tmp_path / "october.html"
    _ok("report", "--period", "2026-10", "--format", "html", "--out", str(target), "--url", url)
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert "<svg" in html and "http://" not in html and "https://" not in html
    street = _ok(
        "report", "--period", "2026-10", "--street", "510106024000", "--level", "street",
        "--url", url,
    )  # fmt: skip
    codes = {r["street_code"] for r in csv.DictReader(io.StringIO(street))}
    assert codes == {"510106024000"}


def test_report_refuses_a_street_weight_below_the_floor_saying_why(url: str) -> None:
    result = runner.invoke(
        app, ["report", "--period", "2026-10", "--office-weight", "0.4", "--url", url]
    )
    assert result.exit_code == 1
    assert "0.5" in result.output and "floor" in result.output
    result = runner.invoke(
        app, ["report", "--period", "2026-10", "--department-weight", "0.2", "--url", url]
    )
    assert result.exit_code == 1 and "0.3" in result.output


def test_report_rejects_a_bad_period_and_format(url: str) -> None:
    for args in (["--period", "2026-13"], ["--period", "2026-10", "--format", "pdf"]):
        result = runner.invoke(app, ["report", *args, "--url", url])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output


def test_a_duplicate_report_is_stored_linked_and_not_dispatched(url: str) -> None:
    matter, lon, lat = FIRE
    first = _ok("dispatch", str(lon), str(lat), matter, "--id", "CLI-WF-DUP-1", "--url", url)
    assert '"status"' in first
    second = _ok(
        "dispatch", str(lon + 0.0005), str(lat), matter, "--id", "CLI-WF-DUP-2", "--url", url
    )
    assert '"duplicate_of": "CLI-WF-DUP-1"' in second and '"rejected"' in second
    incidents = store.read_incidents(store.open_store(url)).set_index("incident_id")
    assert incidents.loc["CLI-WF-DUP-2", "duplicate_of"] == "CLI-WF-DUP-1"
    assert incidents.loc["CLI-WF-DUP-2", "status"] == "rejected"


def test_map_writes_every_kind_offline_and_the_assessment_of_a_period(
    url: str, tmp_path: Path
) -> None:
    for kind, extra in (
        ("command-centre", []),
        ("street", ["--street", "510106024000"]),
        ("coverage", ["--kind", "fire"]),
        ("assessment", ["--period", "2026-10", "--kpi-value", "street_score"]),
    ):
        target = tmp_path / f"{kind}.html"
        output = _ok("map", kind, *extra, "--out", str(target), "--url", url)
        assert f"wrote {target}" in output.replace("\n", "")
        html = target.read_text(encoding="utf-8")
        # Leaflet is inlined: no script or stylesheet is fetched from anywhere.
        assert "L.map(" in html or "L.map (" in html
        assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", html)
    result = runner.invoke(app, ["map", "street", "--out", str(tmp_path / "x.html"), "--url", url])
    assert result.exit_code == 1 and "--street" in result.output


def test_an_office_head_moves_only_after_the_street_answered_a_written_consultation(
    url: str,
) -> None:
    office = "510106024000-police"
    check = ["consultation", "check", office, "--at", "2026-11-20T09:00", "--url", url]
    result = runner.invoke(app, check)
    assert result.exit_code == 1 and "has not consulted the street" in result.output
    output = _ok(
        "consultation", "record", "--office", office, "--head", "李四", "--move", "promotion",
        "--letter", "关于李四同志职务调整征求意见的函", "--by", "区公安分局",
        "--at", "2026-11-10T09:00", "--url", url,
    )  # fmt: skip
    consultation_id = output.split()[1]
    result = runner.invoke(app, check)
    assert result.exit_code == 1 and "not given its opinion" in result.output
    _ok(
        "consultation", "opinion", consultation_id, "--opinion", "agree",
        "--at", "2026-11-12T15:00", "--url", url,
    )  # fmt: skip
    assert "answered agree" in _ok(*check)
    # Before the opinion was given, the move was still not allowed.
    early = ["consultation", "check", office, "--at", "2026-11-11T09:00", "--url", url]
    assert runner.invoke(app, early).exit_code == 1
    listed = json.loads(_ok("consultation", "list", "--office", office, "--url", url))
    assert [c["head_name"] for c in listed] == ["李四"]
    assert listed[0]["opinion"] == "agree" and listed[0]["street_code"] == "510106024000"


def test_coverage_asks_what_a_station_move_would_change(url: str, tmp_path: Path) -> None:
    output = _ok("coverage", "fire", "--url", url)
    assert "fire coverage of 995 grid areas" in output and "within 10 min" in output
    target = tmp_path / "moved.csv"
    moved = _ok(
        "coverage", "fire", "--move", "510106024000-fire-01=104.02,30.72",
        "--move", "510106024000-fire-02=104.02,30.72", "--csv", str(target), "--url", url,
    )  # fmt: skip
    assert "2 unit(s) moved" in moved and "worse" in moved and " -> " in moved
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
    assert len(rows) == 995 and {"time_before_s", "time_after_s", "change"} <= set(rows[0])
    assert any(r["change"] != "same" for r in rows)
    for bad in ("nobody=104.02,30.72", "510106024000-fire-01=east,north"):
        result = runner.invoke(app, ["coverage", "fire", "--move", bad, "--url", url])
        assert result.exit_code == 1 and "Traceback" not in result.output


def test_hotspots_of_the_simulated_month(url: str) -> None:
    output = _ok("hotspots", "--period", "2026-10", "--url", url)
    assert "grid areas, 2026-10" in output
    assert "hot spots:" in output and "cold spots:" in output
