"""Shared fixtures.

Database fixtures: ``store_url`` runs a test once on SQLite (a temporary file) and once on
PostGIS (a fresh schema of the test database), and ``store_engine`` is that store initialised.
Other test modules can add fixtures below; keep the database section together.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import CATALOGUE_LOCK, Damage, damage_areas
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from gridgov.settings import get_settings
from gridgov.store import create_engine_from_url, init_db

# The suite sends thousands of requests from one address, and fails authentication on purpose
# (the role matrix): the rate limits are off unless a test configures them (test_limits.py).
# Set before any settings are read; servers the tests start inherit it.
for _limit in (
    "RATE_LIMIT_AUTH_FAILURES",
    "RATE_LIMIT_WRITES_PER_CREDENTIAL",
    "RATE_LIMIT_WRITES_PER_ADDRESS",
):
    os.environ.setdefault(f"GRIDGOV_{_limit}", "0")
# The intake's turn runs in the request process unless a test starts a turn process
# (test_turn_process.py): a child per store would cost every test seconds of start-up.
os.environ.setdefault("GRIDGOV_INTAKE_TURN_PROCESS", "0")

# --------------------------------------------------------------------------------------------
# databases
# --------------------------------------------------------------------------------------------


def _postgis_unavailable(reason: str) -> None:
    # `make test` (and so CI) sets GRIDGOV_REQUIRE_POSTGIS, so there this is a failure. The
    # skip is only for a developer running bare `pytest` on a machine without a server.
    if get_settings().require_postgis:
        pytest.fail(f"PostGIS is required (GRIDGOV_REQUIRE_POSTGIS) but unusable: {reason}")
    pytest.skip(f"PostGIS not available: {reason}")


def _ensure_test_database(url: str) -> None:
    """Create the test database and the postgis extension when missing."""
    sa_url = make_url(url)
    admin = create_engine(sa_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": sa_url.database},
            ).scalar()
            if not exists:
                connection.exec_driver_sql(f'CREATE DATABASE "{sa_url.database}"')
    finally:
        admin.dispose()
    engine = create_engine(sa_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            # In public, so every per-test schema sees the PostGIS types through search_path.
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgis_url() -> str:
    """URL of a reachable PostGIS test database (skips, or fails in CI, when there is none)."""
    url = get_settings().test_postgis_url
    try:
        _ensure_test_database(url)
    except OperationalError as exc:
        _postgis_unavailable(str(exc.orig).strip().splitlines()[0])
    except Exception as exc:  # e.g. the postgis extension is not installed on the server
        _postgis_unavailable(f"{type(exc).__name__}: {exc}")
    return url


@contextmanager
def _fresh_schema(postgis_url: str) -> Iterator[str]:
    """A URL whose connections work in a new, empty schema; the schema is dropped afterwards.

    A schema per test is much faster than a database per test and needs no cleanup of tables.
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgis_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(postgis_url).update_query_dict({"options": f"-csearch_path={schema},public"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            # Not while a test reads the catalogue of every schema (helpers.no_schema_dropped).
            connection.exec_driver_sql(f"SELECT pg_advisory_lock_shared({CATALOGUE_LOCK})")
            try:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock_shared({CATALOGUE_LOCK})")
        admin.dispose()


@pytest.fixture
def postgis_schema_url(postgis_url: str) -> Iterator[str]:
    """A new, empty PostGIS schema for one test."""
    with _fresh_schema(postgis_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a new SQLite store file."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'gridgov.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgis", marks=pytest.mark.postgis)])
def store_url(request: pytest.FixtureRequest) -> str:
    """An empty, uninitialised store: once on SQLite, once on PostGIS."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgis_schema_url"))


@pytest.fixture
def store_engine(store_url: str) -> Iterator[Engine]:
    """An initialised store (schema at the newest migration) on each backend."""
    init_db(store_url)
    engine = create_engine_from_url(store_url)
    try:
        yield engine
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# the reference district, loaded once per module into each backend
# --------------------------------------------------------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgis", marks=pytest.mark.postgis)]
)
def reference_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A store holding the whole Jinniu reference district, loaded through the CLI's own path."""
    from typer.testing import CliRunner

    from gridgov.cli import app

    def _load(url: str) -> None:
        runner = CliRunner()
        for args in (["init", "--url", url], ["load", "--url", url]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('reference') / 'gridgov.db'}"
        _load(url)
        yield url
        return
    with _fresh_schema(str(request.getfixturevalue("postgis_url"))) as url:
        _load(url)
        yield url


@pytest.fixture(scope="module")
def reference_engine(reference_store_url: str) -> Iterator[Engine]:
    """An engine on the reference store (one per module and backend)."""
    engine = create_engine_from_url(reference_store_url)
    try:
        yield engine
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# the damaged copy of the reference district
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def damaged_reference() -> Damage:
    """The reference district with the four damages the foundation issue names."""
    from gridgov.reference import read_reference_district

    return damage_areas(read_reference_district().gdf_areas)


# --------------------------------------------------------------------------------------------
# browser
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """A headless system Chromium (Playwright ``Browser``), shared by the browser tests.

    `make test` installs the Debian packages first; with GRIDGOV_REQUIRE_BROWSER set (as there)
    a missing browser fails the run instead of skipping.
    """
    import browser

    if browser.chromium_path() is None:
        reason = "chromium is not installed (apt-get install chromium chromium-driver)"
        if get_settings().require_browser:
            pytest.fail(f"a browser is required (GRIDGOV_REQUIRE_BROWSER) but {reason}")
        # Only bare `pytest` on a machine without chromium gets here; `make test` and CI fail.
        pytest.skip(reason)
    yield from browser.iter_browser()


#: The page size every browser test and screenshot uses.
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser page at :data:`VIEWPORT`; no wait may hang the suite (20 s each)."""
    context = chromium.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(20_000)
    try:
        yield p
    finally:
        context.close()


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many PostGIS tests really ran: CI must show them executed, not skipped."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if "postgis" in getattr(report, "keywords", {}) and report.when in ("call", "setup"):
                if outcome == "passed" and report.when != "call":
                    continue
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        terminalreporter.write_line(f"PostGIS tests: {summary}")
    # Name every analyst notebook executed, and how it ended: the notebooks are part of the build.
    notebooks: dict[str, list[str]] = {}
    for outcome in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_notebooks.py::test_notebook_runs[" in nodeid and report.when == "call":
                notebooks.setdefault(outcome, []).append(nodeid.split("[", 1)[1].rstrip("]"))
    for outcome, names in sorted(notebooks.items()):
        terminalreporter.write_line(
            f"Notebooks {outcome} ({len(names)}): {', '.join(sorted(names))}"
        )
