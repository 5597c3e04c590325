"""AVL position fixes: one unit's and a gateway's batch, each in one statement, both backends.

The order rule (an older fix never overwrites a newer one), the scope (a caller moves only
its units), the staleness threshold (the dispatcher's rule) and the per-fix answers of a batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from live_server import free_port
from sqlalchemy import Engine

from api.app import create_app
from gridgov import dispatch, store
from gridgov.errors import CredentialRefusedError, InputError, NotFoundError
from gridgov.service import fleet
from gridgov.service.scope import scope_for

STREET_A = "510106024000"
STREET_B = "510106025000"


class _Cred:
    def __init__(self, role: str, street_code: str | None = None, unit_id: str | None = None):
        self.role, self.street_code, self.unit_id, self.grid_code = role, street_code, unit_id, None


def _units(engine: Engine, street: str, n: int) -> list[str]:
    ids = store.read_units(engine, street_code=street)["unit_id"].astype(str).tolist()
    return sorted(ids)[:n]


def _position(engine: Engine, unit_id: str) -> tuple[float, float, datetime | None]:
    row = store.read_units(engine, unit_id=unit_id).iloc[0]
    when = row["position_time"]
    return float(row.geometry.x), float(row.geometry.y), None if when != when else when


def test_the_threshold_is_the_staleness_rule() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    oldest = dispatch.stale_before(now, timedelta(minutes=15))
    times = [oldest, oldest - timedelta(microseconds=1), None]
    assert dispatch.position_is_stale(times, now, timedelta(minutes=15)).tolist() == [
        False,
        True,
        False,
    ]


def test_a_batch_answers_each_fix(reference_engine: Engine) -> None:
    engine = reference_engine
    now = datetime.now(UTC).replace(microsecond=0)
    a1, a2, a3 = _units(engine, STREET_A, 3)
    (b1,) = _units(engine, STREET_B, 1)
    dispatcher = scope_for(_Cred("dispatcher", STREET_A))
    fixes = [
        fleet.SentFix(a1, 104.05, 30.69, at=now - timedelta(seconds=5)),
        # The same unit again, newer: this one is stored, the first is answered stale.
        fleet.SentFix(a1, 104.06, 30.70, at=now),
        fleet.SentFix(a2, 104.05, 30.69, at=now - timedelta(hours=2)),  # too old for dispatch
        fleet.SentFix("NO-SUCH-UNIT", 104.05, 30.69),
        fleet.SentFix(b1, 104.05, 30.69),  # another street's unit
        fleet.SentFix(a3, 104.05, 30.69, at=now + timedelta(hours=1)),  # from the future
        fleet.SentFix(a3, 500.0, 30.69),  # not a longitude
    ]
    before_b = _position(engine, b1)
    answers = fleet.record_fixes(engine, fixes, dispatcher, now=now)
    got = [(a.unit_id, a.result, a.stored) for a in answers]
    assert got == [
        (a1, "stale", False),
        (a1, "accepted", True),
        (a2, "stale", True),
        ("NO-SUCH-UNIT", "unknown_unit", False),
        (b1, "out_of_scope", False),
        (a3, "invalid", False),
        (a3, "invalid", False),
    ]
    assert "future" in (answers[5].reason or "")
    lon, lat, when = _position(engine, a1)
    assert (lon, lat) == pytest.approx((104.06, 30.70)) and when == now
    assert _position(engine, b1) == before_b
    # An older fix sent later never overwrites the newer one.
    (late,) = fleet.record_fixes(
        engine, [fleet.SentFix(a1, 104.0, 30.6, at=now - timedelta(minutes=1))], dispatcher
    )
    assert (late.result, late.stored) == ("stale", False)
    assert _position(engine, a1)[:2] == pytest.approx((104.06, 30.70))


def test_one_fix_checks_scope_and_order(reference_engine: Engine) -> None:
    engine = reference_engine
    (a1,) = _units(engine, STREET_A, 1)
    (b1,) = _units(engine, STREET_B, 1)
    now = datetime.now(UTC)
    unit = scope_for(_Cred("unit", unit_id=a1))
    fix = fleet.record_position(engine, a1, 104.04, 30.68, at=now, scope=unit)
    assert fix.stored and not fix.stale
    old = fleet.record_position(engine, a1, 104.0, 30.6, at=now - timedelta(hours=1), scope=unit)
    assert not old.stored and old.stale
    # Another unit, or none: not found alike.
    for other in (b1, "NO-SUCH-UNIT"):
        with pytest.raises(NotFoundError):
            fleet.record_position(engine, other, 104.04, 30.68, scope=unit)
    with pytest.raises(InputError):
        store.store_fixes(
            engine, [store.FixIn(a1, 104.0, 30.6, now.replace(tzinfo=None))], oldest=now
        )


@pytest.fixture(scope="module")
def client(reference_engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine=reference_engine), raise_server_exceptions=False) as c:
        yield c


def test_the_batch_route(reference_engine: Engine, client: TestClient) -> None:
    _, secret = store.issue_credential(reference_engine, "admin", label="gateway")
    headers = {"Authorization": f"Bearer {secret}"}
    ids = _units(reference_engine, STREET_A, 4)
    body: dict[str, Any] = {
        "fixes": [
            {"unit_id": u, "lon": 104.05 + i / 1000, "lat": 30.69} for i, u in enumerate(ids[:3])
        ]
        + [{"unit_id": ids[3], "lon": 104.05, "lat": 30.69, "crs": "gcj02"}]
    }
    r = client.post("/api/v1/units/positions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["result"] for x in answer["results"]][:3] == ["accepted"] * 3
    # A GCJ-02 fix is converted: it lies a few hundred metres from the number sent.
    assert answer["results"][3]["lon"] != pytest.approx(104.05, abs=1e-4)
    assert sum(answer["counts"].values()) == 4
    r = client.post("/api/v1/units/positions", json={"fixes": []}, headers=headers)
    assert r.status_code == 422


def _unit_token(engine: Engine, unit_id: str) -> dict[str, str]:
    _, secret = store.issue_credential(engine, "unit", unit_id=unit_id, label="cached token")
    return {"Authorization": f"Bearer {secret}"}


def test_a_write_refuses_a_credential_that_is_no_longer_live(reference_engine: Engine) -> None:
    engine = reference_engine
    (a1,) = _units(engine, STREET_A, 1)
    credential, _ = store.issue_credential(engine, "admin", label="statement check")
    now = datetime.now(UTC)
    fix = [store.FixIn(a1, 104.03, 30.67, now)]
    (stored,) = store.store_fixes(
        engine, fix, oldest=now, credential_id=credential.credential_id, now=now
    )
    assert stored.stored
    store.revoke_credential(engine, credential.credential_id)
    later = [store.FixIn(a1, 104.02, 30.66, now + timedelta(seconds=1))]
    for credential_id in (credential.credential_id, "no-such-credential"):
        with pytest.raises(CredentialRefusedError):
            store.store_fixes(engine, later, oldest=now, credential_id=credential_id, now=now)
    assert _position(engine, a1)[:2] == pytest.approx((104.03, 30.67))


def test_a_cached_token_is_still_checked_by_the_fix(
    reference_engine: Engine, client: TestClient
) -> None:
    """The fix route remembers tokens; its statement still refuses one revoked or expired since."""
    a1, a2 = _units(reference_engine, STREET_A, 2)
    for change in (
        lambda cid: store.revoke_credential(reference_engine, cid),
        lambda cid: _expire(reference_engine, cid),
    ):
        headers = _unit_token(reference_engine, a1)
        credential_id = headers["Authorization"].split("_")[1]
        for lon in (104.01, 104.02):  # the second one from the cache
            r = client.post(
                f"/api/v1/units/{a1}/position", json={"lon": lon, "lat": 30.6}, headers=headers
            )
            assert r.status_code == 200, r.text
        # A cached unit token still answers 404 for another unit, as an uncached one does.
        r = client.post(
            f"/api/v1/units/{a2}/position", json={"lon": 104.0, "lat": 30.6}, headers=headers
        )
        assert r.status_code == 404
        change(credential_id)
        r = client.post(
            f"/api/v1/units/{a1}/position", json={"lon": 104.09, "lat": 30.6}, headers=headers
        )
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert "revoked" in r.json()["message"]
        assert _position(reference_engine, a1)[:2] == pytest.approx((104.02, 30.6))
        # Forgotten: the next try goes through the ordinary lookup, refused there too.
        r = client.post(
            f"/api/v1/units/{a1}/position", json={"lon": 104.09, "lat": 30.6}, headers=headers
        )
        assert r.status_code == 401


def test_a_cached_token_of_another_role_is_not_let_through(
    reference_engine: Engine, client: TestClient
) -> None:
    (a1,) = _units(reference_engine, STREET_A, 1)
    _, secret = store.issue_credential(reference_engine, "analyst", label="reads only")
    headers = {"Authorization": f"Bearer {secret}"}
    for _ in range(2):
        r = client.post(
            f"/api/v1/units/{a1}/position", json={"lon": 104.0, "lat": 30.6}, headers=headers
        )
        assert r.status_code == 403
    for bad in ({}, {"Authorization": "Bearer gg_nope_nope"}, {"Authorization": "Basic eDp5"}):
        r = client.post(
            f"/api/v1/units/{a1}/position", json={"lon": 104.0, "lat": 30.6}, headers=bad
        )
        assert r.status_code == 401


def _expire(engine: Engine, credential_id: str) -> None:
    from sqlalchemy import update

    from gridgov.store.models import CREDENTIALS

    with engine.begin() as connection:
        connection.execute(
            update(CREDENTIALS)
            .where(CREDENTIALS.c.credential_id == credential_id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


@pytest.mark.slow
def test_revocation_reaches_every_worker_at_once(
    reference_store_url: str, reference_engine: Engine
) -> None:
    """Two uvicorn workers, each caching the token: the fix after a revocation is refused on
    both, and nothing is stored."""
    (a1,) = _units(reference_engine, STREET_A, 1)
    headers = _unit_token(reference_engine, a1)
    credential_id = headers["Authorization"].split("_")[1]
    env = {
        **os.environ,
        "GRIDGOV_DATABASE_URL": reference_store_url,
        "GRIDGOV_RATE_LIMIT_AUTH_FAILURES": "0",
        "GRIDGOV_RATE_LIMIT_WRITES_PER_CREDENTIAL": "0",
        "GRIDGOV_RATE_LIMIT_WRITES_PER_ADDRESS": "0",
    }
    port = free_port()
    gridgov = str(Path(sys.executable).parent / "gridgov")
    server = subprocess.Popen(
        [gridgov, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api/v1/units/{a1}/position"

    def burst(lon: float) -> list[int]:
        # New connections, many at once: the kernel hands them to both workers.
        with ThreadPoolExecutor(8) as pool:
            return list(
                pool.map(
                    lambda _: (
                        httpx.post(
                            url, json={"lon": lon, "lat": 30.6}, headers=headers, timeout=30
                        ).status_code
                    ),
                    range(32),
                )
            )

    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("gridgov serve did not become ready")
        assert set(burst(104.01)) == {200}
        store.revoke_credential(reference_engine, credential_id)
        assert set(burst(104.09)) == {401}
        assert _position(reference_engine, a1)[:2] == pytest.approx((104.01, 30.6))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
