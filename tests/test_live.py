"""The live feed (``GET /api/v1/live``) and the wall-display page at ``/``, on both backends.

The feed's contract: a first call gives every open incident and every unit in the caller's
scope; a call with the returned cursor and ``If-None-Match`` answers 304 when nothing changed,
and otherwise exactly what changed, within the scope. These tests share one reference store
per backend (a module fixture), so each one works from a fresh cursor and looks at deltas.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import shapely
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from test_unit_state import crowd, pg_district, plans  # noqa: F401 (a fixture)

from api.app import create_app
from gridgov import maps, store
from gridgov.model import UnitStatus
from gridgov.service.scope import scope_for
from gridgov.settings import Settings
from gridgov.store import Credential, live_feed, set_unit_status
from gridgov.store.models import UNITS

FEED = "/api/v1/live"


def live_app(engine: Engine, url: str) -> FastAPI:
    """The service as it is deployed (create_app includes the live router)."""
    return create_app(Settings(database_url=url), engine=engine)


@pytest.fixture(scope="module")
def engine(reference_engine: Engine) -> Engine:
    return reference_engine


@pytest.fixture(scope="module")
def client(engine: Engine, reference_store_url: str) -> Iterator[TestClient]:
    with TestClient(live_app(engine, reference_store_url)) as c:
        yield c


@pytest.fixture(scope="module")
def streets(engine: Engine) -> list[str]:
    gdf = store.read_stored_areas(engine, "street")
    return sorted(gdf["code"].astype(str))


def token(engine: Engine, role: str, **scope: str) -> dict[str, str]:
    _, secret = store.issue_credential(engine, role, label=f"test_live {role}", **scope)
    return {"Authorization": f"Bearer {secret}"}


def point_in(engine: Engine, code: str, level: str = "street") -> tuple[float, float]:
    gdf = store.read_stored_areas(engine, level).set_index("code")
    p = shapely.point_on_surface(gdf.geometry[code])
    return float(p.x), float(p.y)


def community_points(engine: Engine, street: str, n: int) -> list[tuple[float, float]]:
    """Points in ``n`` communities of a street: far enough apart not to be duplicates."""
    gdf = store.read_stored_areas(engine, "community").sort_values("code")
    gdf = gdf[gdf["code"].astype(str).str.startswith(street[:9])].iloc[:n]
    pts = shapely.point_on_surface(gdf.geometry.to_numpy())
    return [(float(p.x), float(p.y)) for p in pts]


def snapshot(client: TestClient, headers: dict[str, str]) -> tuple[dict[str, Any], str]:
    r = client.get(FEED, headers=headers)
    assert r.status_code == 200, r.text
    return r.json(), r.headers["etag"]


def poll(client: TestClient, headers: dict[str, str], cursor: str, etag: str | None = None) -> Any:
    extra = {"If-None-Match": etag} if etag else {}
    return client.get(FEED, params={"since": cursor}, headers={**headers, **extra})


def report(client: TestClient, headers: dict[str, str], lon: float, lat: float) -> str:
    r = client.post(
        "/api/v1/incidents",
        headers=headers,
        json={"matter_code": "FS-01", "lon": lon, "lat": lat, "description": "test_live"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["incident_id"])


def ids(answer: dict[str, Any]) -> set[str]:
    return {row[3] for row in answer["incidents"]["rows"]}


def test_first_answer_is_the_scope_and_then_304(
    client: TestClient, engine: Engine, streets: list[str]
) -> None:
    street = streets[0]
    headers = token(engine, "dispatcher", street_code=street)
    data, etag = snapshot(client, headers)
    assert data["reset"] is True and data["changed"] is True
    assert data["scope"] == {
        "role": "dispatcher",
        "street_code": street,
        "grid_code": None,
        "unit_id": None,
    }
    # Every unit is one the street commands; every incident lies in the street.
    assert data["units"]["streets"] == [street]
    assert len(data["units"]["rows"]) > 0
    assert {row[7] for row in data["incidents"]["rows"]} <= {street}
    # Nothing changed: 304 with the same ETag, no body.
    r = poll(client, headers, data["cursor"], etag)
    assert r.status_code == 304
    assert r.headers["etag"] == etag
    assert r.content == b""
    # Without If-None-Match the same question gets an empty delta.
    r = poll(client, headers, data["cursor"])
    assert r.status_code == 200
    delta = r.json()
    assert delta["changed"] is False and delta["reset"] is False
    assert delta["incidents"]["rows"] == [] and delta["units"] is None
    assert delta["cursor"] == data["cursor"]


def test_new_incident_and_status_changes_show_in_the_next_poll(
    client: TestClient, engine: Engine, streets: list[str]
) -> None:
    street = streets[1]
    headers = token(engine, "dispatcher", street_code=street)
    data, etag = snapshot(client, headers)
    incident_id = report(client, headers, *point_in(engine, street))

    r = poll(client, headers, data["cursor"], etag)
    assert r.status_code == 200
    delta = r.json()
    assert delta["reset"] is False
    assert ids(delta) == {incident_id}
    row = delta["incidents"]["rows"][0]
    assert row[5] == "dispatched" and row[7] == street
    codes = delta["area_codes"][incident_id]
    assert codes[0] == street and codes[2].startswith(codes[1])
    assert [h[1] for h in row[8]][:1] == ["report"]  # the history is in the popup data
    assigned = {a[0] for a in row[9]}
    assert assigned, "the incident was dispatched to at least one unit"
    assert {r_[1] for r_ in delta["routes"]["rows"]} == {incident_id}
    # The dispatched units became busy: the units come again.
    assert delta["units"] is not None
    busy = delta["units"]["statuses"].index(
        next(s for s in delta["units"]["statuses"] if s["id"] == "busy")
    )
    in_street = {u[4]: u for u in delta["units"]["rows"]}
    assert all(in_street[u][3] == busy for u in assigned if u in in_street)

    # A workflow action (a status change of the incident) shows up in the next poll...
    cursor, etag = delta["cursor"], r.headers["etag"]
    r = client.post(
        f"/api/v1/incidents/{incident_id}/actions/cancel",
        headers=headers,
        json={"reason": "test_live: reported twice by the same caller"},
    )
    assert r.status_code == 200, r.text
    r = poll(client, headers, cursor, etag)
    assert r.status_code == 200
    delta = r.json()
    assert delta["closed"] == [incident_id]
    assert incident_id not in ids(delta)
    # ...and the units it freed with it.
    assert delta["units"] is not None

    # A unit's status set by hand has no event: the unit digest notices it.
    cursor, etag = delta["cursor"], r.headers["etag"]
    assert poll(client, headers, cursor, etag).status_code == 304
    unit = next(
        u for u in delta["units"]["rows"] if delta["units"]["statuses"][u[3]]["id"] == "available"
    )
    r = client.post(
        f"/api/v1/units/{unit[4]}/status",
        headers=headers,
        json={"status": "off_duty", "on_duty": False},
    )
    assert r.status_code == 200, r.text
    r = poll(client, headers, cursor, etag)
    assert r.status_code == 200
    delta = r.json()
    assert delta["incidents"]["rows"] == [] and delta["closed"] == []
    moved = {u[4]: u for u in delta["units"]["rows"]}[unit[4]]
    assert delta["units"]["statuses"][moved[3]]["id"] == "off_duty" and moved[8] == 0
    # An AVL position too.
    cursor, etag = delta["cursor"], r.headers["etag"]
    r = client.post(
        f"/api/v1/units/{unit[4]}/position",
        headers=headers,
        json={"lon": unit[1] + 0.001, "lat": unit[0]},
    )
    assert r.status_code == 200, r.text
    r = poll(client, headers, cursor, etag)
    assert r.status_code == 200
    moved = {u[4]: u for u in r.json()["units"]["rows"]}[unit[4]]
    assert moved[1] == pytest.approx(unit[1] + 0.001, abs=1e-6)


def test_each_role_sees_its_scope_only(
    client: TestClient, engine: Engine, streets: list[str]
) -> None:
    street, other = streets[2], streets[3]
    mine = token(engine, "dispatcher", street_code=street)
    theirs = token(engine, "dispatcher", street_code=other)
    analyst = token(engine, "analyst")
    grids = store.read_stored_areas(engine, "grid")
    lon, lat = point_in(engine, street)
    grid = store.locate_point(engine, lon, lat)["grid"]
    assert grid is not None
    own_grid = token(engine, "grid_worker", grid_code=grid["code"])
    other_grid = str(grids.loc[grids["code"].astype(str).str.startswith(other[:9]), "code"].iloc[0])
    far_grid = token(engine, "grid_worker", grid_code=other_grid)
    callers = {
        "mine": mine,
        "theirs": theirs,
        "analyst": analyst,
        "own_grid": own_grid,
        "far_grid": far_grid,
    }
    before = {name: snapshot(client, h) for name, h in callers.items()}
    incident_id = report(client, mine, lon, lat)
    assigned = next(
        row[9]
        for row in poll(client, mine, before["mine"][0]["cursor"]).json()["incidents"]["rows"]
        if row[3] == incident_id
    )
    lead = assigned[0][0]
    unit = token(engine, "unit", unit_id=lead)

    seen = {}
    for name, h in callers.items():
        data, etag = before[name]
        r = poll(client, h, data["cursor"], etag)
        seen[name] = r.json() if r.status_code == 200 else None
    assert incident_id in ids(seen["mine"])
    assert incident_id in ids(seen["analyst"])
    assert incident_id in ids(seen["own_grid"])
    for name in ("theirs", "far_grid"):
        answer = seen[name]
        # Another street's incident never reaches them: at most their own units changed
        # (mutual aid), never an incident of the other street.
        assert answer is None or incident_id not in ids(answer), name
        if answer is not None:
            assert answer["closed"] == []
            assert {row[7] for row in answer["incidents"]["rows"]} <= {other}
    # The unit sees the incident it was sent to, and itself only.
    data, _ = snapshot(client, unit)
    assert incident_id in ids(data)
    assert [u[4] for u in data["units"]["rows"]] == [lead]
    # The other dispatcher's view of the whole feed holds no incident of this street.
    data, _ = snapshot(client, theirs)
    assert {row[7] for row in data["incidents"]["rows"]} <= {other}
    assert data["units"]["streets"] == [other]


def test_feed_refuses_bad_callers_and_cursors(
    client: TestClient, engine: Engine, streets: list[str]
) -> None:
    assert client.get(FEED).status_code == 401
    assert client.get(FEED, headers={"Authorization": "Bearer gg_nope_nope"}).status_code == 401
    _, key = store.issue_credential(engine, "citizen", kind="api_key", label="test_live app")
    assert client.get(FEED, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    credential, secret = store.issue_credential(
        engine, "commander", street_code=streets[0], label="test_live revoked"
    )
    headers = {"Authorization": f"Bearer {secret}"}
    data, etag = snapshot(client, headers)
    store.revoke_credential(engine, credential.credential_id)
    # Even a "nothing changed" poll checks the token first.
    assert poll(client, headers, data["cursor"], etag).status_code == 401
    headers = token(engine, "commander", street_code=streets[0])
    r = client.get(FEED, params={"since": "yesterday"}, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_input"
    assert "cursor" in r.json()["message"]


def test_a_late_event_below_the_cursor_is_still_sent(
    engine: Engine, streets: list[str], client: TestClient
) -> None:
    """On PostgreSQL an event can commit after one with a larger id; the count in the cursor
    tells, and the look-back sends it."""
    street = streets[4]
    scope = scope_for(Credential("c0", "token", "dispatcher", street_code=street))
    headers = token(engine, "dispatcher", street_code=street)
    incident_id = report(client, headers, *point_in(engine, street))
    now = live_feed.read_live(engine, scope).state
    # A client that saw the largest id but one event fewer (the late one).
    stale = live_feed.LiveState(
        now.last_event, now.n_events - 1, now.units_mark, now.units_n, now.units_sum, now.dataset
    )
    changes = live_feed.read_live(engine, scope, stale)
    assert changes.changed and not changes.reset
    assert incident_id in set(changes.gdf_incidents["incident_id"])
    assert changes.gdf_units is None
    # And a current client gets nothing.
    assert not live_feed.read_live(engine, scope, now).changed


def test_cursor_round_trip_and_closed_statuses() -> None:
    state = live_feed.LiveState(12, 7, 40, 2, 1234, 3)
    assert live_feed.parse_cursor(state.cursor) == state
    # A cursor handed out before migration 0013 (five numbers) starts over: no dataset is -1.
    old = live_feed.parse_cursor("12.7.40-1234.3")
    assert old.dataset == -1
    for bad in ("", "1.2.3", "1.2.0123456789abcdeg.3", "-1.2.0123456789abcdef.3"):
        with pytest.raises(Exception, match="cursor"):
            live_feed.parse_cursor(bad)
    assert set(live_feed.OVER_STATUSES) == set(maps.CLOSED_STATUSES)


def test_page_is_public_and_holds_no_incident(
    client: TestClient, engine: Engine, streets: list[str]
) -> None:
    headers = token(engine, "dispatcher", street_code=streets[5])
    incident_id = report(client, headers, *point_in(engine, streets[5]))
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "/static/gridgov/gridgov-live.js" in page
    assert "/static/gridgov/gridgov-map.js" in page
    assert '"feed": "/api/v1/live"' in page
    assert "/api/v1/areas/{level}?bbox={west},{south},{east},{north}" in page
    # Public: no incident and no unit is baked in.
    assert incident_id not in page
    assert "-fire-01" not in page
    # Offline: every script and style sheet comes from this server.
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    for asset in ("gridgov/gridgov-live.js", "gridgov/gridgov-map.js", "gridgov/gridgov-map.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    # Built once per dataset: the same page again.
    assert client.get("/").text == page


def test_page_without_a_district(sqlite_url: str) -> None:
    store.init_db(sqlite_url)
    engine = store.open_store(sqlite_url)
    try:
        with TestClient(live_app(engine, sqlite_url)) as c:
            r = c.get("/")
        assert r.status_code == 503
        assert "gridgov load" in r.text
    finally:
        engine.dispose()


def test_only_what_changed_is_sent_and_a_quiet_scope_keeps_its_cursor(
    client: TestClient, engine: Engine, streets: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    street, other = streets[6], streets[7]
    mine = token(engine, "dispatcher", street_code=street)
    theirs = token(engine, "dispatcher", street_code=other)
    (a, b, c) = community_points(engine, street, 3)
    first = report(client, mine, *a)
    data, _ = snapshot(client, mine)
    assert first in ids(data)
    second = report(client, mine, *b)
    delta = poll(client, mine, data["cursor"]).json()
    # The first incident did not change: it is not sent again.
    assert ids(delta) == {second}

    # Another street's events leave a quiet scope's cursor where it was (304)...
    quiet_data, quiet_etag = snapshot(client, theirs)
    report(client, mine, *c)
    r = poll(client, theirs, quiet_data["cursor"], quiet_etag)
    if r.status_code == 200:  # mutual aid: one of its units was sent; no incident of ours
        quiet = r.json()
        assert quiet["incidents"]["rows"] == [] and quiet["units"] is not None
    else:
        assert r.status_code == 304
    # ...until the log has run far past it: then it moves up, with nothing to send.
    monkeypatch.setattr(live_feed, "ADVANCE", 0)
    r = poll(client, theirs, quiet_data["cursor"], quiet_etag)
    assert r.status_code == 200
    moved = r.json()
    assert moved["cursor"] != quiet_data["cursor"]
    assert moved["incidents"]["rows"] == [] and moved["closed"] == []


def test_a_cursor_works_on_any_server_process(
    client: TestClient, engine: Engine, streets: list[str], reference_store_url: str
) -> None:
    """With several uvicorn workers, consecutive polls reach different processes: the cursor
    and the ETag hold all the state, so another process (here: another app and engine on the
    same store) answers the same."""
    headers = token(engine, "dispatcher", street_code=streets[8])
    data, etag = snapshot(client, headers)
    other = store.open_store(reference_store_url)
    try:
        with TestClient(live_app(other, reference_store_url)) as second:
            r = poll(second, headers, data["cursor"], etag)
            assert r.status_code == 304
            assert r.headers["etag"] == etag
            incident_id = report(second, headers, *point_in(engine, streets[8]))
    finally:
        other.dispose()
    r = poll(client, headers, data["cursor"], etag)
    assert r.status_code == 200
    assert incident_id in ids(r.json())


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        ("dispatcher", {}),
        ("commander", {}),
        ("grid_worker", {"street_code": "510106024000"}),
        ("unit", {"street_code": "510106024000"}),
    ],
)
def test_a_credential_without_its_scope_sees_nothing(
    engine: Engine, role: str, scope: dict[str, str]
) -> None:
    from api.auth import Principal
    from gridgov.store import Credential

    principal = Principal(Credential("c0", "token", role, **scope))
    changes = live_feed.read_live(engine, principal.scope)
    assert len(changes.gdf_incidents) == 0
    assert changes.gdf_units is not None
    assert len(changes.gdf_units) == 0 or role == "grid_worker"
    # An analyst sees the district.
    everything = live_feed.read_live(engine, Principal(Credential("c1", "token", "analyst")).scope)
    assert everything.gdf_units is not None and len(everything.gdf_units) > 100


def test_a_quiet_poll_from_a_known_caller_is_one_statement_that_checks_the_token(
    client: TestClient, engine: Engine, streets: list[str]
) -> None:
    """The wall's usual poll: a token this process resolved before comes from its cache, and the
    304 costs one statement, which also checks the credential live. Revoked or expired since,
    the poll is refused (401) at once, with a cursor or without one."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import event, update

    from gridgov.store.models import CREDENTIALS

    def expire(credential_id: str) -> None:
        with engine.begin() as connection:
            connection.execute(
                update(CREDENTIALS)
                .where(CREDENTIALS.c.credential_id == credential_id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )

    for change in (lambda cid: store.revoke_credential(engine, cid), expire):
        for with_cursor in (True, False):
            credential, secret = store.issue_credential(
                engine, "commander", street_code=streets[0], label="test_live one statement"
            )
            headers = {"Authorization": f"Bearer {secret}"}
            data, etag = snapshot(client, headers)
            statements: list[str] = []

            def count(*args: Any, seen: list[str] = statements) -> None:
                if str(args[2]).split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK"):
                    seen.append(str(args[2]))  # SQLite's explicit BEGIN is no query

            event.listen(engine, "before_cursor_execute", count)
            try:
                r = poll(client, headers, data["cursor"], etag)
            finally:
                event.remove(engine, "before_cursor_execute", count)
            assert r.status_code == 304
            assert len(statements) == 1 and "credentials" in statements[0], statements
            change(credential.credential_id)
            r = poll(client, headers, data["cursor"], etag) if with_cursor else None
            r = r if r is not None else client.get(FEED, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


class _Everything:
    """The whole district's scope (an administrator's)."""

    def incident_filters(self) -> dict[str, Any]:
        return {}

    def unit_filters(self) -> dict[str, Any]:
        return {}


@pytest.mark.postgis
def test_a_unit_written_before_the_cursor_and_committed_after_it_reaches_the_wall(
    pg_district: Engine,  # noqa: F811 (the fixture imported above)
) -> None:
    """A unit row takes its change number when it is written. One written before a poll and
    committed after it, below numbers that poll saw, is still sent at the next poll: the
    cursor's mark is its snapshot's oldest running transaction, at or below the late one."""
    # The small district on PostGIS only: late commits are PostgreSQL's (SQLite has one writer
    # at a time, whose numbers follow its commits).
    engine, scope = pg_district, _Everything()
    first = live_feed.read_live(engine, scope).state
    late = engine.connect()
    try:
        late.execute(update(UNITS).where(UNITS.c.unit_id == "E1").values(on_duty=False))
        # Many later numbers, committed and seen.
        for k in range(300):
            set_unit_status(engine, "P2", UnitStatus.AVAILABLE, on_duty=k % 2 == 0)
        seen = live_feed.read_live(engine, scope, first)
        assert seen.changed and seen.gdf_units is not None
        units = seen.gdf_units.set_index("unit_id")
        assert bool(units.loc["P2", "on_duty"]) is False
        # E1's uncommitted write is not seen (its committed row may be sent again).
        assert "E1" not in units.index or bool(units.loc["E1", "on_duty"]) is True
        assert not live_feed.read_live(engine, scope, seen.state).changed
        late.commit()
    finally:
        late.close()
    after = live_feed.read_live(engine, scope, seen.state)
    assert after.changed and not after.reset and after.gdf_units is not None
    assert bool(after.gdf_units.set_index("unit_id").loc["E1", "on_duty"]) is False
    assert not live_feed.read_live(engine, scope, after.state).changed


@pytest.mark.postgis
@pytest.mark.parametrize("street", [None, "S1"])
def test_a_quiet_poll_is_planned_once_per_connection(
    pg_district: Engine,  # noqa: F811 (the fixture imported above)
    street: str | None,
) -> None:
    """The wall polls its one statement every second from every display. Two things made
    PostgreSQL parse and plan it at every poll (most of its cost): the poll's read-only
    transaction ended in a ROLLBACK, at which psycopg drops every prepared statement; and
    PostgreSQL keeps a statement's generic plan only when it looks no dearer than planning
    each time, and guessed an open range like ``event_id > $1`` held a third of the table.
    Now, after five unprepared runs and five custom plans, every poll uses one plan."""
    url = pg_district.url.render_as_string(hide_password=False)
    crowd(pg_district, 300)  # about 2,000 units: a district's
    engine = store.create_engine_from_url(url, pool_size=1, max_overflow=0)  # one session
    try:
        scope: Any = _Everything()
        if street is not None:
            scope = scope_for(Credential("c0", "token", "dispatcher", street_code=street))
        first = live_feed.read_live(engine, scope).state
        for _ in range(20):
            assert not live_feed.read_live(engine, scope, first).changed
        with engine.connect() as connection:
            assert plans(connection, "FROM credentials") == (10, 5)
    finally:
        engine.dispose()
