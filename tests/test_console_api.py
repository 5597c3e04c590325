"""The dispatcher's workspace API on both backends: recommendation, chosen units (confirm,
override, conflict), release / reassign / backup, street dispatch modes, queue and board.

One reference store per backend (module fixture): every test cancels what it opened, so that
its street's units are free again for the next.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy import text as text_

from api.app import create_app
from gridgov import store
from gridgov.service import manual, workspace
from gridgov.settings import Settings
from gridgov.store.models import DISPATCHES

STREET_A = "510106024000"
STREET_B = "510106025000"
MATTER = "UM-04"  # enforcement only, priority 3
URGENT = "PS-01"  # priority 1: police and a grid worker


@pytest.fixture(scope="module")
def engine(reference_engine: Engine) -> Engine:
    return reference_engine


@pytest.fixture(scope="module")
def client(engine: Engine, reference_store_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=reference_store_url), engine=engine)
    with TestClient(app) as c:
        yield c


def headers(engine: Engine, role: str, **scope: str) -> dict[str, str]:
    _, secret = store.issue_credential(engine, role, label=f"test_console {role}", **scope)
    return {"Authorization": f"Bearer {secret}"}


def points(engine: Engine, street: str, n: int) -> list[tuple[float, float]]:
    """Points in ``n`` grids of a street, far enough apart not to be duplicates."""
    gdf = store.read_stored_areas(engine, "grid").sort_values("code")
    gdf = gdf[gdf["code"].astype(str).str.startswith(street[:9])].iloc[::7].iloc[:n]
    return [(float(p.x), float(p.y)) for p in shapely.point_on_surface(gdf.geometry.to_numpy())]


def report(
    client: TestClient, h: dict[str, str], point: tuple[float, float], **extra: Any
) -> dict[str, Any]:
    body = {"matter_code": MATTER, "lon": point[0], "lat": point[1], **extra}
    r = client.post("/api/v1/incidents", json=body, headers=h)
    assert r.status_code == 201, r.text
    return dict(r.json())


def cancel(client: TestClient, h: dict[str, str], *ids: str) -> None:
    for incident_id in ids:
        client.post(
            f"/api/v1/incidents/{incident_id}/actions/cancel",
            json={"reason": "test over"},
            headers=h,
        )


def test_recommend_confirm_and_override(client: TestClient, engine: Engine) -> None:
    h = headers(engine, "dispatcher", street_code=STREET_A)
    p1, p2 = points(engine, STREET_A, 2)
    a = report(client, h, p1, dispatch=False)
    b = report(client, h, p2, dispatch=False)
    try:
        r = client.post(f"/api/v1/incidents/{a['incident_id']}/recommendation", headers=h)
        assert r.status_code == 200, r.text
        rec = r.json()
        unit = rec["recommended"]["enforcement"]
        kind = rec["kinds"][0]
        assert kind["kind"] == "enforcement" and kind["recommended"] == unit
        times = [c["time_s"] for c in kind["candidates"]]
        assert times == sorted(times) and len(times) >= 2
        assert rec["decision"]["explanation"]["kinds"][0]["unit_id"] == unit
        # Nothing was committed.
        got = client.get(f"/api/v1/incidents/{a['incident_id']}", headers=h).json()
        assert got["status"] == "registered"

        # Confirmed as shown: not an override.
        r = client.post(
            f"/api/v1/incidents/{a['incident_id']}/assignments",
            json={"recommended": {"enforcement": unit}},
            headers=h,
        )
        assert r.status_code == 201, r.text
        assert r.json()["override"] is False
        assert [x["unit_id"] for x in r.json()["dispatch"]["assignments"]] == [unit]

        # The second incident: another unit than the recommended one.
        rec_b = client.post(
            f"/api/v1/incidents/{b['incident_id']}/recommendation", headers=h
        ).json()
        best = rec_b["recommended"]["enforcement"]
        other = next(c for c in rec_b["kinds"][0]["candidates"] if c["unit_id"] != best)
        url = f"/api/v1/incidents/{b['incident_id']}/assignments"
        choice = {"units": {"enforcement": other["unit_id"]}}
        r = client.post(url, json=choice, headers=h)
        assert r.status_code == 422 and "reason" in r.text
        r = client.post(url, json={**choice, "reason": "  "}, headers=h)
        assert r.status_code == 422
        r = client.post(url, json={**choice, "reason": "the nearer team is on a break"}, headers=h)
        assert r.status_code == 201, r.text
        assert r.json()["override"] is True
        with engine.connect() as connection:
            row = connection.execute(
                select(DISPATCHES).where(DISPATCHES.c.dispatch_id == r.json()["dispatch_id"])
            ).one()
        assert row.override is True and row.decided_by.startswith("dispatcher:")
        assert row.recommended_units == [best]
        assert row.override_reason == "the nearer team is on a break"
        assert row.chosen_time_s == pytest.approx(other["time_s"])
        # The recommendation follows the tiers (the street's own unit first), so another unit
        # may be faster or slower: the difference is what the override accepted.
        best_time = next(c for c in rec_b["kinds"][0]["candidates"] if c["unit_id"] == best)
        assert row.recommended_time_s == pytest.approx(best_time["time_s"])
        # A dispatched incident is not dispatched again.
        r = client.post(url, json={}, headers=h)
        assert r.status_code == 409
    finally:
        cancel(client, h, a["incident_id"], b["incident_id"])


def test_a_unit_taken_meanwhile_is_a_conflict_with_a_fresh_recommendation(
    client: TestClient, engine: Engine
) -> None:
    h = headers(engine, "dispatcher", street_code=STREET_A)
    p1, p2 = points(engine, STREET_A, 2)
    a = report(client, h, p1, dispatch=False)
    b = report(client, h, p2, dispatch=False)
    ctx = store.context_from_store(engine)
    try:
        # Both decided on the same snapshot, as two dispatchers' screens are.
        opt_a = manual.recommend(engine, ctx, a["incident_id"])
        unit = opt_a.recommended["enforcement"]
        opt_b = manual.recommend(engine, ctx, b["incident_id"])
        decision_b = opt_b.choose({"enforcement": unit})
        r = client.post(
            f"/api/v1/incidents/{a['incident_id']}/assignments",
            json={"units": {"enforcement": unit}, "recommended": {"enforcement": unit}},
            headers=h,
        )
        assert r.status_code == 201, r.text
        # The lock catches what the check could not have seen: nothing is written.
        with pytest.raises(store.UnitsTakenError):
            store.commit_choice(
                engine,
                decision_b,
                now=datetime.now(UTC),
                actor="test",
                role="dispatcher",
                override=False,
                reason=None,
                recommended=opt_b.recommendation,
            )
        # Through the API: 409 with a fresh recommendation that no longer holds the unit.
        r = client.post(
            f"/api/v1/incidents/{b['incident_id']}/assignments",
            json={"units": {"enforcement": unit}, "recommended": {"enforcement": unit}},
            headers=h,
        )
        assert r.status_code == 409, r.text
        fresh = r.json()["recommendation"]
        assert fresh["recommended"]["enforcement"] != unit
        assert unit in {o["unit_id"] for o in fresh["kinds"][0]["left_out"]}
        assert len(store.read_assignments(engine, unit_id=unit, active=True)) == 1
        got = client.get(f"/api/v1/incidents/{b['incident_id']}", headers=h).json()
        assert got["status"] == "registered"
    finally:
        cancel(client, h, a["incident_id"], b["incident_id"])


def test_backup_release_and_reassign_are_events(client: TestClient, engine: Engine) -> None:
    h = headers(engine, "dispatcher", street_code=STREET_A)
    (p,) = points(engine, STREET_A, 1)
    a = report(client, h, p)
    incident_id = a["incident_id"]
    first = a["dispatch"]["assignments"][0]["unit_id"]
    try:
        r = client.post(f"/api/v1/incidents/{incident_id}/backup", json={}, headers=h)
        assert r.status_code == 200, r.text
        added = r.json()["event"]["data"]["added"][0]
        assert r.json()["action"] == "backup" and added != first
        active = store.read_assignments(engine, incident_id=incident_id, active=True)
        assert set(active["unit_id"]) == {first, added}

        url = f"/api/v1/incidents/{incident_id}/assignments/{first}"
        assert client.delete(url, headers=h).status_code == 422  # no reason
        r = client.delete(url, params={"reason": "not needed"}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["action"] == "release"
        units = store.read_units(engine, unit_id=first)
        assert units["status"].iloc[0] == "available"
        # The last unit is reassigned, never just released.
        url = f"/api/v1/incidents/{incident_id}/assignments/{added}"
        r = client.delete(url, params={"reason": "no"}, headers=h)
        assert r.status_code == 422 and "last" in r.text
        r = client.delete(url, params={"reason": "swap", "replace_with": first}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["action"] == "reassign"
        active = store.read_assignments(engine, incident_id=incident_id, active=True)
        assert list(active["unit_id"]) == [first]
        events = store.read_events(engine, incident_id=incident_id)
        assert list(events["action"])[-3:] == ["backup", "release", "reassign"]
        assert set(events["to_state"].iloc[-3:]) == {"dispatched"}
    finally:
        cancel(client, h, incident_id)


def test_confirm_mode_holds_reports_but_priority_1(client: TestClient, engine: Engine) -> None:
    commander = headers(engine, "commander", street_code=STREET_A)
    dispatcher = headers(engine, "dispatcher", street_code=STREET_A)
    url = f"/api/v1/streets/{STREET_A}/dispatch-mode"
    assert client.get(url, headers=dispatcher).json()["mode"] == "auto"
    assert client.put(url, json={"mode": "confirm"}, headers=dispatcher).status_code == 403
    other = f"/api/v1/streets/{STREET_B}/dispatch-mode"
    assert client.put(other, json={"mode": "confirm"}, headers=commander).status_code == 404
    assert client.get(other, headers=dispatcher).status_code == 404
    assert client.put(url, json={"mode": "manual"}, headers=commander).status_code == 422
    r = client.put(url, json={"mode": "confirm"}, headers=commander)
    assert r.status_code == 200 and r.json()["mode"] == "confirm"
    p1, p2 = points(engine, STREET_A, 2)
    try:
        held = report(client, dispatcher, p1)
        assert held["status"] == "registered" and held["dispatch"] is None
        assert held["dispatch_mode"] == "confirm" and "confirm" in held["reason"]
        urgent = report(client, dispatcher, p2, matter_code=URGENT)
        assert urgent["status"] == "dispatched" and urgent["dispatch_mode"] == "confirm"
        # An Open311 report's answer says so too.
        _, key = store.issue_credential(engine, "citizen", kind="api_key", label="console test")
        (p3,) = points(engine, STREET_A, 3)[2:]
        form = {"api_key": key, "service_code": "UM-02", "long": str(p3[0]), "lat": str(p3[1])}
        r = client.post("/open311/v2/requests.json", data=form)
        assert r.status_code == 201, r.text
        assert "dispatcher will confirm" in r.json()[0]["service_notice"]
        cancel(client, dispatcher, r.json()[0]["service_request_id"])
        # Priority 1 held too when the commander says so.
        client.put(url, json={"mode": "confirm", "priority1_auto": False}, headers=commander)
        cancel(client, dispatcher, urgent["incident_id"])
        again = report(client, dispatcher, p2, matter_code=URGENT)
        assert again["status"] == "registered"
        cancel(client, dispatcher, held["incident_id"], again["incident_id"])
    finally:
        admin = headers(engine, "admin")
        assert client.put(url, json={"mode": "auto"}, headers=admin).status_code == 200
    after = report(client, dispatcher, p1)
    assert after["status"] == "dispatched"
    cancel(client, dispatcher, after["incident_id"])


def test_queue_and_board_are_scoped_with_stage_deadlines(
    client: TestClient, engine: Engine
) -> None:
    ha = headers(engine, "dispatcher", street_code=STREET_A)
    hb = headers(engine, "dispatcher", street_code=STREET_B)
    (pa,) = points(engine, STREET_A, 1)
    (pb,) = points(engine, STREET_B, 1)
    a = report(client, ha, pa)
    b = report(client, hb, pb, dispatch=False)
    try:
        items = client.get("/api/v1/console/queue", headers=ha).json()["items"]
        ids = {i["incident_id"] for i in items}
        assert a["incident_id"] in ids and b["incident_id"] not in ids
        assert {i["street_code"] for i in items} == {STREET_A}
        row = next(i for i in items if i["incident_id"] == a["incident_id"])
        assert row["group"] == "acknowledge" and row["stage"] == "acknowledge"
        dispatched_at = store.read_events(engine, incident_id=a["incident_id"])["at"].iloc[-1]
        deadline = datetime.fromisoformat(row["deadline"])
        assert deadline - dispatched_at.to_pydatetime() == timedelta(minutes=15)
        assert row["overdue"] is False
        row_b = next(
            i
            for i in client.get("/api/v1/console/queue", headers=hb).json()["items"]
            if i["incident_id"] == b["incident_id"]
        )
        assert row_b["group"] == "dispatch" and row_b["deadline"] is None

        board = client.get("/api/v1/console/units", headers=ha).json()["items"]
        assert {u["street_code"] for u in board} == {STREET_A}
        unit = a["dispatch"]["assignments"][0]["unit_id"]
        mine = next(u for u in board if u["unit_id"] == unit)
        assert mine["status"] == "busy" and mine["incident_id"] == a["incident_id"]
        assert mine["since"] is not None
    finally:
        cancel(client, ha, a["incident_id"])
        cancel(client, hb, b["incident_id"])


def test_stage_deadline_rule() -> None:
    from gridgov.catalog import load_catalog

    matter = load_catalog().get(MATTER)
    t0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
    t1 = t0 + timedelta(hours=1)
    assert workspace.stage_deadline("registered", matter, None) == (None, None)
    assert workspace.stage_deadline("dispatched", matter, (t0, t1)) == (
        "acknowledge",
        t1 + timedelta(minutes=15),
    )
    assert workspace.stage_deadline("acknowledged", matter, (t0, t1))[0] == "arrive"
    # Resolve runs from the first dispatch, whatever came after.
    assert workspace.stage_deadline("on_scene", matter, (t0, t1)) == (
        "resolve",
        t0 + timedelta(hours=24),
    )
    assert workspace.stage_deadline("resolved", matter, (t0, t1)) == (None, None)


def test_override_rule() -> None:
    assert not manual.is_override({"fire": "U1"}, {"fire": "U1"})
    assert manual.is_override({"fire": "U1"}, {"fire": "U2"})
    assert manual.is_override({"fire": "U1", "police": "U3"}, {"fire": "U1"})


OVERRIDES_SQL = """
WITH c AS (
    SELECT i.street_code, d.decided_by, d.override,
           d.chosen_time_s - d.recommended_time_s AS extra
      FROM dispatches d JOIN incidents i ON i.incident_id = d.incident_id
     WHERE d.override IS NOT NULL AND d.created_at >= :start AND d.created_at < :end
)
SELECT 'street' AS grp, street_code AS key, count(*) AS decisions,
       count(*) FILTER (WHERE override) AS overrides,
       (count(*) FILTER (WHERE override))::float8 / count(*) AS rate,
       coalesce(sum(extra) FILTER (WHERE override), 0) AS extra
  FROM c GROUP BY street_code
UNION ALL
SELECT 'dispatcher', decided_by, count(*), count(*) FILTER (WHERE override),
       (count(*) FILTER (WHERE override))::float8 / count(*),
       coalesce(sum(extra) FILTER (WHERE override), 0)
  FROM c GROUP BY decided_by
"""


@pytest.mark.postgis
@pytest.mark.parametrize("reference_store_url", ["postgis"], indirect=True)
def test_report_override_kpis_equal_plain_sql(
    client: TestClient, engine: Engine, reference_store_url: str
) -> None:
    import io

    import pandas as pd
    from typer.testing import CliRunner

    from gridgov.cli import app
    from gridgov.periods import Period

    # Two dispatchers of street A: one confirms, one overrides twice (a third incident waits).
    d1 = headers(engine, "dispatcher", street_code=STREET_A)
    d2 = headers(engine, "dispatcher", street_code=STREET_A)
    opened = []
    for i, (h, override) in enumerate([(d1, False), (d2, True), (d2, True), (d1, False)]):
        (p,) = points(engine, STREET_A, i + 1)[i:]
        inc = report(client, h, p, dispatch=False)["incident_id"]
        opened.append(inc)
        rec = client.post(f"/api/v1/incidents/{inc}/recommendation", headers=h).json()
        body: dict[str, Any] = {}
        if override:
            best = rec["recommended"]["enforcement"]
            alt = next(c for c in rec["kinds"][0]["candidates"] if c["unit_id"] != best)
            body = {"units": {"enforcement": alt["unit_id"]}, "reason": "test override"}
        assert client.post(f"/api/v1/incidents/{inc}/assignments", json=body, headers=h).is_success
    try:
        zone = Period.parse("2026-12").start.tzinfo
        period = Period.parse(f"{datetime.now(UTC).astimezone(zone):%Y-%m}")
        result = CliRunner().invoke(
            app,
            [
                "report",
                "--period",
                period.label,
                "--level",
                "overrides",
                "--url",
                reference_store_url,
            ],
        )
        assert result.exit_code == 0, result.output
        got = pd.read_csv(io.StringIO(result.stdout.split("wrote")[0]), dtype={"key": str})
        with engine.connect() as connection:
            want = pd.read_sql(
                text_(OVERRIDES_SQL), connection, params={"start": period.start, "end": period.end}
            )
        got = got.sort_values(["group", "key"]).reset_index(drop=True)
        want = want.sort_values(["grp", "key"]).reset_index(drop=True)
        assert len(got) >= 3  # street A and both dispatchers at least
        assert got["group"].tolist() == want["grp"].tolist()
        assert got["key"].tolist() == want["key"].tolist()
        assert got["decisions"].tolist() == want["decisions"].tolist()
        assert got["overrides"].tolist() == want["overrides"].tolist()
        assert got["override_rate"].to_numpy() == pytest.approx(want["rate"].to_numpy(), abs=1e-9)
        assert got["extra_travel_s"].to_numpy() == pytest.approx(want["extra"].to_numpy(), abs=1e-6)
        row = got[(got["group"] == "street") & (got["key"] == STREET_A)].iloc[0]
        assert row["overrides"] >= 2
    finally:
        cancel(client, d1, *opened)


def test_the_recommendation_passes_over_an_office_that_returned_it(
    client: TestClient, engine: Engine
) -> None:
    h = headers(engine, "dispatcher", street_code=STREET_A)
    (p,) = points(engine, STREET_A, 1)
    a = report(client, h, p)
    incident_id = a["incident_id"]
    first = a["dispatch"]["assignments"][0]["unit_id"]
    office = str(store.read_units(engine, unit_id=first)["office_id"].iloc[0])
    try:
        r = client.post(
            f"/api/v1/incidents/{incident_id}/actions/return",
            json={"reason": "not ours"},
            headers=h,
        )
        assert r.status_code == 200, r.text
        rec = client.post(f"/api/v1/incidents/{incident_id}/recommendation", headers=h).json()
        assert rec["decision"]["explanation"]["returned"]["offices"] == [office]
        unit = rec["recommended"]["enforcement"]
        assert str(store.read_units(engine, unit_id=unit)["office_id"].iloc[0]) != office
    finally:
        cancel(client, h, incident_id)


def test_concurrent_choices_of_one_unit_commit_once(client: TestClient, engine: Engine) -> None:
    """Two dispatchers send the same unit to two incidents at the same moment, again and again:
    one commits, the other gets the conflict, and the unit is never assigned twice."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    ctx = store.context_from_store(engine)

    def choose(incident_id: str, unit: str) -> manual.Choice:
        units = {"enforcement": unit}
        return manual.assign(engine, ctx, incident_id, units=units, reason="one unit", actor="r")

    h = headers(engine, "dispatcher", street_code=STREET_A)
    p1, p2 = points(engine, STREET_A, 2)
    for _ in range(3):
        ids = [report(client, h, p, dispatch=False)["incident_id"] for p in (p1, p2)]
        unit = manual.recommend(engine, ctx, ids[0]).recommended["enforcement"]
        try:
            with ThreadPoolExecutor(2) as pool:
                choices = list(pool.map(partial(choose, unit=unit), ids))
            committed = [c for c in choices if c.decision is not None]
            assert len(committed) == 1, [c.conflict for c in choices]
            loser = next(c for c in choices if c.decision is None)
            assert loser.conflict is not None
            assert loser.options.recommended.get("enforcement") != unit
            assert len(store.read_assignments(engine, unit_id=unit, active=True)) == 1
        finally:
            cancel(client, h, *ids)
