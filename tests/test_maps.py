"""Map builders (pure): layers, feature counts, offline assets and clear errors."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from gridgov import maps
from gridgov.errors import InputError
from gridgov.maps import rendering
from gridgov.maps.elements import AreaLayer, IncidentLayer, Points
from gridgov.maps.layer_data import incident_data
from gridgov.network import build_network
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.straight_line import StraightLine

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
#: Statuses of the synthetic incidents, cycled: workflow states as plain strings.
STATUSES = (
    "registered",
    "dispatched",
    "acknowledged",
    "on_scene",
    "resolved",
    "verified",
    "closed",
    "evaluated",
    "cancelled",
    "rejected",
)


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


def make_activity(ref: ReferenceDistrict, n: int = 150) -> dict[str, pd.DataFrame]:
    """Incidents in ``n`` grids spread over the district (two in some), assignments with routes
    for some, and events."""
    all_grids = ref.gdf_areas[ref.gdf_areas["level"] == "grid"].sort_values("code")
    picks = (np.arange(n) * 7) % len(all_grids)
    picks[n // 2 :: 5] = picks[n // 2 - 1 :: 5][: len(picks[n // 2 :: 5])]
    grids = all_grids.iloc[picks]
    points = shapely.point_on_surface(grids.geometry.to_numpy())
    incidents = gpd.GeoDataFrame(
        {
            "incident_id": [f"T-{i:03d}" for i in range(n)],
            "matter_code": "FS-01",
            "priority": pd.array([1 + i % 4 if i % 9 else None for i in range(n)], dtype="Int64"),
            "status": [STATUSES[i % len(STATUSES)] for i in range(n)],
            # Every third incident is older than the heat map's 24 hours.
            "reported_at": [NOW - timedelta(hours=30 if i % 3 == 0 else i % 20) for i in range(n)],
            "street_code": [c[:9] + "000" for c in grids["code"]],
            "community_code": [c[:12] for c in grids["code"]],
            "grid_code": grids["code"].to_list(),
        },
        geometry=points,
        crs="EPSG:4326",
    )
    units = ref.gdf_units.sort_values("unit_id")
    # The first 20 incidents get a unit each; every other one a stored route, and the rest a
    # straight line. Incidents 0 and 5 also have an inactive (released) assignment.
    rows = []
    for i in range(20):
        unit = units.iloc[i]
        route = shapely.LineString([unit.geometry, points[i]]).segmentize(0.001) if i % 2 else None
        rows.append((f"T-{i:03d}", unit["unit_id"], True, route))
    rows += [("T-000", units.iloc[30]["unit_id"], False, None)]
    rows += [("T-005", units.iloc[31]["unit_id"], False, None)]
    assignments = gpd.GeoDataFrame(
        {
            "assignment_id": range(len(rows)),
            "incident_id": [r[0] for r in rows],
            "unit_id": [r[1] for r in rows],
            "kind": "fire",
            "role": "lead",
            "level": "street",
            "rule": "nearest_in_street",
            "time_s": 240.0,
            "over_max_travel": False,
            "active": [r[2] for r in rows],
        },
        geometry=gpd.GeoSeries([r[3] for r in rows], crs="EPSG:4326"),
        crs="EPSG:4326",
    )
    events = pd.DataFrame(
        [
            {
                "incident_id": iid,
                "seq": s + 1,
                "at": NOW - timedelta(minutes=30 - s),
                "action": action,
                "to_state": state,
                "actor": "tester",
                "reason": "检查 <b>" if action == "register" else None,
            }
            for iid in incidents["incident_id"][:10]
            for s, (action, state) in enumerate(
                [("report", "reported"), ("register", "registered"), ("dispatch", "dispatched")]
            )
        ]
    )
    return {"incidents": incidents, "assignments": assignments, "events": events}


def expected_counts(ref: ReferenceDistrict, act: dict[str, pd.DataFrame]) -> dict[str, int]:
    incidents = act["incidents"]
    is_open = ~incidents["status"].isin(["closed", "evaluated", "cancelled", "rejected"])
    open_ids = set(incidents.loc[is_open, "incident_id"])
    asg = act["assignments"]
    units = ref.gdf_units
    return {
        "street": int((ref.gdf_areas["level"] == "street").sum()),
        "community": int((ref.gdf_areas["level"] == "community").sum()),
        "grid": int((ref.gdf_areas["level"] == "grid").sum()),
        "units": int((~units.geometry.is_empty & units.geometry.notna()).sum()),
        "incidents": len(open_ids),
        "routes": int((asg["active"] & asg["incident_id"].isin(open_ids)).sum()),
        "heat": int((incidents["reported_at"] >= NOW - timedelta(hours=24)).sum()),
    }


@pytest.fixture(scope="module")
def activity(ref: ReferenceDistrict) -> dict[str, pd.DataFrame]:
    return make_activity(ref)


def command_centre(
    ref: ReferenceDistrict, act: dict[str, pd.DataFrame], **kw: object
) -> folium.Map:
    kw.setdefault("now", NOW)
    return maps.command_centre_map(
        ref.gdf_areas,
        ref.gdf_units,
        act["incidents"],
        act["assignments"],
        act["events"],
        **kw,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# command centre
# --------------------------------------------------------------------------------------------


def test_command_centre_layers_and_counts(ref: ReferenceDistrict, activity: dict) -> None:
    m = command_centre(ref, activity)
    assert isinstance(m, folium.Map)
    info = maps.describe_map(m)
    want = expected_counts(ref, activity)
    layers = info["layers"]
    areas = {v["level"]: v for v in layers.values() if v["kind"] == "areas"}
    assert {lv: a["count"] for lv, a in areas.items()} == {
        "street": want["street"],
        "community": want["community"],
        "grid": want["grid"],
    }
    # The levels are base layers (radio buttons): a switch between levels.
    assert all(a["base"] for a in areas.values())
    shown = [c.level for c in m._children.values() if isinstance(c, AreaLayer) and c.show]
    assert shown == ["grid"]
    kinds = {v["kind"]: v for v in layers.values()}
    assert kinds["units"]["count"] == want["units"] and kinds["units"]["clustered"]
    assert kinds["incidents"]["count"] == want["incidents"] and kinds["incidents"]["clustered"]
    assert kinds["routes"]["count"] == want["routes"]
    assert kinds["heat"]["count"] == want["heat"]
    assert "microgrid" not in areas  # not inlined by default
    assert sorted(info["controls"]) == ["fullscreen", "layers", "legend", "search"]


def test_command_centre_level_workload_and_unclustered(
    ref: ReferenceDistrict, activity: dict
) -> None:
    m = command_centre(
        ref, activity, level="community", levels=("street",), colour_by="workload", cluster=False
    )
    layers = maps.describe_map(m)["layers"]
    areas = {v["level"] for v in layers.values() if v["kind"] == "areas"}
    assert areas == {"street", "community"}
    assert not any(v.get("clustered") for v in layers.values())
    html = maps.render_html(m)
    assert "workload" in html
    # No incident in the heat map's window: the layer is there and empty.
    later = command_centre(ref, activity, now=NOW + timedelta(days=30))
    heat = [v for v in maps.describe_map(later)["layers"].values() if v["kind"] == "heat"]
    assert heat[0]["count"] == 0


def test_area_values_count_open_incidents(ref: ReferenceDistrict, activity: dict) -> None:
    m = command_centre(ref, activity, level="grid")
    grid = next(c for c in m._children.values() if isinstance(c, AreaLayer) and c.level == "grid")
    values = {f[0]: f[2] for f in grid.data["features"]}
    incidents = maps.open_incidents(activity["incidents"])
    expect = incidents["grid_code"].value_counts()
    assert sum(values.values()) == len(incidents)
    for code, n in expect.items():
        assert values[code] == n


def test_open_incidents_treats_statuses_as_strings(activity: dict) -> None:
    got = set(maps.open_incidents(activity["incidents"])["status"])
    assert got == {"registered", "dispatched", "acknowledged", "on_scene", "resolved", "verified"}


def test_incident_popup_data_has_history_and_assignment(
    ref: ReferenceDistrict, activity: dict
) -> None:
    explanation = {
        "kinds": [
            {
                "kind": "fire",
                "role": "lead",
                "rule": "nearest_in_street",
                "accepted_tier": "street",
                "unit_id": "U1",
                "tiers": [
                    {
                        "tier": "street",
                        "accepted": True,
                        "n_candidates": 2,
                        "candidates": [
                            {"unit_id": "U1", "time_s": 50.0},
                            {"unit_id": "U2", "time_s": 70.0},
                        ],
                    }
                ],
            }
        ]
    }
    data = incident_data(
        maps.open_incidents(activity["incidents"]),
        activity["assignments"],
        activity["events"],
        {"T-001": explanation},
    )
    row = next(r for r in data["rows"] if r[3] == "T-001")
    assert [e[1] for e in row[8]] == ["report", "register", "dispatch"]
    assert row[8][0][0] == "11-27 19:30"  # 11:30 UTC shown in Asia/Shanghai
    assert len(row[9]) == 1 and row[9][0][2] == "nearest_in_street"
    assert row[10] == [
        {
            "kind": "fire",
            "role": "lead",
            "rule": "nearest_in_street",
            "tier": "street",
            "candidates": 2,
            "runner_up": "U2",
            "runner_up_s": 70.0,
        }
    ]


def test_builders_do_not_mutate_inputs(ref: ReferenceDistrict, activity: dict) -> None:
    before = {k: v.copy() for k, v in activity.items()}
    units = ref.gdf_units.copy()
    command_centre(ref, activity, colour_by="workload")
    for k, v in before.items():
        pd.testing.assert_frame_equal(activity[k], v)
    pd.testing.assert_frame_equal(ref.gdf_units, units)


def test_bad_inputs_give_clear_errors(ref: ReferenceDistrict, activity: dict) -> None:
    with pytest.raises(InputError, match="colour_by"):
        command_centre(ref, activity, colour_by="heat")
    with pytest.raises(InputError, match="unknown level 'block'"):
        command_centre(ref, activity, level="block")
    with pytest.raises(InputError, match=r"units: missing column\(s\) kind, status"):
        maps.command_centre_map(
            ref.gdf_areas,
            ref.gdf_units.drop(columns=["kind", "status"]),
            activity["incidents"],
        )
    with pytest.raises(InputError, match="no geometry"):
        maps.command_centre_map(
            ref.gdf_areas,
            ref.gdf_units,
            pd.DataFrame(activity["incidents"]).drop(columns="geometry"),
        )
    with pytest.raises(InputError, match="must be a"):
        maps.command_centre_map(ref.gdf_areas, [], activity["incidents"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="timezone-aware"):
        command_centre(ref, activity, now=datetime(2026, 11, 27))
    with pytest.raises(InputError, match="unknown base layer"):
        command_centre(ref, activity, base="google")
    with pytest.raises(InputError, match="needs a key"):
        command_centre(ref, activity, base="tianditu")


def test_base_layers(ref: ReferenceDistrict, activity: dict) -> None:
    m = command_centre(ref, activity, base="http://tiles.intra/{z}/{x}/{y}.png")
    tiles = [c for c in m._children.values() if isinstance(c, folium.TileLayer)]
    assert [t.tiles for t in tiles] == ["http://tiles.intra/{z}/{x}/{y}.png"]
    assert tiles[0].overlay  # under the vector layers, never replacing them
    m = command_centre(ref, activity, base="tianditu", tile_key="K")
    tiles = [c for c in m._children.values() if isinstance(c, folium.TileLayer)]
    assert len(tiles) == 2 and all("tk=K" in t.tiles for t in tiles)
    m = command_centre(ref, activity)
    assert not any(isinstance(c, folium.TileLayer) for c in m._children.values())


# --------------------------------------------------------------------------------------------
# street, coverage, assessment
# --------------------------------------------------------------------------------------------


def test_street_map(ref: ReferenceDistrict, activity: dict) -> None:
    areas = ref.gdf_areas
    code = activity["incidents"]["street_code"].iloc[0]
    m = maps.street_map(
        code,
        areas,
        ref.gdf_units,
        activity["incidents"],
        activity["assignments"],
        activity["events"],
    )
    layers = maps.describe_map(m)["layers"]
    by_level = {v["level"]: v["count"] for v in layers.values() if v["kind"] == "areas"}
    communities = areas[(areas["level"] == "community") & (areas["parent_code"] == code)]
    grids = areas[(areas["level"] == "grid") & areas["parent_code"].isin(communities["code"])]
    assert by_level == {"street": 1, "community": len(communities), "grid": len(grids)}
    units = {v["kind"]: v["count"] for v in layers.values() if v["kind"] in ("units", "incidents")}
    outline = areas.loc[areas["code"] == code, "geometry"].iloc[0]
    inside = ref.gdf_units.geometry.intersects(outline)
    assert units["units"] == ((ref.gdf_units["street_code"] == code) | inside).sum()
    inc = maps.open_incidents(activity["incidents"])
    assert units["incidents"] == (inc["street_code"] == code).sum()
    with pytest.raises(InputError, match="no street '999'"):
        maps.street_map("999", areas, ref.gdf_units, activity["incidents"])


def test_coverage_times_match_brute_force_straight_line(ref: ReferenceDistrict) -> None:
    street = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].iloc[0]
    areas = ref.gdf_areas[ref.gdf_areas["code"].str.startswith(street[:9])]
    travel = StraightLine()
    got = maps.coverage_times(areas, ref.gdf_units, travel, "police", limit_s=3600)
    grids = areas[areas["level"] == "grid"]
    assert len(got) == len(grids)
    police = ref.gdf_units[(ref.gdf_units["kind"] == "police") & ref.gdf_units["on_duty"]]
    points = shapely.point_on_surface(grids.geometry.to_numpy())
    for i, p in enumerate(points[:25]):
        best = math.inf
        for mode, group in police.groupby("travel_mode"):
            src = travel.snap(group.geometry.x, group.geometry.y, str(mode))
            dst = travel.snap([p.x], [p.y], str(mode))
            best = min(best, float(np.min(travel.lower_bound_s(src, dst))))
        assert got["time_s"].iloc[i] == pytest.approx(best, rel=1e-9)


def test_coverage_times_on_roads_agree_with_routes(ref: ReferenceDistrict) -> None:
    net = build_network(ref.gdf_nodes, ref.gdf_links)
    got = maps.coverage_times(ref.gdf_areas, ref.gdf_units, net, "fire", limit_s=3600)
    assert np.isfinite(got["time_s"]).all()
    fire = ref.gdf_units[ref.gdf_units["kind"] == "fire"]
    grids = ref.gdf_areas[ref.gdf_areas["level"] == "grid"]
    for i in (0, 400, 900):
        p = shapely.point_on_surface(grids.geometry.iloc[i])
        row = got.iloc[i]
        unit = fire[fire["unit_id"] == row["unit_id"]].iloc[0]
        mode = unit["travel_mode"]
        route = net.route(
            net.snap([unit.geometry.x], [unit.geometry.y], mode), net.snap([p.x], [p.y], mode)
        )
        assert route.time_s == pytest.approx(row["time_s"], rel=1e-6)
    # A tight limit leaves far grids beyond it (inf, no unit).
    tight = maps.coverage_times(ref.gdf_areas, ref.gdf_units, net, "fire", limit_s=120)
    beyond = ~np.isfinite(tight["time_s"])
    assert beyond.any() and tight.loc[beyond, "unit_id"].isna().all()


def test_coverage_map_bands(ref: ReferenceDistrict) -> None:
    m = maps.coverage_map(ref.gdf_areas, ref.gdf_units, StraightLine(), "fire", bands_min=(5, 10))
    layers = maps.describe_map(m)["layers"]
    areas = [v for v in layers.values() if v["kind"] == "areas"]
    assert areas[0]["count"] == (ref.gdf_areas["level"] == "grid").sum()
    units = [v for v in layers.values() if v["kind"] == "units"]
    assert units[0]["count"] == (ref.gdf_units["kind"] == "fire").sum()
    layer = next(c for c in m._children.values() if isinstance(c, AreaLayer))
    fills = {f[3] for f in layer.data["features"]}
    assert fills <= {"#1a9850", "#91cf60", "#d73027"}
    for bad in ((), (10, 5), (0, 5), (5, 5)):
        with pytest.raises(InputError, match="bands_min"):
            maps.coverage_map(ref.gdf_areas, ref.gdf_units, StraightLine(), "fire", bands_min=bad)
    with pytest.raises(InputError, match="unknown force kind 'army'"):
        maps.coverage_map(ref.gdf_areas, ref.gdf_units, StraightLine(), "army")


def test_coverage_map_of_one_street(ref: ReferenceDistrict) -> None:
    street = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].iloc[2]
    m = maps.coverage_map(
        ref.gdf_areas, ref.gdf_units, StraightLine(), "police", street_code=street
    )
    layers = maps.describe_map(m)["layers"]
    grids = ref.gdf_areas[
        (ref.gdf_areas["level"] == "grid") & ref.gdf_areas["code"].str.startswith(street[:9])
    ]
    assert next(v for v in layers.values() if v["kind"] == "areas")["count"] == len(grids)


def test_assessment_map(ref: ReferenceDistrict) -> None:
    streets = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].tolist()
    kpi = pd.DataFrame({"street_code": streets, "value": np.linspace(0.5, 1.0, len(streets))})
    kpi.loc[0, "value"] = np.nan
    m = maps.assessment_map(ref.gdf_areas, kpi, label="结案率 resolution rate")
    layer = next(c for c in m._children.values() if isinstance(c, AreaLayer))
    assert layer.n_features == len(streets)
    feats = {f[0]: f for f in layer.data["features"]}
    assert feats[streets[0]][3] == "#d0d0d0" and feats[streets[0]][4].endswith("–")
    assert feats[streets[-1]][4].endswith("100.0%")
    bad = pd.DataFrame({"street_code": [streets[0], streets[0], "1"], "value": [1, "x", 2]})
    with pytest.raises(InputError) as err:
        maps.assessment_map(ref.gdf_areas, bad)
    # Every problem at once.
    assert "duplicate" in str(err.value) and "not a street" in str(err.value)
    assert "non-numeric" in str(err.value)
    with pytest.raises(InputError, match=r"missing column\(s\) value"):
        maps.assessment_map(ref.gdf_areas, kpi.drop(columns="value"))


# --------------------------------------------------------------------------------------------
# geometry and offline assets
# --------------------------------------------------------------------------------------------


def test_area_layer_json_simplifies_by_level(ref: ReferenceDistrict) -> None:
    def vertices(data: dict) -> int:
        return sum(len(r) for f in data["features"] for p in f[5] for r in p)

    full = maps.area_layer_json(ref.gdf_areas, "grid", simplify_m=0)
    simple = maps.area_layer_json(ref.gdf_areas, "grid")
    assert len(full["features"]) == len(simple["features"])
    assert vertices(simple) < vertices(full)
    assert all(f[5] for f in simple["features"])  # no polygon simplified away


def _links(page: str) -> list[str]:
    return re.findall(r'<(?:script src|link rel="stylesheet" href)="([^"]+)"', page)


def test_render_inline_has_no_outside_links(ref: ReferenceDistrict, activity: dict) -> None:
    page = maps.render_html(command_centre(ref, activity))
    assert _links(page) == []
    # Nothing that loads (links, like Leaflet's attribution, load nothing).
    assert not re.search(r"""<(script|link|img|iframe)[^>]*(src|href)=["']?(https?:)?//""", page)
    for needle in ("cdn.jsdelivr", "cdnjs", "code.jquery", "unpkg", "bootstrapcdn"):
        assert needle not in page
    assert "GG.markReady()" in page and "data:image/png;base64" in page


def test_render_with_prefix_links_vendored_files(ref: ReferenceDistrict, activity: dict) -> None:
    page = maps.render_html(command_centre(ref, activity), assets="/static/")
    links = _links(page)
    assert links and all(u.startswith("/static/") for u in links)
    for url in links:
        assert (maps.STATIC_DIR / url.removeprefix("/static/")).is_file(), url
    with pytest.raises(InputError, match="assets"):
        maps.render_html(command_centre(ref, activity), assets="")


def test_render_refuses_outside_resources() -> None:
    m = folium.Map(tiles=None)
    folium.Marker([30.7, 104.0], icon=folium.Icon(icon="star")).add_to(m)
    with pytest.raises(InputError, match=r"folium\.Icon"):
        maps.render_html(m)
    m = folium.Map(tiles=None)
    m.get_root().header.add_child(folium.JavascriptLink("https://example.com/x.js"))
    with pytest.raises(InputError, match=re.escape("no vendored copy of https://example.com/x.js")):
        maps.render_html(m)


def test_vendored_assets_have_licences() -> None:
    vendor = maps.STATIC_DIR / "vendor"
    folders = {Path(p).parts[1] for p in rendering._VENDORED.values() if p.startswith("vendor/")}
    for folder in folders:
        names = {p.name.lower() for p in (vendor / folder).iterdir()}
        assert any(n.startswith(("license", "mit-licence")) for n in names), folder
    for path in rendering._VENDORED.values():
        assert (maps.STATIC_DIR / path).is_file(), path


def test_build_map_refuses_unknown_kind() -> None:
    with pytest.raises(InputError, match="unknown map kind 'globe'"):
        maps.build_map("globe", None)  # type: ignore[arg-type]


def test_build_map_from_store(reference_store_url: str) -> None:
    """The CLI's entry point reads every input from the store, on each backend."""
    from gridgov import dispatch, store

    engine = store.open_store(reference_store_url)
    ctx = store.context_from_store(engine)
    now = datetime.now(UTC)
    for i, (lon, lat, matter) in enumerate([(104.05, 30.69, "FS-01"), (104.03, 30.70, "UM-03")]):
        incident = dispatch.Incident(f"MAP-{i}", matter, lon, lat, now)
        store.create_incident(engine, incident, source="test", now=now, check_duplicates=False)
        store.dispatch_stored(engine, ctx, incident.incident_id, now=now)
    active = store.read_assignments(engine, active=True)
    street = str(store.read_incidents(engine)["street_code"].iloc[0])

    m = maps.build_map("command-centre", engine, now=now)
    layers = {v["kind"]: v for v in maps.describe_map(m)["layers"].values()}
    assert layers["incidents"]["count"] == 2
    assert layers["routes"]["count"] == len(active)
    assert layers["units"]["count"] == len(store.read_units(engine))
    rows = next(
        c
        for c in m._children.values()
        # Incidents have their own layer (never clustered with units, see GG.incidentLayer).
        if isinstance(c, IncidentLayer)
        and any(isinstance(p, Points) and p.what == "incidents" for p in c._children.values())
    )
    data = next(p for p in rows._children.values() if isinstance(p, Points)).data
    # Each popup holds the workflow history and the dispatcher's explanation.
    assert all(r[8] and r[9] and r[10] for r in data["rows"])

    m = maps.build_map("street", engine, street=street)
    assert any(v["kind"] == "incidents" for v in maps.describe_map(m)["layers"].values())
    m = maps.build_map("coverage", engine, force_kind="fire")
    assert maps.describe_map(m)["layers"]
    kpi = pd.DataFrame({"street_code": [street], "value": [0.5]})
    m = maps.build_map("assessment", engine, kpi=kpi)
    assert next(iter(maps.describe_map(m)["layers"].values()))["count"] == 13
    with pytest.raises(InputError, match="--street"):
        maps.build_map("street", engine)
