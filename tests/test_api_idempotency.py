"""Phones retry: every POST with an Idempotency-Key gives the first answer back and creates
nothing new, on both backends and across concurrent retries."""

from __future__ import annotations

import concurrent.futures
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from gridgov import store
from gridgov.store.models import EVENTS, IDEMPOTENCY, INCIDENTS

STREET = "510106024000"


@pytest.fixture(scope="module")
def api(reference_store_url: str) -> Iterator[tuple[TestClient, Any, dict[str, str]]]:
    engine = store.open_store(reference_store_url)
    _, secret = store.issue_credential(engine, "dispatcher", street_code=STREET, label="phone")
    with TestClient(create_app(engine=engine), raise_server_exceptions=False) as client:
        yield client, engine, {"Authorization": f"Bearer {secret}"}
    engine.dispose()


def _count(engine: Any, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _points(engine: Any, n: int, seed: int) -> list[tuple[float, float]]:
    ctx = store.context_from_store(engine)
    areas = ctx.gdf_areas
    micro = areas[(areas["level"] == "microgrid") & areas["code"].str.startswith(STREET[:9])]
    rng = random.Random(seed)
    picks = [micro.geometry.iloc[rng.randrange(len(micro))] for _ in range(n)]
    return [(p.representative_point().x, p.representative_point().y) for p in picks]


def test_a_thousand_retries_create_exactly_the_first_set(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, engine, auth = api
    matters = ["UM-01", "UM-02", "UM-04", "MK-03", "EE-01", "PS-02", "LS-01", "FS-03"]
    points = _points(engine, 1000, seed=5)
    rng = random.Random(11)
    bodies = [
        {
            "matter_code": rng.choice(matters),
            "lon": lon,
            "lat": lat,
            "description": f"report {i}",
            # Dispatching every one would empty the street of units long before the end;
            # a tenth are dispatched so the replayed answers hold real decisions too.
            "dispatch": i % 10 == 0,
        }
        for i, (lon, lat) in enumerate(points)
    ]
    keys = [f"phone-7-{i:04d}" for i in range(1000)]
    incidents_before = _count(engine, INCIDENTS)
    first = []
    for key, body in zip(keys, bodies, strict=True):
        response = client.post(
            "/api/v1/incidents", json=body, headers={**auth, "Idempotency-Key": key}
        )
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
        first.append(response)
    created = {r.json()["incident_id"] for r in first}
    assert len(created) == 1000
    incidents_after, events_after = _count(engine, INCIDENTS), _count(engine, EVENTS)
    assert incidents_after == incidents_before + 1000

    # The phone never heard back and sends every report again, in another order.
    order = list(range(1000))
    rng.shuffle(order)
    for i in order:
        again = client.post(
            "/api/v1/incidents", json=bodies[i], headers={**auth, "Idempotency-Key": keys[i]}
        )
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first[i].content
    assert _count(engine, INCIDENTS) == incidents_after
    assert _count(engine, EVENTS) == events_after


def test_same_key_with_another_request_is_refused(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, engine, auth = api
    (lon, lat), (lon2, lat2) = _points(engine, 2, seed=8)
    headers = {**auth, "Idempotency-Key": "reused-key"}
    body = {"matter_code": "UM-01", "lon": lon, "lat": lat, "dispatch": False}
    assert client.post("/api/v1/incidents", json=body, headers=headers).status_code == 201
    before = _count(engine, INCIDENTS)
    other = {**body, "lon": lon2, "lat": lat2}
    response = client.post("/api/v1/incidents", json=other, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert response.json()["fields"][0]["field"] == "Idempotency-Key"
    assert _count(engine, INCIDENTS) == before


def test_refused_requests_are_replayed_too(api: tuple[TestClient, Any, dict[str, str]]) -> None:
    """A 4xx is an answer like any other: the retry gets the same refusal and changes nothing."""
    client, _, auth = api
    headers = {**auth, "Idempotency-Key": "outside-1"}
    body = {"matter_code": "UM-01", "lon": 105.5, "lat": 30.69}
    first = client.post("/api/v1/incidents", json=body, headers=headers)
    assert first.status_code == 422 and first.json()["error"] == "outside_district"
    again = client.post("/api/v1/incidents", json=body, headers=headers)
    assert again.status_code == 422 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"


def test_keys_are_per_caller(api: tuple[TestClient, Any, dict[str, str]]) -> None:
    """Two phones that happen to pick the same key each get their own incident."""
    client, engine, auth = api
    _, other_secret = store.issue_credential(engine, "dispatcher", street_code=STREET, label="b")
    (lon, lat), (lon2, lat2) = _points(engine, 2, seed=21)
    a = client.post(
        "/api/v1/incidents",
        json={"matter_code": "UM-02", "lon": lon, "lat": lat, "dispatch": False},
        headers={**auth, "Idempotency-Key": "k-shared"},
    )
    b = client.post(
        "/api/v1/incidents",
        json={"matter_code": "UM-02", "lon": lon2, "lat": lat2, "dispatch": False},
        headers={"Authorization": f"Bearer {other_secret}", "Idempotency-Key": "k-shared"},
    )
    assert a.status_code == b.status_code == 201
    assert a.json()["incident_id"] != b.json()["incident_id"]


def test_concurrent_retries_create_one_incident(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    """Eight copies of one report sent at once: one is created; each other copy gets either
    the replay or a 409 'still running' (with Retry-After), never a second incident."""
    client, engine, auth = api
    ((lon, lat),) = _points(engine, 1, seed=33)
    body = {"matter_code": "EE-01", "lon": lon, "lat": lat}
    headers = {**auth, "Idempotency-Key": "burst-1"}
    before = _count(engine, INCIDENTS)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post("/api/v1/incidents", json=body, headers=headers), range(8)
            )
        )
    assert _count(engine, INCIDENTS) == before + 1
    created = [a for a in answers if a.status_code == 201]
    waiting = [a for a in answers if a.status_code == 409]
    assert len(created) + len(waiting) == 8
    assert len({a.json()["incident_id"] for a in created}) == 1
    assert all(a.headers["retry-after"] == "1" for a in waiting)


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "tab\there"])
def test_bad_keys_are_refused(api: tuple[TestClient, Any, dict[str, str]], key: str) -> None:
    client, engine, auth = api
    before = _count(engine, INCIDENTS)
    response = client.post(
        "/api/v1/incidents",
        json={"matter_code": "UM-01", "lon": 104.05, "lat": 30.69},
        headers={**auth, "Idempotency-Key": key},
    )
    assert response.status_code == 400
    assert _count(engine, INCIDENTS) == before


def test_old_keys_are_purged(api: tuple[TestClient, Any, dict[str, str]]) -> None:
    from datetime import UTC, datetime, timedelta

    _, engine, _ = api
    later = datetime.now(UTC) + timedelta(days=2)
    assert _count(engine, IDEMPOTENCY) > 0
    store.purge_idempotency(engine, now=later)
    assert _count(engine, IDEMPOTENCY) == 0
