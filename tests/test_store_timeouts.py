"""Timeouts on both backends: a statement that runs too long, a server that stops answering and
a pool with no free connection all end in a StoreError (503 at the API), never a hang."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pg_fault_proxy import FaultProxy
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from api.app import create_app
from gridgov import store
from gridgov.errors import StoreError
from gridgov.settings import get_settings
from gridgov.store.engine import sent_together, translate_errors


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "db_statement_timeout_s", 0.5)
    monkeypatch.setattr(settings, "db_pool_timeout_s", 0.3)
    monkeypatch.setattr(settings, "db_connect_timeout_s", 1.0)


def _finishes(work: Any, within_s: float = 30.0) -> Any:
    """Run ``work`` in a thread; fail (instead of hanging the suite) if it never returns."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within_s)
    assert not thread.is_alive(), "the call hung"
    return out


def _run(engine: Engine, sql: str) -> Any:
    with translate_errors(engine), engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


@pytest.mark.usefixtures("short_timeouts")
def test_a_long_statement_is_cut_on_both_backends(store_url: str) -> None:
    engine = store.create_engine_from_url(store_url)
    slow = (
        "SELECT pg_sleep(5)"
        if store.detect_backend(engine) == "postgresql"
        else "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT count(*) FROM n"
    )
    try:
        out = _finishes(lambda: _run(engine, slow))
        assert isinstance(out.get("error"), StoreError), out
        assert _run(engine, "SELECT 1") == 1  # the engine works on afterwards
    finally:
        engine.dispose()


@pytest.fixture
def proxy(postgis_url: str) -> Iterator[tuple[FaultProxy, str]]:
    upstream = make_url(postgis_url)
    fault = FaultProxy((upstream.host or "127.0.0.1", upstream.port or 5432))
    url = upstream.set(host="127.0.0.1", port=fault.port).render_as_string(hide_password=False)
    try:
        yield fault, url
    finally:
        fault.close()


def _cut_then_working(fault: FaultProxy, engine: Engine, frozen: Any) -> None:
    """``frozen()``, run while the server does not answer, ends in a StoreError instead of
    hanging; after the thaw the engine works again (the pool dropped the cut connection)."""
    out = _finishes(frozen)
    assert isinstance(out.get("error"), StoreError), out
    fault.resume()
    assert _finishes(lambda: _run(engine, "SELECT 4")) == {"value": 4}


@pytest.mark.postgis
@pytest.mark.usefixtures("short_timeouts")
def test_a_frozen_server_is_cut_client_side(proxy: tuple[FaultProxy, str]) -> None:
    """The server's own statement_timeout cannot fire when it is frozen: the client cuts the
    connection, the pool drops it, and the next call after the thaw works."""
    fault, url = proxy
    engine = store.create_engine_from_url(url)
    try:
        assert _run(engine, "SELECT 1") == 1  # a pooled connection, then the freeze
        fault.pause()
        connecting = _finishes(lambda: _run(store.create_engine_from_url(url), "SELECT 3"))
        assert isinstance(connecting.get("error"), StoreError), connecting
        _cut_then_working(fault, engine, lambda: _run(engine, "SELECT 2"))
    finally:
        fault.resume()
        engine.dispose()


@pytest.mark.postgis
@pytest.mark.usefixtures("short_timeouts")
def test_statements_sent_together_to_a_frozen_server_are_cut(
    proxy: tuple[FaultProxy, str],
) -> None:
    """Statements sent together (a turn's writes) wait for their answers at the end of the
    block, outside any one statement: that wait is cut too when the server stops answering,
    instead of holding the intake's turn for ever."""
    fault, url = proxy
    engine = store.create_engine_from_url(url)

    def write() -> None:
        with translate_errors(engine), engine.begin() as connection:
            connection.execute(text("SELECT 1"))  # the transaction has begun
            fault.pause()
            with sent_together(connection):
                connection.execute(text("SET LOCAL lock_timeout = 1000"))

    try:
        assert _run(engine, "SELECT 1") == 1  # it works before the freeze
        _cut_then_working(fault, engine, write)
    finally:
        fault.resume()
        engine.dispose()


@pytest.mark.usefixtures("short_timeouts")
def test_no_free_connection_answers_503(reference_store_url: str) -> None:
    engine = store.create_engine_from_url(reference_store_url, pool_size=1, max_overflow=0)
    _, secret = store.issue_credential(engine, "analyst", label="pool")
    try:
        with (
            TestClient(create_app(engine=engine), raise_server_exceptions=False) as client,
            engine.connect(),  # the pool's only connection, held
        ):
            answer = client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {secret}"})
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"] == "store_unavailable"
            assert client.get("/health").status_code == 200
    finally:
        engine.dispose()
