"""Security headers, CORS on Open311 only, and /docs and /redoc working offline.

The browser test opens both documentation pages from a live server in headless Chromium: each
renders the API (operations listed), with zero console errors and zero requests off the host.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import watch
from fastapi.testclient import TestClient
from live_server import serve

from api.app import create_app
from gridgov import store
from gridgov.areas import read_areas
from gridgov.settings import Settings

SMALL_AREAS = Path(__file__).parent / "data" / "small_areas.geojson"
ORIGIN = "https://citizen-app.example.org"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('web') / 'gridgov.db'}"
    store.init_db(url)
    engine = store.open_store(url)
    store.load_district(engine, read_areas(SMALL_AREAS))
    engine.dispose()
    return url


def _client(url: str, **settings: Any) -> TestClient:
    return TestClient(
        create_app(Settings(database_url=url, retention_sweep_interval_s=0, **settings)),
        raise_server_exceptions=False,
    )


def test_open311_preflight_answers_204_with_the_cors_headers(url: str) -> None:
    client = _client(url)
    r = client.options(
        "/open311/v2/requests.json",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type, Idempotency-Key",
        },
    )
    assert r.status_code == 204, r.text
    assert r.headers["access-control-allow-origin"] == "*"
    assert set(r.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert "idempotency-key" in r.headers["access-control-allow-headers"]
    # The answers themselves carry the origin, so the client can read them (and the replay flag).
    r = client.get("/open311/v2/services.json", headers={"Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert "Idempotent-Replayed" in r.headers["access-control-expose-headers"]
    r = client.post("/open311/v2/requests.json", data={}, headers={"Origin": ORIGIN})
    assert r.status_code >= 400 and r.headers["access-control-allow-origin"] == "*"
    # Methods other than GET and POST, and headers other than those, are not allowed.
    for method, extra in (("DELETE", ""), ("POST", "Authorization")):
        r = client.options(
            "/open311/v2/requests.json",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": extra,
            },
        )
        assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_no_cors_outside_open311_and_configured_origins(url: str) -> None:
    client = _client(url)
    r = client.options(
        "/api/v1/incidents",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    r = client.get("/api/v1/areas/street", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers
    only = _client(url, open311_cors_origins=[ORIGIN])
    r = only.get("/open311/v2/services.json", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "Origin" in r.headers["vary"]
    r = only.get("/open311/v2/services.json", headers={"Origin": "https://other.example"})
    assert "access-control-allow-origin" not in r.headers


def test_security_headers_on_pages_and_answers(url: str) -> None:
    client = _client(url)
    for path in ("/", "/docs", "/redoc", "/health", "/api/v1/incidents", "/nope"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
    # Documentation pages run no inline script; API answers load nothing at all.
    for path in ("/docs", "/redoc"):
        csp = client.get(path).headers["content-security-policy"]
        assert (
            "script-src 'self';" in csp
            and "unsafe-inline'; style" not in csp.split("script")[1][:40]
        )
    assert client.get("/health").headers["content-security-policy"].startswith("default-src 'none'")
    # A limit's answer carries them too.
    r = client.post("/api/v1/incidents", content=b"x" * 2_000_000)
    assert r.status_code == 413 and r.headers["x-content-type-options"] == "nosniff"


@pytest.fixture(scope="module")
def live(url: str) -> Iterator[str]:
    app = create_app(Settings(database_url=url, retention_sweep_interval_s=0))
    with serve(app) as base:
        yield base


@pytest.mark.parametrize(
    ("path", "rendered"), [("/docs", ".opblock"), ("/redoc", "[data-section-id]")]
)
def test_docs_render_offline(page: Any, live: str, path: str, rendered: str) -> None:
    log = watch(page)
    page.goto(f"{live}{path}")
    page.wait_for_selector(rendered)
    assert page.locator(rendered).count() > 5
    assert log.external_requests() == []
    assert log.errors == [], log.requests
