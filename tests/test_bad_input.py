"""A corpus of hostile inputs, on SQLite and PostGIS: every one gets a clean 4xx, never a 500.

NUL and control characters (in bodies, paths, queries), out-of-range dates, huge numbers, NaN
and Infinity, swapped coordinates, bad encodings and deeply nested JSON, against the native API
and Open311. Then the service still answers (no connection was left broken), and an Open311
XML list stays well-formed even when a stored description holds a character XML forbids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert

from api.app import create_app
from gridgov import store
from gridgov.settings import Settings
from gridgov.store.models import INCIDENTS
from gridgov.text_rules import check_text, xml_text

STREET = "510106024000"


@pytest.fixture(scope="module")
def world(reference_engine: Engine, reference_store_url: str) -> Iterator[dict[str, Any]]:
    app = create_app(
        Settings(database_url=reference_store_url, retention_sweep_interval_s=0),
        engine=reference_engine,
    )
    _, admin = store.issue_credential(reference_engine, "admin", label="bad input")
    _, key = store.issue_credential(reference_engine, "citizen", kind="api_key", label="bad")
    gdf = store.read_stored_areas(reference_engine, "community").sort_values("code")
    p = shapely.point_on_surface(gdf.geometry.iloc[5])
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {
            "client": client,
            "auth": {"Authorization": f"Bearer {admin}"},
            "key": key,
            "lon": float(p.x),
            "lat": float(p.y),
            "engine": reference_engine,
        }


def _native(world: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"matter_code": "UM-04", "lon": world["lon"], "lat": world["lat"], **fields}


def _form(world: dict[str, Any], **fields: str) -> dict[str, str]:
    return {
        "api_key": world["key"],
        "service_code": "UM-04",
        "long": str(world["lon"]),
        "lat": str(world["lat"]),
        **fields,
    }


def _json_body(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
LATIN1_FORM = b"api_key=x&service_code=UM-04&description=caf%E9&lat=1&long=2"


def _nested(depth: int) -> bytes:
    return b'{"matter_code": ' + b"[" * depth + b"]" * depth + b"}"


# (name, method, path, the client call's keyword arguments for the world)
CORPUS: list[tuple[str, str, str, Any]] = [
    # NUL and control characters
    (
        "nul in description",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w, description="a\x00b"))},
    ),
    (
        "vt in description",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w, description="a\x0bb"))},
    ),
    (
        "nul in reporter",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w, reporter="x\x00"))},
    ),
    (
        "nul in matter",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w, matter_code="UM\x00"))},
    ),
    (
        "raw nul byte",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w)).replace(b"UM-04", b"UM\x0004")},
    ),
    (
        "nul in path",
        "GET",
        "/api/v1/incidents/abc%00def",
        lambda w: {},
    ),
    (
        "control in path",
        "GET",
        "/api/v1/incidents/abc%0bdef",
        lambda w: {},
    ),
    (
        "nul in query",
        "GET",
        "/api/v1/incidents?matter_code=%00",
        lambda w: {},
    ),
    (
        "nul in action reason",
        "POST",
        "/api/v1/incidents/NOPE/actions/cancel",
        lambda w: {"json": {"reason": "x\x00"}},
    ),
    (
        "open311 nul description",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {"data": _form(w, description="a\x00b")},
    ),
    (
        "open311 vt description",
        "POST",
        "/open311/v2/requests.xml",
        lambda w: {"data": _form(w, description="a\x0bb")},
    ),
    (
        "open311 nul in email",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {"data": _form(w, email="a\x00@b.cn")},
    ),
    (
        "open311 nul id",
        "GET",
        "/open311/v2/requests/abc%00def.json",
        lambda w: {},
    ),
    (
        "open311 nul code",
        "GET",
        "/open311/v2/requests.xml?service_code=%00",
        lambda w: {},
    ),
    # out-of-range dates
    (
        "reported in year 1",
        "POST",
        "/api/v1/incidents",
        lambda w: {"json": _native(w, reported_at="0001-01-01T00:00:00+08:00")},
    ),
    (
        "reported in year 9999",
        "POST",
        "/api/v1/incidents",
        lambda w: {"json": _native(w, reported_at="9999-12-31T23:59:59-08:00")},
    ),
    (
        "since year 1",
        "GET",
        "/api/v1/incidents?since=0001-01-01",
        lambda w: {},
    ),
    (
        "until year 9999",
        "GET",
        "/api/v1/incidents?until=9999-12-31T23:59:59",
        lambda w: {},
    ),
    (
        "open311 start 9999",
        "GET",
        "/open311/v2/requests.xml?start_date=9999-12-31T23:59:59",
        lambda w: {},
    ),
    (
        "open311 end year 1",
        "GET",
        "/open311/v2/requests.json?end_date=0001-01-01",
        lambda w: {},
    ),
    (
        "open311 start month 13",
        "GET",
        "/open311/v2/requests.json?start_date=2026-13-01",
        lambda w: {},
    ),
    (
        "position fix in year 1",
        "POST",
        "/api/v1/units/NOPE/position",
        lambda w: {"json": {"lon": w["lon"], "lat": w["lat"], "at": "0001-01-01T00:00Z"}},
    ),
    # huge numbers, NaN and Infinity
    (
        "lon 1e308",
        "POST",
        "/api/v1/incidents",
        lambda w: {"json": _native(w, lon=1e308)},
    ),
    (
        "lon 10^400",
        "POST",
        "/api/v1/incidents",
        lambda w: {
            "content": _json_body(_native(w)).replace(str(w["lon"]).encode(), b"1" + b"0" * 400)
        },
    ),
    (
        "lat NaN",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w, lat=float("nan")))},
    ),
    (
        "lon Infinity",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _json_body(_native(w, lon=float("inf")))},
    ),
    (
        "limit huge",
        "GET",
        "/api/v1/incidents?limit=99999999999999999999999",
        lambda w: {},
    ),
    (
        "offset negative",
        "GET",
        "/api/v1/incidents?offset=-1",
        lambda w: {},
    ),
    (
        "bbox NaN",
        "GET",
        "/api/v1/incidents?bbox=nan,nan,nan,nan",
        lambda w: {},
    ),
    (
        "bbox huge",
        "GET",
        "/api/v1/areas/street?bbox=-1e308,-1e308,1e308,1e308&zoom=12",
        lambda w: {},
    ),
    (
        "locate inf",
        "GET",
        "/api/v1/locate?lon=inf&lat=30.6",
        lambda w: {},
    ),
    (
        "open311 long NaN",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {"data": _form(w, long="NaN")},
    ),
    (
        "open311 lat huge",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {"data": _form(w, lat="1e999")},
    ),
    # swapped coordinates
    (
        "swapped native",
        "POST",
        "/api/v1/incidents",
        lambda w: {"json": _native(w, lon=w["lat"], lat=w["lon"])},
    ),
    (
        "swapped open311",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {"data": _form(w, long=str(w["lat"]), lat=str(w["lon"]))},
    ),
    (
        "swapped locate",
        "GET",
        "/api/v1/locate?lon=30.69&lat=104.05",
        lambda w: {},
    ),
    # bad encodings
    (
        "invalid utf-8 json",
        "POST",
        "/api/v1/incidents",
        lambda w: {
            "content": b'{"matter_code": "\xff\xfe"}',
            "headers": JSON,
        },
    ),
    (
        "utf-16 json",
        "POST",
        "/api/v1/incidents",
        lambda w: {
            "content": json.dumps(_native(w)).encode("utf-16"),
            "headers": JSON,
        },
    ),
    (
        "latin-1 form",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {
            "content": LATIN1_FORM,
            "headers": FORM,
        },
    ),
    (
        "raw bytes form",
        "POST",
        "/open311/v2/requests.json",
        lambda w: {
            "content": b"\xff\xfe\xfd=\x80",
            "headers": FORM,
        },
    ),
    (
        "bad percent path",
        "GET",
        "/open311/v2/requests/%ff%fe.json",
        lambda w: {},
    ),
    (
        "not json",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": b"{not json", "headers": JSON},
    ),
    # deeply nested JSON
    (
        "nested 100k",
        "POST",
        "/api/v1/incidents",
        lambda w: {"content": _nested(100_000), "headers": JSON},
    ),
    (
        "nested action body",
        "POST",
        "/api/v1/incidents/NOPE/actions/cancel",
        lambda w: {"content": _nested(50_000), "headers": JSON},
    ),
]


@pytest.mark.parametrize(("name", "method", "path", "kwargs"), CORPUS, ids=[c[0] for c in CORPUS])
def test_every_bad_input_gets_a_clean_4xx(
    world: dict[str, Any], name: str, method: str, path: str, kwargs: Any
) -> None:
    client: TestClient = world["client"]
    extra = kwargs(world)
    headers = {**world["auth"], **extra.pop("headers", {})}
    if "content" in extra and "content-type" not in {k.lower() for k in headers}:
        headers["content-type"] = "application/json"
    r = client.request(method, path, headers=headers, **extra)
    assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
    assert "Traceback" not in r.text
    # The next request on the same client is answered normally.
    assert client.get("/health").status_code == 200


def test_xml_lists_stay_well_formed_with_characters_xml_forbids(world: dict[str, Any]) -> None:
    """A description stored before the input rule (or by another path) with a vertical tab,
    a NUL-free C0 control and U+FFFF: the XML list drops them and parses."""
    now = datetime.now(UTC)
    with store.begin_write(world["engine"]) as connection:
        connection.execute(
            insert(INCIDENTS).values(
                incident_id="XML-BAD-1",
                matter_code="UM-04",
                geometry=shapely.Point(world["lon"], world["lat"]),
                reported_at=now,
                status="registered",
                created_at=now,
                updated_at=now,
                source="open311",
                street_code=STREET,
                description="before\x0b\x01\uffffafter <&>",
            )
        )
    r = world["client"].get("/open311/v2/requests.xml")
    assert r.status_code == 200
    root = ET.fromstring(r.content)
    texts = [d.text for d in root.iter("description") if d.text and "before" in d.text]
    assert texts == ["beforeafter <&>"]
    r = world["client"].get("/open311/v2/requests/XML-BAD-1.xml")
    assert r.status_code == 200 and ET.fromstring(r.content) is not None


def test_the_text_rules() -> None:
    assert xml_text("a\x00b\x0bc\td\ne\rf\ufffeg\U0001f600") == "abc\td\ne\rfg\U0001f600"
    assert check_text("line\nnext\ttab", "description") == "line\nnext\ttab"
    with pytest.raises(Exception, match="U\\+000B at position 1"):
        check_text("a\x0b", "description")
