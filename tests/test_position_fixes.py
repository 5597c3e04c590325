"""AVL position fixes: one unit's and a gateway's batch, each in one statement, both backends.

The order rule (an older fix never overwrites a newer one), the scope (a caller moves only
its units), the staleness threshold (the dispatcher's rule) and the per-fix answers of a batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from gridgov import dispatch, store
from gridgov.errors import InputError, NotFoundError
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
