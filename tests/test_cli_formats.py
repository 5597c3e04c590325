"""Input files through the command: a custom matters catalogue stored by `gridgov load --catalog`
and read from the store everywhere, and `--layer` for multi-layer files, on both stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
import yaml
from fastapi.testclient import TestClient
from helpers import CUSTOM, custom_catalog
from shapely.geometry import Point
from typer.testing import CliRunner, Result

from api.app import create_app
from gridgov import store
from gridgov.catalog import load_catalog
from gridgov.cli import app
from gridgov.settings import PROJECT_ROOT, get_settings

runner = CliRunner()

# A point in 西安路 street, on the reference roads (as in test_cli_dispatch.py).
LON, LAT = 104.05, 30.69


def _run(*args: str) -> Result:
    return runner.invoke(app, list(args))


@pytest.fixture
def no_data_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No GRIDGOV_DATA_DIR and no settings cached from before: only the defaults count."""
    monkeypatch.delenv("GRIDGOV_DATA_DIR", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --------------------------------------------------------------------------------------------
# the catalogue lives in the store
# --------------------------------------------------------------------------------------------


def test_a_custom_catalogue_is_dispatched_and_served_from_the_store(
    store_url: str, tmp_path: Path, no_data_dir: None
) -> None:
    assert CUSTOM not in load_catalog()  # the configured file does not know it
    custom = custom_catalog(tmp_path / "custom.yaml")
    assert _run("init", "--url", store_url).exit_code == 0
    loaded = _run("load", "--catalog", str(custom), "--url", store_url)
    assert loaded.exit_code == 0, loaded.output
    assert f"{len(load_catalog()) + 1} matters from {custom}" in loaded.output

    get_settings.cache_clear()
    result = _run("dispatch", str(LON), str(LAT), CUSTOM, "--id", "T-CUSTOM-1", "--url", store_url)
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["matter_code"] == CUSTOM
    kinds = {a["kind"] for a in decision["assignments"]}
    assert kinds == {"enforcement", "police"}

    engine = store.open_store(store_url)
    catalog = store.read_catalog(engine)
    assert catalog.version == "custom-1"
    assert catalog.codes == (*load_catalog().codes, CUSTOM)  # the file's order
    assert catalog.get(CUSTOM).assist[0] == "police"
    assert catalog.domain("CUSTOM").en == "custom matters"
    with TestClient(create_app(engine=engine)) as client:
        services = client.get("/open311/v2/services.json").json()
        definition = client.get(f"/open311/v2/services/{CUSTOM}.json")
    listed = {s["service_code"]: s for s in services}
    assert listed[CUSTOM]["service_name"] == "Shared bikes piled up"
    assert listed[CUSTOM]["group"] == "custom matters"
    assert definition.status_code == 200, definition.text


def test_maps_name_the_matters_of_the_stored_catalogue(
    sqlite_url: str, tmp_path: Path, no_data_dir: None
) -> None:
    custom = custom_catalog(tmp_path / "custom.yaml")
    assert _run("init", "--url", sqlite_url).exit_code == 0
    assert _run("load", "--catalog", str(custom), "--url", sqlite_url).exit_code == 0
    get_settings.cache_clear()
    out = tmp_path / "cc.html"
    result = _run("map", "command-centre", "--url", sqlite_url, "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    # The dictionary the page embeds names the stored catalogue's own matter.
    assert "Shared bikes piled up" in page


def test_a_bad_catalogue_is_refused_before_anything_is_loaded(
    sqlite_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load((PROJECT_ROOT / "data" / "catalog.yaml").read_text(encoding="utf-8"))
    data["matters"][0]["asist"] = ["police"]
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert _run("init", "--url", sqlite_url).exit_code == 0
    result = _run("load", "--catalog", str(bad), "--url", sqlite_url)
    assert result.exit_code == 1
    assert "unknown field(s) asist" in result.stderr and "Traceback" not in result.output
    assert store.summarize(store.open_store(sqlite_url))["matters"] == 0


def test_an_export_keeps_its_catalogue_with_its_domain_names(
    sqlite_url: str, tmp_path: Path, no_data_dir: None
) -> None:
    custom = custom_catalog(tmp_path / "custom.yaml")
    assert _run("init", "--url", sqlite_url).exit_code == 0
    assert _run("load", "--catalog", str(custom), "--url", sqlite_url).exit_code == 0
    exported = tmp_path / "district.gpkg"
    assert _run("export", str(exported), "--url", sqlite_url).exit_code == 0
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    assert _run("init", "--url", copy).exit_code == 0
    result = _run("load", str(exported), "--url", copy)
    assert result.exit_code == 0, result.output
    original = store.read_catalog(store.open_store(sqlite_url))
    again = store.read_catalog(store.open_store(copy))
    assert again == original


def test_before_any_load_the_configured_file_is_the_catalogue(sqlite_url: str) -> None:
    assert _run("init", "--url", sqlite_url).exit_code == 0
    assert store.read_catalog(store.open_store(sqlite_url)) == load_catalog()


# --------------------------------------------------------------------------------------------
# --layer
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> Any:
    from gridgov.reference import read_reference_district

    return read_reference_district()


def _street(reference: Any) -> gpd.GeoDataFrame:
    """One street with its communities, grids and micro-grids: a small valid hierarchy."""
    areas = reference.gdf_areas
    street = areas[areas["level"] == "street"].iloc[0]["code"]
    keep = areas["code"].str.startswith(street[:9]) | (areas["level"] == "district")
    out = areas[keep].copy()
    # The district shrinks to this street, so that the street covers it.
    street_shape = out.loc[out["code"] == street, "geometry"].iloc[0]
    out.loc[out["level"] == "district", "geometry"] = street_shape
    return out


def test_several_area_layers_need_layer_and_a_wrong_name_is_clear(
    reference: Any, tmp_path: Path
) -> None:
    areas = _street(reference)
    gpkg = tmp_path / "city.gpkg"
    areas.to_file(gpkg, layer="areas_2024")
    areas.to_file(gpkg, layer="areas_2025")
    gpd.GeoDataFrame({"name": ["boundary"]}, geometry=[areas.union_all()], crs=4326).to_file(
        gpkg, layer="boundary"
    )
    refused = _run("validate", str(gpkg))
    assert refused.exit_code == 1
    message = refused.stderr
    assert "several layers" in message and "--layer" in message
    for name in ("areas_2024", "areas_2025", "boundary"):
        assert name in message
    chosen = _run("validate", str(gpkg), "--layer", "areas_2025")
    assert chosen.exit_code == 0, chosen.output
    assert f"ok: {len(areas)} areas" in chosen.output
    missing = _run("validate", str(gpkg), "--layer", "areas_2026")
    assert missing.exit_code == 1
    assert "has no layer 'areas_2026'" in missing.stderr and "areas_2024 (" in missing.stderr


def test_the_one_layer_with_the_area_columns_is_read_without_asking(
    reference: Any, tmp_path: Path
) -> None:
    areas = _street(reference)
    gpkg = tmp_path / "with_boundary.gpkg"
    gpd.GeoDataFrame({"name": ["boundary"]}, geometry=[areas.union_all()], crs=4326).to_file(
        gpkg, layer="boundary"
    )
    areas.to_file(gpkg, layer="jinniu")
    result = _run("validate", str(gpkg))
    assert result.exit_code == 0, result.output
    assert f"ok: {len(areas)} areas" in result.output


def test_load_reads_the_named_layers_of_one_geopackage(
    reference: Any, tmp_path: Path, sqlite_url: str
) -> None:
    areas = _street(reference)
    street = areas[areas["level"] == "street"].iloc[0]["code"]
    offices = reference.gdf_offices[reference.gdf_offices["street_code"] == street]
    units = reference.gdf_units[reference.gdf_units["street_code"] == street]
    gpkg = tmp_path / "mine.gpkg"
    areas.to_file(gpkg, layer="hierarchy")
    areas[areas["level"] == "street"].to_file(gpkg, layer="streets_only")
    offices.to_file(gpkg, layer="stations")
    units.to_file(gpkg, layer="teams")
    gpd.GeoDataFrame({"name": ["a camera"]}, geometry=[Point(104.05, 30.69)], crs=4326).to_file(
        gpkg, layer="cameras"
    )
    assert _run("init", "--url", sqlite_url).exit_code == 0
    # Two polygon layers both hold streets: ambiguous, nothing loaded.
    refused = _run("load", str(gpkg), "--url", sqlite_url)
    assert refused.exit_code == 1 and "--layer" in refused.stderr
    args = ["load", str(gpkg), "--layer", "hierarchy", "--url", sqlite_url]
    result = _run(*args, "--offices", str(gpkg), "--units", str(gpkg))
    assert result.exit_code == 1  # stations and teams both have the office columns
    assert "--layer" in result.stderr and "stations" in result.stderr
    layered = [
        *args,
        "--offices",
        str(gpkg),
        "--offices-layer",
        "stations",
        "--units",
        str(gpkg),
        "--units-layer",
        "teams",
    ]
    result = _run(*layered)
    assert result.exit_code == 0, result.output
    info = store.summarize(store.open_store(sqlite_url))
    assert sum(info["areas"].values()) == len(areas)
    assert info["units"] == len(units)
