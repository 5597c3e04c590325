"""A district whose road table names its nodes with text (SUMO's ``J75``, ``cluster_12_34``).

Loaded and dispatched through the CLI only, on both stores, and compared with the same roads
under whole-number ids: the same units at the same times.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from gridgov.cli import app
from gridgov.reference import read_reference_district

runner = CliRunner()

# A point in 西安路 street, on the reference roads.
LON, LAT = 104.05, 30.69


def _run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def _text_id(node: int) -> str:
    # Both of SUMO's styles: plain junctions and joined clusters.
    return f"J{node}" if node % 3 else f"cluster_{node}_{node + 1}"


def _write_link_table(ref: Any, folder: Path, text: bool) -> Path:
    folder.mkdir()
    name = _text_id if text else int
    nodes = pd.DataFrame(
        {
            "Node": [name(int(n)) for n in ref.gdf_nodes["node_id"]],
            "Longitude": ref.gdf_nodes.geometry.x,
            "Latitude": ref.gdf_nodes.geometry.y,
        }
    )
    links = pd.DataFrame(
        {
            "Node_Start": [name(int(n)) for n in ref.gdf_links["u"]],
            "Node_End": [name(int(n)) for n in ref.gdf_links["v"]],
            "Length": ref.gdf_links["length_m"],
        }
    )
    nodes.to_csv(folder / "roads_nodes.csv", index=False)
    links.to_csv(folder / "roads_links.csv", index=False)
    return folder


def _load_and_dispatch(url: str, district: dict[str, Path], roads: Path) -> dict[str, Any]:
    assert _run("init", "--url", url).exit_code == 0
    result = _run(
        "load",
        str(district["areas"]),
        "--units",
        str(district["units"]),
        "--offices",
        str(district["offices"]),
        "--roads",
        str(roads),
        "--url",
        url,
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    result = _run("dispatch", str(LON), str(LAT), "UM-03", "--id", "T-TEXT-1", "--url", url)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.mark.slow
def test_a_road_table_with_text_node_ids_loads_and_dispatches(
    store_url: str, tmp_path: Path
) -> None:
    ref = read_reference_district()
    district = {
        "areas": tmp_path / "areas.parquet",
        "units": tmp_path / "units.parquet",
        "offices": tmp_path / "offices.geojson",
    }
    ref.gdf_areas.to_parquet(district["areas"])
    ref.gdf_units.to_parquet(district["units"])
    ref.gdf_offices.to_file(district["offices"])
    text_roads = _write_link_table(ref, tmp_path / "text_roads", text=True)
    number_roads = _write_link_table(ref, tmp_path / "number_roads", text=False)

    got = _load_and_dispatch(store_url, district, text_roads)
    want = _load_and_dispatch(f"sqlite:///{tmp_path / 'numbers.db'}", district, number_roads)

    assert got["status"] == "assigned"
    assert got["explanation"]["travel_model"]["kind"] == "network"
    assert [(a["kind"], a["unit_id"]) for a in got["assignments"]] == [
        (a["kind"], a["unit_id"]) for a in want["assignments"]
    ]
    for a, b in zip(got["assignments"], want["assignments"], strict=True):
        assert a["time_s"] == pytest.approx(b["time_s"], abs=1e-6)
        assert a["route"]["type"] == "LineString"
    # The explanation names the links the incident is joined to, end to end.
    snap = got["explanation"]["incident"]["snap"]
    assert snap and all(mode["links"] for mode in snap.values())
    for mode in snap.values():
        for link in mode["links"]:
            assert {"from", "to", "access_m"} <= set(link)


def test_text_node_ids_route_like_numbers_and_show_as_given() -> None:
    from gridgov.network import build_network

    ref = read_reference_district()
    nodes, links = ref.gdf_nodes.copy(), ref.gdf_links.copy()
    nodes["node_id"] = [_text_id(int(n)) for n in nodes["node_id"]]
    links["u"] = [_text_id(int(n)) for n in links["u"]]
    links["v"] = [_text_id(int(n)) for n in links["v"]]
    text, numbers = build_network(nodes, links), build_network(ref.gdf_nodes, ref.gdf_links)
    lon, lat = [104.03, 104.05, 104.06], [30.70, 30.69, 30.68]
    a, b = text.snap(lon, lat, "drive"), numbers.snap(lon, lat, "drive")
    assert list(text.field_to(a.take(0)).times_from(a)) == list(
        numbers.field_to(b.take(0)).times_from(b)
    )
    route_a, route_b = text.route(a.take(2), a.take(0)), numbers.route(b.take(2), b.take(0))
    assert route_b.node_ids and route_a.node_ids == tuple(_text_id(n) for n in route_b.node_ids)
    assert {link["from"] for link in text.joined_links(a.take(1))} <= set(nodes["node_id"])
