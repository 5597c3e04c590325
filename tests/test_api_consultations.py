"""The consultations API with the department role: a department registers for itself, sees
its own and adopts its own; a street sees the requests addressed to it; suggestions attach
where a footprint covers them (on SQLite and PostGIS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from gridgov import store

DATA = Path(__file__).resolve().parent.parent / "data"
CDZ, JQ = "510106031000", "510106040000"
LINE = "LINESTRING (103.99 30.712, 104.0079 30.706, 104.020 30.702)"
HOUSING, TRANSPORT = "区住房和城乡建设局", "区交通运输局"


@pytest.fixture
def client(store_engine: Engine) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    areas = gpd.read_parquet(DATA / "jinniu_areas.parquet")
    store.load_areas(store_engine, areas[areas["level"].isin(["district", "street", "community"])])

    def bearer(role: str, **scope: Any) -> dict[str, str]:
        _, secret = store.issue_credential(store_engine, role, label=role, **scope)
        return {"Authorization": f"Bearer {secret}"}

    headers = {
        "housing": bearer("department", department=HOUSING),
        "transport": bearer("department", department=TRANSPORT),
        "cdz": bearer("commander", street_code=CDZ),
        "jq": bearer("dispatcher", street_code=JQ),
        "analyst": bearer("analyst"),
    }
    with TestClient(create_app(engine=store_engine), raise_server_exceptions=False) as test:
        yield test, headers


def _register(test: TestClient, headers: dict[str, str], **extra: Any) -> dict[str, Any]:
    body = {
        "item_code": "P-DET-09",
        "stage": "implementation",
        "title": "下沉广场改造",
        "letter": "请提出意见",
        "footprint": LINE,
        **extra,
    }
    answer = test.post("/api/v1/consultations", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_departments_and_streets_see_their_own(
    client: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    test, h = client
    mine = _register(test, h["housing"])
    theirs = _register(test, h["transport"], item_code="P-OVR-01", stage="approval")
    assert len(mine["streets"]) == 3 and not mine["late"] and theirs["late"]
    # A department registers for itself only.
    other = test.post(
        "/api/v1/consultations",
        json={
            "item_code": "P-DET-09",
            "stage": "drafting",
            "title": "t",
            "letter": "l",
            "footprint": LINE,
            "department": TRANSPORT,
        },
        headers=h["housing"],
    )
    assert other.status_code == 403

    def listed(who: str) -> list[dict[str, Any]]:
        answer = test.get("/api/v1/consultations", headers=h[who])
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    assert {r["department"] for r in listed("housing")} == {HOUSING}
    assert {r["street_code"] for r in listed("cdz")} == {CDZ} and len(listed("cdz")) == 2
    assert len(listed("analyst")) == 6
    page = test.get(
        "/api/v1/consultations",
        params={"consultation_id": mine["consultation_id"], "limit": 2, "offset": 1},
        headers=h["analyst"],
    ).json()
    assert (page["total"], len(page["items"])) == (3, 2)
    assert {r["consultation_id"] for r in page["items"]} == {mine["consultation_id"]}
    one = test.get(f"/api/v1/consultations/{mine['consultation_id']}", headers=h["transport"])
    assert one.status_code == 404
    one = test.get(f"/api/v1/consultations/{mine['consultation_id']}", headers=h["cdz"])
    assert one.status_code == 200 and one.json()["footprint"]["type"] == "LineString"
    assert [r["street_code"] for r in one.json()["requests"]] == [CDZ]

    request = next(r for r in listed("cdz") if r["consultation_id"] == mine["consultation_id"])
    path = f"/api/v1/consultations/requests/{request['request_id']}"
    assert (
        test.post(f"{path}/respond", json={"opinion": "agree"}, headers=h["jq"]).status_code == 404
    )
    objection = {"opinion": "disagree", "text": "下沉广场易积水", "attachments": ["意见.pdf"]}
    answered = test.post(f"{path}/respond", json=objection, headers=h["cdz"])
    assert answered.status_code == 200 and answered.json()["opinion"] == "disagree"
    again = test.post(f"{path}/respond", json={"opinion": "agree"}, headers=h["cdz"])
    assert again.status_code == 409
    adoption = {"adoption": "adopted", "reason": "取消下沉广场"}
    assert test.post(f"{path}/adopt", json=adoption, headers=h["transport"]).status_code == 404
    adopted = test.post(f"{path}/adopt", json=adoption, headers=h["housing"])
    assert adopted.status_code == 200 and adopted.json()["adoption"] == "adopted"
    refusal = test.post(f"{path}/accept", json={"accepted": False}, headers=h["cdz"])
    assert refusal.status_code == 422  # a refusal needs its reasons
    still_open = test.get(
        "/api/v1/consultations", params={"unanswered": True}, headers=h["cdz"]
    ).json()
    assert [r["consultation_id"] for r in still_open["items"]] == [theirs["consultation_id"]]


def test_suggestions_attach_inside_a_footprint_and_not_outside(
    client: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    test, h = client
    registered = _register(
        test, h["housing"], footprint="POINT (104.0079 30.706)", radius_m=400, item_code="D-PRJ",
        stage="collect",
    )  # fmt: skip
    inside = {"lon": 104.0079, "lat": 30.7075, "text": "保留篮球场"}
    attached = test.post("/api/v1/consultations/suggestions", json=inside, headers=h["cdz"])
    assert attached.status_code == 201, attached.text
    assert attached.json()["consultation_ids"] == [registered["consultation_id"]]
    outside = {"lon": 104.0079, "lat": 30.7200, "text": "修路灯"}
    refused = test.post("/api/v1/consultations/suggestions", json=outside, headers=h["cdz"])
    assert refused.status_code in (403, 409), refused.text
    far = test.post(
        "/api/v1/consultations/suggestions", json={**outside, "lon": 103.99}, headers=h["jq"]
    )
    assert far.status_code == 409 and "no open consultation" in far.text
    listed = test.get("/api/v1/consultations", headers=h["cdz"]).json()["items"]
    assert listed[0]["suggestions"] == 1
    one = test.get(f"/api/v1/consultations/{registered['consultation_id']}", headers=h["cdz"])
    [summary] = one.json()["suggestions"]
    assert summary["count"] == 1 and summary["texts"] == ["保留篮球场"]
    assert summary["community_code"].startswith("5101060310")
    other_street = test.get(
        f"/api/v1/consultations/{registered['consultation_id']}", headers=h["jq"]
    )
    assert other_street.status_code == 404


def test_a_department_token_reads_no_incidents_or_units_and_answers_no_request(
    client: tuple[TestClient, dict[str, dict[str, str]]],
) -> None:
    test, h = client
    for path in ("/api/v1/incidents", "/api/v1/units", "/api/v1/live"):
        assert test.get(path, headers=h["housing"]).status_code == 403, path
    registered = _register(test, h["housing"])
    request = test.get("/api/v1/consultations", headers=h["cdz"]).json()["items"][0]
    path = f"/api/v1/consultations/requests/{request['request_id']}"
    answer = test.post(f"{path}/respond", json={"opinion": "agree"}, headers=h["housing"])
    assert answer.status_code == 403
    # Streets register nothing; the analyst reads everything and changes nothing.
    body = {"item_code": "P-DET-09", "stage": "drafting", "title": "t", "letter": "l",
            "footprint": LINE, "department": HOUSING}  # fmt: skip
    assert test.post("/api/v1/consultations", json=body, headers=h["cdz"]).status_code == 403
    assert test.post("/api/v1/consultations", json=body, headers=h["analyst"]).status_code == 403
    # A file name is not a footprint here: the server reads no file of its own disk.
    on_disk = str(DATA / "jinniu_roads.gpkg")
    answer = test.post(
        "/api/v1/consultations", json={**body, "footprint": on_disk}, headers=h["housing"]
    )
    assert answer.status_code == 422 and "neither WKT" in answer.text
    one = test.get(f"/api/v1/consultations/{registered['consultation_id']}", headers=h["analyst"])
    assert one.status_code == 200 and len(one.json()["requests"]) == 3
