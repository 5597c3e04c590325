"""`gridgov serve --url X` serves X, also with one worker (the app is built in the same process
that read the settings before the URL was known)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from helpers import CUSTOM, custom_catalog
from live_server import free_port

from gridgov import store
from gridgov.areas import read_areas
from gridgov.catalog import load_catalog

SMALL_AREAS = Path(__file__).parent / "data" / "small_areas.geojson"
# Generous: a cold start imports geopandas, FastAPI and builds the dispatch context.
START_LIMIT_S = 120.0


def test_serve_with_one_worker_answers_from_the_url_given(tmp_path: Path) -> None:
    # The database --url names: a small district whose catalogue has a matter of its own.
    target = f"sqlite:///{tmp_path / 'target.db'}"
    store.init_db(target)
    engine = store.open_store(target)
    store.load_district(
        engine, read_areas(SMALL_AREAS), matters=load_catalog(custom_catalog(tmp_path / "c.yaml"))
    )
    engine.dispose()
    # The database the environment names: initialised, no district (not ready).
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    store.init_db(elsewhere)

    env = {**os.environ, "GRIDGOV_DATABASE_URL": elsewhere}
    gridgov = str(Path(sys.executable).parent / "gridgov")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [gridgov, "serve", "--url", target, "--port", str(port), "--workers", "1"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_LIMIT_S
            while True:
                try:
                    httpx.get(f"{base}/health", timeout=2).raise_for_status()
                    break
                except httpx.HTTPError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(log.read_text(errors="replace")) from None
                    time.sleep(0.1)
            ready = httpx.get(f"{base}/health/ready", timeout=30)
            services = httpx.get(f"{base}/open311/v2/services.json", timeout=60)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
    assert ready.status_code == 200, ready.text  # the empty database would answer 503
    assert services.status_code == 200, services.text
    assert CUSTOM in [s["service_code"] for s in services.json()]
    said = "".join(log.read_text(errors="replace").split())  # the console wraps long lines
    assert f"serving{target}on" in said
