"""Reading OpenStreetMap extracts into road networks (gridgov.roads.read_osm)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

from gridgov.errors import DataFileError
from gridgov.network import RoadNetwork, build_network, read_network
from gridgov.reference import read_reference_district
from gridgov.roads import OSM_SPEEDS_KMH, read_osm
from gridgov.settings import get_settings

HELSINKI = get_settings().data_dir / "osm" / "helsinki.osm.pbf"
MODES = ("drive", "bike", "walk")
GEOD = Geod(ellps="WGS84")


@pytest.fixture(scope="module")
def helsinki() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    assert HELSINKI.is_file(), f"{HELSINKI} is missing"
    return read_osm(HELSINKI)


@pytest.fixture(scope="module")
def helsinki_net(helsinki: tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]) -> RoadNetwork:
    return build_network(*helsinki)


def test_columns_match_the_link_table_format(helsinki) -> None:
    gdf_nodes, gdf_links = helsinki
    ref = read_reference_district()
    assert list(gdf_links.columns) == list(ref.gdf_links.columns)
    assert list(gdf_nodes.columns) == list(ref.gdf_nodes.columns)
    assert gdf_links.crs == "EPSG:4326"
    assert gdf_nodes.crs == "EPSG:4326"
    assert not gdf_nodes["in_district"].any()
    assert (gdf_links["class_source"] == "osm").all()
    assert set(gdf_links["road_class"]) <= set(OSM_SPEEDS_KMH)


def test_counts_are_sane(helsinki) -> None:
    gdf_nodes, gdf_links = helsinki
    assert 2_000 < len(gdf_nodes) < 20_000
    assert 4_000 < len(gdf_links) < 40_000
    assert gdf_links["link_id"].is_unique
    assert gdf_nodes["node_id"].is_unique
    assert set(gdf_links["u"]) | set(gdf_links["v"]) == set(gdf_nodes["node_id"])
    assert (gdf_links["length_m"] > 0).all()
    assert gdf_links["length_m"].median() < 200  # split at intersections, not whole ways
    assert (gdf_links["road_name"] != "").mean() > 0.2
    # Real multi-vertex geometries survive the split.
    assert (shapely.get_num_coordinates(gdf_links.geometry.to_numpy()) > 2).mean() > 0.2


def test_every_link_runs_from_u_to_v(helsinki) -> None:
    gdf_nodes, gdf_links = helsinki
    xy = pd.DataFrame(
        {"x": gdf_nodes.geometry.x.to_numpy(), "y": gdf_nodes.geometry.y.to_numpy()},
        index=gdf_nodes["node_id"].to_numpy(),
    )
    geoms = gdf_links.geometry.to_numpy()
    start = shapely.get_coordinates(shapely.get_point(geoms, 0))
    end = shapely.get_coordinates(shapely.get_point(geoms, -1))
    np.testing.assert_array_equal(start, xy.loc[gdf_links["u"]].to_numpy())
    np.testing.assert_array_equal(end, xy.loc[gdf_links["v"]].to_numpy())


def test_lengths_are_geodesic(helsinki) -> None:
    _, gdf_links = helsinki
    sample = gdf_links.sample(300, random_state=1)
    want = [GEOD.geometry_length(g) for g in sample.geometry]
    np.testing.assert_allclose(sample["length_m"], want, rtol=1e-9)


def test_one_way_roads_have_one_direction(helsinki) -> None:
    _, gdf_links = helsinki
    key = pd.MultiIndex.from_arrays([gdf_links["u"], gdf_links["v"]])
    back = pd.MultiIndex.from_arrays([gdf_links["v"], gdf_links["u"]])
    has_back = back.isin(key)
    one = gdf_links["oneway"].to_numpy()
    assert one.sum() > 50
    drive = (gdf_links["speed_drive_kmh"] > 0).to_numpy()
    # A two-way road always has its reverse link; a one-way road has none open to cars.
    assert has_back[~one].all()
    driven_back = pd.MultiIndex.from_arrays(
        [gdf_links.loc[drive, "v"], gdf_links.loc[drive, "u"]]
    ).isin(pd.MultiIndex.from_arrays([gdf_links.loc[drive, "u"], gdf_links.loc[drive, "v"]]))
    one_driven = one[drive]
    assert driven_back[~one_driven].all()
    assert driven_back[one_driven].mean() < 0.2  # only where another way links the same nodes


def test_network_keeps_a_large_part_and_reports_drops(helsinki_net: RoadNetwork) -> None:
    info = helsinki_net.describe()
    json.dumps(info)
    assert info["metric_crs"] == "EPSG:32635"  # Helsinki's UTM zone, not Chengdu's
    for mode in MODES:
        kept = info["modes"][mode]["nodes"]
        dropped = helsinki_net.dropped[mode]
        assert kept > 1_000
        assert set(dropped) == {"nodes", "links"}
        assert kept > 3 * dropped["nodes"]
        n_kept = int(helsinki_net.gdf_links[f"kept_{mode}"].sum())
        n_open = int((helsinki_net.gdf_links[f"speed_{mode}_kmh"] > 0).sum())
        assert n_kept + dropped["links"] == n_open
    assert info["modes"]["walk"]["nodes"] > info["modes"]["drive"]["nodes"]
    assert info["speeds_kmh"]["footway"]["drive"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_route_between_two_points(helsinki_net: RoadNetwork, mode: str) -> None:
    # Kauppatori (market square) to the Central Railway Station.
    points = helsinki_net.snap([24.9525, 24.9414], [60.1675, 60.1710], mode)
    assert not points.far.any()
    source, target = points.take(0), points.take(1)
    route = helsinki_net.route(source, target)
    field = helsinki_net.field_to(target)
    assert route.time_s == field.times_from(source)[0]
    assert 500 < route.length_m < 2_500
    assert len(route.node_ids) > 3
    assert tuple(route.geometry.coords[0]) == (24.9525, 60.1675)
    assert tuple(route.geometry.coords[-1]) == (24.9414, 60.1710)
    assert GEOD.geometry_length(route.geometry) == pytest.approx(route.length_m, rel=5e-3)
    assert helsinki_net.lower_bound_s(source, target)[0] <= route.time_s


def test_read_network_reads_pbf(helsinki_net: RoadNetwork) -> None:
    again = read_network(HELSINKI)
    assert again.describe() == helsinki_net.describe()


def _node(i: int, lon: float, lat: float) -> str:
    return f'<node id="{i}" version="1" lat="{lat}" lon="{lon}"/>'


def _way(i: int, refs: list[int], **tags: str) -> str:
    nds = "".join(f'<nd ref="{r}"/>' for r in refs)
    tag = "".join(f'<tag k="{k.replace("__", ":")}" v="{v}"/>' for k, v in tags.items())
    return f'<way id="{i}" version="1">{nds}{tag}</way>'


@pytest.fixture
def tiny_osm(tmp_path: Path) -> Path:
    """A hand-made extract with one way per rule."""
    x, y, d = 24.94, 60.17, 0.001
    nodes = [
        _node(1, x, y),
        _node(2, x + d, y),
        _node(3, x + 2 * d, y),
        _node(4, x + d, y + d),
        _node(5, x + 2 * d, y + d),
        _node(6, x + 3 * d, y + d),
        _node(7, x + 4 * d, y + d),
        _node(8, x + 5 * d, y + d),
        _node(9, x + 4.5 * d, y + 2 * d),
        _node(10, x + 6 * d, y + d),
        _node(11, x + 8 * d, y + d),
        _node(12, x + 9 * d, y + d),
        _node(13, x + 2 * d, y + 3 * d),
    ]
    ways = [
        _way(100, [1, 2, 3], highway="residential", name="Main"),
        _way(101, [2, 4], highway="residential", oneway="yes"),
        _way(102, [4, 5], highway="footway"),
        _way(103, [3, 5], highway="tertiary", oneway="-1", maxspeed="20"),
        _way(104, [5, 6], highway="motorway"),
        _way(105, [6, 7], highway="motorway", oneway="no"),
        _way(106, [7, 8, 9, 7], highway="primary", junction="roundabout"),
        _way(107, [1, 4], highway="construction"),
        # Node 99 is missing from the extract: the way is cut there.
        _way(108, [8, 10, 99, 11, 12], highway="residential"),
        _way(109, [4, 13], highway="residential", oneway="yes", oneway__bicycle="no"),
    ]
    path = tmp_path / "tiny.osm"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">'
        + "".join(nodes)
        + "".join(ways)
        + "</osm>",
        encoding="utf-8",
    )
    return path


def _links(gdf_links: gpd.GeoDataFrame) -> dict[tuple[int, int], pd.Series]:
    return {(int(r.u), int(r.v)): r for r in gdf_links.itertuples()}


def test_tag_rules_on_a_tiny_extract(tiny_osm: Path) -> None:
    gdf_nodes, gdf_links = read_osm(tiny_osm)
    links = _links(gdf_links)
    assert set(links) == {
        (1, 2), (2, 1), (2, 3), (3, 2),  # split at node 2 (shared with way 101)
        (2, 4),  # oneway=yes
        (4, 5), (5, 4),  # footway, both ways
        (5, 3),  # oneway=-1 runs against the drawing order
        (5, 6),  # motorway implies one-way
        (6, 7), (7, 6),  # unless oneway=no
        (7, 8), (8, 7),  # roundabout split at node 8 (shared with way 108), one-way
        (8, 10), (10, 8), (11, 12), (12, 11),  # cut at the missing node 99
        (4, 13), (13, 4),  # one-way with a bike contraflow
    }  # fmt: skip
    assert 99 not in set(gdf_nodes["node_id"])
    assert 9 not in set(gdf_nodes["node_id"])  # inside a link, not an intersection
    ring = links[(8, 7)]
    assert shapely.get_num_coordinates(ring.geometry) == 3  # 8 -> 9 -> 7
    assert links[(1, 2)].road_name == "Main"
    assert links[(1, 2)].road_class == "residential"
    assert not links[(1, 2)].oneway
    assert links[(2, 4)].oneway
    assert links[(5, 3)].speed_drive_kmh == 20.0
    assert links[(4, 5)].speed_drive_kmh == 0.0
    assert links[(4, 5)].speed_walk_kmh > 0
    assert links[(5, 6)].speed_walk_kmh == links[(5, 6)].speed_bike_kmh == 0.0
    assert links[(13, 4)].speed_drive_kmh == 0.0
    assert links[(13, 4)].speed_bike_kmh > 0
    assert links[(4, 13)].speed_drive_kmh > 0
    assert "construction" not in set(gdf_links["road_class"])


def test_bbox_keeps_links_with_both_ends_inside(tiny_osm: Path) -> None:
    x, y, d = 24.94, 60.17, 0.001
    _, gdf_links = read_osm(tiny_osm, bbox=(x - d / 2, y - d / 2, x + 2.5 * d, y + d / 2))
    assert set(_links(gdf_links)) == {(1, 2), (2, 1), (2, 3), (3, 2)}
    with pytest.raises(DataFileError, match="no roads"):
        read_osm(tiny_osm, bbox=(0.0, 0.0, 1.0, 1.0))


def test_walking_follows_one_way_roads_backwards(tiny_osm: Path) -> None:
    net = build_network(*read_osm(tiny_osm))
    walk = net.edges("walk")
    drive = net.edges("drive")
    pairs_walk = set(zip(walk["u"], walk["v"], strict=True))
    pairs_drive = set(zip(drive["u"], drive["v"], strict=True))
    assert (4, 2) in pairs_walk
    assert (4, 2) not in pairs_drive
    # The stub beyond the cut (11-12) is an island for every mode.
    for mode in MODES:
        assert net.dropped[mode]["nodes"] >= 2


def test_read_osm_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such"):
        read_osm(tmp_path / "nowhere.osm.pbf")
    junk = tmp_path / "junk.osm.pbf"
    junk.write_bytes(b"this is not a protobuf file at all")
    with pytest.raises(DataFileError):
        read_osm(junk)
    empty = tmp_path / "empty.osm"
    empty.write_text('<?xml version="1.0"?><osm version="0.6"></osm>', encoding="utf-8")
    with pytest.raises(DataFileError, match="no roads"):
        read_osm(empty)
    with pytest.raises(DataFileError):
        read_network(junk)
