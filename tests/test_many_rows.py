"""Many rows updated in one statement (gridgov.store.many_rows): the same rows change, and the
same rows are reported matched, on both backends, as one UPDATE a row would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, event, insert, select

from gridgov.store.many_rows import RowsUpdate
from gridgov.store.models import IDEMPOTENCY

_NOW = datetime(2026, 12, 5, tzinfo=UTC)

_ANSWER = RowsUpdate(
    IDEMPOTENCY,
    keys=["scope", "key", "claim_id"],
    sets=["status", "media_type", "body"],
    fixed={"lease_until": None},
    where=[IDEMPOTENCY.c.incident_id.is_(None)],
)


def _claims(engine: Engine, n: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(IDEMPOTENCY),
            [
                {
                    "scope": "s",
                    "key": f"k{i}",
                    "fingerprint": "fp",
                    "created_at": _NOW,
                    "claim_id": f"c{i}",
                    "lease_until": _NOW,
                    # k3 stored an incident: the extra condition leaves it out.
                    "incident_id": "INC-3" if i == 3 else None,
                }
                for i in range(n)
            ],
        )


def test_rows_are_updated_and_the_matched_ones_reported(store_engine: Engine) -> None:
    _claims(store_engine, 5)
    rows = [
        {
            "scope": "s",
            "key": f"k{i}",
            "claim_id": "other" if i == 1 else f"c{i}",  # k1's claim no longer holds
            "status": 200 + i,
            "media_type": None if i == 2 else "application/json",
            "body": bytes([i, 0, 255]) * 1000,
        }
        for i in range(5)
    ]
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(store_engine, "before_cursor_execute", seen)
    try:
        with store_engine.begin() as connection:
            matched = _ANSWER.run(connection, rows)
    finally:
        event.remove(store_engine, "before_cursor_execute", seen)
    assert matched == {("s", "k0", "c0"), ("s", "k2", "c2"), ("s", "k4", "c4")}
    if store_engine.dialect.name == "postgresql":
        assert len([s for s in statements if s.lstrip().upper().startswith("UPDATE")]) == 1
    with store_engine.connect() as connection:
        got = {
            r.key: (r.status, r.media_type, r.body, r.lease_until)
            for r in connection.execute(select(IDEMPOTENCY))
        }
    for i in (0, 2, 4):
        assert got[f"k{i}"] == (
            200 + i,
            None if i == 2 else "application/json",
            bytes([i, 0, 255]) * 1000,
            None,
        )
    for i in (1, 3):  # not matched: unchanged
        assert got[f"k{i}"][:3] == (None, None, None) and got[f"k{i}"][3] is not None


def test_a_key_given_twice_is_refused_before_anything_runs(store_engine: Engine) -> None:
    _claims(store_engine, 1)
    row = {"scope": "s", "key": "k0", "claim_id": "c0", "status": 1, "media_type": None}
    with store_engine.begin() as connection, pytest.raises(ValueError, match="each key once"):
        _ANSWER.run(connection, [{**row, "body": b"a"}, {**row, "body": b"b"}])


def test_no_rows_runs_nothing(store_engine: Engine) -> None:
    with store_engine.begin() as connection:
        assert _ANSWER.run(connection, []) == set()
