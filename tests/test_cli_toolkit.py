"""The analyst's toolkit commands end to end: isochrone, sites, workload, and --out exports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from typer.testing import CliRunner

from gridgov.cli import app

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _fails(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The reference district on SQLite with one saved simulated October day."""
    url = f"sqlite:///{tmp_path_factory.mktemp('toolkit') / 'gridgov.db'}"
    _ok("init", "--url", url)
    _ok("load", "--url", url)
    _ok(
        "simulate", "--start", "2026-10-01", "--hours", "24", "--rate", "10", "--seed", "3",
        "--save", "--url", url,
    )  # fmt: skip
    yield url


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet", ".geojson", ".csv", ".html"])
def test_isochrone_writes_every_format(url: str, tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"iso{suffix}"
    output = _ok(
        "isochrone", "104.05", "30.69", "--minutes", "2,4,8", "--out", str(target), "--url", url
    )
    assert "within 2 min" in output and "within 8 min" in output
    assert target.is_file() and target.stat().st_size > 0
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8-sig"))))
        assert [float(r["minutes"]) for r in rows] == [2.0, 4.0, 8.0]
        assert rows[0]["geometry"].startswith(("POLYGON", "MULTIPOLYGON"))
    elif suffix == ".parquet":
        bands = gpd.read_parquet(target)
        assert bands.crs.to_epsg() == 4326 and len(bands) == 3
    elif suffix != ".html":
        bands = gpd.read_file(target)
        assert len(bands) == 3 and bands["area_km2"].is_monotonic_increasing


def test_isochrone_around_a_unit_and_bad_input(url: str) -> None:
    output = _ok("isochrone", "--unit", "510106024000-fire-01", "--minutes", "4", "--url", url)
    assert "drive" in output and "within 4 min" in output
    assert "--minutes" in _fails("isochrone", "104.05", "30.69", "--minutes", "two", "--url", url)
    assert "unknown output format" in _fails(
        "isochrone", "104.05", "30.69", "--out", "x.shp", "--url", url
    )
    assert "no unit" in _fails("isochrone", "--unit", "nobody", "--url", url)


@pytest.mark.slow
def test_sites_adds_a_fire_station_and_prints_the_improvement(url: str, tmp_path: Path) -> None:
    target = tmp_path / "sites.geojson"
    output = _ok(
        "sites", "fire", "--add", "1", "--max-candidates", "20", "--out", str(target), "--url", url
    )
    assert "1 site(s) added by max-cover" in output
    line = next(x for x in output.splitlines() if x.startswith("within 240 s"))
    before, after = (float(v.rstrip("%")) for v in line.split()[3:6:2])
    assert after > before
    written = gpd.read_file(target)
    assert int(written["added"].sum()) == 1 and int(written["existing"].sum()) == 4


def test_sites_weighs_demand_by_a_periods_incidents(url: str) -> None:
    output = _ok(
        "sites", "police", "--add", "1", "--period", "2026-10", "--max-candidates", "10",
        "--model", "p-median", "--url", url,
    )  # fmt: skip
    assert "1 site(s) added by p-median" in output and "weighted mean" in output
    assert "--weight" in _fails("sites", "fire", "--period", "2026-10", "--weight", "x",
                                "--url", url)  # fmt: skip
    assert "no column" in _fails("sites", "fire", "--weight", "households", "--url", url)


def test_sites_refuses_bad_input(url: str) -> None:
    assert "KIND" in _fails("sites", "dragons", "--url", url)
    assert "--model" in _fails("sites", "fire", "--model", "best", "--url", url)


def test_workload_of_the_simulated_day(url: str, tmp_path: Path) -> None:
    target = tmp_path / "workload.parquet"
    output = _ok("workload", "--period", "2026-10", "--by", "unit", "--out", str(target),
                 "--url", url)  # fmt: skip
    assert "2026-10:" in output and "Gini of units" in output
    table = pd.read_parquet(target)
    assert {"unit_id", "calls", "busy_h", "utilisation", "response_p90_min"} <= set(table.columns)
    assert table["calls"].sum() > 0
    assert "geometry" in _fails("workload", "--period", "2026-10", "--out", "w.gpkg",
                                "--url", url)  # fmt: skip


def test_coverage_and_hotspots_export_with_polygons(url: str, tmp_path: Path) -> None:
    target = tmp_path / "coverage.gpkg"
    _ok("coverage", "fire", "--out", str(target), "--url", url)
    table = gpd.read_file(target)
    assert len(table) == 995 and table.geometry.notna().all()
    spots = tmp_path / "spots.geojson"
    _ok("hotspots", "--period", "2026-10", "--out", str(spots), "--url", url)
    assert {"count", "gi_star", "spot"} <= set(gpd.read_file(spots).columns)


def test_isochrone_and_workload_read_either_store(reference_store_url: str) -> None:
    output = _ok("isochrone", "104.05", "30.69", "--minutes", "3", "--url", reference_store_url)
    assert "within 3 min" in output
    output = _ok("workload", "--period", "2025-01", "--url", reference_store_url)
    assert "2025-01: 0 calls on 0 incidents" in output
