"""A wrong CRS label is refused on validate and load, with a message naming the likely CRS.

The issue's case: a GeoPackage of degree coordinates labelled EPSG:3857 used to pass and
replace the store with a district of 0 m² near (0, 0). The converse (metres labelled as
degrees) names Web Mercator or a UTM zone.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from typer.testing import CliRunner

from gridgov import store
from gridgov.areas import read_areas
from gridgov.cli import app
from gridgov.crs import likely_crs, mislabelled_degrees

SMALL_AREAS = Path(__file__).parent / "data" / "small_areas.geojson"


def _relabelled(tmp_path: Path, to_crs: str | None, label: str) -> Path:
    gdf = gpd.read_file(SMALL_AREAS)
    if to_crs is not None:
        gdf = gdf.to_crs(to_crs)
    out = tmp_path / f"areas-{label.replace(':', '')}.gpkg"
    gdf.set_crs(label, allow_override=True).to_file(out, driver="GPKG")
    return out


def test_degrees_labelled_web_mercator_are_refused_and_the_store_is_unchanged(
    tmp_path: Path,
) -> None:
    path = _relabelled(tmp_path, None, "EPSG:3857")
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "EPSG:4326" in said and "far from any plausible place" in said
    url = f"sqlite:///{tmp_path / 'gridgov.db'}"
    store.init_db(url)
    engine = store.open_store(url)
    store.load_district(engine, read_areas(SMALL_AREAS))
    before = store.read_stored_areas(engine)
    result = runner.invoke(app, ["load", str(path), "--url", url])
    assert result.exit_code == 1, result.output
    assert "EPSG:4326" in " ".join(result.output.split())
    after = store.read_stored_areas(engine)
    assert sorted(after["code"]) == sorted(before["code"])
    assert after.geometry.area.sum() == pytest.approx(before.geometry.area.sum())
    engine.dispose()


@pytest.mark.parametrize(
    ("metric", "named"), [("EPSG:3857", "EPSG:3857"), ("EPSG:32648", "EPSG:32648")]
)
def test_metres_labelled_as_degrees_name_the_likely_crs(
    tmp_path: Path, metric: str, named: str
) -> None:
    path = _relabelled(tmp_path, metric, "EPSG:4326")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert named in " ".join(result.output.split())


def test_the_guesses() -> None:
    assert "EPSG:4326" in likely_crs((104.0, 30.6, 104.1, 30.7))
    assert "gcj02" in likely_crs((104.0, 30.6, 104.1, 30.7))
    assert "gcj02" not in likely_crs((24.9, 60.1, 25.0, 60.2))  # Helsinki
    assert "EPSG:3857" in likely_crs((11_580_000, 3_590_000, 11_590_000, 3_600_000))
    assert "EPSG:32648" in likely_crs((400_000, 3_390_000, 410_000, 3_400_000))
    assert mislabelled_degrees((400_000, 3_390_000, 410_000, 3_400_000), "EPSG:32648") is None
    assert mislabelled_degrees((104.0, 30.6, 104.1, 30.7), "wgs84") is None
    assert mislabelled_degrees((104.0, 30.6, 104.1, 30.7), "EPSG:4490") is None  # geographic
