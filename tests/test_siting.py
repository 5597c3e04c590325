"""Station siting: spopt's p-median and maximal covering against brute force."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from gridgov.analysis import siting
from gridgov.coverage import count_microgrids
from gridgov.errors import InputError
from gridgov.network import build_network
from gridgov.reference import read_reference_district


def _random_problem(seed: int, n_demand: int = 14, n_sites: int = 8) -> siting.SitingProblem:
    """A small instance: points on a plane, cost = distance (some pairs unreachable)."""
    rng = np.random.default_rng(seed)
    demand_xy = rng.uniform(0, 1000, (n_demand, 2))
    site_xy = rng.uniform(0, 1000, (n_sites, 2))
    cost = np.hypot(*(demand_xy[:, None, :] - site_xy[None, :, :]).transpose(2, 0, 1)) / 8.0
    cost[rng.random(cost.shape) < 0.1] = np.inf
    sites = gpd.GeoDataFrame(
        {"site_id": [f"s{j}" for j in range(n_sites)], "existing": np.arange(n_sites) < 2},
        geometry=shapely.points(site_xy),
    )
    demand = gpd.GeoDataFrame(
        {"code": [f"d{i}" for i in range(n_demand)], "weight": rng.integers(1, 9, n_demand)},
        geometry=shapely.points(demand_xy),
    )
    return siting.SitingProblem(
        cost=cost, weights=demand["weight"].to_numpy(dtype=float), sites=sites, demand=demand
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("keep", [True, False])
def test_p_median_matches_brute_force(seed: int, keep: bool) -> None:
    problem = _random_problem(seed)
    result = siting.p_median(problem, 2, keep_existing=keep)
    _, best = siting.brute_force(problem, 2, "p-median", keep_existing=keep)
    got = siting.objective_value(problem, result.chosen, "p-median")
    assert got == pytest.approx(best, rel=1e-9)
    assert result.summary["objective"] == pytest.approx(best, rel=1e-6)
    assert len(result.chosen) == 4
    if keep:
        assert set(problem.existing) <= set(result.chosen)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("keep", [True, False])
def test_max_cover_matches_brute_force(seed: int, keep: bool) -> None:
    problem = _random_problem(seed)
    result = siting.max_cover(problem, 2, standard_s=40.0, keep_existing=keep)
    _, best = siting.brute_force(problem, 2, "max-cover", standard_s=40.0, keep_existing=keep)
    assert siting.objective_value(problem, result.chosen, "max-cover", 40.0) == best
    assert result.summary["covered_share_after"] == pytest.approx(best / problem.weights.sum())
    assert len(result.chosen) == 4
    if keep:
        assert set(problem.existing) <= set(result.chosen)
        assert result.summary["covered_share_after"] >= result.summary["covered_share_before"]


def test_bad_requests_are_refused() -> None:
    problem = _random_problem(1)
    with pytest.raises(InputError, match="add must be"):
        siting.p_median(problem, 0)
    with pytest.raises(InputError, match="add must be"):
        siting.max_cover(problem, 7, standard_s=60.0)
    with pytest.raises(InputError, match="standard"):
        siting.max_cover(problem, 1, standard_s=-1.0)


@pytest.mark.slow
def test_one_more_fire_station_improves_the_reference_districts_coverage() -> None:
    ref = read_reference_district()
    net = build_network(ref.gdf_nodes, ref.gdf_links)
    areas = ref.gdf_areas
    grids = areas[areas["level"] == "grid"]
    demand = siting.demand_points(grids, count_microgrids(areas, "grid"))
    district = areas[areas["level"] == "district"].geometry.iloc[0]
    candidates = siting.spread_nodes(ref.gdf_nodes, 25, within=district)
    stations = ref.gdf_units[ref.gdf_units["kind"] == "fire"].drop_duplicates("office_id")
    problem = siting.build_problem(net, demand, candidates, stations[["office_id", "geometry"]])
    # The matrix holds exactly the times of a plain per-site search (here, the first site).
    first = net.snap([stations.geometry.x.iloc[0]], [stations.geometry.y.iloc[0]], "drive")
    spot = demand.geometry.iloc[0]
    target = net.snap([spot.x], [spot.y], "drive")
    exact = net.field_to(target, 3600.0).times_from(first)[0]
    assert problem.cost[0, 0] == pytest.approx(exact, rel=1e-9)

    result = siting.max_cover(problem, 1, standard_s=siting.FIRE_STANDARD_S)
    s = result.summary
    assert len(result.added) == 1
    assert s["covered_share_after"] > s["covered_share_before"]
    assert s["weighted_mean_s_after"] <= s["weighted_mean_s_before"]
