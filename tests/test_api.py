"""The native API (/api/v1) on both backends: reports, lists, history, workflow actions, batch
dispatch, units and AVL, assessment, health; bad input answered clearly with nothing lost; and
`gridgov serve` / `gridgov token issue` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import shapely
import shapely.geometry
from fastapi.testclient import TestClient
from live_server import free_port
from sqlalchemy import func, select

from api.app import create_app, warm_up
from gridgov import store
from gridgov.crs import from_wgs84
from gridgov.store import travel_context
from gridgov.store.models import EVENTS, INCIDENTS

STREET = "510106024000"


class Api:
    def __init__(self, client: TestClient, engine: Any, token: str) -> None:
        self.client, self.engine = client, engine
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers, **kw)

    def count(self, table: Any) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

    def point(self, i: int = 0) -> tuple[float, float]:
        areas = store.context_from_store(self.engine).gdf_areas
        micro = areas[(areas["level"] == "microgrid") & areas["code"].str.startswith(STREET[:9])]
        p = micro.geometry.iloc[(i * 37) % len(micro)].representative_point()
        return float(p.x), float(p.y)


@pytest.fixture(scope="module")
def api(reference_store_url: str) -> Iterator[Api]:
    engine = store.open_store(reference_store_url)
    _, token = store.issue_credential(engine, "dispatcher", street_code=STREET, label="desk 1")
    with TestClient(create_app(engine=engine), raise_server_exceptions=False) as client:
        yield Api(client, engine, token)
    engine.dispose()


def test_report_is_dispatched_and_its_history_readable(api: Api) -> None:
    lon, lat = api.point(1)
    created = api.post(
        "/api/v1/incidents",
        {"matter_code": "MK-03", "lon": lon, "lat": lat, "description": "unmarked prices"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "dispatched" and body["street_code"] == STREET
    assert body["dispatch"]["assignments"][0]["kind"] == "market"
    assert body["dispatch"]["explanation"]
    one = api.get(f"/api/v1/incidents/{body['incident_id']}").json()
    assert [e["action"] for e in one["events"]] == ["report", "register", "dispatch"]
    assert (
        one["dispatch"]["assignments"][0]["unit_id"]
        == body["dispatch"]["assignments"][0]["unit_id"]
    )
    assert one["description"] == "unmarked prices"


def test_report_without_dispatch_waits_in_the_queue_then_batch_dispatch(api: Api) -> None:
    ids = []
    for i, matter in enumerate(["UM-01", "FS-01"]):
        lon, lat = api.point(10 + i)
        r = api.post(
            "/api/v1/incidents", {"matter_code": matter, "lon": lon, "lat": lat, "dispatch": False}
        )
        assert r.status_code == 201 and r.json()["status"] == "registered"
        assert r.json()["dispatch"] is None
        ids.append(r.json()["incident_id"])
    batch = api.post("/api/v1/incidents/dispatch", {"incident_ids": [*ids, "NO-SUCH-ONE"]})
    assert batch.status_code == 200, batch.text
    items = batch.json()["items"]
    # The fire (priority 1) goes first, the litter (priority 4) after it.
    assert [i["incident_id"] for i in items[:2]] == [ids[1], ids[0]]
    assert items[2] == {
        "incident_id": "NO-SUCH-ONE",
        "status": "skipped",
        "units": [],
        "reason": "not queued for dispatch, or not in your scope",
    }
    assert batch.json()["dispatched"] == 2


def test_batch_dispatch_is_optimal_and_skips_a_cancelled_incident(api: Api) -> None:
    ids = []
    for i, matter in enumerate(["UM-01", "UM-02", "UM-01"]):
        lon, lat = api.point(40 + i)
        r = api.post(
            "/api/v1/incidents", {"matter_code": matter, "lon": lon, "lat": lat, "dispatch": False}
        )
        assert r.status_code == 201 and r.json()["status"] == "registered", r.text
        ids.append(r.json()["incident_id"])
    cancelled = api.post(
        f"/api/v1/incidents/{ids[1]}/actions/cancel", {"reason": "the reporter withdrew it"}
    )
    assert cancelled.status_code == 200, cancelled.text
    batch = api.post("/api/v1/incidents/dispatch", {"incident_ids": ids})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    items = {i["incident_id"]: i for i in body["items"]}
    assert items[ids[1]]["status"] == "skipped" and items[ids[1]]["units"] == []
    assert {items[ids[0]]["status"], items[ids[2]]["status"]} <= {"assigned", "partial"}
    assert body["dispatched"] == 2 and body["skipped"] == 1
    assert body["method"] == "optimal"
    assert body["objective_s"] <= body["greedy_objective_s"]
    assert body["gain"] == pytest.approx(
        (body["greedy_objective_s"] - body["objective_s"]) / body["greedy_objective_s"]
    )
    for incident_id in (ids[0], ids[2]):
        one = api.get(f"/api/v1/incidents/{incident_id}").json()
        assert one["status"] == "dispatched"
        assert one["dispatch"]["explanation"]["method"] == "optimal"


def test_workflow_actions_and_refusals(api: Api) -> None:
    lon, lat = api.point(20)
    incident = api.post("/api/v1/incidents", {"matter_code": "EE-01", "lon": lon, "lat": lat})
    incident_id = incident.json()["incident_id"]
    events_before = api.count(EVENTS)
    refused = api.post(f"/api/v1/incidents/{incident_id}/actions/verify")
    assert refused.status_code == 409
    assert "allows" in refused.json()["message"]
    assert api.count(EVENTS) == events_before
    assert api.post(f"/api/v1/incidents/{incident_id}/actions/acknowledge").status_code == 200
    # A return needs a reason; the field is named.
    no_reason = api.post(f"/api/v1/incidents/{incident_id}/actions/return")
    assert no_reason.status_code == 409 and "reason" in no_reason.json()["message"]
    returned = api.post(
        f"/api/v1/incidents/{incident_id}/actions/return", {"reason": "not our competence"}
    )
    assert returned.status_code == 200, returned.text
    # A returned incident is dispatched again at once, without the returning office.
    assert returned.json()["dispatch"] is not None
    history = api.get(f"/api/v1/incidents/{incident_id}").json()["events"]
    assert [e["action"] for e in history][-2:] == ["return", "dispatch"]
    bad = api.post(f"/api/v1/incidents/{incident_id}/actions/fly")
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "action"


def test_evaluation_recorded_by_staff_names_them(api: Api) -> None:
    lon, lat = api.point(30)
    incident_id = api.post(
        "/api/v1/incidents", {"matter_code": "UM-02", "lon": lon, "lat": lat}
    ).json()["incident_id"]
    for action in ("acknowledge", "arrive", "resolve", "verify", "close"):
        assert api.post(f"/api/v1/incidents/{incident_id}/actions/{action}").status_code == 200
    evaluated = api.post(
        f"/api/v1/incidents/{incident_id}/actions/evaluate", {"satisfaction": "satisfied"}
    )
    assert evaluated.status_code == 200, evaluated.text
    event = evaluated.json()["event"]
    assert event["role"] == "system" and event["data"]["recorded_by"].startswith("dispatcher:")


def test_list_filters_and_pages(api: Api) -> None:
    for i in range(3):
        lon, lat = api.point(40 + i)
        api.post(
            "/api/v1/incidents", {"matter_code": "PS-02", "lon": lon, "lat": lat, "dispatch": False}
        )
    page = api.get("/api/v1/incidents", params={"matter_code": "PS-02", "limit": 2}).json()
    assert page["total"] >= 3 and len(page["items"]) == 2
    rest = api.get(
        "/api/v1/incidents", params={"matter_code": "PS-02", "limit": 2, "offset": 2}
    ).json()
    assert not {i["incident_id"] for i in page["items"]} & {i["incident_id"] for i in rest["items"]}
    times = [i["reported_at"] for i in page["items"]]
    assert times == sorted(times, reverse=True)
    # A box around one report finds it and leaves the others out.
    lon, lat = api.point(40)
    box = f"{lon - 1e-4},{lat - 1e-4},{lon + 1e-4},{lat + 1e-4}"
    boxed = api.get("/api/v1/incidents", params={"bbox": box, "matter_code": "PS-02"}).json()
    assert boxed["total"] >= 1
    assert all(abs(i["lon"] - lon) < 2e-4 for i in boxed["items"])
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert api.get("/api/v1/incidents", params={"since": future}).json()["total"] == 0
    unknown = api.get("/api/v1/incidents", params={"status": "done"})
    assert unknown.status_code == 422 and "status" in unknown.json()["message"]


def test_gcj02_positions_are_converted(api: Api) -> None:
    lon, lat = api.point(50)
    glon, glat = (float(v[0]) for v in from_wgs84(lon, lat, "gcj02"))
    r = api.post(
        "/api/v1/incidents",
        {"matter_code": "UM-05", "lon": glon, "lat": glat, "crs": "gcj02", "dispatch": False},
    )
    assert r.status_code == 201
    assert r.json()["lon"] == pytest.approx(lon, abs=1e-6)
    assert r.json()["lat"] == pytest.approx(lat, abs=1e-6)
    located = api.client.get(
        "/api/v1/locate", params={"lon": glon, "lat": glat, "crs": "gcj02"}
    ).json()
    assert located["microgrid"]["code"] == r.json()["microgrid_code"]


def _edge_point(api: Api) -> tuple[float, float]:
    """A true WGS84 point inside the district whose GCJ-02 form lies outside it."""
    ctx = store.context_from_store(api.engine)
    district = ctx.gdf_areas[ctx.gdf_areas["level"] == "district"].geometry.iloc[0]
    ring = shapely.get_exterior_ring(shapely.get_geometry(district, 0))
    for fraction in np.linspace(0, 1, 400, endpoint=False):
        edge = ring.interpolate(fraction, normalized=True)
        for dx, dy in ((-1, 1), (1, -1), (1, 1), (-1, -1)):
            lon, lat = edge.x + dx * 2e-4, edge.y + dy * 2e-4
            if not district.contains(shapely.Point(lon, lat)):
                continue
            glon, glat = (float(v[0]) for v in from_wgs84(lon, lat, "gcj02"))
            if not district.contains(shapely.Point(glon, glat)):
                return glon, glat
    raise AssertionError("no boundary point found")


def test_bad_input_is_explained_and_nothing_is_stored(api: Api) -> None:
    before = api.count(INCIDENTS)
    lon, lat = api.point(60)
    cases = [
        ({"matter_code": "XX-99", "lon": lon, "lat": lat}, "unknown_matter", "XX-99"),
        ({"matter_code": "UM-01", "lon": 105.5, "lat": 30.69}, "outside_district", "outside"),
        ({"matter_code": "UM-01", "lon": lon}, "invalid_input", "lat"),
        ({"matter_code": "UM-01", "lon": lon, "lat": 95}, "invalid_input", "lat"),
        (
            {"matter_code": "UM-01", "lon": lon, "lat": lat, "crs": "epsg:3857"},
            "invalid_input",
            "crs",
        ),
        (
            {
                "matter_code": "UM-01",
                "lon": lon,
                "lat": lat,
                "reported_at": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
            },
            "invalid_input",
            "future",
        ),
        (
            {"matter_code": "UM-01", "lon": lon, "lat": lat, "reported_at": "2026-11-27T10:00"},
            "invalid_input",
            "reported_at",
        ),
    ]
    for body, code, word in cases:
        r = api.post("/api/v1/incidents", body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == code and word in r.text, (body, r.text)
        assert "Traceback" not in r.text
    # A GCJ-02 point sent as WGS84 near the boundary: the answer says what probably happened.
    glon, glat = _edge_point(api)
    r = api.post("/api/v1/incidents", {"matter_code": "UM-01", "lon": glon, "lat": glat})
    assert r.status_code == 422 and "crs=gcj02" in r.json()["message"]
    assert api.count(INCIDENTS) == before


def test_unit_status_and_avl_staleness(api: Api) -> None:
    units = api.get("/api/v1/units", params={"kind": "police"}).json()["items"]
    unit = next(u for u in units if u["status"] == "available")
    unit_id = unit["unit_id"]
    lon, lat = api.point(70)
    fresh = api.post(f"/api/v1/units/{unit_id}/position", {"lon": lon, "lat": lat})
    assert fresh.status_code == 200 and fresh.json()["stored"] and not fresh.json()["stale"]
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    older = api.post(f"/api/v1/units/{unit_id}/position", {"lon": lon, "lat": lat, "at": old})
    # Out of order: an older fix never overwrites a newer one.
    assert older.json()["stored"] is False and older.json()["stale"] is True
    listed = api.get(f"/api/v1/units/{unit_id}").json()
    assert listed["position_stale"] is False and listed["lon"] == pytest.approx(lon)
    # Another unit whose only fix is two hours old is stale, and dispatch leaves that fix out.
    other = next(u for u in units if u["status"] == "available" and u["unit_id"] != unit_id)
    api.post(f"/api/v1/units/{other['unit_id']}/position", {"lon": lon, "lat": lat, "at": old})
    stale = api.get(f"/api/v1/units/{other['unit_id']}").json()
    assert stale["position_stale"] is True
    assert other["unit_id"] in {
        u["unit_id"] for u in api.get("/api/v1/units", params={"stale": True}).json()["items"]
    }
    off = api.post(f"/api/v1/units/{unit_id}/status", {"status": "off_duty", "on_duty": False})
    assert off.status_code == 200 and off.json()["on_duty"] is False
    assert api.post(f"/api/v1/units/{unit_id}/status", {"status": "available", "on_duty": True})
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = api.post(f"/api/v1/units/{unit_id}/position", {"lon": lon, "lat": lat, "at": future})
    assert r.status_code == 422 and "future" in r.text


def test_assessment(api: Api) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")
    r = api.get("/api/v1/assessment", params={"period": period, "level": "street"})
    assert r.status_code == 200, r.text
    body = r.json()
    # A dispatcher sees its own street only, with the five-powers weights.
    assert body["street_code"] == STREET and body["office_weight"] >= 0.5
    bad = api.get("/api/v1/assessment", params={"period": "last month"})
    assert bad.status_code == 422


def test_areas_by_viewport_and_zoom(api: Api) -> None:
    lon, lat = api.point(80)
    box = f"{lon - 0.005},{lat - 0.005},{lon + 0.005},{lat + 0.005}"
    coarse = api.client.get("/api/v1/areas/microgrid", params={"bbox": box, "zoom": 12}).json()
    fine = api.client.get("/api/v1/areas/microgrid", params={"bbox": box}).json()
    assert 0 < coarse["matched"] == fine["matched"]

    def vertices(collection: dict[str, Any]) -> int:
        shapes = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
        return int(shapely.get_num_coordinates(shapes).sum())

    assert vertices(coarse) < vertices(fine)
    gcj = api.client.get("/api/v1/areas/street", params={"crs": "gcj02"}).json()
    assert gcj["crs"] == "gcj02"


def test_internal_errors_show_a_reference_only(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret connection string postgresql://x:y@db")

    monkeypatch.setattr(store, "query_incidents", broken)
    r = api.get("/api/v1/incidents")
    assert r.status_code == 500
    assert r.json()["error"] == "internal" and "reference" in r.json()["message"]
    assert "secret" not in r.text and "Traceback" not in r.text


def test_readiness_fails_on_an_empty_store(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    store.init_db(url)
    with TestClient(create_app(engine=store.open_store(url))) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/health/ready")
    assert ready.status_code == 503 and "gridgov load" in ready.json()["detail"]


def test_warm_up_settles_the_heap_once_the_district_is_loaded(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker settles its heap (store.settle_heap) after warm-up has loaded the context,
    never before it; a store with no district loads nothing and settles nothing."""
    loaded: list[bool] = []

    def settle() -> int:
        loaded.append(travel_context._CACHE.get(api.engine) is not None)
        return 1

    monkeypatch.setattr(store, "settle_heap", settle)
    warm_up(api.client.app)  # type: ignore[arg-type]
    assert loaded == [True]
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    store.init_db(url)
    warm_up(create_app(engine=store.open_store(url)))
    assert loaded == [True]


def test_openapi_has_examples(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    create = spec["paths"]["/api/v1/incidents"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][name]["examples"]
    assert "/open311/v2/requests.{format}" in spec["paths"]


@pytest.mark.slow
def test_serve_and_token_commands(tmp_path: Path) -> None:
    """What an operator does: set up a store, issue a token, start the server, call it."""
    env = {**os.environ, "GRIDGOV_DATABASE_URL": f"sqlite:///{tmp_path / 'gridgov.db'}"}
    gridgov = [str(Path(sys.executable).parent / "gridgov")]
    for step in (["init"], ["load"]):
        subprocess.run([*gridgov, *step], env=env, check=True, capture_output=True)
    issued = subprocess.run(
        [*gridgov, "token", "issue", "dispatcher", "--street", STREET, "--label", "desk 9"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    token = issued.stdout.strip()
    assert token.startswith("gg_") and "not shown again" in issued.stderr
    listed = subprocess.run(
        [*gridgov, "token", "list"], capture_output=True, text=True, env=env, check=True
    )
    assert "desk 9" in listed.stdout and token not in listed.stdout
    port = free_port()
    server = subprocess.Popen(
        [*gridgov, "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("gridgov serve did not become ready")
        units = httpx.get(f"{base}/api/v1/units", headers={"Authorization": f"Bearer {token}"})
        assert units.status_code == 200 and units.json()["total"] > 0
        credential_id = token.split("_")[1]
        subprocess.run([*gridgov, "token", "revoke", credential_id], env=env, check=True)
        refused = httpx.get(f"{base}/api/v1/units", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_unit_without_position_falls_back_to_its_office(api: Api) -> None:
    """A unit whose position was cleared (no AVL fix, no home post) is dispatched from its
    office, and the explanation says so (this once crashed the PostGIS snapshot)."""
    from sqlalchemy import update

    from gridgov.store.models import UNITS

    units = api.get("/api/v1/units", params={"kind": "judicial"}).json()["items"]
    unit = next(u for u in units if u["status"] == "available" and u["office_id"])
    with api.engine.begin() as connection:
        connection.execute(
            update(UNITS)
            .where(UNITS.c.unit_id == unit["unit_id"])
            .values(position=None, position_time=None)
        )
    lon, lat = api.point(90)
    r = api.post("/api/v1/incidents", {"matter_code": "LS-04", "lon": lon, "lat": lat})
    assert r.status_code == 201, r.text
    text = str(r.json()["dispatch"]["explanation"])
    assert "no position: office position used" in text
