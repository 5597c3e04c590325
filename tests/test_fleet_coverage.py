"""Every kind's coverage in one call equals coverage_times, area by area (gridgov.analysis)."""

from __future__ import annotations

import numpy as np
import pytest

from gridgov.analysis.fleet_coverage import fleet_coverage
from gridgov.coverage import coverage_times
from gridgov.errors import InputError
from gridgov.network import RoadNetwork, build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.straight_line import StraightLine


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def net(ref: ReferenceDistrict) -> RoadNetwork:
    return build_network(ref.gdf_nodes, ref.gdf_links)


def test_every_kind_matches_the_exact_per_kind_coverage(
    ref: ReferenceDistrict, net: RoadNetwork
) -> None:
    table = fleet_coverage(ref.gdf_areas, ref.gdf_units, net, level="grid", limit_s=900.0)
    kinds = sorted(set(ref.gdf_units["kind"]))
    assert sorted(set(table["kind"])) == kinds
    for kind in kinds:
        exact = coverage_times(ref.gdf_areas, ref.gdf_units, net, kind, limit_s=900.0)
        got = table[table["kind"] == kind].reset_index(drop=True)
        assert got["code"].tolist() == exact["code"].tolist()
        a, b = exact["time_s"].to_numpy(), got["time_s"].to_numpy()
        assert (np.isfinite(a) == np.isfinite(b)).all(), kind
        np.testing.assert_allclose(b[np.isfinite(a)], a[np.isfinite(a)], rtol=1e-9)
        assert got["unit_id"].tolist() == exact["unit_id"].tolist(), kind
    # The 900 s bound leaves some grids unreached for some kind, so both sides are exercised.
    assert np.isinf(table["time_s"]).any() and np.isfinite(table["time_s"]).any()


def test_a_unit_on_the_areas_own_road_is_found_directly(
    ref: ReferenceDistrict, net: RoadNetwork
) -> None:
    # Move a fire unit onto a grid's own point: its time is the two access legs only.
    grid = ref.gdf_areas[ref.gdf_areas["level"] == "grid"].iloc[[10]]
    point = grid.geometry.representative_point().iloc[0]
    units = ref.gdf_units.copy()
    row = units.index[units["unit_id"] == "510106024000-fire-01"][0]
    units.loc[row, "geometry"] = point
    table = fleet_coverage(grid, units, net, kinds=["fire"], level="grid")
    exact = coverage_times(grid, units, net, "fire")
    assert table["time_s"].iloc[0] == pytest.approx(exact["time_s"].iloc[0], rel=1e-9)
    assert table["unit_id"].iloc[0] == "510106024000-fire-01"


def test_straight_lines_are_refused(ref: ReferenceDistrict) -> None:
    with pytest.raises(InputError, match="road network"):
        fleet_coverage(ref.gdf_areas, ref.gdf_units, StraightLine())
