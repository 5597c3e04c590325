"""Body size and rate limits: 413 while the body streams, 429 with Retry-After, proxies.

The memory test runs the real server in its own process and sends it an anonymous 400 MB POST
twice (declared length, and chunked without one): both are refused with 413 and the worker's
peak resident memory (VmHWM, reset once the server is idle) stays within 100 MB of idle.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from live_server import free_port

from api.app import create_app
from api.body_limit import allow_larger_body
from gridgov import store
from gridgov.areas import read_areas
from gridgov.settings import Settings

SMALL_AREAS = Path(__file__).parent / "data" / "small_areas.geojson"
MB = 1024 * 1024
START_LIMIT_S = 120.0


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('limits') / 'gridgov.db'}"
    store.init_db(url)
    engine = store.open_store(url)
    store.load_district(engine, read_areas(SMALL_AREAS))
    engine.dispose()
    return url


def _client(url: str, *, peer: str = "203.0.113.9", **settings: object) -> TestClient:
    app = create_app(
        Settings(database_url=url, retention_sweep_interval_s=0, **settings),  # type: ignore[arg-type]
        engine=store.open_store(url),
    )
    return TestClient(app, raise_server_exceptions=False, client=(peer, 40000))


# --------------------------------------------------------------------------------------------
# body size
# --------------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_before_auth_and_parsing(small_store: str) -> None:
    client = _client(small_store)
    big = b'{"matter_code": "' + b"x" * (2 * MB) + b'"}'
    r = client.post("/api/v1/incidents", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert r.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(4):
            yield b" " * MB

    r = client.post("/api/v1/incidents", content=chunks(), headers={"Idempotency-Key": "k1"})
    assert r.status_code == 413, r.text
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post("/open311/v2/requests.xml", content=chunks(), headers=form)
    assert r.status_code == 413 and r.text.startswith("<?xml")
    r = client.post("/api/v1/incidents", headers={"content-length": "ten"}, content=b"{}")
    assert r.status_code == 400
    # Under the limit the request goes on to authentication as before.
    r = client.post("/api/v1/incidents", json={"matter_code": "x" * 1000})
    assert r.status_code == 401


def test_a_route_can_take_larger_bodies(small_store: str) -> None:
    client = _client(small_store)
    app: FastAPI = client.app  # type: ignore[assignment]

    @app.post("/upload-probe")
    async def probe(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    allow_larger_body(app, r"^/upload-probe$", 3 * MB)
    assert client.post("/upload-probe", content=b"a" * (2 * MB)).json() == {"size": 2 * MB}
    assert client.post("/upload-probe", content=b"a" * (4 * MB)).status_code == 413
    assert client.post("/api/v1/incidents", content=b"a" * (2 * MB)).status_code == 413


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _send_huge(port: int, chunked: bool, total: int = 400 * MB) -> bytes:
    """Send an anonymous POST of ``total`` bytes until the server answers; return the answer."""
    head = (
        "POST /api/v1/incidents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n")
        + "\r\n"
    )
    piece = b"7" * MB
    if chunked:
        piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        sent = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock] if sent < total else [], [], 5)
            if readable:
                break
            if writable:
                try:
                    sock.send(piece)
                except OSError:  # the server closed after answering
                    break
                sent += MB
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and b"}" in answer:
                    break
        except OSError:
            pass
    return answer


def test_an_anonymous_400_mb_post_costs_the_worker_no_memory(
    small_store: str, tmp_path: Path
) -> None:
    env = {**os.environ, "GRIDGOV_DATABASE_URL": small_store}
    gridgov = str(Path(sys.executable).parent / "gridgov")
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [gridgov, "serve", "--port", str(port), "--workers", "1"],
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
            # Warm: one ordinary refused POST, then the idle figure and a fresh peak counter.
            assert httpx.post(f"{base}/api/v1/incidents", json={}, timeout=30).status_code == 401
            idle_kb = _rss_kb(server.pid, "VmRSS")
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")
            answers = [_send_huge(port, chunked=False), _send_huge(port, chunked=True)]
            peak_kb = _rss_kb(server.pid, "VmHWM")
            assert httpx.get(f"{base}/health", timeout=10).status_code == 200
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    growth_mb = (peak_kb - idle_kb) / 1024
    print(f"worker idle {idle_kb / 1024:.1f} MB, peak {peak_kb / 1024:.1f} MB, +{growth_mb:.1f} MB")
    assert growth_mb < 100


# --------------------------------------------------------------------------------------------
# rate limits
# --------------------------------------------------------------------------------------------


def test_429_after_the_configured_failed_logins(small_store: str) -> None:
    client = _client(small_store, rate_limit_auth_failures=3)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    _, good = store.issue_credential(engine, "analyst", label="limits")
    bad = {"Authorization": "Bearer gg_not-a-token"}
    for _ in range(3):
        assert client.get("/api/v1/incidents", headers=bad).status_code == 401
    r = client.get("/api/v1/incidents", headers=bad)
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # The address is held back, even with a good token; health checks are not.
    r = client.get("/api/v1/incidents", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 429
    assert client.get("/health").status_code == 200
    # Another address with the good token goes on; the failed secret is held back everywhere.
    other = TestClient(client.app, raise_server_exceptions=False, client=("198.51.100.7", 1))
    good_header = {"Authorization": f"Bearer {good}"}
    assert other.get("/api/v1/incidents", headers=good_header).status_code == 200
    assert other.get("/api/v1/incidents", headers=bad).status_code == 429
    # A missing credential is no failed login.
    fresh = _client(small_store, rate_limit_auth_failures=1)
    for _ in range(3):
        assert fresh.get("/api/v1/incidents").status_code == 401


def test_failed_open311_api_keys_count_too(small_store: str) -> None:
    client = _client(small_store, rate_limit_auth_failures=2)
    form = {"api_key": "wrong", "service_code": "x", "lat": "30.69", "long": "104.05"}
    codes = [client.post("/open311/v2/requests.json", data=form).status_code for _ in range(3)]
    assert codes == [403, 403, 429]
    assert client.get("/open311/v2/services.json").status_code == 429


def test_writes_are_limited_per_credential_and_per_address(small_store: str) -> None:
    client = _client(
        small_store, rate_limit_writes_per_credential=2, rate_limit_writes_per_address=3
    )
    engine = client.app.state.engine  # type: ignore[attr-defined]
    one = {"Authorization": f"Bearer {store.issue_credential(engine, 'admin', label='a')[1]}"}
    two = {"Authorization": f"Bearer {store.issue_credential(engine, 'admin', label='b')[1]}"}
    body = {"matter_code": "NOPE", "lon": 0, "lat": 0}
    codes = [client.post("/api/v1/incidents", json=body, headers=one).status_code for _ in "abc"]
    assert codes == [422, 422, 429]
    assert client.post("/api/v1/incidents", json=body, headers=two).status_code == 422
    r = client.post("/api/v1/incidents", json=body, headers=two)  # the address's 4th write
    assert r.status_code == 429 and "writes" in r.json()["message"]
    assert client.get("/api/v1/incidents", headers=two).status_code == 200  # reads go on


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy(small_store: str) -> None:
    bad = {"Authorization": "Bearer gg_wrong"}

    def attempts(client: TestClient, forwarded: str) -> list[int]:
        headers = {**bad, "X-Forwarded-For": forwarded}
        return [client.get("/api/v1/units", headers=headers).status_code for _ in range(2)]

    trusted = _client(
        small_store, peer="10.0.0.2", rate_limit_auth_failures=2, trusted_proxies=["10.0.0.0/8"]
    )
    # Behind the proxy each client address has its own count (the secret is another key).
    assert attempts(trusted, "192.0.2.1") == [401, 401]
    r = trusted.get("/api/v1/units", headers={"X-Forwarded-For": "192.0.2.1"})
    assert r.status_code == 429
    r = trusted.get("/api/v1/units", headers={"X-Forwarded-For": "192.0.2.2"})
    assert r.status_code == 401  # another client behind the same proxy
    # A client cannot hide behind a forged header: the proxy appends the real peer last.
    r = trusted.get("/api/v1/units", headers={"X-Forwarded-For": "192.0.2.99, 192.0.2.1"})
    assert r.status_code == 429
    # Without trusted proxies the header is ignored: the peer is the client.
    direct = _client(small_store, peer="10.0.0.2", rate_limit_auth_failures=2)
    assert attempts(direct, "192.0.2.1") == [401, 401]
    r = direct.get("/api/v1/units", headers={"X-Forwarded-For": "192.0.2.3"})
    assert r.status_code == 429
