"""Phones retry: every POST with an Idempotency-Key gives the first answer back and creates
nothing new, on both backends, across concurrent retries and after a crashed run; keys are
per credential; a store that is down answers 503."""

from __future__ import annotations

import concurrent.futures
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from gridgov import dispatch, store
from gridgov.errors import InputError, StoreError
from gridgov.settings import get_settings
from gridgov.store import intake_rows
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


def _described(engine: Any, description: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(INCIDENTS.c.incident_id, INCIDENTS.c.status).where(
                    INCIDENTS.c.description == description
                )
            )
        )


@pytest.mark.parametrize(("path", "seed"), [("batched", 41), ("single", 43)])
def test_a_crashed_run_is_resumed_after_its_lease_never_stored_twice(
    api: tuple[TestClient, Any, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    seed: int,
) -> None:
    """The worker dies after the incident is stored and before the answer is kept (its claim
    is neither finished nor released): retries wait out the lease, then the next one takes
    the key over, finds the stored incident, dispatches it and answers it. One incident.

    Both intake paths store a report in one transaction and dispatch it in another; the crash
    falls between them."""
    client, engine, auth = api
    monkeypatch.setattr(get_settings(), "idempotency_lease_s", 0.5)
    ((lon, lat),) = _points(engine, 1, seed=seed)
    # A matter no other test here reports, so it is no duplicate and is dispatched.
    tag = f"crash-resume-{path}"
    body = {"matter_code": "MK-01", "lon": lon, "lat": lat, "description": tag}
    headers = {**auth, "Idempotency-Key": tag}

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("worker killed")

    with monkeypatch.context() as crash:
        if path == "single":
            crash.setattr(get_settings(), "intake_batch_max", 0)
            crash.setattr(store, "dispatch_reported", dies)
        else:
            crash.setattr(intake_rows, "_commit_batch_within", dies)
            crash.setattr(intake_rows, "check_within", dies)
        crash.setattr(store, "release_idempotency", lambda *a, **k: None)
        # (release is a no-op too: a killed worker gives nothing up.)
        assert client.post("/api/v1/incidents", json=body, headers=headers).status_code == 500
    ((incident_id, status),) = _described(engine, tag)
    assert status == "registered"  # stored, never dispatched: the worker died first

    waiting = client.post("/api/v1/incidents", json=body, headers=headers)
    assert waiting.status_code == 409 and waiting.headers["retry-after"] == "1"
    time.sleep(0.6)  # the lease (0.5 s) runs out
    resumed = client.post("/api/v1/incidents", json=body, headers=headers)
    assert resumed.status_code == 201, resumed.text
    assert resumed.json()["incident_id"] == incident_id
    state = resumed.json()["status"]
    assert state in ("dispatched", "registered") and resumed.json()["dispatch"]
    assert _described(engine, tag) == [(incident_id, state)]
    again = client.post("/api/v1/incidents", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and again.content == resumed.content


def test_a_stored_report_is_answered_as_stored_never_422(
    api: tuple[TestClient, Any, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatch refused after the report was stored (the incident changed meanwhile, or its
    point is too far from the roads) leaves it queued: 201 with the reason, not 422."""
    client, engine, auth = api
    ((lon, lat),) = _points(engine, 1, seed=49)

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise InputError("the point is too far from every road")

    monkeypatch.setattr(store, "dispatch_reported", refused)
    # The micro-batch cannot commit either: the report goes the single way, and is refused.
    monkeypatch.setattr(intake_rows, "_commit_batch_within", refused)
    body = {"matter_code": "PS-01", "lon": lon, "lat": lat, "description": "stored-not-422"}
    answer = client.post("/api/v1/incidents", json=body, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "registered"
    assert "too far from every road" in answer.json()["reason"]
    assert _described(engine, "stored-not-422") == [(answer.json()["incident_id"], "registered")]


def test_a_run_whose_lease_was_taken_over_stores_nothing(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    _, engine, _ = api
    now = datetime.now(UTC)
    first = store.claim_idempotency(engine, "s-lease", "k", "fp", now=now)
    assert first.outcome == "claimed" and first.claim is not None
    assert store.claim_idempotency(engine, "s-lease", "k", "fp", now=now).outcome == "in_flight"
    later = now + timedelta(hours=1)
    second = store.claim_idempotency(engine, "s-lease", "k", "fp", now=later)
    assert second.outcome == "claimed" and second.claim != first.claim
    ctx = store.context_from_store(engine)
    ((lon, lat),) = _points(engine, 1, seed=43)
    incident = dispatch.Incident("LEASE-LOST-1", "UM-01", lon, lat, now)
    with pytest.raises(StoreError, match="took over"):
        store.create_incident(
            engine, incident, dispatch.locate_incident(incident, ctx), claim=first.claim
        )
    with engine.connect() as connection:
        assert (
            connection.execute(
                select(func.count()).where(INCIDENTS.c.incident_id == "LEASE-LOST-1")
            ).scalar_one()
            == 0
        )
    assert not store.finish_idempotency(engine, first.claim, 201, None, b"late")


def test_a_report_claims_its_key_in_its_own_transaction(
    api: tuple[TestClient, Any, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report's key is not claimed before the report runs: the transaction that stores the
    incident inserts it, linked, and the answer is kept on it. A retry, whose own INSERT of the
    key loses, gets the first answer back."""
    client, engine, auth = api
    ((lon, lat),) = _points(engine, 1, seed=51)
    body = {"matter_code": "UM-04", "lon": lon, "lat": lat, "description": "claimed-with-it"}
    headers = {**auth, "Idempotency-Key": "with-the-record"}

    def no_claim_first(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a report's key is claimed with the report, not before it")

    with monkeypatch.context() as patched:
        patched.setattr(store, "claim_idempotency", no_claim_first)
        first = client.post("/api/v1/incidents", json=body, headers=headers)
    assert first.status_code == 201, first.text
    with engine.connect() as connection:
        (row,) = connection.execute(
            select(IDEMPOTENCY).where(IDEMPOTENCY.c.key == "with-the-record")
        ).all()
    assert row.incident_id == first.json()["incident_id"]
    assert row.status == 201 and row.body == first.content and row.lease_until is None
    again = client.post("/api/v1/incidents", json=body, headers=headers)
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert _described(engine, "claimed-with-it") == [
        (first.json()["incident_id"], first.json()["status"])
    ]


def test_of_two_reports_claiming_one_key_with_them_one_is_stored(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    """Two reports stored together whose claims name one key: the first is stored with it,
    the other stores nothing and hears KeyHeld; an answer refused without a record is kept by
    inserting the key, and only while no other run holds it."""
    _, engine, _ = api
    ctx = store.context_from_store(engine)
    points = _points(engine, 2, seed=53)
    now = datetime.now(UTC)
    claims = [store.claim_with_record("s-together", "one-key", "fp") for _ in points]
    reports = []
    for n, ((lon, lat), claim) in enumerate(zip(points, claims, strict=True)):
        incident = dispatch.Incident(f"HELD-{n}", "UM-01", lon, lat, now)
        reports.append(
            {
                "incident": incident,
                "placement": dispatch.locate_incident(incident, ctx),
                "matter": ctx.catalog.get("UM-01"),
                "source": "test",
                "now": now,
                "reporter": None,
                "description": None,
                "check_duplicates": False,
                "claim": claim,
            }
        )
    first, second = store.create_incidents(engine, reports)
    assert isinstance(first, store.StoredIncident) and isinstance(second, store.KeyHeld)
    with engine.connect() as connection:
        rows = connection.execute(
            select(IDEMPOTENCY.c.claim_id, IDEMPOTENCY.c.incident_id).where(
                IDEMPOTENCY.c.scope == "s-together"
            )
        ).all()
        held = connection.execute(
            select(func.count()).where(INCIDENTS.c.incident_id == "HELD-1")
        ).scalar_one()
    assert [tuple(r) for r in rows] == [(claims[0].claim_id, "HELD-0")] and held == 0
    # Refused without a record: the key goes in with the answer, unless another run holds it.
    assert not store.finish_idempotency(engine, claims[1], 422, None, b"refused")
    alone = store.claim_with_record("s-together", "other-key", "fp")
    assert store.finish_idempotency(engine, alone, 422, None, b"refused")
    found = store.claim_idempotency(engine, "s-together", "other-key", "fp")
    assert (found.outcome, found.status, found.body) == ("replay", 422, b"refused")


def test_a_revoked_token_gets_no_stored_answer(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, engine, _ = api
    credential, secret = store.issue_credential(engine, "dispatcher", street_code=STREET, label="r")
    ((lon, lat),) = _points(engine, 1, seed=45)
    body = {"matter_code": "UM-02", "lon": lon, "lat": lat, "dispatch": False}
    headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": "revoked-1"}
    assert client.post("/api/v1/incidents", json=body, headers=headers).status_code == 201
    store.revoke_credential(engine, credential.credential_id)
    again = client.post("/api/v1/incidents", json=body, headers=headers)
    assert again.status_code == 401
    assert "idempotent-replayed" not in again.headers


def test_open311_apps_each_have_their_own_keys(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    client, engine, _ = api
    keys = [
        store.issue_credential(engine, "citizen", kind="api_key", label=f"app {i}")[1]
        for i in range(2)
    ]
    points = _points(engine, 2, seed=47)
    answers = [
        client.post(
            "/open311/v2/requests.json",
            data={"api_key": key, "service_code": "UM-01", "long": str(x), "lat": str(y)},
            headers={"Idempotency-Key": "open311-shared"},
        )
        for key, (x, y) in zip(keys, points, strict=True)
    ]
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    ids = {a.json()[0]["service_request_id"] for a in answers}
    assert len(ids) == 2


def test_a_store_that_is_down_answers_503_with_retry_after() -> None:
    """Nothing listens on the port: every store call fails. POSTs with a key (refused in the
    middleware) and routes alike answer 503 with Retry-After and name no URL or driver;
    /health still answers, /health/ready says not ready."""
    engine = store.create_engine_from_url("postgresql+psycopg://gridgov@127.0.0.1:9/gone")
    with TestClient(create_app(engine=engine), raise_server_exceptions=False) as client:
        token = {"Authorization": "Bearer gg_0123456789abcdef_secret"}
        answers = [
            client.post(
                "/api/v1/incidents",
                json={"matter_code": "UM-01", "lon": 104.05, "lat": 30.69},
                headers={**token, "Idempotency-Key": "down-1"},
            ),
            client.post(
                "/open311/v2/requests.json",
                data={"api_key": "gg_0123456789abcdef_secret", "service_code": "UM-01"},
                headers={"Idempotency-Key": "down-2"},
            ),
            client.get("/api/v1/incidents", headers=token),
        ]
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert "127.0.0.1" not in answer.text and "psycopg" not in answer.text
            assert "gone" not in answer.text
        assert client.get("/health").status_code == 200
        assert client.get("/health/ready").status_code == 503
    engine.dispose()


def test_keys_are_purged_and_the_table_bounded(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    _, engine, _ = api
    now = datetime.now(UTC)
    for i in range(30):
        store.claim_idempotency(
            engine, "s-bound", f"k{i:02d}", "fp", now=now + timedelta(seconds=i)
        )
    store.purge_idempotency(engine, now=now, max_keys=10)
    assert _count(engine, IDEMPOTENCY) == 10  # the newest ten: all of them these
    with engine.connect() as connection:
        kept = connection.execute(
            select(IDEMPOTENCY.c.key).where(IDEMPOTENCY.c.scope == "s-bound")
        ).scalars()
        assert sorted(kept) == [f"k{i:02d}" for i in range(20, 30)]


def test_the_service_purges_expired_keys_itself(
    api: tuple[TestClient, Any, dict[str, str]],
) -> None:
    """No cron job: a new process purges on its first POST with a key, then every
    ``idempotency_purge_every_s``."""
    _, engine, auth = api
    long_ago = datetime.now(UTC) - timedelta(days=3)
    store.claim_idempotency(engine, "s-expired", "old", "fp", now=long_ago)
    with TestClient(create_app(engine=engine)) as fresh:
        answer = fresh.post(
            "/api/v1/incidents",
            json={"matter_code": "UM-01", "lon": 105.5, "lat": 30.69},
            headers={**auth, "Idempotency-Key": "purge-trigger"},
        )
        assert answer.status_code == 422  # outside the district: an answer all the same
    with engine.connect() as connection:
        left = connection.execute(
            select(func.count()).where(IDEMPOTENCY.c.scope == "s-expired")
        ).scalar_one()
    assert left == 0


def test_old_keys_are_purged(api: tuple[TestClient, Any, dict[str, str]]) -> None:
    _, engine, _ = api
    # A key of its own: under pytest-xdist the module's other tests may run on other workers.
    store.claim_idempotency(engine, "s-purged", "mine", "fp")
    later = datetime.now(UTC) + timedelta(days=2)
    assert _count(engine, IDEMPOTENCY) > 0
    store.purge_idempotency(engine, now=later)
    assert _count(engine, IDEMPOTENCY) == 0
