"""The dispatcher on the reference district: tiers, levels, fallbacks, preemption and batch.

Expected times are recomputed through the public routing API with unbounded searches, so they do
not share the dispatcher's search-limit policy. (tests/test_dispatch_bruteforce.py checks the
dispatcher against an independent networkx model.)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod
from scipy.optimize import linear_sum_assignment
from shapely.geometry import Point

from gridgov import dispatch, modegraph
from gridgov.catalog import Catalog, load_catalog
from gridgov.dispatch import search
from gridgov.errors import InputError, OutsideDistrictError, UnknownMatterError
from gridgov.model import EscalationLevel, ForceKind
from gridgov.network import RoadNetwork, build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.settings import get_settings
from gridgov.straight_line import StraightLine
from gridgov.travel_model import TravelModel

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
STREET = "510106035000"  # central, five touching streets
TOL = 1e-6


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="module")
def net(ref: ReferenceDistrict) -> RoadNetwork:
    return build_network(ref.gdf_nodes, ref.gdf_links)


@pytest.fixture(scope="module")
def ctx(ref: ReferenceDistrict, catalog: Catalog, net: RoadNetwork) -> dispatch.DispatchContext:
    return dispatch.build_context(ref.gdf_areas, catalog, net)


@pytest.fixture(scope="module")
def units(ref: ReferenceDistrict) -> gpd.GeoDataFrame:
    return dispatch.prepare_units(ref.gdf_units, ref.gdf_offices, now=NOW)


@pytest.fixture(scope="module")
def street_points(ref: ReferenceDistrict, ctx: dispatch.DispatchContext) -> pd.DataFrame:
    """Road nodes (so near every mode's roads) with the codes of the areas holding them."""
    nodes = ref.gdf_nodes
    codes = ctx.locator.locate(nodes.geometry.x.to_numpy(), nodes.geometry.y.to_numpy())
    out = codes.assign(lon=nodes.geometry.x.to_numpy(), lat=nodes.geometry.y.to_numpy())
    return out[out["street"].notna()].reset_index(drop=True)


def _incident(lon: float, lat: float, code: str, incident_id: str = "t-1") -> dispatch.Incident:
    return dispatch.Incident(incident_id, code, float(lon), float(lat), NOW)


def _point_in(street_points: pd.DataFrame, street: str, k: int = 0) -> tuple[float, float]:
    rows = street_points[street_points["street"] == street]
    row = rows.iloc[k % len(rows)]
    return float(row["lon"]), float(row["lat"])


def _times(travel: TravelModel, gdf: gpd.GeoDataFrame, lon: float, lat: float) -> dict[str, float]:
    """Unbounded travel seconds of every positioned, not-far unit of ``gdf`` to the point."""
    out: dict[str, float] = {}
    has = gdf.geometry.notna() & ~gdf.geometry.is_empty
    for mode, part in gdf[has].groupby("travel_mode"):
        target = travel.snap([lon], [lat], str(mode))
        src = travel.snap(part.geometry.x.to_numpy(), part.geometry.y.to_numpy(), str(mode))
        t = travel.field_to(target).times_from(src)
        for uid, ti, far in zip(part["unit_id"], t, src.far, strict=True):
            if not far:
                out[str(uid)] = float(ti)
    return out


def _set(gdf: gpd.GeoDataFrame, mask: Any, **values: Any) -> gpd.GeoDataFrame:
    out = gdf.copy()
    for column, value in values.items():
        if column not in out.columns:
            out[column] = pd.Series([None] * len(out), index=out.index, dtype=object)
        out.loc[mask, column] = value
    return out


def _with_matter(
    ctx: dispatch.DispatchContext, code: str, **changes: Any
) -> dispatch.DispatchContext:
    """The same context with one catalogue matter changed (shares the travel model)."""
    cat = ctx.catalog
    matters = tuple(dataclasses.replace(m, **changes) if m.code == code else m for m in cat.matters)
    new = Catalog(cat.version, cat.source, cat.event_majors, cat.domains, matters)
    return dispatch.build_context(ctx.gdf_areas, new, ctx.travel, locator=ctx.locator)


def _one(decision: dispatch.Decision, kind: str) -> dispatch.Assignment:
    found = [a for a in decision.assignments if a.kind.value == kind]
    assert len(found) == 1, decision.assignments
    return found[0]


def _kind_note(decision: dispatch.Decision, kind: str) -> dict[str, Any]:
    return next(k for k in decision.explanation["kinds"] if k["kind"] == kind)


def _best(times: dict[str, float], ids: Any) -> tuple[str, float]:
    cand = [(times[u], u) for u in ids if u in times and math.isfinite(times[u])]
    t, u = min(cand)
    return u, t


# --------------------------------------------------------------------------------------------
# tiers and levels
# --------------------------------------------------------------------------------------------


def test_street_tier_takes_the_network_nearest(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-04"), units, ctx)
    a = _one(decision, "enforcement")
    times = _times(ctx.travel, units[units["kind"] == "enforcement"], lon, lat)
    ids = units.loc[(units["kind"] == "enforcement") & (units["street_code"] == STREET), "unit_id"]
    best_id, best_t = _best(times, ids)
    assert (a.unit_id, a.rule, a.level) == (best_id, "nearest_in_street", EscalationLevel.STREET)
    assert a.time_s == pytest.approx(best_t, abs=TOL)
    assert not a.over_max_travel and a.preempts is None
    assert decision.status == "assigned" and decision.level is EscalationLevel.STREET
    # The street's four units wait at one office: equal times, the smallest id wins.
    listed = _kind_note(decision, "enforcement")["tiers"][0]["candidates"]
    assert [c["unit_id"] for c in listed] == sorted(ids)
    assert a.unit_id == min(ids)


def test_escalates_to_touching_streets_then_district(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    kind = units["kind"] == "enforcement"
    near = [STREET, *ctx.neighbours[STREET]]
    here = kind & (units["street_code"] == STREET)
    # Half the street's units busy, half off duty: the street has no candidate.
    ids = sorted(units.loc[here, "unit_id"])
    state = _set(units, units["unit_id"].isin(ids[:2]), status="busy")
    state = _set(state, state["unit_id"].isin(ids[2:]), on_duty=False)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-04"), state, ctx)
    a = _one(decision, "enforcement")
    times = _times(ctx.travel, units[kind], lon, lat)
    ring = units.loc[kind & units["street_code"].isin(near[1:]), "unit_id"]
    assert (a.unit_id, a.time_s) == pytest.approx(_best(times, ring), abs=TOL)
    assert (a.rule, a.level) == ("nearest_in_neighbours", EscalationLevel.NEIGHBOUR)
    note = _kind_note(decision, "enforcement")
    assert [t["tier"] for t in note["tiers"]] == ["street", "neighbour"]
    assert note["tiers"][0]["n_candidates"] == 0 and not note["tiers"][0]["accepted"]
    reasons = {c["unit_id"]: c["note"] for c in note["left_out"]}
    assert reasons == {ids[0]: "busy", ids[1]: "busy", ids[2]: "off duty", ids[3]: "off duty"}

    # The street and its neighbours empty: the district.
    state = _set(units, kind & units["street_code"].isin(near), status="busy")
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-04"), state, ctx)
    a = _one(decision, "enforcement")
    rest = units.loc[kind & ~units["street_code"].isin(near), "unit_id"]
    best_id, best_t = _best(times, rest)
    assert best_t <= 20 * 60  # the scenario needs the district to answer in time
    assert (a.unit_id, a.rule, a.level) == (best_id, "nearest_in_district", "district")
    assert a.time_s == pytest.approx(best_t, abs=TOL)
    assert decision.level is EscalationLevel.DISTRICT
    tiers = _kind_note(decision, "enforcement")["tiers"]
    assert [t["tier"] for t in tiers] == ["street", "neighbour", "district"]


def test_over_max_travel_assigns_the_best_of_the_district(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET, 3)
    # Half a second: nobody makes it, so every tier fails.
    tight = _with_matter(ctx, "MK-03", max_travel_min=0.01)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), units, tight)
    a = _one(decision, "market")
    market = units[units["kind"] == "market"]
    best_id, best_t = _best(_times(ctx.travel, market, lon, lat), market["unit_id"])
    assert (a.unit_id, a.rule, a.level) == (best_id, "best_over_max_travel", "district")
    assert a.time_s == pytest.approx(best_t, abs=TOL)
    assert a.over_max_travel
    note = _kind_note(decision, "market")
    assert note["accepted_tier"] is None
    assert not any(t["accepted"] for t in note["tiers"])
    assert note["preemption"]["considered"] is False  # a priority-3 matter


def test_unfilled_kinds_are_recorded(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    # MK-02: market leads, health assists. No health unit on duty anywhere.
    state = _set(units, units["kind"] == "health", on_duty=False)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-02"), state, ctx)
    assert [a.kind for a in decision.assignments] == [ForceKind.MARKET]
    assert decision.unfilled == (ForceKind.HEALTH,)
    assert decision.status == "partial"
    note = _kind_note(decision, "health")
    assert note["unit_id"] is None and "no usable unit" in note["unfilled_reason"]
    assert {c["note"] for c in note["left_out"]} == {"off duty"}
    assert len(note["left_out"]) == 13  # every health unit of the district, each with its reason

    state = _set(state, state["kind"] == "market", status="busy")
    decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-02"), state, ctx)
    assert decision.assignments == () and decision.level is None
    assert decision.unfilled == (ForceKind.MARKET, ForceKind.HEALTH)
    assert decision.status == "unassigned"


def test_joint_enforcement_one_unit_per_kind(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET, 5)
    # WS-02: emergency leads, fire and police assist.
    decision = dispatch.dispatch_incident(_incident(lon, lat, "WS-02"), units, ctx)
    kinds = [a.kind.value for a in decision.assignments]
    assert kinds == ["emergency", "fire", "police"]
    assert [a.role for a in decision.assignments] == ["lead", "assist", "assist"]
    assert len({a.unit_id for a in decision.assignments}) == 3
    by_id = units.set_index("unit_id")
    for a in decision.assignments:
        assert by_id.loc[a.unit_id, "kind"] == a.kind.value
        assert a.route is not None and a.route.time_s == pytest.approx(a.time_s, abs=1e-3)
    rank = list(EscalationLevel)
    assert decision.level == max((a.level for a in decision.assignments), key=rank.index)


def test_own_grid_worker_first_for_grid_level_matters(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    workers = units[(units["kind"] == "grid_worker") & (units["street_code"] == STREET)]
    lon, lat = _point_in(street_points, STREET, 7)
    grid = ctx.locator.locate_one(lon, lat)["grid"]
    own = workers[workers["grid_code"] == grid]
    assert len(own) == 1
    own_id = str(own["unit_id"].iloc[0])
    # Another grid's worker stands right at the incident, with its own mode: it is nearer.
    other = str(workers.loc[workers["grid_code"] != grid, "unit_id"].iloc[0])
    state = _set(units, units["unit_id"] == other, geometry=Point(lon, lat))
    times = _times(ctx.travel, state[state["unit_id"].isin([own_id, other])], lon, lat)
    assert times[other] < times[own_id] <= 15 * 60
    decision = dispatch.dispatch_incident(_incident(lon, lat, "LS-03"), state, ctx)
    a = _one(decision, "grid_worker")
    assert (a.unit_id, a.rule, a.level) == (own_id, "own_grid_worker", "community")
    assert a.time_s == pytest.approx(times[own_id], abs=TOL)
    assert _kind_note(decision, "grid_worker")["tiers"][0]["tier"] == "own_grid"

    # The own worker busy: the street tier takes the nearest, the other worker.
    state = _set(state, state["unit_id"] == own_id, status="busy")
    decision = dispatch.dispatch_incident(_incident(lon, lat, "LS-03"), state, ctx)
    a = _one(decision, "grid_worker")
    assert (a.unit_id, a.rule) == (other, "nearest_in_street")
    note = _kind_note(decision, "grid_worker")
    assert [t["tier"] for t in note["tiers"]] == ["own_grid", "street"]
    assert note["left_out"][0] == {**note["left_out"][0], "unit_id": own_id, "tier": "own_grid"}

    # A street-level matter never looks for the own grid's worker first.
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-03"), units, ctx)
    tiers = _kind_note(decision, "grid_worker")["tiers"]
    assert tiers[0]["tier"] == "street"


def test_grid_worker_level_is_community_or_street(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET, 2)
    community = ctx.locator.locate_one(lon, lat)["community"]
    assert community is not None
    workers = units["kind"] == "grid_worker"
    # UM-03 (street level): enforcement leads, a grid worker assists.
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-03"), units, ctx)
    a = _one(decision, "grid_worker")
    grid = str(units.set_index("unit_id").loc[a.unit_id, "grid_code"])
    expected = "community" if grid[:12] == community else "street"
    assert (a.rule, a.level.value) == ("nearest_in_street", expected)

    # The community's own workers busy: a worker of another community of the street.
    mine = workers & units["grid_code"].str.startswith(community)
    state = _set(units, mine, status="busy")
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-03"), state, ctx)
    a = _one(decision, "grid_worker")
    row = units.set_index("unit_id").loc[a.unit_id]
    assert row["street_code"] == STREET and not str(row["grid_code"]).startswith(community)
    assert (a.rule, a.level) == ("nearest_in_street", EscalationLevel.STREET)

    # And with the community's workers available, one of them at the incident: community.
    pick = str(units.loc[mine, "unit_id"].iloc[0])
    state = _set(units, units["unit_id"] == pick, geometry=Point(lon, lat))
    decision = dispatch.dispatch_incident(_incident(lon, lat, "UM-03"), state, ctx)
    a = _one(decision, "grid_worker")
    assert (a.unit_id, a.level) == (pick, EscalationLevel.COMMUNITY)


def test_ties_go_to_the_smaller_unit_id(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET, 4)
    template = units[(units["kind"] == "market") & (units["street_code"] == STREET)].iloc[[0]]
    twins = pd.concat([template, template], ignore_index=True)
    twins["unit_id"] = ["zz-market-b", "zz-market-a"]
    twins = twins.set_geometry([Point(lon + 0.001, lat), Point(lon + 0.001, lat)], crs=4326)
    state = pd.concat([units, twins], ignore_index=True)
    for frame in (state, state.iloc[::-1]):
        decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), frame, ctx)
        a = _one(decision, "market")
        assert a.unit_id == "zz-market-a"
        listed = _kind_note(decision, "market")["tiers"][0]["candidates"]
        assert [c["unit_id"] for c in listed[:2]] == ["zz-market-a", "zz-market-b"]
        assert listed[0]["time_s"] == listed[1]["time_s"]


def test_exclude_skips_units_and_says_so(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    first = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), units, ctx)
    chosen = _one(first, "market").unit_id
    second = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), units, ctx, exclude={chosen})
    assert _one(second, "market").unit_id != chosen
    out = _kind_note(second, "market")["left_out"]
    assert {"unit_id": chosen, "note": "excluded by the caller", "time_s": None}.items() <= (
        out[0].items()
    )
    # An id the pool does not hold excludes nothing.
    again = dispatch.dispatch_incident(
        _incident(lon, lat, "MK-03"), units, ctx, exclude={"no-such-unit"}
    )
    assert _one(again, "market").unit_id == chosen

    # Preemption skips the excluded units too.
    urgent = _with_matter(ctx, "MK-03", priority=1)
    market = units["kind"] == "market"
    busy = _set(units, market, status="busy", busy_priority=4)
    busy.loc[market, "busy_incident"] = [f"old-{u}" for u in busy.loc[market, "unit_id"]]
    taken = _one(dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), busy, urgent), "market")
    assert taken.preempts == f"old-{taken.unit_id}"
    other = _one(
        dispatch.dispatch_incident(
            _incident(lon, lat, "MK-03"), busy, urgent, exclude={taken.unit_id}
        ),
        "market",
    )
    assert other.unit_id != taken.unit_id and other.preempts == f"old-{other.unit_id}"


def test_duplicate_unit_ids_are_refused(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    doubled = pd.concat([units, units.iloc[[0]]], ignore_index=True)
    kind = str(units["kind"].iloc[0])
    code = next(m.code for m in ctx.catalog if m.lead.value == kind)
    with pytest.raises(InputError, match="unique"):
        dispatch.dispatch_incident(_incident(lon, lat, code), doubled, ctx)


# --------------------------------------------------------------------------------------------
# positions
# --------------------------------------------------------------------------------------------


def test_prepare_units_resolves_positions(ref: ReferenceDistrict) -> None:
    gdf = ref.gdf_units.iloc[:6].copy()
    offices = ref.gdf_offices.set_index("office_id")
    moved = Point(104.0, 30.7)
    gdf = gdf.set_geometry([moved, moved, None, moved, None, moved], crs=4326)
    gdf["position_time"] = [
        NOW - timedelta(minutes=5),  # fresh
        NOW - timedelta(hours=2),  # stale: office
        NOW,  # missing geometry: office
        None,  # static home position
        None,  # missing, and no office below: left out
        NOW - timedelta(hours=3),  # stale, no office: left out
    ]
    gdf.loc[gdf.index[4:], "office_id"] = "no-such-office"
    before = gdf.copy()
    out = dispatch.prepare_units(gdf, ref.gdf_offices, now=NOW)
    pd.testing.assert_frame_equal(gdf, before)  # the input is untouched
    office = [offices.geometry[o] for o in gdf["office_id"].iloc[:3]]
    assert out.geometry.iloc[0].equals(moved)
    assert out.geometry.iloc[1].equals(office[1])
    assert out.geometry.iloc[2].equals(office[2])
    assert out.geometry.iloc[3].equals(moved)
    assert out.geometry.iloc[4] is None and out.geometry.iloc[5] is None
    notes = out["position_note"].tolist()
    assert notes[0] is None and notes[3] is None
    assert notes[1] == "stale position (2026-11-27T06:00Z): office position used"
    assert notes[2] == "no position: office position used"
    assert notes[4] == "no position: left out"
    assert notes[5] == "stale position (2026-11-27T05:00Z): left out"
    assert out.index.equals(gdf.index) and out.crs.to_epsg() == 4326
    # A custom age: two hours is fresh when three are allowed.
    custom = dispatch.prepare_units(gdf, ref.gdf_offices, now=NOW, max_age=timedelta(hours=2.5))
    assert custom["position_note"].iloc[1] is None


def test_fallback_positions_are_explained(
    ctx: dispatch.DispatchContext, ref: ReferenceDistrict, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    gdf = ref.gdf_units.copy()
    market = sorted(gdf.loc[(gdf["kind"] == "market") & (gdf["street_code"] == STREET), "unit_id"])
    gdf["position_time"] = pd.Series([None] * len(gdf), dtype=object)
    stale = gdf["unit_id"] == market[0]
    gdf.loc[stale, "position_time"] = NOW - timedelta(hours=1)
    gdf = _set(gdf, gdf["unit_id"] == market[1], geometry=None, office_id="gone")
    state = dispatch.prepare_units(gdf, ref.gdf_offices, now=NOW)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), state, ctx)
    note = _kind_note(decision, "market")
    listed = {c["unit_id"]: c for c in note["tiers"][0]["candidates"]}
    assert listed[market[0]]["note"] == "stale position (2026-11-27T07:00Z): office position used"
    left = {c["unit_id"]: c["note"] for c in note["left_out"]}
    assert left == {market[1]: "no position: left out"}
    assert _one(decision, "market").unit_id == market[0]


def test_unit_far_from_roads_is_left_out(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    market = sorted(
        units.loc[(units["kind"] == "market") & (units["street_code"] == STREET), "unit_id"]
    )
    # Twenty kilometres west of the district: far from every road.
    state = _set(units, units["unit_id"] == market[0], geometry=Point(lon - 0.2, lat))
    decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), state, ctx)
    assert _one(decision, "market").unit_id == market[1]
    left = {c["unit_id"]: c["note"] for c in _kind_note(decision, "market")["left_out"]}
    assert "m from the nearest drive road" in left[market[0]]
    assert left[market[0]].endswith("left out")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_outside_the_district_is_an_error(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame
) -> None:
    with pytest.raises(OutsideDistrictError, match=r"\(103\.500000, 30\.100000\)"):
        dispatch.dispatch_incident(_incident(103.5, 30.1, "MK-03"), units, ctx)
    with pytest.raises(OutsideDistrictError):
        dispatch.dispatch_batch([_incident(103.5, 30.1, "MK-03")], units, ctx)


def test_unknown_matter_is_an_error(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    with pytest.raises(UnknownMatterError, match="MK-99"):
        dispatch.dispatch_incident(_incident(lon, lat, "MK-99"), units, ctx)


def test_incident_far_from_roads_is_an_error(
    ref: ReferenceDistrict, catalog: Catalog, units: gpd.GeoDataFrame
) -> None:
    # Only the roads of one corner: the rest of the district is far from any road.
    links = ref.gdf_links
    mid = shapely.get_coordinates(shapely.centroid(links.geometry.to_numpy()))
    x, y = mid[:, 0], mid[:, 1]
    corner = links[(x < np.quantile(x, 0.3)) & (y < np.quantile(y, 0.3))]
    small = build_network(ref.gdf_nodes, corner)
    ctx = dispatch.build_context(ref.gdf_areas, catalog, small)
    streets = ref.gdf_areas[ref.gdf_areas["level"] == "street"]
    hull = shapely.union_all(corner.geometry.to_numpy()).buffer(0.03)
    far_away = streets.geometry.representative_point()
    point = next(p for p in far_away if not hull.contains(p))
    with pytest.raises(InputError, match=r"lies \d+ m from the nearest road") as info:
        dispatch.dispatch_incident(_incident(point.x, point.y, "MK-03"), units, ctx)
    assert f"({point.x:.6f}, {point.y:.6f})" in str(info.value)


def test_missing_columns_are_an_error(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    with pytest.raises(InputError, match="status"):
        dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), units.drop(columns="status"), ctx)


# --------------------------------------------------------------------------------------------
# preemption
# --------------------------------------------------------------------------------------------


def _fire_scene(units: gpd.GeoDataFrame) -> tuple[float, float, list[str]]:
    """A point 200 m from a fire station, and the fire units, nearest station first."""
    fire = units[units["kind"] == "fire"].sort_values("unit_id")
    station = fire.geometry.iloc[0]
    return station.x + 0.002, station.y, list(fire["unit_id"])


def test_priority_one_preempts_a_low_priority_unit(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame
) -> None:
    lon, lat, fire = _fire_scene(units)
    busy = units["unit_id"].isin(fire)
    state = _set(units, busy, status="busy", busy_priority=3)
    state.loc[busy, "busy_incident"] = [f"old-{u}" for u in state.loc[busy, "unit_id"]]
    times = _times(ctx.travel, units[busy], lon, lat)
    best_id, best_t = _best(times, fire)
    assert best_t <= 8 * 60
    decision = dispatch.dispatch_incident(_incident(lon, lat, "FS-01"), state, ctx)
    a = _one(decision, "fire")
    assert (a.unit_id, a.rule, a.preempts) == (best_id, "preemption", f"old-{best_id}")
    assert a.time_s == pytest.approx(best_t, abs=TOL) and not a.over_max_travel
    pre = _kind_note(decision, "fire")["preemption"]
    assert pre["considered"] and pre["preemptable"][0]["unit_id"] == best_id
    assert "preemptable" in pre["preemptable"][0]["note"]
    assert json.loads(json.dumps(decision.to_json()))["assignments"][0]["preempts"] == a.preempts

    # Busy on priority-2 work: nothing may be taken, and the kind is unfilled.
    high = _set(state, busy, busy_priority=2)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "FS-01"), high, ctx)
    assert ForceKind.FIRE in decision.unfilled
    pre = _kind_note(decision, "fire")["preemption"]
    assert pre["preemptable"] == [] and len(pre["not_preemptable"]) == len(fire)

    # Not for a priority-2 matter (FS-02), and not when the caller forbids it.
    decision = dispatch.dispatch_incident(_incident(lon, lat, "FS-02"), state, ctx)
    assert ForceKind.FIRE in decision.unfilled
    decision = dispatch.dispatch_incident(
        _incident(lon, lat, "FS-01"), state, ctx, allow_preemption=False
    )
    assert ForceKind.FIRE in decision.unfilled


def test_preemption_only_when_nothing_available_within_reach(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame
) -> None:
    lon, lat, fire = _fire_scene(units)
    times = _times(ctx.travel, units[units["unit_id"].isin(fire)], lon, lat)
    near = [u for u in fire if times[u] <= 8 * 60]
    # One engine in reach stays available: it is taken, nobody is preempted.
    keep = near[-1]
    busy = units["unit_id"].isin(fire) & (units["unit_id"] != keep)
    state = _set(units, busy, status="busy", busy_priority=4, busy_incident="old")
    decision = dispatch.dispatch_incident(_incident(lon, lat, "FS-01"), state, ctx)
    a = _one(decision, "fire")
    assert (a.unit_id, a.preempts) == (keep, None) and a.rule != "preemption"
    # Every engine within reach busy, the others free but too far: preemption beats them.
    far = [u for u in fire if times[u] > 8 * 60]
    if far:
        busy = units["unit_id"].isin(near)
        state = _set(units, busy, status="busy", busy_priority=3, busy_incident="old")
        decision = dispatch.dispatch_incident(_incident(lon, lat, "FS-01"), state, ctx)
        assert _one(decision, "fire").rule == "preemption"


# --------------------------------------------------------------------------------------------
# exactness, determinism, the straight-line fallback, JSON
# --------------------------------------------------------------------------------------------


def test_random_incidents_match_unbounded_searches(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    rng = np.random.default_rng(7)
    state = _set(units, rng.random(len(units)) < 0.3, status="busy")
    by_id = state.set_index("unit_id")
    codes = ctx.catalog.codes
    for k in range(60):
        row = street_points.iloc[int(rng.integers(len(street_points)))]
        lon, lat = row["lon"] + rng.normal(0, 0.002), row["lat"] + rng.normal(0, 0.002)
        inc = _incident(lon, lat, codes[k % len(codes)], f"r-{k}")
        try:
            decision = dispatch.dispatch_incident(inc, state, ctx, routes=False)
        except (OutsideDistrictError, InputError):
            continue
        free = state[state["status"] == "available"]
        for a in decision.assignments:
            pool = free[free["kind"] == a.kind.value]
            times = _times(ctx.travel, pool, lon, lat)
            note = _kind_note(decision, a.kind.value)
            if a.rule == "best_over_max_travel":
                ids = pool["unit_id"]
            else:
                tier = next(t for t in note["tiers"] if t["accepted"])
                street = decision.placement.street_code
                ids = {
                    "own_grid": pool.loc[pool["grid_code"] == decision.placement.grid_code],
                    "street": pool.loc[pool["street_code"] == street],
                    "neighbour": pool.loc[
                        pool["street_code"].isin([street, *ctx.neighbours[street]])
                    ],
                    "district": pool,
                }[tier["tier"]]["unit_id"]
            best_id, best_t = _best(times, ids)
            assert (a.unit_id, a.time_s) == pytest.approx((best_id, best_t), abs=TOL), inc
            assert by_id.loc[a.unit_id, "kind"] == a.kind.value


def test_decisions_are_deterministic(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET, 11)
    inc = _incident(lon, lat, "PS-03")
    first = dispatch.dispatch_incident(inc, units, ctx).to_json()
    shuffled = units.sample(frac=1.0, random_state=3)
    fresh = dispatch.build_context(ctx.gdf_areas, ctx.catalog, ctx.travel)
    again = dispatch.dispatch_incident(inc, shuffled, fresh).to_json()
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_straight_line_fallback(
    ref: ReferenceDistrict,
    catalog: Catalog,
    ctx: dispatch.DispatchContext,
    units: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
) -> None:
    straight = dispatch.build_context(ref.gdf_areas, catalog, locator=ctx.locator)
    assert isinstance(straight.travel, StraightLine)
    lon, lat = _point_in(street_points, STREET)
    decision = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), units, straight)
    a = _one(decision, "market")
    market = units[(units["kind"] == "market") & (units["street_code"] == STREET)]
    times = _times(StraightLine(), market, lon, lat)
    assert (a.unit_id, a.time_s) == pytest.approx(_best(times, market["unit_id"]), abs=TOL)
    row = market.set_index("unit_id").loc[a.unit_id]
    dist = Geod(ellps="WGS84").inv(row.geometry.x, row.geometry.y, lon, lat)[2]
    assert a.time_s == pytest.approx(dist * get_settings().detour_factor / (30 / 3.6), rel=1e-9)
    assert decision.explanation["travel_model"]["kind"] == "straight_line"
    assert a.route is not None and len(a.route.geometry.coords) == 2
    result = dispatch.dispatch_batch([_incident(lon, lat, "MK-03")], units, straight)
    near = units[
        (units["kind"] == "market") & units["street_code"].isin([STREET, *ctx.neighbours[STREET]])
    ]
    got = result.decisions[0].assignments[0]
    best = _best(_times(StraightLine(), near, lon, lat), near["unit_id"])
    assert result.assigned == 1 and (got.unit_id, got.time_s) == pytest.approx(best, abs=TOL)


def test_to_json_round_trips(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET, 9)
    tight = _with_matter(ctx, "WS-02", max_travel_min=0.01)  # inf limits in the explanation
    decision = dispatch.dispatch_incident(_incident(lon, lat, "WS-02"), units, tight)
    data = decision.to_json()
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back == data
    assert back["status"] == "assigned" and back["level"] == "district"
    first = back["assignments"][0]
    assert first["route"]["type"] == "LineString" and len(first["route"]["coordinates"]) >= 2
    assert first["route"]["coordinates"][-1] == pytest.approx([lon, lat])
    assert back["explanation"]["travel_model"]["kind"] == "network"
    assert back["incident"]["reported_at"] == NOW.isoformat()
    plain = dispatch.dispatch_incident(_incident(lon, lat, "WS-02"), units, ctx, routes=False)
    assert all(a["route"] is None for a in plain.to_json()["assignments"])


# --------------------------------------------------------------------------------------------
# batch
# --------------------------------------------------------------------------------------------


def _random_incidents(
    street_points: pd.DataFrame, catalog: Catalog, rng: np.random.Generator, n: int, tag: str
) -> list[dispatch.Incident]:
    rows = street_points.iloc[rng.integers(len(street_points), size=n)]
    codes = catalog.codes
    return [
        dispatch.Incident(
            f"{tag}-{i:03d}",
            codes[int(rng.integers(len(codes)))],
            float(r["lon"]),
            float(r["lat"]),
            NOW + timedelta(seconds=int(rng.integers(0, 3600))),
        )
        for i, (_, r) in enumerate(rows.iterrows())
    ]


def _check_batch(
    result: dispatch.BatchResult,
    incidents: list[dispatch.Incident],
    state: gpd.GeoDataFrame,
    catalog: Catalog,
) -> None:
    used = [a.unit_id for d in result.decisions for a in d.assignments]
    assert len(used) == len(set(used))
    kinds = state.set_index("unit_id")["kind"]
    free = set(state.loc[state["status"] == "available", "unit_id"])
    assert [d.incident for d in result.decisions] == incidents
    slots = 0
    cost = 0.0
    for d in result.decisions:
        required = [k.value for k in catalog.get(d.matter_code).required_kinds]
        got = [a.kind.value for a in d.assignments] + [k.value for k in d.unfilled]
        assert sorted(got) == sorted(required)
        slots += len(required)
        for a in d.assignments:
            assert kinds[a.unit_id] == a.kind.value and a.unit_id in free
            assert a.level is not EscalationLevel.DISTRICT
            cost += dispatch.PRIORITY_WEIGHT[d.priority] * a.time_s
    assert result.assigned + result.unassigned == slots
    assert result.assigned == len(used)
    assert result.weighted_cost_s == pytest.approx(cost)


def test_batch_never_worse_than_greedy(
    ctx: dispatch.DispatchContext,
    units: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
    catalog: Catalog,
) -> None:
    rng = np.random.default_rng(11)
    strictly_better = 0
    for trial in range(25):
        # Few free units, so incidents compete for them.
        state = _set(units, rng.random(len(units)) < 0.85, status="busy")
        incidents = _random_incidents(street_points, catalog, rng, 12, f"b{trial}")
        try:
            best = dispatch.dispatch_batch(incidents, state, ctx)
        except InputError:
            continue
        greedy = dispatch.dispatch_greedy(incidents, state, ctx)
        _check_batch(best, incidents, state, catalog)
        _check_batch(greedy, incidents, state, catalog)
        assert best.objective_s <= greedy.objective_s + 1e-6
        assert best.gain_over(greedy) >= -1e-12
        if best.assigned == greedy.assigned and best.unassigned_cost_s == greedy.unassigned_cost_s:
            assert best.weighted_cost_s <= greedy.weighted_cost_s + 1e-6
        strictly_better += best.objective_s < greedy.objective_s - 1e-6
    assert strictly_better > 0  # the instances do make greedy pay


def _full_slots(
    ctx: dispatch.DispatchContext, incidents: list[dispatch.Incident], state: gpd.GeoDataFrame
) -> dict[str, list[tuple[float, float, dict[str, float]]]]:
    """Per kind, in arrival order: (weight, horizon, {eligible unit: unbounded time}) per slot."""
    free = state[state["status"] == "available"]
    slots: dict[str, list[tuple[float, float, dict[str, float]]]] = {}
    for inc in sorted(incidents, key=lambda i: (i.reported_at, i.incident_id)):
        matter = ctx.catalog.get(inc.matter_code)
        street = ctx.locator.locate_one(inc.lon, inc.lat)["street"]
        assert street is not None
        near = free[free["street_code"].isin([street, *ctx.neighbours[street]])]
        horizon = dispatch.BATCH_HORIZON_FACTOR * matter.max_travel_min * 60
        times = _times(ctx.travel, near, inc.lon, inc.lat)
        weight = dispatch.PRIORITY_WEIGHT[matter.priority]
        for kind in matter.required_kinds:
            ids = near.loc[near["kind"] == kind.value, "unit_id"]
            ok = {u: times[u] for u in ids if u in times and times[u] <= horizon}
            slots.setdefault(kind.value, []).append((weight, horizon, ok))
    return slots


def _full_objective(
    ctx: dispatch.DispatchContext, incidents: list[dispatch.Incident], state: gpd.GeoDataFrame
) -> float:
    """The batch optimum from full, unbounded time matrices (no lazy searching)."""
    total = 0.0
    for rows in _full_slots(ctx, incidents, state).values():
        units = sorted({u for _, _, ok in rows for u in ok})
        saving = np.zeros((len(rows), max(len(units), 1)))
        for i, (w, h, ok) in enumerate(rows):
            total += w * h
            for j, u in enumerate(units):
                if u in ok:
                    saving[i, j] = w * (ok[u] - h)
        r, c = linear_sum_assignment(saving)
        total += float(saving[r, c].sum())
    return total


def _full_greedy_objective(
    ctx: dispatch.DispatchContext, incidents: list[dispatch.Incident], state: gpd.GeoDataFrame
) -> float:
    total = 0.0
    for rows in _full_slots(ctx, incidents, state).values():
        used: set[str] = set()
        for w, h, ok in rows:
            left = [(t, u) for u, t in ok.items() if u not in used]
            if left:
                t, u = min(left)
                used.add(u)
                total += w * t
            else:
                total += w * h
    return total


def test_lazy_batch_and_greedy_equal_full_matrices(
    ctx: dispatch.DispatchContext,
    units: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
    catalog: Catalog,
) -> None:
    rng = np.random.default_rng(23)
    done = 0
    for trial in range(8):
        state = _set(units, rng.random(len(units)) < 0.6, status="busy")
        incidents = _random_incidents(street_points, catalog, rng, 25, f"f{trial}")
        try:
            result = dispatch.dispatch_batch(incidents, state, ctx)
        except InputError:
            continue
        assert result.objective_s == pytest.approx(_full_objective(ctx, incidents, state))
        greedy = dispatch.dispatch_greedy(incidents, state, ctx)
        assert greedy.objective_s == pytest.approx(_full_greedy_objective(ctx, incidents, state))
        for d in result.decisions:
            for a in d.assignments:
                unit = state[state["unit_id"] == a.unit_id]
                times = _times(ctx.travel, unit, d.incident.lon, d.incident.lat)
                assert a.time_s == pytest.approx(times[a.unit_id], abs=TOL)
        done += 1
    assert done >= 4


def test_greedy_is_nearest_first_in_arrival_order(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    market = units[(units["kind"] == "market") & (units["street_code"] == STREET)]
    only = market["unit_id"].iloc[0]
    state = _set(units, (units["kind"] == "market") & (units["unit_id"] != only), status="busy")
    late = dispatch.Incident("a-late", "MK-03", lon, lat, NOW + timedelta(minutes=5))
    early = dispatch.Incident("z-early", "MK-03", lon, lat, NOW)
    result = dispatch.dispatch_greedy([late, early], state, ctx)
    assert [d.status for d in result.decisions] == ["unassigned", "assigned"]
    assert result.decisions[1].assignments[0].unit_id == only
    reason = _kind_note(result.decisions[0], "market")["unfilled_reason"]
    assert reason == "every eligible unit went to another incident"


def test_batch_matches_brute_force_on_a_tiny_instance(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    # Three market units in reach, five market incidents of mixed priority: every way of
    # filling the slots is enumerated.
    near = [STREET, *ctx.neighbours[STREET]]
    market = units[(units["kind"] == "market") & units["street_code"].isin(near)]
    keep = sorted(market["unit_id"])[:3]
    state = _set(units, ~units["unit_id"].isin(keep), status="busy")
    codes = ["MK-02", "MK-03", "MK-03", "MK-02", "MK-03"]  # priorities 2 and 3
    incidents = [
        _incident(*_point_in(street_points, STREET, 3 * i), code, f"tiny-{i}")
        for i, code in enumerate(codes)
    ]
    # Health assists MK-02: keep every health unit busy so only the market slots count.
    state = _set(state, state["kind"] == "health", status="busy")
    result = dispatch.dispatch_batch(incidents, state, ctx)
    free = state[state["unit_id"].isin(keep)]
    cost = np.full((len(incidents), len(keep)), np.inf)
    weight = []
    horizon = []
    for i, inc in enumerate(incidents):
        matter = ctx.catalog.get(inc.matter_code)
        weight.append(dispatch.PRIORITY_WEIGHT[matter.priority])
        horizon.append(dispatch.BATCH_HORIZON_FACTOR * matter.max_travel_min * 60)
        times = _times(ctx.travel, free, inc.lon, inc.lat)
        for j, uid in enumerate(keep):
            if times[uid] <= horizon[i]:
                cost[i, j] = times[uid]
    best = math.inf
    for perm in itertools.permutations([*range(len(keep)), *[None] * len(incidents)], 5):
        chosen = [p for p in perm if p is not None]
        if len(chosen) != len(set(chosen)):
            continue
        total = 0.0
        for i, j in enumerate(perm):
            if j is None or not np.isfinite(cost[i, j]):
                if j is not None:
                    total = math.inf
                    break
                total += weight[i] * horizon[i]
            else:
                total += weight[i] * cost[i, j]
        best = min(best, total)
    # The health slots are open in every solution and cost the same.
    health_open = sum(
        dispatch.PRIORITY_WEIGHT[2] * dispatch.BATCH_HORIZON_FACTOR * 20 * 60
        for inc in incidents
        if inc.matter_code == "MK-02"
    )
    assert result.objective_s == pytest.approx(best + health_open)
    _check_batch(result, incidents, state, ctx.catalog)


def test_batch_eligibility_is_street_and_touching_streets(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    lon, lat = _point_in(street_points, STREET)
    near = [STREET, *ctx.neighbours[STREET]]
    state = _set(
        units, (units["kind"] == "market") & units["street_code"].isin(near), status="busy"
    )
    result = dispatch.dispatch_batch([_incident(lon, lat, "MK-03")], state, ctx)
    decision = result.decisions[0]
    assert decision.unfilled == (ForceKind.MARKET,) and result.unassigned == 1
    note = _kind_note(decision, "market")
    assert note["eligible"] == [] and "no eligible unit" in note["unfilled_reason"]
    assert result.objective_s == pytest.approx(
        dispatch.PRIORITY_WEIGHT[3] * dispatch.BATCH_HORIZON_FACTOR * 30 * 60
    )
    # Single dispatch would escalate to the district for it.
    single = dispatch.dispatch_incident(_incident(lon, lat, "MK-03"), state, ctx)
    assert _one(single, "market").level is EscalationLevel.DISTRICT


def test_batch_json(
    ctx: dispatch.DispatchContext,
    units: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
    catalog: Catalog,
) -> None:
    incidents = _random_incidents(street_points, catalog, np.random.default_rng(5), 20, "j")
    result = dispatch.dispatch_batch(incidents, units, ctx)
    for d in result.decisions:
        assert json.loads(json.dumps(d.to_json(), allow_nan=False))["explanation"]["method"] == (
            "optimal"
        )


# --------------------------------------------------------------------------------------------
# speed machinery: regional searches, cached unit columns, the batch's search worker
# --------------------------------------------------------------------------------------------


def _decisions_json(decisions: Any) -> str:
    return json.dumps([d.to_json() for d in decisions], sort_keys=True)


def test_regional_searches_change_no_decision(
    ref: ReferenceDistrict,
    catalog: Catalog,
    ctx: dispatch.DispatchContext,
    units: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The reference district cut into tiny regions, as a megacity is into large ones.
    with monkeypatch.context() as mp:
        mp.setattr(modegraph, "_REGION_MIN_NODES", 100)
        mp.setattr(modegraph, "_REGION_NODES", (40, 160))
        regional = build_network(ref.gdf_nodes, ref.gdf_links)
    assert all(g.tilings for g in regional._graphs.values())
    certified = []
    search_region = modegraph.ModeGraph._search_region

    def spy(self: Any, *args: Any) -> Any:
        found = search_region(self, *args)
        certified.append(found is not None)
        return found

    monkeypatch.setattr(modegraph.ModeGraph, "_search_region", spy)
    other = dispatch.build_context(ref.gdf_areas, catalog, regional, locator=ctx.locator)
    rng = np.random.default_rng(41)
    state = _set(units, rng.random(len(units)) < 0.3, status="busy")
    incidents = _random_incidents(street_points, catalog, rng, 40, "rg")
    for inc in incidents:
        try:
            want = dispatch.dispatch_incident(inc, state, ctx)
        except InputError:
            continue
        got = dispatch.dispatch_incident(inc, state, other)
        assert _decisions_json([got]) == _decisions_json([want])
    want_batch = dispatch.dispatch_batch(incidents[:20], state, ctx)
    got_batch = dispatch.dispatch_batch(incidents[:20], state, other)
    assert _decisions_json(got_batch.decisions) == _decisions_json(want_batch.decisions)
    # Regions answered many searches, and the whole graph the others.
    assert sum(certified) > 20 and not all(certified)


def test_units_changed_in_place_are_read_afresh(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    # Unit columns are cached between calls while their data is unchanged; an in-place edit
    # gives a column new data, which must be read again.
    state = units.copy()
    lon, lat = _point_in(street_points, STREET)
    inc = _incident(lon, lat, "PS-03")
    first = dispatch.dispatch_incident(inc, state, ctx, routes=False).assignments[0]
    state.loc[state["unit_id"] == first.unit_id, "status"] = "busy"
    second = dispatch.dispatch_incident(inc, state, ctx, routes=False).assignments[0]
    assert second.kind == first.kind and second.unit_id != first.unit_id
    state.loc[state["unit_id"] == second.unit_id, "kind"] = "market"
    third = dispatch.dispatch_incident(inc, state, ctx, routes=False).assignments[0]
    assert third.unit_id not in {first.unit_id, second.unit_id}
    renamed = state["unit_id"] == third.unit_id
    state.loc[renamed, "unit_id"] = "zz-renamed"
    fourth = dispatch.dispatch_incident(inc, state, ctx, routes=False).assignments[0]
    assert fourth.unit_id == "zz-renamed" and fourth.time_s == third.time_s
    state.loc[state["unit_id"] == "zz-renamed", "unit_id"] = first.unit_id
    with pytest.raises(InputError, match="unique"):
        dispatch.dispatch_incident(inc, state, ctx, routes=False)


def _batch_incidents(
    ctx: dispatch.DispatchContext,
    state: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
    catalog: Catalog,
    n: int,
) -> list[dispatch.Incident]:
    """Random incidents that every mode's roads reach (no far-from-road refusal)."""
    rng = np.random.default_rng(29)
    out: list[dispatch.Incident] = []
    for inc in _random_incidents(street_points, catalog, rng, 3 * n, "w"):
        try:
            dispatch.dispatch_incident(inc, state, ctx, routes=False)
        except InputError:
            continue
        out.append(inc)
    return out[:n]


def test_batch_searches_in_a_worker_give_the_same_result(
    ctx: dispatch.DispatchContext,
    units: gpd.GeoDataFrame,
    street_points: pd.DataFrame,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = _set(units, np.random.default_rng(5).random(len(units)) < 0.5, status="busy")
    incidents = _batch_incidents(ctx, state, street_points, catalog, 60)
    alone = dispatch.dispatch_batch(incidents, state, ctx)
    started: list[bool] = []
    start = search.Searches._start

    def spy(self: search.Searches) -> bool:
        ok = start(self)
        started.append(ok)
        return ok

    monkeypatch.setattr(search, "_PARALLEL_MIN_SEARCHES", 1)
    monkeypatch.setattr(search, "_can_fork", lambda: True)
    monkeypatch.setattr(search.Searches, "_start", spy)
    shared = dispatch.dispatch_batch(incidents, state, ctx)
    assert started and all(started)
    assert shared.objective_s == alone.objective_s
    assert _decisions_json(shared.decisions) == _decisions_json(alone.decisions)

    # A worker that dies leaves the searches to the caller.
    def dead(conn: Any, travel: Any) -> None:
        conn.close()

    monkeypatch.setattr(search, "_search_worker", dead)
    started.clear()
    fallback = dispatch.dispatch_batch(incidents, state, ctx)
    assert started
    assert _decisions_json(fallback.decisions) == _decisions_json(alone.decisions)


def test_an_explanation_lists_at_most_the_first_units_left_out_and_counts_them_all(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame, street_points: pd.DataFrame
) -> None:
    """Every dispatch row keeps its explanation: the units left out (and those busy and not
    preemptable) are listed as the candidates are, the first EXPLAIN_MAX_CANDIDATES in tier
    then candidate order, with the count of all of them."""
    lon, lat = _point_in(street_points, STREET, 7)
    workers = units["kind"] == "grid_worker"
    n = int(workers.sum())
    cap = dispatch.EXPLAIN_MAX_CANDIDATES
    assert n > cap
    off = _set(units, workers, on_duty=False)
    note = _kind_note(
        dispatch.dispatch_incident(_incident(lon, lat, "LS-03"), off, ctx), "grid_worker"
    )
    assert note["left_out_total"] == n and len(note["left_out"]) == cap
    assert {c["note"] for c in note["left_out"]} == {"off duty"}
    order = [dispatch.TIERS.index(c["tier"]) for c in note["left_out"]]
    assert order == sorted(order) and order[0] == 0  # the incident's own grid first

    # A priority-1 matter, every worker busy on priority-2 work: none may be preempted.
    urgent = _with_matter(ctx, "LS-03", priority=1)
    busy = _set(units, workers, status="busy", busy_priority=2)
    busy.loc[workers, "busy_incident"] = [f"old-{u}" for u in busy.loc[workers, "unit_id"]]
    decision = dispatch.dispatch_incident(_incident(lon, lat, "LS-03"), busy, urgent)
    pre = _kind_note(decision, "grid_worker")["preemption"]
    assert pre["considered"] and pre["preemptable"] == []
    assert pre["not_preemptable_total"] == n and len(pre["not_preemptable"]) == cap
    assert len(json.dumps(decision.to_json())) < 60_000  # was about 180 KB


def test_a_pools_snaps_read_from_the_cache_equal_the_snaps_computed(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame
) -> None:
    """A new pool takes its units' snaps from the context's cache when it can (every turn
    builds one): the same roads, positions, access legs and further joins as snapping anew."""
    fresh = dataclasses.replace(ctx)  # its own, empty cache
    kinds = {str(k) for k in units["kind"].unique()}
    cold = dispatch.UnitPool(units, kinds, fresh)
    cold.ensure_snaps(np.arange(cold.n))
    warm = dispatch.UnitPool(units, kinds, fresh)
    every = np.arange(warm.n)
    # In two halves, so that one call meets rows already known.
    warm.ensure_snaps(every[::2])
    warm.ensure_snaps(every)
    for column in ("edge", "frac", "access_m", "far"):
        assert np.array_equal(getattr(warm, column), getattr(cold, column)), column
    assert (warm.edge >= 0).sum() > 1000  # the reference district's units, snapped
    assert warm.more.keys() == cold.more.keys()
    for r, parts in cold.more.items():
        assert all(np.array_equal(a, b) for a, b in zip(warm.more[r], parts, strict=True)), r


def test_a_pools_row_sets_are_its_columns_found_once_and_read_only(
    ctx: dispatch.DispatchContext, units: gpd.GeoDataFrame
) -> None:
    """The tiers and modes a decision reads come from row sets found once per pool: each equals
    the comparison of the column it stands for, and none can be changed by a caller."""
    kinds = [ForceKind.GRID_WORKER, ForceKind.POLICE, ForceKind.FIRE]
    pool = dispatch.UnitPool(units, {k.value for k in kinds}, ctx)
    street = str(pool.street[0])
    near = (street, *ctx.neighbours.get(street, []))
    grid = next(g for g in pool.grid.tolist() if g is not None)
    for kind in kinds:
        rows = pool.rows_of_kind(kind)
        assert rows is pool.rows_of_kind(kind)  # found once
        assert np.array_equal(rows, np.flatnonzero(pool.kind == kind.value))
        with pytest.raises(ValueError, match="read-only"):
            rows[0] = 0
    assert np.array_equal(pool.in_streets(near), np.isin(pool.street, list(near)))
    # Every grid, units without one (None) and a grid nobody is in; then a pool of no units.
    for code in {*pool.grid.tolist(), "no such grid"}:
        assert np.array_equal(pool.rows_in_grid(code), np.flatnonzero(pool.grid == code))
    empty = dispatch.UnitPool(units, set(), ctx)
    assert empty.n == 0 and len(empty.rows_in_grid(grid)) == len(empty.rows_in_grid(None)) == 0
    for held in (pool.in_streets(near), pool.rows_in_grid(grid)):
        with pytest.raises(ValueError, match="read-only"):
            held[0] = 1
    want = np.isin(pool.kind, [k.value for k in kinds[:2]])
    expected = sorted(set(pool.mode[want & pool.positioned & pool.supported].tolist()))
    modes = pool.modes_of(kinds[:2])
    assert modes == expected == search.needed_modes(pool, kinds[:2])
    modes.append("x")  # a caller's copy: the pool's answer stays as it was
    assert pool.modes_of(kinds[:2]) == expected


def test_the_stores_json_follows_jsonables_rules() -> None:
    """dispatch.json_text writes what json.dumps of dispatch.jsonable's copy writes: no inf or
    nan (null), enums as values, numpy values as numbers, tuples as lists, keys as text,
    times in ISO 8601, other values as their text."""
    value = {
        "inf": math.inf,
        "nan": [math.nan, -math.inf, 1.5],
        "kind": ForceKind.FIRE,
        ForceKind.POLICE: EscalationLevel.STREET,
        3: (np.float64(2.5), np.int64(7), np.bool_(True)),
        "array": np.array([[1.0, np.inf], [2.0, 3.0]])[:, 1],
        "at": datetime(2026, 12, 7, 9, 30, 0, 250, tzinfo=UTC),
        "other": dataclasses.make_dataclass("Odd", ["x"])(1),
        "text": '成都 "quoted" \\ back',
    }
    written = dispatch.json_text(value)
    assert "Infinity" not in written and "NaN" not in written
    assert json.loads(written) == json.loads(json.dumps(dispatch.jsonable(value)))
    # An integer beyond 64 bits (orjson refuses it) is still written, and exactly.
    huge = {"id": 2**70, "kind": ForceKind.FIRE, "t": math.inf}
    assert json.loads(dispatch.json_text(huge)) == {"id": 2**70, "kind": "fire", "t": None}
