"""Evidence photos through the API, on SQLite and PostGIS.

The issue's checks: a 50 MB upload is refused with 413 while it streams, before the process's
memory grows past the limit plus a small margin (measured with tracemalloc, which sees every
Python allocation of client and server alike, and printed); a ``.jpg`` that is really HTML is
refused; the served copy has no EXIF GPS while the metadata keeps it; Open311 takes a photo as
multipart (encoded by httpx) and shows ``media_url`` only when the reporter agreed to publish.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from live_server import serve
from PIL import Image

from api.app import create_app
from gridgov import store
from gridgov.settings import Settings

STREET_A = "510106024000"
STREET_B = "510106025000"
MATTER = "UM-04"
LIMIT = 10 * 1024 * 1024  # the default media_max_bytes
#: What the process may grow by beyond the limit while refusing a 50 MB upload.
MARGIN = 2 * 1024 * 1024


def jpeg(*, gps: bool = True, colour: tuple[int, int, int] = (200, 50, 50)) -> bytes:
    """A small JPEG with EXIF time and, by default, GPS (30.685 N, 104.055 E)."""
    image = Image.new("RGB", (640, 480), colour)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2026:12:01 09:30:00"
    if gps:
        exif.get_ifd(0x8825).update({1: "N", 2: (30.0, 41.0, 6.0), 3: "E", 4: (104.0, 3.0, 18.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.fixture(scope="module")
def world(
    reference_store_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    engine = store.open_store(reference_store_url)
    ctx = store.context_from_store(engine)
    areas = ctx.gdf_areas
    grids = areas[(areas["level"] == "grid") & areas["code"].str.startswith(STREET_A[:9])]
    here, elsewhere = grids.iloc[0], grids.iloc[1]
    point = here.geometry.representative_point()
    settings = Settings(
        database_url=reference_store_url, media_root=tmp_path_factory.mktemp("media")
    )
    app = create_app(settings, engine=engine)

    def bearer(role: str, **scope: Any) -> dict[str, str]:
        _, secret = store.issue_credential(engine, role, label=f"test_media {role}", **scope)
        return {"Authorization": f"Bearer {secret}"}

    with TestClient(app) as client:
        yield {
            "engine": engine,
            "app": app,
            "client": client,
            "settings": settings,
            "point": (point.x, point.y),
            "worker": bearer("grid_worker", grid_code=str(here["code"])),
            "worker_elsewhere": bearer("grid_worker", grid_code=str(elsewhere["code"])),
            "dispatcher": bearer("dispatcher", street_code=STREET_A),
            "dispatcher_b": bearer("dispatcher", street_code=STREET_B),
        }
    engine.dispose()


_seq = iter(range(1, 10_000))


def report(world: dict[str, Any], files: list[tuple[str, Any]], **extra: Any) -> httpx.Response:
    lon, lat = world["point"]
    incident_id = f"MD-{next(_seq):04d}-{datetime.now(UTC):%H%M%S%f}"
    data = {"matter_code": MATTER, "lon": str(lon), "lat": str(lat), "incident_id": incident_id}
    return world["client"].post(
        "/api/v1/field/reports",
        data={**data, **extra},
        files=files,
        headers=world["worker"],
    )


def test_served_copy_has_no_exif_gps_and_the_metadata_keeps_it(world: dict[str, Any]) -> None:
    r = report(world, [("photo", ("scene.jpg", jpeg(), "image/jpeg"))])
    assert r.status_code == 201, r.text
    item = r.json()["media"][0]
    assert item["kind"] == "report" and item["event_seq"] == 1
    assert (item["width"], item["height"]) == (640, 480)
    assert item["gps_lon"] == pytest.approx(104.055, abs=1e-6)
    assert item["gps_lat"] == pytest.approx(30.685, abs=1e-6)
    assert item["taken_at"].startswith("2026-12-01T01:30:00")  # 09:30 Beijing time
    client = world["client"]
    served = client.get(item["url"], headers=world["worker"])
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(served.content))
    assert image.format == "JPEG"
    exif = image.getexif()
    assert exif.get_ifd(0x8825) == {} and len(exif) == 0
    assert b"Exif" not in served.content[:4096]
    thumb = client.get(item["thumbnail_url"], headers=world["worker"])
    assert thumb.status_code == 200
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320
    # The incident's photo list says the same, in the order of its events.
    listed = client.get(
        f"/api/v1/incidents/{item['incident_id']}/media", headers=world["dispatcher"]
    )
    assert [m["media_id"] for m in listed.json()["items"]] == [item["media_id"]]


def test_html_named_jpg_is_refused_and_nothing_is_stored(world: dict[str, Any]) -> None:
    html = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
    r = report(world, [("photo", ("photo.jpg", html, "image/jpeg"))])
    assert r.status_code == 415, r.text
    assert "content" in r.json()["message"]
    # The report of the refused request was never stored.
    sent = r.request.content.split(b'name="incident_id"\r\n\r\n', 1)[1].split(b"\r\n", 1)[0]
    gdf, _ = store.query_incidents(world["engine"], incident_ids=[sent.decode()], limit=1)
    assert gdf.empty
    # The media route refuses it too, and a truncated JPEG as well.
    ok = report(world, [])
    assert ok.status_code == 201, ok.text
    incident_id = ok.json()["incident_id"]
    for name, data in (("x.jpg", html), ("y.jpg", jpeg()[:200])):
        r = world["client"].post(
            f"/api/v1/incidents/{incident_id}/media",
            data={"kind": "report"},
            files=[("photo", (name, data, "image/jpeg"))],
            headers=world["worker"],
        )
        assert r.status_code == 415, r.text


def test_photos_are_scoped_like_their_incident(world: dict[str, Any]) -> None:
    r = report(world, [("photo", ("a.jpg", jpeg(), "image/jpeg"))])
    item = r.json()["media"][0]
    client = world["client"]
    for who in ("worker_elsewhere", "dispatcher_b"):
        listing = f"/api/v1/incidents/{item['incident_id']}/media"
        for url in (item["url"], item["thumbnail_url"], listing):
            answer = client.get(url, headers=world[who])
            assert answer.status_code == 404, (who, url)
            assert "scope" not in answer.text
    assert client.get(item["url"], headers=world["dispatcher"]).status_code == 200


def test_a_retried_photo_is_stored_once_and_too_many_are_refused(world: dict[str, Any]) -> None:
    r = report(world, [("photo", ("a.jpg", jpeg(), "image/jpeg"))])
    incident_id = r.json()["incident_id"]
    client = world["client"]
    again = client.post(
        f"/api/v1/incidents/{incident_id}/media",
        data={"kind": "report"},
        files=[("photo", ("a-again.jpg", jpeg(), "image/jpeg"))],
        headers=world["worker"],
    )
    assert again.status_code == 201
    assert again.json()[0]["media_id"] == r.json()["media"][0]["media_id"]
    four = [("photo", (f"{i}.jpg", jpeg(colour=(i * 60, 9, 9)), "image/jpeg")) for i in range(4)]
    assert report(world, four).status_code == 422
    # Three in one request, then a fourth for the same event in another: refused too.
    three = report(world, four[:3])
    assert three.status_code == 201 and len(three.json()["media"]) == 3
    fourth = client.post(
        f"/api/v1/incidents/{three.json()['incident_id']}/media",
        data={"kind": "report"},
        files=[four[3]],
        headers=world["worker"],
    )
    assert fourth.status_code == 422
    assert "at most 3" in fourth.json()["message"]
    # Its files did not stay behind on the disk.
    fourth_sha = hashlib.sha256(four[3][1][1]).hexdigest()
    assert list(Path(world["settings"].media_root).rglob(f"{fourth_sha}*")) == []
    # No resolve yet: a resolve photo has no event to document.
    early = client.post(
        f"/api/v1/incidents/{incident_id}/media",
        data={"kind": "resolve"},
        files=[("photo", ("r.jpg", jpeg(), "image/jpeg"))],
        headers=world["worker"],
    )
    assert early.status_code == 404


def test_multipart_retry_with_a_new_boundary_replays(world: dict[str, Any]) -> None:
    """A phone rebuilds its form for each attempt: the boundary changes, the request not."""
    lon, lat = world["point"]
    data = {"matter_code": MATTER, "lon": str(lon), "lat": str(lat)}
    photo = jpeg(colour=(1, 2, 3))
    headers = {**world["worker"], "Idempotency-Key": f"retry-{datetime.now(UTC):%H%M%S%f}"}
    first = world["client"].post(
        "/api/v1/field/reports",
        data=data,
        files=[("photo", ("p.jpg", photo, "image/jpeg"))],
        headers=headers,
    )
    second = world["client"].post(
        "/api/v1/field/reports",
        data=data,
        files=[("photo", ("p.jpg", photo, "image/jpeg"))],
        headers=headers,
    )
    assert first.status_code == second.status_code == 201
    assert first.request.headers["content-type"] != second.request.headers["content-type"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert second.json()["incident_id"] == first.json()["incident_id"]


def test_removal_keeps_who_and_why(world: dict[str, Any]) -> None:
    photo = jpeg(colour=(5, 5, 5))
    r = report(world, [("photo", ("a.jpg", photo, "image/jpeg"))])
    item = r.json()["media"][0]
    root = Path(world["settings"].media_root)
    sha = hashlib.sha256(photo).hexdigest()
    assert len(list(root.rglob(f"{sha}*"))) == 2  # the clean copy and the thumbnail
    client = world["client"]
    base = f"/api/v1/incidents/{item['incident_id']}/media/{item['media_id']}"
    # A grid worker may not remove evidence; a dispatcher must say why.
    assert client.delete(base, params={"reason": "x"}, headers=world["worker"]).status_code == 403
    assert client.delete(base, headers=world["dispatcher"]).status_code == 422
    gone = client.delete(
        base, params={"reason": "a face is recognisable"}, headers=world["dispatcher"]
    )
    assert gone.status_code == 200, gone.text
    body = gone.json()
    assert body["removed_reason"] == "a face is recognisable"
    assert body["removed_by"].startswith("dispatcher:")
    assert body["removed_at"] is not None and body["url"] is None
    assert client.get(base, headers=world["dispatcher"]).status_code == 404
    listed = client.get(f"/api/v1/incidents/{item['incident_id']}/media", headers=world["worker"])
    assert listed.json()["items"][0]["removed_reason"] == "a face is recognisable"
    assert list(root.rglob(f"{sha}*")) == []
    # The same photo sent again for that event is refused, and its files do not come back.
    again = client.post(
        f"/api/v1/incidents/{item['incident_id']}/media",
        data={"kind": "report"},
        files=[("photo", ("a.jpg", photo, "image/jpeg"))],
        headers=world["worker"],
    )
    assert again.status_code == 422 and "removed" in again.json()["message"]
    assert list(root.rglob(f"{sha}*")) == []


def test_open311_multipart_media_and_consent(world: dict[str, Any]) -> None:
    client = world["client"]
    _, key = store.issue_credential(world["engine"], "citizen", kind="api_key", label="media app")
    lon, lat = world["point"]
    form = {"api_key": key, "service_code": MATTER, "lat": str(lat), "long": str(lon)}
    ids = {}
    for publish in ("true", "false"):
        r = client.post(
            "/open311/v2/requests.json",
            data={**form, "media_publish": publish, "description": f"publish {publish}"},
            files={"media": ("street.jpg", jpeg(), "image/jpeg")},
        )
        assert r.status_code == 201, r.text
        assert r.request.headers["content-type"].startswith("multipart/form-data; boundary=")
        ids[publish] = r.json()[0]["service_request_id"]
    shown = client.get(f"/open311/v2/requests/{ids['true']}.json").json()[0]
    assert f"/open311/v2/media/{ids['true']}/" in shown["media_url"]
    photo = client.get(shown["media_url"])
    assert photo.status_code == 200
    assert Image.open(io.BytesIO(photo.content)).getexif().get_ifd(0x8825) == {}
    hidden = client.get(f"/open311/v2/requests/{ids['false']}.json").json()[0]
    assert hidden["media_url"] is None
    # The photo is still the incident's evidence for staff.
    staff = client.get(f"/api/v1/incidents/{ids['false']}/media", headers=world["dispatcher"])
    assert len(staff.json()["items"]) == 1
    # A fake photo is refused in the spec's error list, and nothing is filed.
    bad = client.post(
        "/open311/v2/requests.json",
        data=form,
        files={"media": ("street.jpg", b"<html></html>", "image/jpeg")},
    )
    assert bad.status_code == 415
    assert bad.json()[0]["code"] == 415
    # A form whose file input was left empty files the request without a photo.
    empty = client.post(
        "/open311/v2/requests.json",
        data={**form, "description": "no photo"},
        files={"media": ("", b"", "application/octet-stream")},
    )
    assert empty.status_code == 201, empty.text
    discovery = client.get("/open311/v2/discovery.json").json()
    assert [e["name"] for e in discovery["extensions"]] == ["media"]
    assert "multipart/form-data" in discovery["extensions"][0]["description"]


# --------------------------------------------------------------------------------------------
# the size limit
# --------------------------------------------------------------------------------------------

FIFTY_MB = 50 * 1024 * 1024
CHUNK = 256 * 1024


def _multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\nreport\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
        'filename="huge.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode() + b"\xff\xd8\xff\xe0"


async def _send_fifty_mb(app: Any, path: str, headers: dict[str, str]) -> tuple[int, int]:
    """POST 50 MB generated on the fly (chunked: no Content-Length); return the status and
    how many bytes the app pulled before it answered."""
    boundary = "gg-test-boundary"
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        head = _multipart_head(boundary)
        pulled += len(head)
        yield head
        while pulled < FIFTY_MB:
            pulled += CHUNK
            yield b"\x00" * CHUNK

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post(
            path,
            content=body(),
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    return r.status_code, pulled


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
def test_fifty_mb_is_refused_while_streaming(world: dict[str, Any], keyed: bool) -> None:
    ok = report(world, [])
    path = f"/api/v1/incidents/{ok.json()['incident_id']}/media"
    headers = dict(world["worker"])
    if keyed:
        # The idempotency layer keeps a keyed body: the limit must still bound it.
        headers["Idempotency-Key"] = f"huge-{datetime.now(UTC):%H%M%S%f}"
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        # In a thread of its own: a browser test earlier in this worker may have left the main
        # thread inside Playwright's running event loop.
        with ThreadPoolExecutor(1) as pool:
            status, pulled = pool.submit(
                asyncio.run, _send_fifty_mb(world["app"], path, headers)
            ).result()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = peak - before
    kind = "keyed" if keyed else "plain"
    print(
        f"\n50 MB upload ({kind}): 413 after {pulled / 2**20:.2f} MB read; "
        f"peak memory growth {growth / 2**20:.2f} MB (limit {LIMIT / 2**20:.0f} MB)"
    )
    assert status == 413
    assert pulled <= LIMIT + 2 * CHUNK
    assert growth < LIMIT + MARGIN


def test_fifty_mb_declared_is_refused_over_a_socket(world: dict[str, Any]) -> None:
    """Through uvicorn: a declared Content-Length over the limit gets 413 before any body is
    read, and a chunked one once the limit passes; the client reads the answer either way."""
    ok = report(world, [])
    path = f"/api/v1/incidents/{ok.json()['incident_id']}/media"
    boundary = "gg-socket-boundary"
    headers = {**world["worker"], "Content-Type": f"multipart/form-data; boundary={boundary}"}

    def chunks() -> Iterator[bytes]:
        yield _multipart_head(boundary)
        for _ in range(FIFTY_MB // CHUNK):
            yield b"\x00" * CHUNK

    with serve(world["app"]) as base:
        declared = httpx.post(
            f"{base}{path}",
            content=chunks(),
            headers={**headers, "Content-Length": str(FIFTY_MB + 1000)},
            timeout=60,
        )
        assert declared.status_code == 413, declared.text
        chunked = httpx.post(f"{base}{path}", content=chunks(), headers=headers, timeout=60)
        assert chunked.status_code == 413, chunked.text
        assert "media_max_bytes" in chunked.text
