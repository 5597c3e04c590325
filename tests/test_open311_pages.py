"""Open311 lists a page at a time (``page``, ``page_size``), saying when more pages follow."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from gridgov import store
from gridgov.service import intake

MATTER = "UM-04"


@pytest.fixture(scope="module")
def client(reference_engine: Engine) -> Iterator[TestClient]:
    ctx = store.context_from_store(reference_engine)
    areas = ctx.gdf_areas
    grids = areas[areas["level"] == "grid"].sort_values("code")
    now = datetime.now(UTC) - timedelta(hours=1)
    for i in range(7):
        p = grids.geometry.iloc[i * 7].representative_point()
        intake.report(
            reference_engine,
            ctx,
            matter_code=MATTER,
            lon=p.x,
            lat=p.y,
            incident_id=f"PG-{i:03d}",
            reported_at=now + timedelta(minutes=i),
            dispatch_now=False,
            check_duplicates=False,
        )
    with TestClient(create_app(engine=reference_engine)) as c:
        yield c


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_pages_cover_every_request_once(client: TestClient, fmt: str) -> None:
    seen: list[str] = []
    url: str | None = f"/open311/v2/requests.{fmt}?service_code={MATTER}&page_size=3"
    pages = 0
    while url is not None:
        r = client.get(url)
        assert r.status_code == 200, r.text
        pages += 1
        if fmt == "json":
            seen += [x["service_request_id"] for x in r.json()]
        else:
            seen += [
                part.split("</service_request_id>")[0]
                for part in r.text.split("<service_request_id>")[1:]
            ]
        link = r.headers.get("link", "")
        more = r.headers["x-more-pages"] == "true"
        assert more == ('rel="next"' in link)
        url = link.split(">")[0].lstrip("<") if more else None
    ids = [f"PG-{i:03d}" for i in range(7)]
    assert [s for s in seen if s.startswith("PG-")] == sorted(ids, reverse=True)
    assert len(seen) == len(set(seen)) and pages >= 3


def test_a_bad_page_is_a_clear_422(client: TestClient) -> None:
    for query in ("page=0", "page_size=0", "page_size=1001", "page=x"):
        r = client.get(f"/open311/v2/requests.json?{query}")
        assert r.status_code == 422 and "page" in r.text, (query, r.text)
