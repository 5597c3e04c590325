"""What the field page is served with: its manifest, service worker, matters and base map."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from gridgov.settings import Settings

INTRANET = "http://10.1.2.3/tiles/{z}/{x}/{y}.png"


@pytest.fixture(scope="module")
def clients(reference_engine: Engine, reference_store_url: str) -> Iterator[dict[str, TestClient]]:
    out = {}
    for base in ("roads", "none", INTRANET):
        settings = Settings(database_url=reference_store_url, map_base=base)
        out[base] = TestClient(create_app(settings, engine=reference_engine))
    yield out


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_the_page_and_its_worker(clients: dict[str, TestClient]) -> None:
    client = clients["roads"]
    page = client.get("/field")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'rel="manifest"' in page.text and "https://" not in page.text
    manifest = client.get("/field/manifest.webmanifest")
    assert manifest.headers["content-type"] == "application/manifest+json"
    assert {i["sizes"] for i in manifest.json()["icons"]} == {"192x192", "512x512"}
    worker = client.get("/field/sw.js")
    assert worker.headers["service-worker-allowed"] == "/field"
    for asset in ("/static/field/field.js", "/static/field/field.css"):
        assert client.get(asset).status_code == 200


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_matters_carry_both_languages(clients: dict[str, TestClient]) -> None:
    matters = {m["code"]: m for m in clients["roads"].get("/field/matters.json").json()}
    assert matters["UM-04"]["zh"] and matters["UM-04"]["en"] and matters["UM-04"]["keywords"]


@pytest.mark.parametrize("reference_store_url", ["sqlite"], indirect=True)
def test_the_base_map_is_the_configured_one(clients: dict[str, TestClient]) -> None:
    # By default nothing comes from outside: the stored roads, no tiles.
    assert clients["roads"].get("/field/config.json").json() == {"tiles": [], "roads": True}
    assert clients["none"].get("/field/config.json").json() == {"tiles": [], "roads": False}
    intranet = clients[INTRANET].get("/field/config.json").json()
    assert [t["url"] for t in intranet["tiles"]] == [INTRANET] and not intranet["roads"]
