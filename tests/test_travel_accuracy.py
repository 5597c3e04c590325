"""Travel times on the main roads against the full OSM street network of eastern Chengdu."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from gridgov.analysis import travel_accuracy as ta
from gridgov.network import RoadNetwork, build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.roads import OSM_SPEEDS_KMH, SPEEDS_KMH, read_osm
from gridgov.settings import get_settings

CHENGDU_OSM = get_settings().data_dir / "osm" / "chengdu_2018_east.osm.gz"


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def main_roads(ref: ReferenceDistrict) -> RoadNetwork:
    return build_network(ref.gdf_nodes, ref.gdf_links)


@pytest.fixture(scope="module")
def osm() -> RoadNetwork:
    nodes, links = read_osm(CHENGDU_OSM)
    return build_network(nodes, links, speeds_kmh=ta.matched_speeds())


def test_matched_classes_drive_at_the_reference_speeds() -> None:
    speeds = ta.matched_speeds()
    assert speeds["primary"] == SPEEDS_KMH["arterial"]
    assert speeds["trunk"] == SPEEDS_KMH["urban_expressway"]
    assert speeds["motorway"] == SPEEDS_KMH["expressway"]
    assert speeds["residential"] == OSM_SPEEDS_KMH["residential"]  # no main-road counterpart


def test_the_real_chinese_extract_reads_with_names_classes_and_one_ways(osm: RoadNetwork) -> None:
    links = osm.gdf_links
    named = links["road_name"].astype(str)
    assert named.str.contains("路").mean() > 0.3  # Chinese street names (name / name:zh)
    assert {"primary", "secondary", "residential", "service"} <= set(links["road_class"])
    assert links["oneway"].any() and not links["oneway"].all()
    assert osm.describe()["modes"]["drive"]["nodes"] > 2000


def test_the_comparison_on_the_covered_part_of_jinniu(
    ref: ReferenceDistrict, main_roads: RoadNetwork, osm: RoadNetwork
) -> None:
    result = ta.compare_networks(ref.gdf_areas, ref.gdf_units, main_roads, osm)
    s = result.summary
    assert list(s.index) == [*ta.DEFAULT_KINDS, "all"]
    # A fifth to a third of the district's 10,000 micro-grids lie in the extract.
    assert 2000 < s.loc["fire", "areas"] < 3500
    assert s.loc["all", "unreached_either"] == 0
    assert 0.0 <= s.loc["all", "changed_share"] < 0.6
    assert s.loc["all", "p10_diff_s"] < s.loc["all", "median_diff_s"] < s.loc["all", "p90_diff_s"]
    table = result.areas
    both = table[np.isfinite(table["diff_s"])]
    np.testing.assert_allclose(
        both["diff_s"], both["time_osm_s"] - both["time_reference_s"], rtol=1e-12
    )
    assert (table["changed"] == (table["unit_reference"] != table["unit_osm"])).all()


def test_the_same_network_on_both_sides_changes_nothing(
    ref: ReferenceDistrict, main_roads: RoadNetwork
) -> None:
    box = shapely.box(104.03, 30.66, 104.07, 30.70)
    result = ta.compare_networks(
        ref.gdf_areas, ref.gdf_units, main_roads, main_roads, within=box, level="grid"
    )
    assert (result.summary["median_abs_diff_s"] == 0).all()
    assert (result.summary["changed_share"] == 0).all()
