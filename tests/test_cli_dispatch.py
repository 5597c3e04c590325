"""`gridgov dispatch`, `simulate`, `route` and `load --roads` end to end, on both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from gridgov.cli import app
from gridgov.crs import from_wgs84
from gridgov.settings import get_settings
from gridgov.store import create_engine_from_url, read_incidents, read_units

runner = CliRunner()

# A point in 西安路 street, on the reference roads, and one in an outlying grid more than 1 km
# from every reference road (the far test lowers max_snap_m to 1 km; the default is 2.5 km).
LON, LAT = 104.05, 30.69
FAR_LON, FAR_LAT = 104.087462, 30.742427


def _run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def engine(reference_store_url: str) -> Iterator[Engine]:
    eng = create_engine_from_url(reference_store_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _dispatch(url: str, *args: str) -> Result:
    return _run("dispatch", *args, "--url", url)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------


def test_dispatch_prints_the_decision_and_the_units_become_busy(
    reference_store_url: str, engine: Engine
) -> None:
    result = _dispatch(reference_store_url, str(LON), str(LAT), "UM-03", "--id", "T-CLI-1")
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["dry_run"] is False
    assert decision["incident"]["incident_id"] == "T-CLI-1"
    assert decision["matter_code"] == "UM-03"
    assert decision["status"] == "assigned"
    assert [a["kind"] for a in decision["assignments"]] == ["enforcement", "grid_worker"]
    explanation = decision["explanation"]
    assert explanation["travel_model"]["kind"] == "network"  # the reference roads are loaded
    assert [k["kind"] for k in explanation["kinds"]] == ["enforcement", "grid_worker"]
    for kind in explanation["kinds"]:
        assert kind["tiers"] and kind["rule"]
    for a in decision["assignments"]:
        assert a["route"]["type"] == "LineString"
        assert a["route"]["time_s"] == pytest.approx(a["time_s"])

    units = read_units(engine).set_index("unit_id")
    for a in decision["assignments"]:
        assert units.loc[a["unit_id"], "status"] == "busy"
    incidents = read_incidents(engine).set_index("incident_id")
    assert incidents.loc["T-CLI-1", "status"] == "dispatched"
    assert incidents.loc["T-CLI-1", "source"] == "cli"

    # The same id again is refused, and nothing changes.
    again = _dispatch(reference_store_url, str(LON), str(LAT), "UM-03", "--id", "T-CLI-1")
    assert again.exit_code == 1
    assert "exists already" in _one_error_line(again)


def test_a_dry_run_stores_nothing(reference_store_url: str, engine: Engine) -> None:
    before_units = read_units(engine)[["unit_id", "status"]]
    before_incidents = len(read_incidents(engine))
    result = _dispatch(reference_store_url, str(LON), str(LAT), "FS-01", "--dry-run")
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["dry_run"] is True
    assert decision["status"] == "assigned"
    assert decision["assignments"][0]["kind"] == "fire"
    assert len(read_incidents(engine)) == before_incidents
    assert read_units(engine)[["unit_id", "status"]].equals(before_units)


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_a_chinese_datum_gives_the_same_decision(reference_store_url: str, crs: str) -> None:
    lon, lat = from_wgs84(LON, LAT, crs)
    converted = _dispatch(
        reference_store_url, f"{lon[0]:.9f}", f"{lat[0]:.9f}", "EE-02", "--crs", crs, "--dry-run"
    )
    plain = _dispatch(reference_store_url, str(LON), str(LAT), "EE-02", "--dry-run")
    assert converted.exit_code == 0, converted.output
    assert plain.exit_code == 0, plain.output
    a, b = json.loads(converted.stdout), json.loads(plain.stdout)
    assert a["incident"]["lon"] == pytest.approx(LON, abs=1e-7)
    assert a["incident"]["lat"] == pytest.approx(LAT, abs=1e-7)
    assert a["placement"] == b["placement"]
    assert a["status"] == b["status"] and a["level"] == b["level"]
    keys = ("unit_id", "kind", "role", "level", "rule")
    assert [{k: x[k] for k in keys} for x in a["assignments"]] == [
        {k: x[k] for k in keys} for x in b["assignments"]
    ]
    for x, y in zip(a["assignments"], b["assignments"], strict=True):
        assert x["time_s"] == pytest.approx(y["time_s"], abs=0.5)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["0", "0", "FS-01"], "outside the loaded district"),
        (["12000000", "3400000", "FS-01", "--crs", "EPSG:3857"], "[EPSG:3857]"),
        ([str(LON), str(LAT), "FS-99"], "unknown matter code 'FS-99'"),
        ([str(LON), str(LAT), "FS-01", "--crs", "pluto"], "unknown CRS 'pluto'"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_is_stored(
    reference_store_url: str, engine: Engine, args: list[str], words: str
) -> None:
    before = len(read_incidents(engine))
    result = _dispatch(reference_store_url, *args)
    assert result.exit_code == 1
    assert words in _one_error_line(result)
    assert result.stdout == ""
    assert len(read_incidents(engine)) == before


@pytest.fixture
def snap_1km(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRIDGOV_MAX_SNAP_M", "1000")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("GRIDGOV_MAX_SNAP_M")
    get_settings.cache_clear()


@pytest.mark.usefixtures("snap_1km")
def test_a_point_far_from_every_road_is_stored_unassigned_and_exits_1(
    reference_store_url: str, engine: Engine
) -> None:
    where = (str(FAR_LON), str(FAR_LAT), "UM-01", "--id", "T-FAR")
    dry = _dispatch(reference_store_url, *where, "--dry-run")
    assert dry.exit_code == 1
    assert "dry run: nothing stored" in _one_error_line(dry)
    assert "T-FAR" not in set(read_incidents(engine)["incident_id"])

    result = _dispatch(reference_store_url, *where)
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "from the nearest road" in line and "T-FAR" in line and "unassigned" in line
    decision = json.loads(result.stdout)  # the record of what happened is still printed
    assert decision["status"] == "unassigned"
    assert decision["assignments"] == []
    assert "refused" in decision["explanation"]
    incidents = read_incidents(engine).set_index("incident_id")
    assert incidents.loc["T-FAR", "status"] == "registered"  # nobody called; still queued


def test_dispatch_needs_a_loaded_store(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    result = _dispatch(missing, str(LON), str(LAT), "FS-01")
    assert result.exit_code == 1
    assert "gridgov init" in _one_error_line(result)
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert _run("init", "--url", empty).exit_code == 0
    result = _dispatch(empty, str(LON), str(LAT), "FS-01")
    assert result.exit_code == 1
    assert "gridgov load" in _one_error_line(result)


# --------------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------------


def test_simulate_prints_the_table_and_leaves_the_store_alone(
    reference_store_url: str, engine: Engine, tmp_path: Path
) -> None:
    units = read_units(engine)[["unit_id", "status"]]
    incidents = len(read_incidents(engine))
    out = tmp_path / "sim" / "run.json"
    args = ("simulate", "--hours", "2", "--seed", "3", "--url", reference_store_url)
    result = _run(*args, "--json", str(out))
    assert result.exit_code == 0, result.output
    text = result.stdout
    for words in ("arrivals", "p50 min", "p90 min", "p99 min", "resolved at: community",
                  "unassigned at the end", "preemptions", "network travel"):  # fmt: skip
        assert words in text, words
    assert "police" in text and "grid_worker" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["summary"]["arrivals"] == len(data["incidents"]) > 0
    assert data["summary"]["params"]["seed"] == 3
    # In memory only: the store is as it was.
    assert read_units(engine)[["unit_id", "status"]].equals(units)
    assert len(read_incidents(engine)) == incidents
    # The same seed prints the same table.
    again = _run(*args)
    assert again.exit_code == 0
    assert again.stdout == text.replace(f"wrote {out}\n", "")


def test_simulate_refuses_bad_parameters(reference_store_url: str, tmp_path: Path) -> None:
    result = _run("simulate", "--hours", "0", "--url", reference_store_url)
    assert result.exit_code == 1
    assert "hours" in _one_error_line(result)
    result = _run("simulate", "--rate", "-5", "--url", reference_store_url)
    assert result.exit_code == 1
    assert "rate_per_hour" in _one_error_line(result)
    result = _run("simulate", "--json", str(tmp_path / "x.csv"), "--url", reference_store_url)
    assert result.exit_code == 1
    assert ".json" in _one_error_line(result)


# --------------------------------------------------------------------------------------------
# route and roads
# --------------------------------------------------------------------------------------------


def test_route_prints_time_length_and_geojson(reference_store_url: str) -> None:
    result = _run("route", str(LON), str(LAT), "104.06", "30.70", "--url", reference_store_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["travel_model"] == "network" and data["mode"] == "drive"
    assert data["time_s"] > 0 and data["length_m"] > 0
    assert data["time_min"] == pytest.approx(data["time_s"] / 60, abs=0.01)
    assert data["route"]["type"] == "LineString" and len(data["route"]["coordinates"]) >= 2
    walk = json.loads(
        _run(
            "route", str(LON), str(LAT), "104.06", "30.70", "--mode", "walk",
            "--url", reference_store_url,
        ).stdout
    )  # fmt: skip
    assert walk["time_s"] > data["time_s"]

    far = _run("route", str(LON), str(LAT), "0", "0", "--url", reference_store_url)
    assert far.exit_code == 1 and "nearest drive road" in _one_error_line(far)
    fly = _run(
        "route", str(LON), str(LAT), "104.06", "30.70", "--mode", "fly",
        "--url", reference_store_url,
    )  # fmt: skip
    assert fly.exit_code == 1 and "fly" in _one_error_line(fly)


def test_load_roads_alone_replaces_only_the_roads(reference_store_url: str) -> None:
    roads = get_settings().data_dir / "jinniu_roads.gpkg"
    before = json.loads(_run("info", "--url", reference_store_url).stdout)
    result = _run("load", "--roads", str(roads), "--url", reference_store_url)
    assert result.exit_code == 0, result.output
    assert "road" in result.stdout and "unchanged" in result.stdout
    after = json.loads(_run("info", "--url", reference_store_url).stdout)
    assert after["units"] == before["units"] and after["areas"] == before["areas"]
    route = _run("route", str(LON), str(LAT), "104.06", "30.70", "--url", reference_store_url)
    assert json.loads(route.stdout)["travel_model"] == "network"


def test_load_roads_refuses_an_unknown_file(reference_store_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "roads.txt"
    bad.write_text("not roads")
    result = _run("load", "--roads", str(bad), "--url", reference_store_url)
    assert result.exit_code == 1
    assert "roads.txt" in _one_error_line(result)


def test_the_demo_dispatches_one_incident(tmp_path: Path) -> None:
    result = _run("demo", "--url", f"sqlite:///{tmp_path / 'demo.db'}")
    assert result.exit_code == 0, result.output
    assert "road links" in result.stdout
    assert "dispatch a fire" in result.stdout
    assert "assigned, level" in result.stdout
    assert "lead   fire" in result.stdout


# --------------------------------------------------------------------------------------------
# dispatch-batch
# --------------------------------------------------------------------------------------------


def test_dispatch_batch_commits_the_optimal_assignment_and_skips_a_cancelled_one(
    reference_store_url: str, engine: Engine
) -> None:
    from gridgov.service import intake
    from gridgov.store import context_from_store

    ctx = context_from_store(engine)
    ids = [
        intake.report(
            engine,
            ctx,
            matter_code="UM-03",
            lon=LON + 0.002 * k,
            lat=LAT,
            incident_id=f"T-BATCH-{k}",
            dispatch_now=False,
            check_duplicates=False,
        ).incident_id
        for k in range(3)
    ]
    cancel = _run("act", ids[1], "cancel", "--reason", "withdrawn", "--url", reference_store_url)
    assert cancel.exit_code == 0, cancel.output
    result = _run("dispatch-batch", *ids, "--url", reference_store_url)
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    items = {i["incident_id"]: i for i in outcome["items"]}
    assert items[ids[1]]["status"] == "skipped"
    assert items[ids[0]]["status"] == items[ids[2]]["status"] == "assigned"
    assert not set(items[ids[0]]["units"]) & set(items[ids[2]]["units"])
    assert outcome["dispatched"] == 2 and outcome["skipped"] == 1
    assert outcome["method"] == "optimal" and outcome["gain"] >= 0
    incidents = read_incidents(engine).set_index("incident_id")
    assert incidents.loc[ids[0], "status"] == incidents.loc[ids[2], "status"] == "dispatched"
    assert incidents.loc[ids[1], "status"] == "cancelled"
