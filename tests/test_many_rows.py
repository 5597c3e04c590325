"""Many rows written in one statement (gridgov.store.many_rows): the same rows change, and the
same rows are reported matched, on both backends, as one UPDATE a row would; the same rows go
in as SQLAlchemy's INSERT of many rows puts them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import shapely
from shapely.geometry import LineString
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    event,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from gridgov.store.engine import sent_together
from gridgov.store.many_rows import RowsInsert, RowsUpdate, any_of
from gridgov.store.models import IDEMPOTENCY, GeometryType, UTCDateTime

_NOW = datetime(2026, 12, 5, tzinfo=UTC)

_ANSWER = RowsUpdate(
    IDEMPOTENCY,
    keys=["scope", "key", "claim_id"],
    sets=["status", "media_type", "body"],
    fixed={"lease_until": None},
    where=[IDEMPOTENCY.c.incident_id.is_(None)],
)

_INSERT_KEYS = RowsInsert(IDEMPOTENCY, ["scope", "key", "fingerprint", "created_at", "claim_id"])


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


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    """The statements ``engine`` runs inside the block."""
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", seen)


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
    with _statements(store_engine) as statements, store_engine.begin() as connection:
        matched = _ANSWER.run(connection, rows)
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


# --------------------------------------------------------------------------------------------
# Statements sent together (gridgov.store.engine.sent_together)
# --------------------------------------------------------------------------------------------


def _answers(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as connection:
        return {r.key: (r.status, r.body) for r in connection.execute(select(IDEMPOTENCY))}


def test_statements_sent_together_all_take_effect(store_engine: Engine) -> None:
    """Writes that read nothing back go in one pipeline on PostgreSQL and take effect as if
    sent one by one; a row another writer changed is simply not matched."""
    _claims(store_engine, 4)
    rows = [
        {"scope": "s", "key": f"k{i}", "claim_id": "other" if i == 1 else f"c{i}", "status": i}
        | {"media_type": None, "body": bytes([i]) * 10}
        for i in range(3)
    ]
    more = [{"scope": "s", "key": "k9", "fingerprint": "fp", "created_at": _NOW, "claim_id": "c9"}]
    with store_engine.begin() as connection:
        with sent_together(connection):
            if store_engine.dialect.name == "postgresql":
                # Really in pipeline mode, not one round trip a statement.
                assert connection.connection.driver_connection.pgconn.pipeline_status
            _ANSWER.write(connection, rows[:2])
            _INSERT_KEYS.run(connection, more)
            _ANSWER.write(connection, rows[2:])
        # The connection is back to normal: a read returns its rows.
        assert connection.execute(select(IDEMPOTENCY.c.key)).all()
    got = _answers(store_engine)
    assert got["k0"] == (0, bytes([0]) * 10) and got["k2"] == (2, bytes([2]) * 10)
    assert got["k1"] == (None, None)  # its claim no longer held: not matched
    assert got["k9"] == (None, None) and got["k3"] == (None, None)


@pytest.mark.parametrize("last", [True, False], ids=["failing-last", "failing-among"])
def test_a_statement_failing_among_those_sent_together_fails_the_transaction(
    store_engine: Engine, last: bool
) -> None:
    """The failure is raised as SQLAlchemy raises a failed statement (at the end of the block,
    or at a later statement of it that found it), without the server's DETAIL (it repeats the
    row's values); nothing of the block is kept, and the next transaction works."""
    _claims(store_engine, 2)
    row = {"scope": "s", "key": "k0", "claim_id": "c0", "status": 7, "media_type": None}
    taken = {"scope": "s", "key": "k1", "fingerprint": "fp", "created_at": _NOW}
    with (
        pytest.raises(IntegrityError) as failed,
        store_engine.begin() as connection,
        sent_together(connection),
    ):
        _ANSWER.write(connection, [{**row, "body": b"x"}])
        _INSERT_KEYS.run(connection, [{**taken, "claim_id": "c9"}])  # the key exists
        if not last:
            _ANSWER.write(connection, [{**row, "key": "k1", "claim_id": "c1", "body": b"y"}])
    assert "DETAIL" not in str(failed.value) and "(s, k1)" not in str(failed.value)
    assert _answers(store_engine) == {"k0": (None, None), "k1": (None, None)}
    with store_engine.begin() as connection, sent_together(connection):
        _ANSWER.write(connection, [{**row, "body": b"z"}])
    assert _answers(store_engine)["k0"] == (7, b"z")


# --------------------------------------------------------------------------------------------
# RowsInsert
# --------------------------------------------------------------------------------------------


# A table of its own (no foreign keys), with the column types the store's batched inserts use.
_META = MetaData()
_ROWS = Table(
    "rows_insert_check",
    _META,
    Column("row_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("at", UTCDateTime()),
    Column("level", String(16)),
    Column("n", Integer),
    Column("x", Float),
    Column("ok", Boolean),
    Column("doc", JSON),
    Column("route", GeometryType("LINESTRING")),
)
_COLUMNS = ["name", "at", "level", "n", "x", "ok", "doc", "route"]
_ROUTE = LineString([(104.05, 30.65), (104.06, 30.66), (104.07, 30.66)])


@pytest.fixture
def rows_table(store_engine: Engine) -> Engine:
    _META.create_all(store_engine)
    return store_engine


def _rows(n: int) -> list[dict[str, Any]]:
    # Texts that a text array would have to escape, JSON with quotes, backslashes and
    # non-ASCII text, a JSON null, an empty document, no geometry and an empty one.
    return [
        {
            "name": f'row-{i}"\\{i}',
            "at": _NOW,
            "level": None if i % 2 else "street",
            "n": i,
            # Whole numbers among fractions: one type to the column, two to the driver.
            "x": None if i == 1 else float(i) + 0.5 if i % 2 else i,
            "ok": None if i == 3 else i % 2 == 0,
            "doc": None
            if i == 2
            else {}
            if i == 3
            else {"why": f'he said "{i}" \\ 成都', "n": [i, 1.5, None]},
            "route": None if i == 4 else LineString() if i == 5 else _ROUTE,
        }
        for i in range(n)
    ]


def test_rows_are_inserted_as_sqlalchemys_insert_inserts_them(rows_table: Engine) -> None:
    engine = rows_table
    rows = _rows(7)
    many = RowsInsert(_ROWS, _COLUMNS, returning=["row_id", "name"])
    with _statements(engine) as statements, engine.begin() as connection:
        returned = many.run(connection, rows)
    if engine.dialect.name == "postgresql":
        assert len([s for s in statements if "INSERT" in s.upper()]) == 1
    # Returned in the rows' order, numbered by the sequence in that order.
    assert [r.name for r in returned] == [r["name"] for r in rows]
    ids = [r.row_id for r in returned]
    assert ids == sorted(ids)
    # The same rows as SQLAlchemy's own INSERT gives.
    with engine.begin() as connection:
        connection.execute(insert(_ROWS), [{**r, "name": "X" + r["name"]} for r in rows])
    with engine.connect() as connection:
        got = {r.name: r for r in connection.execute(select(_ROWS))}
    for r in rows:
        mine, theirs = got[r["name"]], got["X" + r["name"]]
        for c in ("at", "level", "n", "x", "ok", "doc"):
            assert getattr(mine, c) == getattr(theirs, c) == r[c], c
        a, b = mine.route, theirs.route
        assert (a is None and b is None) or shapely.equals_exact(a, b, 0)
    assert shapely.equals_exact(got[rows[0]["name"]].route, _ROUTE, 0)
    assert got[rows[4]["name"]].route is None and got[rows[5]["name"]].route is None


def test_a_row_that_conflicts_is_skipped_and_not_returned(store_engine: Engine) -> None:
    _claims(store_engine, 2)  # k0 and k1 are held
    claims = RowsInsert(
        IDEMPOTENCY,
        ["scope", "key", "fingerprint", "created_at", "claim_id", "lease_until"],
        returning=["key", "claim_id"],
        conflict=["scope", "key"],
    )
    rows = [
        {
            "scope": "s",
            "key": f"k{i}",
            "fingerprint": "fp",
            "created_at": _NOW,
            "claim_id": f"new{i}",
            "lease_until": _NOW,
        }
        for i in range(4)
    ]
    with store_engine.begin() as connection:
        taken = {(r.key, r.claim_id) for r in claims.run(connection, rows)}
    assert taken == {("k2", "new2"), ("k3", "new3")}
    with store_engine.connect() as connection:
        held = dict(connection.execute(select(IDEMPOTENCY.c.key, IDEMPOTENCY.c.claim_id)).all())
    assert held == {"k0": "c0", "k1": "c1", "k2": "new2", "k3": "new3"}


def test_rows_must_give_exactly_the_columns(rows_table: Engine) -> None:
    many = RowsInsert(_ROWS, _COLUMNS)
    rows = _rows(2)
    del rows[1]["n"]
    with rows_table.begin() as connection, pytest.raises(ValueError, match="takes the columns"):
        many.run(connection, rows)
    with rows_table.begin() as connection:
        assert many.run(connection, []) == []


# --------------------------------------------------------------------------------------------
# A list of values matched in one statement text (any_of), and how PostgreSQL plans it
# --------------------------------------------------------------------------------------------

_NAMED = select(_ROWS.c.name).where(any_of(_ROWS.c.name, "names")).order_by(_ROWS.c.name)


def test_a_list_of_values_is_matched_in_one_statement_text(rows_table: Engine) -> None:
    """``any_of`` matches what ``IN`` matches, for lists of any length (none included), in
    one statement text on PostgreSQL: psycopg prepares it, and the server parses it once."""
    engine = rows_table
    rows = _rows(6)
    with engine.begin() as connection:
        RowsInsert(_ROWS, _COLUMNS).run(connection, rows)
    names = [r["name"] for r in rows]
    lists = [[], [names[0]], [names[1], names[4], "no such row"], names, [names[2]] * 3]
    with _statements(engine) as statements, engine.connect() as connection:
        for wanted in lists:
            got = connection.execute(_NAMED, {"names": wanted}).scalars().all()
            theirs = connection.execute(
                select(_ROWS.c.name).where(_ROWS.c.name.in_(wanted)).order_by(_ROWS.c.name)
            )
            assert got == theirs.scalars().all() == sorted(set(wanted) & set(names))
    if engine.dialect.name == "postgresql":
        assert len({s for s in statements if "= ANY" in s}) == 1
