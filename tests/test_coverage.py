"""Coverage, station moves and Gi* hot spots (pure functions of gridgov.coverage)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import box

from gridgov import coverage
from gridgov.errors import InputError
from gridgov.network import RoadNetwork, build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.straight_line import StraightLine

T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def net(ref: ReferenceDistrict) -> RoadNetwork:
    return build_network(ref.gdf_nodes, ref.gdf_links)


def _per_area_search(
    ref: ReferenceDistrict, net: RoadNetwork, kind: str, level: str, limit_s: float
) -> tuple[np.ndarray, list[str | None]]:
    """The plain algorithm: one ``limit_s``-bounded reverse search per area and mode."""
    areas = ref.gdf_areas[ref.gdf_areas["level"] == level]
    units = ref.gdf_units[(ref.gdf_units["kind"] == kind) & ref.gdf_units["on_duty"]]
    points = shapely.point_on_surface(areas.geometry.to_numpy())
    best = np.full(len(areas), np.inf)
    who: list[str | None] = [None] * len(areas)
    for mode, group in units.groupby("travel_mode"):
        src = net.snap(group.geometry.x, group.geometry.y, str(mode))
        ok = np.flatnonzero(~src.far)
        src, ids = src.take(ok), group["unit_id"].to_numpy()[ok]
        dst = net.snap(shapely.get_x(points), shapely.get_y(points), str(mode))
        for i in range(len(areas)):
            if dst.far[i]:
                continue
            times = net.field_to(dst.take(i), limit_s).times_from(src)
            t = float(times.min())
            if math.isfinite(t):
                winner = min(ids[times == t])
                if t < best[i] or (t == best[i] and winner < str(who[i])):
                    best[i], who[i] = t, winner
    return best, who


def _unit_ids(table: pd.DataFrame) -> list[str | None]:
    return [None if pd.isna(u) else str(u) for u in table["unit_id"]]


# --------------------------------------------------------------------------------------------
# coverage_times
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "limit_s"), [("fire", 600.0), ("police", 300.0)])
def test_coverage_times_equal_per_area_searches(
    ref: ReferenceDistrict, net: RoadNetwork, kind: str, limit_s: float
) -> None:
    areas, units = ref.gdf_areas.copy(), ref.gdf_units.copy()
    got = coverage.coverage_times(ref.gdf_areas, ref.gdf_units, net, kind, limit_s=limit_s)
    best, who = _per_area_search(ref, net, kind, "grid", limit_s)
    # The forward-bounded searches give the very same times (bit for bit) and winners.
    np.testing.assert_array_equal(got["time_s"].to_numpy(), best)
    assert _unit_ids(got) == who
    # Some grids lie beyond these limits, so both branches are exercised.
    assert np.isinf(best).any() and np.isfinite(best).any()
    pd.testing.assert_frame_equal(ref.gdf_areas, areas)
    pd.testing.assert_frame_equal(ref.gdf_units, units)


def test_coverage_times_run_from_the_unit_to_the_area(
    ref: ReferenceDistrict, net: RoadNetwork
) -> None:
    got = coverage.coverage_times(ref.gdf_areas, ref.gdf_units, net, "fire", limit_s=3600)
    fire = ref.gdf_units[ref.gdf_units["kind"] == "fire"].set_index("unit_id")
    grids = ref.gdf_areas[ref.gdf_areas["level"] == "grid"]
    for i in (3, 250, 777):
        p = shapely.point_on_surface(grids.geometry.iloc[i])
        unit = fire.loc[got["unit_id"].iloc[i]]
        mode = unit["travel_mode"]
        route = net.route(
            net.snap([unit.geometry.x], [unit.geometry.y], mode), net.snap([p.x], [p.y], mode)
        )
        assert route.time_s == pytest.approx(got["time_s"].iloc[i], rel=1e-9)
    # Fire units stand in pairs at their stations: equal times, the smaller id wins.
    assert got["unit_id"].str.endswith("-01").all()


def test_coverage_times_straight_line(ref: ReferenceDistrict) -> None:
    travel = StraightLine()
    got = coverage.coverage_times(ref.gdf_areas, ref.gdf_units, travel, "fire", level="community")
    communities = ref.gdf_areas[ref.gdf_areas["level"] == "community"]
    assert got["code"].tolist() == communities["code"].tolist()
    fire = ref.gdf_units[ref.gdf_units["kind"] == "fire"]
    src = travel.snap(fire.geometry.x, fire.geometry.y, "drive")
    for i, p in enumerate(shapely.point_on_surface(communities.geometry.to_numpy())[:10]):
        bound = travel.lower_bound_s(src, travel.snap([p.x], [p.y], "drive"))
        expected = float(bound.min())
        assert got["time_s"].iloc[i] == pytest.approx(expected if expected <= 1800 else math.inf)


def test_coverage_times_bad_input(ref: ReferenceDistrict) -> None:
    travel = StraightLine()
    with pytest.raises(InputError, match="unknown force kind 'army'"):
        coverage.coverage_times(ref.gdf_areas, ref.gdf_units, travel, "army")
    with pytest.raises(InputError, match="unknown level"):
        coverage.coverage_times(ref.gdf_areas, ref.gdf_units, travel, "fire", level="block")
    with pytest.raises(InputError, match="limit_s"):
        coverage.coverage_times(ref.gdf_areas, ref.gdf_units, travel, "fire", limit_s=0)
    with pytest.raises(InputError, match="missing column"):
        coverage.coverage_times(
            ref.gdf_areas, ref.gdf_units.drop(columns="travel_mode"), travel, "fire"
        )
    with pytest.raises(InputError, match="GeoDataFrame"):
        coverage.coverage_times(pd.DataFrame(ref.gdf_areas), ref.gdf_units, travel, "fire")


def test_maps_uses_the_moved_function() -> None:
    from gridgov import maps

    assert maps.coverage_times is coverage.coverage_times


# --------------------------------------------------------------------------------------------
# relocate_units and compare_coverage
# --------------------------------------------------------------------------------------------


def test_relocate_units(ref: ReferenceDistrict) -> None:
    units = ref.gdf_units.copy()
    moved = coverage.relocate_units(ref.gdf_units, {"510106024000-fire-01": (104.05, 30.70)})
    pd.testing.assert_frame_equal(ref.gdf_units, units)
    assert moved is not ref.gdf_units
    assert list(moved.columns) == list(units.columns) and moved.index.equals(units.index)
    row = moved[moved["unit_id"] == "510106024000-fire-01"].iloc[0]
    assert (row.geometry.x, row.geometry.y) == (104.05, 30.70)
    assert row["street_code"] == "510106024000"  # command stays with the street
    others = moved["unit_id"] != "510106024000-fire-01"
    assert moved.geometry[others].geom_equals(units.geometry[others]).all()
    # A projected frame gets the WGS84 position projected.
    metric = coverage.relocate_units(
        ref.gdf_units.to_crs("EPSG:32648"), {"510106024000-fire-01": (104.05, 30.70)}
    )
    back = metric.to_crs("EPSG:4326")
    p = back[back["unit_id"] == "510106024000-fire-01"].geometry.iloc[0]
    assert p.x == pytest.approx(104.05) and p.y == pytest.approx(30.70)


def test_relocate_units_lists_every_problem(ref: ReferenceDistrict) -> None:
    with pytest.raises(InputError) as err:
        coverage.relocate_units(
            ref.gdf_units,
            {
                "nope": (104.0, 30.6),
                "510106024000-fire-01": (float("nan"), 30.6),
                "510106024000-fire-02": "here",
            },
        )
    text = str(err.value)
    assert "unknown unit id(s) nope" in text
    assert "510106024000-fire-01: position (nan, 30.6)" in text
    assert "510106024000-fire-02: position 'here'" in text
    with pytest.raises(InputError, match="moves must map"):
        coverage.relocate_units(ref.gdf_units, [("a", (1, 2))])  # type: ignore[arg-type]


def _table(times: list[float], units: list[str | None]) -> pd.DataFrame:
    codes = [f"A{i}" for i in range(len(times))]
    return pd.DataFrame(
        {"code": codes, "name": [f"area {c}" for c in codes], "time_s": times, "unit_id": units}
    )


def test_compare_coverage_by_hand() -> None:
    before = _table([60.0, 400.0, 900.0, math.inf], ["u1", "u1", "u2", None])
    after = _table([60.0, 200.0, 1000.0, 500.0], ["u1", "u3", "u2", "u3"])
    copies = before.copy(), after.copy()
    got = coverage.compare_coverage(
        before, after, bands_min=(5, 10), population={"A0": 2, "A1": 3, "A3": 5}, n_worst=2
    )
    pd.testing.assert_frame_equal(before, copies[0])
    pd.testing.assert_frame_equal(after, copies[1])
    areas = got.areas.set_index("code")
    assert areas["delta_s"].tolist()[:3] == [0.0, -200.0, 100.0]
    assert areas.loc["A3", "delta_s"] == -math.inf
    assert areas["change"].tolist() == ["same", "better", "worse", "better"]
    assert areas["population"].tolist() == [2.0, 3.0, 0.0, 5.0]
    bands = got.bands
    assert bands.index.tolist() == ["within 5 min", "within 10 min", "beyond 10 min"]
    assert bands["areas_before"].tolist() == [1, 2, 2]
    assert bands["areas_after"].tolist() == [2, 3, 1]
    assert bands["population_before"].tolist() == [2.0, 5.0, 5.0]
    assert bands["population_after"].tolist() == [5.0, 10.0, 0.0]
    assert got.worst["code"].tolist() == ["A2", "A3"]
    s = got.summary
    assert (s["better"], s["worse"], s["same"]) == (2, 1, 1)
    assert s["unreached_before"] == 1 and s["unreached_after"] == 0
    assert s["mean_before_s"] == pytest.approx((60 + 400 + 900) / 3)
    assert s["weighted_mean_after_s"] == pytest.approx((2 * 60 + 3 * 200 + 5 * 500) / 10)


def test_compare_coverage_bad_input() -> None:
    a = _table([60.0, 120.0], ["u1", "u2"])
    with pytest.raises(InputError, match="different areas"):
        coverage.compare_coverage(a, _table([60.0], ["u1"]))
    with pytest.raises(InputError, match="bands_min"):
        coverage.compare_coverage(a, a, bands_min=(10, 5))
    with pytest.raises(InputError, match="missing column"):
        coverage.compare_coverage(a.drop(columns="time_s"), a)
    with pytest.raises(InputError, match="time_s must be >= 0"):
        coverage.compare_coverage(_table([-1.0, 2.0], ["u", "u"]), a)
    with pytest.raises(InputError, match="duplicate code"):
        coverage.compare_coverage(pd.concat([a, a]), a)
    with pytest.raises(InputError, match="population"):
        coverage.compare_coverage(a, a, population={"A0": -1})


def test_moving_a_fire_station_to_the_worst_grid(ref: ReferenceDistrict, net: RoadNetwork) -> None:
    before = coverage.coverage_times(ref.gdf_areas, ref.gdf_units, net, "fire", limit_s=3600)
    worst = before.sort_values(["time_s", "code"], ascending=[False, True]).iloc[0]
    grid = ref.gdf_areas[ref.gdf_areas["code"] == worst["code"]].geometry.iloc[0]
    # Stations stand on roads: the road node nearest to the grid's representative point.
    nodes = ref.gdf_nodes.geometry
    spot = nodes.iloc[int(np.argmin(shapely.distance(nodes.to_numpy(), grid.point_on_surface())))]
    station = ref.gdf_units[ref.gdf_units["unit_id"] == worst["unit_id"]]["office_id"].iloc[0]
    ids = ref.gdf_units.loc[ref.gdf_units["office_id"] == station, "unit_id"]
    moved = coverage.relocate_units(ref.gdf_units, {u: (spot.x, spot.y) for u in ids})
    after = coverage.coverage_times(ref.gdf_areas, moved, net, "fire", limit_s=3600)
    cmp = coverage.compare_coverage(
        before, after, population=coverage.count_microgrids(ref.gdf_areas)
    )
    row = cmp.areas.set_index("code").loc[worst["code"]]
    assert row["time_after_s"] < row["time_before_s"]
    assert row["unit_after"] in set(ids)
    n = len(before)
    assert (cmp.bands["areas_before"].iloc[-1] + cmp.bands["areas_before"].iloc[-2]) <= n
    assert cmp.summary["better"] + cmp.summary["worse"] + cmp.summary["same"] == n
    assert cmp.bands["population_before"].max() <= 10_000


def test_count_microgrids(ref: ReferenceDistrict) -> None:
    per_grid = coverage.count_microgrids(ref.gdf_areas)
    assert per_grid.sum() == (ref.gdf_areas["level"] == "microgrid").sum()
    assert len(per_grid) == (ref.gdf_areas["level"] == "grid").sum()
    assert coverage.count_microgrids(ref.gdf_areas, "street").sum() == per_grid.sum()


# --------------------------------------------------------------------------------------------
# hot spots
# --------------------------------------------------------------------------------------------


def _lattice() -> gpd.GeoDataFrame:
    """A 3 × 3 lattice of grids (cell ``3 r + c``, row 0 at the top), about 100 m a side."""
    size = 0.001
    cells = []
    for r in range(3):
        for c in range(3):
            x0, y0 = 104.0 + c * size, 30.6 - (r + 1) * size
            cells.append(box(x0, y0, x0 + size, y0 + size))
    return gpd.GeoDataFrame(
        {
            "code": [f"G{i}" for i in range(9)],
            "name": [f"grid {i}" for i in range(9)],
            "level": "grid",
        },
        geometry=cells,
        crs="EPSG:4326",
        index=pd.RangeIndex(10, 19),
    )


def _incidents_in(areas: gpd.GeoDataFrame, counts: list[int]) -> gpd.GeoDataFrame:
    centres = shapely.centroid(areas.geometry.to_numpy())
    rows = [(i, k) for i, n in enumerate(counts) for k in range(n)]
    return gpd.GeoDataFrame(
        {
            "incident_id": [f"I{i}-{k}" for i, k in rows],
            "reported_at": [T0 + timedelta(hours=k) for _, k in rows],
        },
        geometry=[centres[i] for i, _ in rows],
        crs="EPSG:4326",
    )


def test_contiguity_is_rook() -> None:
    w = coverage.build_contiguity_weights(_lattice()).toarray()
    expected = {0: {1, 3}, 1: {0, 2, 4}, 4: {1, 3, 5, 7}, 8: {5, 7}}
    for i, ns in expected.items():
        assert set(np.flatnonzero(w[i])) == ns
    assert (w == w.T).all() and (np.diag(w) == 0).all()
    assert w.sum() == 24  # 12 shared borders, each counted twice


def test_gi_star_by_hand() -> None:
    areas = _lattice()
    incidents = _incidents_in(areas, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    copies = areas.copy(), incidents.copy()
    got = coverage.hot_spots(areas, incidents)
    pd.testing.assert_frame_equal(areas, copies[0])
    pd.testing.assert_frame_equal(incidents, copies[1])
    assert got.index.equals(areas.index)
    assert got["count"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    # By hand: n = 9, mean 5, sum of squares 285, S = sqrt(285 / 9 - 25) = sqrt(20 / 3).
    s = math.sqrt(20 / 3)
    # Cell 0 (corner): itself and cells 1, 3 -> sum 1 + 2 + 4 = 7 over 3 weights.
    z0 = (7 - 5 * 3) / (s * math.sqrt((9 * 3 - 3**2) / 8))
    # Cell 1 (edge): itself and cells 0, 2, 4 -> 2 + 1 + 3 + 5 = 11 over 4 weights.
    z1 = (11 - 5 * 4) / (s * math.sqrt((9 * 4 - 4**2) / 8))
    # Cell 4 (centre): itself and 1, 3, 5, 7 -> 5 + 2 + 4 + 6 + 8 = 25 over 5: exactly average.
    z4 = (25 - 5 * 5) / (s * math.sqrt((9 * 5 - 5**2) / 8))
    # Cell 8: 9 + 6 + 8 = 23 over 3 weights.
    z8 = (23 - 5 * 3) / (s * math.sqrt((9 * 3 - 3**2) / 8))
    assert z0 == pytest.approx(-2.0655911179772892)
    z = got["gi_star"].to_numpy()
    assert z[[0, 1, 4, 8]] == pytest.approx([z0, z1, z4, z8])
    # Symmetric counts give mirrored scores.
    assert z[5] == pytest.approx(-z[3]) and z[7] == pytest.approx(-z[1])
    # Two-sided p: 2 (1 - Phi(2.0656)) = 0.0389 < 0.05; 2 (1 - Phi(2.2045)) = 0.0275; cells
    # 3 and 5 (sum 17 or 23 over 4 weights, z = -/+0.73) and 2 and 6 (z = -/+1.03) are not
    # significant.
    assert got["p_value"].iloc[0] == pytest.approx(0.03887, abs=1e-4)
    assert got["spot"].tolist() == [
        "cold", "cold", "not significant",
        "not significant", "not significant", "not significant",
        "not significant", "hot", "hot",
    ]  # fmt: skip
    # At alpha = 0.01 nothing is significant.
    assert (coverage.hot_spots(areas, incidents, alpha=0.01)["spot"] == "not significant").all()


def test_hot_spots_windows_and_codes() -> None:
    areas = _lattice()
    incidents = _incidents_in(areas, [0, 0, 0, 0, 9, 0, 0, 0, 0])
    got = coverage.hot_spots(areas, incidents)
    assert got.loc[14, "count"] == 9 and got.attrs["unlocated"] == 0
    # Incidents k = 0..8 hours after T0: the window keeps k = 2..4.
    window = coverage.hot_spots(
        areas, incidents, since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=5)
    )
    assert window["count"].sum() == 3
    # 2026-11-30 08:00-16:00 in Shanghai: November, in the display time zone.
    assert coverage.hot_spots(areas, incidents, period="2026-11")["count"].sum() == 9
    assert coverage.hot_spots(areas, incidents, period="2026-10")["count"].sum() == 0
    # A code column wins over the geometry; no geometry is needed then.
    coded = pd.DataFrame({"grid_code": ["G0", "G0", "G8"]})
    assert coverage.hot_spots(areas, coded)["count"].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 1]
    # Equal counts: Gi* is undefined, nothing flagged.
    flat = coverage.hot_spots(areas, _incidents_in(areas, [1] * 9))
    assert flat["gi_star"].isna().all() and (flat["spot"] == "not significant").all()
    # A point outside every area is left out, and counted.
    outside = pd.concat(
        [
            incidents,
            gpd.GeoDataFrame(
                {"incident_id": ["far"]}, geometry=[shapely.Point(0, 0)], crs="EPSG:4326"
            ),
        ]
    )
    far = coverage.hot_spots(areas, outside)
    assert far["count"].sum() == 9 and far.attrs["unlocated"] == 1


def test_hot_spots_bad_input() -> None:
    areas = _lattice()
    incidents = _incidents_in(areas, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    with pytest.raises(InputError, match="alpha"):
        coverage.hot_spots(areas, incidents, alpha=1.5)
    with pytest.raises(InputError, match="either a period or since/until"):
        coverage.hot_spots(areas, incidents, period="2026-11", since=T0)
    with pytest.raises(InputError, match="timezone-aware"):
        coverage.hot_spots(areas, incidents, since=datetime(2026, 11, 30))
    with pytest.raises(InputError, match="cannot read the period"):
        coverage.hot_spots(areas, incidents, period="last week")
    with pytest.raises(InputError, match="no community"):
        coverage.hot_spots(areas, incidents, level="community")
    with pytest.raises(InputError, match="grid_code of no grid"):
        coverage.hot_spots(areas, pd.DataFrame({"grid_code": ["G0", "X9"]}))
    with pytest.raises(InputError, match="no geometry to locate"):
        coverage.hot_spots(areas, pd.DataFrame({"incident_id": ["a"]}))
    with pytest.raises(InputError, match="missing column reported_at"):
        coverage.hot_spots(areas, incidents.drop(columns="reported_at"), period="2026-11")
    with pytest.raises(InputError, match="duplicate grid code"):
        coverage.hot_spots(pd.concat([areas, areas]), incidents)


def test_hot_spots_on_the_reference_district(ref: ReferenceDistrict) -> None:
    grids = ref.gdf_areas[ref.gdf_areas["level"] == "grid"].sort_values("code")
    # A cluster of incidents in one grid and its neighbours, a few scattered elsewhere.
    rng = np.random.default_rng(7)
    centre = grids.iloc[500]
    w = coverage.build_contiguity_weights(grids)
    near = [500, *np.flatnonzero(w[500].toarray().ravel()).tolist()]
    picks = near * 6 + rng.integers(0, len(grids), 40).tolist()
    points = shapely.point_on_surface(grids.geometry.to_numpy()[picks])
    incidents = gpd.GeoDataFrame({"incident_id": range(len(picks))}, geometry=points, crs=4326)
    got = coverage.hot_spots(ref.gdf_areas, incidents)
    assert got["count"].sum() == len(picks)
    assert got.loc[centre.name, "spot"] == "hot"
    by_code = coverage.hot_spots(
        ref.gdf_areas, pd.DataFrame({"grid_code": grids["code"].to_numpy()[picks]})
    )
    assert by_code["count"].tolist() == got["count"].tolist()
