"""Open311 GeoReport v2 (api/open311*.py) against a live server, on SQLite and on PostGIS.

The reference district is loaded once per backend (``reference_store_url``), and a real uvicorn
server serves it on a free local port, because the third-party ``georeport`` client speaks
through ``requests`` and is used exactly as a phone app's developer would use it. Requests are
filed as the spec says (form-encoded POST). Each test files its reports at its own community's
point with its own matter, so that no report duplicates another test's by accident.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import shapely
import xmltodict
from georeport import GeoReport
from live_server import serve
from shapely.geometry import Point
from sqlalchemy import Engine, func, select

from api import open311_answers, open311_lists
from api.app import create_app
from gridgov import store
from gridgov.catalog import load_catalog
from gridgov.crs import from_wgs84
from gridgov.store.models import INCIDENTS

DISTRICT = "510106000000"
CONTACT = {
    "email": "wang.fang@example.org",
    "phone": "13800138000",
    "first_name": "Fang",
    "last_name": "Wang",
    "device_id": "device-7f3a",
    "account_id": "acct-991",
}


# --------------------------------------------------------------------------------------------
# a live server per backend
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(reference_engine: Engine) -> Engine:
    return reference_engine


@pytest.fixture(scope="module")
def root(engine: Engine) -> Iterator[str]:
    """The Open311 root URL of a uvicorn server over ``engine`` (in a background thread)."""
    with serve(create_app(engine=engine)) as base:
        yield f"{base}/open311/v2"


@pytest.fixture(scope="module")
def http(root: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=root, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def api_key(engine: Engine) -> str:
    _, secret = store.issue_credential(engine, "citizen", kind="api_key", label="test phone app")
    return secret


@pytest.fixture(scope="module")
def points(engine: Engine) -> list[tuple[float, float]]:
    """One point inside each community (far apart: no report duplicates another test's)."""
    gdf = store.read_stored_areas(engine)
    communities = gdf[gdf["level"].astype(str) == "community"].sort_values("code")
    return [(p.x, p.y) for p in communities.geometry.representative_point()]


def file(
    http: httpx.Client,
    api_key: str,
    code: str,
    point: tuple[float, float],
    fmt: str = "json",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    """POST a request form-encoded, as the spec says."""
    form = {"api_key": api_key, "service_code": code, "long": str(point[0]), "lat": str(point[1])}
    form.update(fields)
    return http.post(f"/requests.{fmt}", data=form, headers=headers)


def filed_id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()[0]["service_request_id"])


def as_list(value: Any) -> list[Any]:
    """xmltodict gives a dict for one repeated element and a list for several."""
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------------
# the georeport client
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_format", ["json", "xml"])
def test_georeport_client_reads_services_and_requests(
    root: str,
    http: httpx.Client,
    api_key: str,
    points: list[tuple[float, float]],
    output_format: str,
) -> None:
    offset = 0 if output_format == "json" else 2
    first = filed_id(file(http, api_key, "UM-01", points[offset], description="Stall on road"))
    second = filed_id(file(http, api_key, "EE-01", points[offset + 1]))
    client = GeoReport(root, jurisdiction=DISTRICT, output_format=output_format)

    services = as_list(client.get_service_list())
    assert [s["service_code"] for s in services] == list(load_catalog().codes)
    assert {s["type"] for s in services} == {"realtime"}
    assert {str(s["metadata"]).lower() for s in services} == {"true"}

    definition = client.get_service_definition("FS-02")
    assert definition["service_code"] == "FS-02"
    attributes = definition["attributes"]
    if output_format == "xml":
        attributes = as_list(attributes["attribute"])
    assert [a["code"] for a in attributes] == ["landmark"]
    assert str(attributes[0]["required"]).lower() == "false"

    one = client.get_service_request(first)
    assert one["service_request_id"] == first
    assert one["service_code"] == "UM-01"
    assert one["status"] == "open"
    assert one["description"] == "Stall on road"
    assert float(one["lat"]) == pytest.approx(points[offset][1], abs=1e-6)
    assert float(one["long"]) == pytest.approx(points[offset][0], abs=1e-6)

    single = client.get_service_requests(service_request_id=first)
    both = client.get_service_requests(service_request_id=f"{first},{second}", status="closed")
    if output_format == "xml":
        # One <request> parses to a dict, several to a list.
        assert isinstance(single, dict)
        assert isinstance(both, list)
    assert [r["service_request_id"] for r in as_list(single)] == [first]
    # service_request_id overrides every other filter (status=closed here).
    assert {r["service_request_id"] for r in as_list(both)} == {first, second}

    listed = as_list(client.get_service_requests(service_code="UM-01,EE-01", status="open"))
    assert {first, second} <= {r["service_request_id"] for r in listed}


# --------------------------------------------------------------------------------------------
# filing and reading
# --------------------------------------------------------------------------------------------


def test_filed_request_reads_back_without_personal_data(
    http: httpx.Client, api_key: str, points: list[tuple[float, float]]
) -> None:
    response = file(
        http,
        api_key,
        "FS-02",
        points[4],
        fmt="xml",
        description="Cars across the fire lane\n[Open311] media_url: https://evil.example/x",
        media_url="https://photos.example.org/fire-lane.jpg",
        address_string="12 Xi'an Road",
        **{"attribute[landmark]": "behind the bakery"},
        **CONTACT,
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/xml")
    answer = xmltodict.parse(response.content)["service_requests"]["request"]
    rid = answer["service_request_id"]
    assert answer["token"] == rid
    # Personal data is not echoed (the answer is kept for idempotent replays).
    assert answer.get("account_id") is None
    assert answer["service_notice"].startswith("Received")

    got = http.get(f"/requests/{rid}.json", params={"jurisdiction_id": DISTRICT})
    assert got.status_code == 200
    [request] = got.json()
    assert set(request) == set(open311_lists.ServiceRequest.model_fields)
    assert request["media_url"] == "https://photos.example.org/fire-lane.jpg"
    assert request["address"] == "12 Xi'an Road"
    # The reporter's own "[Open311]" line is text, not a field.
    assert request["description"].startswith("Cars across the fire lane\n(Open311) media_url")
    # A blocked fire lane is led by the street's fire station, which has units free here.
    agency = request["agency_responsible"]
    assert agency is not None and "消防救援站" in agency
    assert answer["service_notice"] == f"Received and dispatched to {agency}."
    requested = datetime.fromisoformat(request["requested_datetime"])
    expected = datetime.fromisoformat(request["expected_datetime"])
    assert expected - requested == pytest.approx(timedelta(hours=12), abs=timedelta(minutes=1))
    as_gcj = http.get(f"/requests/{rid}.json", params={"crs": "gcj02"}).json()[0]
    x, y = from_wgs84(request["long"], request["lat"], "gcj02")
    assert (as_gcj["long"], as_gcj["lat"]) == pytest.approx((float(x[0]), float(y[0])), abs=1e-6)

    token = http.get(f"/tokens/{rid}.xml")
    assert xmltodict.parse(token.content)["service_requests"]["request"] == {
        "service_request_id": rid,
        "token": rid,
    }
    for path in (
        f"/requests/{rid}.json",
        f"/requests/{rid}.xml",
        "/requests.json",
        "/requests.xml",
    ):
        text = http.get(path).text
        assert rid in text
        for secret in CONTACT.values():
            assert secret not in text, (path, secret)


def test_duplicate_is_answered_and_linked(
    http: httpx.Client, api_key: str, points: list[tuple[float, float]]
) -> None:
    first = filed_id(file(http, api_key, "MK-01", points[5]))
    near = (points[5][0] + 0.0002, points[5][1])  # about 20 m east
    response = file(http, api_key, "MK-01", near)
    duplicate = filed_id(response)
    assert duplicate != first
    assert first in response.json()[0]["service_notice"]
    [request] = http.get(f"/requests/{duplicate}.json").json()
    assert request["status"] == "closed"
    assert request["service_notice"].startswith(f"Duplicates request {first}")
    assert f"duplicate of {first}" in request["status_notes"]


def test_status_filter_follows_the_workflow(
    engine: Engine, http: httpx.Client, api_key: str, points: list[tuple[float, float]]
) -> None:
    rid = filed_id(file(http, api_key, "LS-01", points[6]))

    def ids(status: str) -> set[str]:
        listed = http.get("/requests.json", params={"service_code": "LS-01", "status": status})
        assert listed.status_code == 200, listed.text
        return {r["service_request_id"] for r in listed.json()}

    assert rid in ids("open")
    assert rid not in ids("closed")
    reason = "the owner removed the hazard before the unit arrived"
    store.apply_action(
        engine,
        rid,
        "cancel",
        at=datetime.now(UTC),
        actor="dispatcher:test",
        role="dispatcher",
        reason=reason,
    )
    assert rid in ids("closed")
    assert rid not in ids("open")
    assert rid in ids("open,closed")
    [request] = http.get(f"/requests/{rid}.json").json()
    assert (request["status"], request["status_notes"]) == ("closed", reason)
    assert request["expected_datetime"] is None


def test_date_window(http: httpx.Client, api_key: str, points: list[tuple[float, float]]) -> None:
    rid = filed_id(file(http, api_key, "HE-01", points[7]))
    now = datetime.now(UTC)

    def ids(**params: str) -> set[str]:
        listed = http.get("/requests.json", params={"service_code": "HE-01", **params})
        assert listed.status_code == 200, listed.text
        return {r["service_request_id"] for r in listed.json()}

    assert rid in ids()  # the default window: the last 90 days
    assert rid in ids(start_date=(now - timedelta(days=1)).isoformat())
    assert rid not in ids(start_date=(now + timedelta(days=1)).isoformat())
    assert rid not in ids(end_date=(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    too_long = http.get(
        "/requests.json", params={"start_date": "2026-01-01", "end_date": "2026-06-01"}
    )
    assert too_long.status_code == 422
    assert too_long.json()[0]["description"].startswith("end_date:")
    bad = http.get("/requests.xml", params={"start_date": "yesterday", "status": "pending"})
    assert bad.status_code == 422
    error = xmltodict.parse(bad.content)["errors"]["error"]
    assert "start_date:" in error["description"]
    assert "status:" in error["description"]


# --------------------------------------------------------------------------------------------
# refusals, in the spec's error format
# --------------------------------------------------------------------------------------------


def _gcj_hint_point(engine: Engine) -> tuple[float, float]:
    """A point outside the district that lies inside when read as GCJ-02: a point just
    inside the boundary, shifted as a Chinese map SDK would show it."""
    gdf = store.read_stored_areas(engine)
    district = gdf[gdf["level"].astype(str) == "district"].geometry.iloc[0]
    for x, y in shapely.get_coordinates(district.boundary)[::25]:
        gx, gy = from_wgs84(x, y, "gcj02")
        dx, dy = float(gx[0]) - x, float(gy[0]) - y
        for t in (0.2, 0.5, 0.8):
            inside = Point(x - t * dx, y - t * dy)
            shifted = Point(inside.x + dx, inside.y + dy)
            if district.contains(inside) and not district.buffer(1e-5).contains(shifted):
                sx, sy = from_wgs84(inside.x, inside.y, "gcj02")
                return float(sx[0]), float(sy[0])
    pytest.fail("no boundary point where GCJ-02 shifts across the boundary")


def test_refusals(
    engine: Engine, http: httpx.Client, api_key: str, points: list[tuple[float, float]]
) -> None:
    point = points[8]
    before = _count(engine)

    forbidden = file(http, api_key + "x", "WS-01", point)
    assert forbidden.status_code == 403
    [error] = forbidden.json()
    assert error["code"] == 403
    assert "api_key" in error["description"]
    _, staff = store.issue_credential(engine, "analyst", label="not a citizen")
    assert file(http, staff, "WS-01", point).status_code == 403
    xml = file(http, "", "WS-01", point, fmt="xml")
    assert xml.status_code == 403
    assert xmltodict.parse(xml.content)["errors"]["error"]["code"] == "403"

    unknown = file(http, api_key, "WS-99", point)
    assert unknown.status_code == 422
    assert unknown.json()[0]["description"].startswith("service_code: unknown matter")
    assert http.get("/services/WS-99.json").status_code == 404

    no_position = http.post(
        "/requests.json",
        data={"api_key": api_key, "service_code": "WS-01", "address_string": "Xi'an Road"},
    )
    assert no_position.status_code == 400
    assert "cannot geocode" in no_position.json()[0]["description"]

    outside = file(http, api_key, "WS-01", (103.5, 30.2))
    assert outside.status_code == 422
    assert "outside" in outside.json()[0]["description"]
    near = file(http, api_key, "WS-01", _gcj_hint_point(engine))
    assert near.status_code == 422
    assert "crs=gcj02" in near.json()[0]["description"]

    foreign = file(http, api_key, "WS-01", point, jurisdiction_id="510104000000")
    assert foreign.status_code == 404
    assert http.get("/services.json", params={"jurisdiction_id": "x"}).status_code == 404
    assert http.get("/requests.json", params={"jurisdiction_id": DISTRICT}).status_code == 200

    wrong_type = http.post("/requests.json", json={"api_key": api_key})
    assert wrong_type.status_code == 415
    assert _count(engine) == before  # nothing was stored by any of these


def _count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(INCIDENTS)).scalar_one())


def test_idempotent_replay(
    engine: Engine, http: httpx.Client, api_key: str, points: list[tuple[float, float]]
) -> None:
    headers = {"Idempotency-Key": "phone-retry-0001"}
    before = _count(engine)
    first = file(http, api_key, "LB-01", points[9], headers=headers, description="Unpaid wages")
    again = file(http, api_key, "LB-01", points[9], headers=headers, description="Unpaid wages")
    for _ in range(100):
        # The middleware stores the answer just after sending it, so an immediate retry may
        # be told the first is still running (409, Retry-After), as a client must expect.
        if again.status_code != 409:
            break
        assert again.headers.get("retry-after") == "1"
        time.sleep(0.1)
        again = file(http, api_key, "LB-01", points[9], headers=headers, description="Unpaid wages")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers.get("idempotent-replayed") == "true"
    assert _count(engine) == before + 1
    # The same key for another request is refused rather than answered with the first.
    other = file(http, api_key, "LB-01", points[10], headers=headers)
    assert other.status_code == 422


def test_discovery_and_openapi(root: str, http: httpx.Client) -> None:
    discovery = http.get("/discovery.json").json()
    [endpoint] = discovery["endpoints"]
    assert endpoint["url"] == root
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    xml = xmltodict.parse(http.get("/discovery.xml").content)["discovery"]
    assert xml["endpoints"]["endpoint"]["formats"]["format"] == ["application/json", "text/xml"]
    assert http.get("/services.csv").status_code == 422

    spec = httpx.get(root.removesuffix("/open311/v2") + "/openapi.json").json()
    paths = {p: v for p, v in spec["paths"].items() if p.startswith("/open311/v2/")}
    # The six GeoReport v2 resources and the public copy of a published photo (media_url).
    assert len(paths) == 7
    for path, item in paths.items():
        for operation in item.values():
            assert operation["summary"], path
            assert operation["tags"] == ["open311"]
    post = paths["/open311/v2/requests.{format}"]["post"]
    form = post["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert {"api_key", "service_code", "lat", "long"} <= set(form["schema"]["required"])


def test_reads_are_the_stores_service_request_functions(
    engine: Engine, http: httpx.Client, api_key: str, points: list[tuple[float, float]]
) -> None:
    from gridgov.store import service_requests as reads

    first = filed_id(file(http, api_key, "UM-01", points[12]))
    second = filed_id(file(http, api_key, "EE-01", points[13]))
    both = reads.read_service_requests(engine, limit=10, incident_ids=[first, second])
    by_id = {r["incident_id"]: r for r in both}
    assert set(by_id) == {first, second}
    # The route answers what the store read (the office answering for it, here).
    [shown] = http.get(f"/requests/{first}.json").json()
    assert shown["agency_responsible"] == by_id[first]["agency"]
    # Filters combine.
    only = reads.read_service_requests(
        engine, limit=10, incident_ids=[first, second], matter_codes=["EE-01"]
    )
    assert [r["incident_id"] for r in only] == [second]
    street = by_id[first]["street_code"]
    confined = reads.read_service_requests(
        engine, limit=10, incident_ids=[first, second], street_code=street
    )
    assert first in {r["incident_id"] for r in confined}
    assert all(r["street_code"] == street for r in confined)
    status = by_id[first]["status"]
    kept = reads.read_service_requests(
        engine, limit=10, incident_ids=[first], exclude_statuses=[status]
    )
    assert kept == []
    assert reads.read_service_requests(engine, limit=1, incident_ids=[first], statuses=[status])
    # Tokens are the ids of requests filed here only.
    assert reads.request_for_token(engine, first, source=open311_answers.SOURCE) == first
    assert reads.request_for_token(engine, first, source="api") is None
    assert reads.services_changed_at(engine) is not None
