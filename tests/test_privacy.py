"""Reporters' personal data: planted, then looked for in every output; read, erased, retained.

A reporter's email and phone number are planted through the native API and Open311, then every
path that shows incidents is run (API answers for every staff role, the live feed, Open311 JSON
and XML, CLI history and notices, a static map, the logs at DEBUG with SQL echo, a failed SQL
statement) and every captured byte is scanned: the planted values appear nowhere. In the store
they live in the ``reporters`` table only, which the erasure then empties (checked with SQL on
every table) while the event log still replays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, inspect, select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from api.app import create_app
from gridgov import store
from gridgov.cli import app as cli
from gridgov.service import privacy
from gridgov.settings import Settings
from gridgov.store.journal import read_incident_events
from gridgov.store.models import INCIDENTS, REPORTERS
from gridgov.store.reporter_rows import privacy_log
from gridgov.workflow import replay

EMAIL = "wang.planted@example.org"
PHONE = "139-4455-6677"
NAME = "王小明"
PLANTED = (EMAIL, PHONE, NAME)
STREET = "510106024000"  # 西安路街道


def _scan(where: str, blob: str | bytes) -> None:
    text_ = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    for value in PLANTED:
        assert value not in text_, f"{value!r} leaked into {where}"


def _tables_holding(engine: Engine, values: tuple[str, ...]) -> set[str]:
    """Every table (SQL, all columns as text) that holds any of ``values``."""
    found = set()
    with engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            if table in ("spatial_ref_sys", "alembic_version"):
                continue
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                blob = " ".join(
                    v.decode("utf-8", "replace") if isinstance(v, bytes | memoryview) else str(v)
                    for v in (bytes(x) if isinstance(x, memoryview) else x for x in row)
                )
                if any(v in blob for v in values):
                    found.add(table)
                    break
    return found


def _point(engine: Engine, level: str, n: int) -> tuple[float, float]:
    gdf = store.read_stored_areas(engine, level).sort_values("code")
    gdf = gdf[gdf["code"].astype(str).str.startswith(STREET[:9])]
    p = shapely.point_on_surface(gdf.geometry.iloc[n])
    return float(p.x), float(p.y)


class World:
    def __init__(self, engine: Engine, url: str, client: TestClient) -> None:
        self.engine = engine
        self.url = url
        self.client = client
        self.outputs: list[tuple[str, str | bytes]] = []
        self.tokens: dict[str, dict[str, str]] = {}

    def token(self, role: str, **scope: str) -> dict[str, str]:
        _, secret = store.issue_credential(self.engine, role, label=f"privacy {role}", **scope)
        return {"Authorization": f"Bearer {secret}"}

    def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        r = self.client.get(path, headers=headers or {}, params=params)
        self.outputs.append((f"GET {path}", r.content))
        self.outputs.append((f"GET {path} headers", str(r.headers)))
        return r


@pytest.fixture(scope="module")
def world(reference_engine: Engine, reference_store_url: str) -> Iterator[World]:
    app = create_app(Settings(database_url=reference_store_url), engine=reference_engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(reference_engine, reference_store_url, client)


@pytest.fixture(scope="module")
def planted(world: World) -> dict[str, str]:
    """Two reports carrying the planted contact: one native, one Open311."""
    dispatcher = world.token("dispatcher", street_code=STREET)
    lon, lat = _point(world.engine, "community", 0)
    r = world.client.post(
        "/api/v1/incidents",
        headers={**dispatcher, "Idempotency-Key": "privacy-native-1"},
        json={
            "matter_code": "UM-04",
            "lon": lon,
            "lat": lat,
            "description": "stall blocking the pavement",
            "reporter": f"email:{EMAIL}; phone:{PHONE}; name:{NAME}",
        },
    )
    world.outputs.append(("POST native", r.content))
    assert r.status_code == 201, r.text
    native = r.json()["incident_id"]
    _, key = store.issue_credential(world.engine, "citizen", kind="api_key", label="privacy app")
    lon, lat = _point(world.engine, "community", 1)
    r = world.client.post(
        "/open311/v2/requests.json",
        data={
            "api_key": key,
            "service_code": "EE-01",
            "long": str(lon),
            "lat": str(lat),
            "email": EMAIL,
            "phone": PHONE,
            "first_name": NAME,
            "account_id": EMAIL,
            "description": "rubbish left by the gate",
        },
    )
    world.outputs.append(("POST open311", r.content))
    assert r.status_code == 201, r.text
    open311_id = r.json()[0]["service_request_id"]
    return {"native": native, "open311": open311_id}


@pytest.fixture(scope="module")
def closed(world: World, planted: dict[str, str]) -> None:
    """The native incident run to its end, so an outcome notice is written."""
    incident = planted["native"]
    unit = store.read_dispatch(world.engine, incident)["assignments"][0]["unit_id"]
    at = datetime.now(UTC)
    for action in ("acknowledge", "arrive", "resolve"):
        store.apply_action(
            world.engine, incident, action, at=at, actor=unit, role="unit", unit_id=unit
        )
    store.apply_action(world.engine, incident, "verify", at=at, actor="gw", role="grid_worker")
    store.apply_action(world.engine, incident, "close", at=at, actor="desk", role="dispatcher")


@pytest.mark.usefixtures("closed")
def test_planted_contacts_never_leave_their_table(
    world: World,
    planted: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # SQL echo at DEBUG: the statements' parameters would show there if they were not hidden.
    logging.getLogger("sqlalchemy.engine").setLevel(logging.DEBUG)
    try:
        _run_every_path(world, planted, tmp_path)
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    for where, blob in world.outputs:
        _scan(where, blob)
    _scan("log records", "\n".join(r.getMessage() for r in caplog.records))
    _scan("log text", caplog.text)
    captured = capsys.readouterr()
    _scan("stdout", captured.out)
    _scan("stderr", captured.err)
    # In the store the contact lives in one table only.
    assert _tables_holding(world.engine, PLANTED) == {"reporters"}


def _run_every_path(world: World, planted: dict[str, str], tmp_path: Path) -> None:
    native, open311_id = planted["native"], planted["open311"]
    roles = {
        "admin": world.token("admin"),
        "analyst": world.token("analyst"),
        "commander": world.token("commander", street_code=STREET),
        "dispatcher": world.token("dispatcher", street_code=STREET),
    }
    for role, headers in roles.items():
        for incident in (native, open311_id):
            assert world.get(f"/api/v1/incidents/{incident}", headers).status_code == 200, role
        assert world.get("/api/v1/incidents", headers, limit=500).status_code == 200
        assert world.get("/api/v1/live", headers).status_code == 200
    for fmt in ("json", "xml"):
        world.get(f"/open311/v2/requests.{fmt}")
        for incident in (native, open311_id):
            world.get(f"/open311/v2/requests/{incident}.{fmt}")
    # A replayed answer, and a failed request carrying the contact.
    lon, lat = _point(world.engine, "community", 0)
    body = {"matter_code": "UM-04", "lon": lon, "lat": lat, "reporter": f"email:{EMAIL}"}
    for _ in range(2):
        r = world.client.post(
            "/api/v1/incidents",
            headers={**roles["dispatcher"], "Idempotency-Key": "privacy-native-1"},
            json=body,
        )
        world.outputs.append(("POST replay", r.content))
    r = world.client.post(
        "/api/v1/incidents",
        headers=roles["dispatcher"],
        json={**body, "incident_id": native},  # exists already: refused
    )
    world.outputs.append(("POST existing id", r.content))
    assert r.status_code == 422
    # The CLI's views of the incident, and a static map of its street.
    runner = CliRunner()
    for args in (
        ["history", native],
        ["history", open311_id],
        ["notices", "--incident", native],
        ["notices", "--kind", "outcome"],
        ["map", "street", "--street", STREET, "--out", str(tmp_path / "street.html")],
    ):
        result = runner.invoke(cli, [*args, "--url", world.url])
        assert result.exit_code == 0, result.output
        world.outputs.append((" ".join(args), result.output))
    world.outputs.append(("street map", (tmp_path / "street.html").read_bytes()))
    # A failed statement carrying the contact: its message and log hold no parameters.
    log = logging.getLogger("gridgov.test")
    with world.engine.connect() as connection:
        rid = connection.execute(
            select(INCIDENTS.c.reporter_id).where(INCIDENTS.c.incident_id == native)
        ).scalar_one()
    with pytest.raises(DBAPIError) as failed, world.engine.begin() as connection:
        connection.execute(
            insert(REPORTERS).values(
                reporter_id=rid, contact=f"email:{EMAIL}", created_at=datetime.now(UTC)
            )
        )
    log.error("failed statement", exc_info=failed.value)
    world.outputs.append(("failed SQL", str(failed.value)))
    # A CHECK violation: PostgreSQL's DETAIL repeats the whole failing row.
    with pytest.raises(DBAPIError) as failed, world.engine.begin() as connection:
        now = datetime.now(UTC)
        connection.execute(
            insert(REPORTERS).values(
                reporter_id="rep-check", contact=f"phone:{PHONE}", created_at=now, erased_at=now
            )
        )
    log.error("failed statement", exc_info=failed.value)
    world.outputs.append(("failed check", f"{failed.value} {failed.value.orig}"))


def test_anonymous_open311_reads_show_staff_reports_only_roughly(
    world: World, planted: dict[str, str]
) -> None:
    staff, citizen = planted["native"], planted["open311"]
    listed = {r["service_request_id"]: r for r in world.get("/open311/v2/requests.json").json()}
    one = world.get(f"/open311/v2/requests/{staff}.json").json()[0]
    for shown in (listed[staff], one):
        assert shown["description"] is None and shown["media_url"] is None
        assert shown["lat"] == round(shown["lat"], 2) and shown["long"] == round(shown["long"], 2)
    assert listed[citizen]["description"] == "rubbish left by the gate"
    assert listed[citizen]["lat"] != round(listed[citizen]["lat"], 2)
    # Staff read the staff report in full.
    admin = world.token("admin")
    detail = world.get(f"/api/v1/incidents/{staff}", admin).json()
    assert detail["description"] == "stall blocking the pavement"


def test_only_the_streets_dispatcher_reads_the_contact_and_each_read_is_logged(
    world: World, planted: dict[str, str]
) -> None:
    incident = planted["open311"]
    mine = world.token("dispatcher", street_code=STREET)
    r = world.client.get(f"/api/v1/incidents/{incident}/reporter", headers=mine)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert EMAIL in answer["contact"] and PHONE in answer["contact"]
    reads = [e for e in privacy_log(world.engine, answer["reporter_id"]) if e["kind"] == "read"]
    assert reads and reads[-1]["incident_id"] == incident
    assert EMAIL not in str(reads)
    for role, scope in (("admin", {}), ("analyst", {}), ("commander", {"street_code": STREET})):
        headers = world.token(role, **scope)
        r = world.client.get(f"/api/v1/incidents/{incident}/reporter", headers=headers)
        assert r.status_code == 403, (role, r.text)
    other = world.token("dispatcher", street_code="510106025000")
    assert (
        world.client.get(f"/api/v1/incidents/{incident}/reporter", headers=other).status_code == 404
    )
    assert len(
        [e for e in privacy_log(world.engine, answer["reporter_id"]) if e["kind"] == "read"]
    ) == len(reads)


@pytest.mark.usefixtures("closed")
def test_erasure_empties_every_table_and_the_log_still_replays(
    world: World, planted: dict[str, str]
) -> None:
    # Every reporter row holding the planted contact: the native and the Open311 report, and,
    # when test_planted_contacts_never_leave_their_table ran in this worker first, the native
    # one it sent with the email only (pytest-xdist may run it elsewhere).
    with world.engine.connect() as connection:
        holding = [
            c
            for c in connection.execute(select(REPORTERS.c.contact)).scalars()
            if c is not None and (PHONE in c or EMAIL in c)
        ]
    assert len(holding) >= 2
    result = CliRunner().invoke(
        cli,
        [
            *("privacy", "erase", "--reporter", PHONE, "--reporter", EMAIL.upper()),
            *("--by", "request 7", "--url", world.url),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f'"count": {len(holding)}' in result.output
    assert _tables_holding(world.engine, PLANTED) == set()
    erasures = [e for e in privacy_log(world.engine) if e["kind"] == "erasure"]
    assert {e["actor"] for e in erasures} == {"request 7"}
    with world.engine.connect() as connection:
        for incident in planted.values():
            events = read_incident_events(connection, incident)
            status = connection.execute(
                select(INCIDENTS.c.status).where(INCIDENTS.c.incident_id == incident)
            ).scalar_one()
            assert str(replay(events)) == status
    # The street's dispatcher now reads that the contact is gone.
    mine = world.token("dispatcher", street_code=STREET)
    r = world.client.get(f"/api/v1/incidents/{planted['native']}/reporter", headers=mine)
    assert r.status_code == 200 and r.json()["contact"] is None and r.json()["erased_at"]


def test_retention_erases_contacts_only_after_every_incident_ended(store_engine: Engine) -> None:
    from gridgov.store.reporter_rows import insert_reporter

    now = datetime.now(UTC)
    with store.begin_write(store_engine) as connection:
        old = insert_reporter(connection, "phone:1", now - timedelta(days=400))
        recent = insert_reporter(connection, "phone:2", now)
        still_open = insert_reporter(connection, "phone:3", now - timedelta(days=400))
        for incident_id, status, updated, rid in (
            ("R-OLD", "closed", now - timedelta(days=200), old),
            ("R-RECENT", "cancelled", now - timedelta(days=10), recent),
            ("R-OPEN-1", "closed", now - timedelta(days=300), still_open),
            ("R-OPEN-2", "dispatched", now - timedelta(days=300), still_open),
        ):
            connection.execute(
                insert(INCIDENTS).values(
                    incident_id=incident_id,
                    matter_code="UM-04",
                    geometry=shapely.Point(104.05, 30.69),
                    reported_at=updated,
                    status=status,
                    created_at=updated,
                    updated_at=updated,
                    reporter_id=rid,
                )
            )
    erased = privacy.apply_retention(store_engine, Settings(contact_retention_days=180), now=now)
    assert erased == [old]
    with store_engine.connect() as connection:
        rows = connection.execute(select(REPORTERS.c.reporter_id, REPORTERS.c.contact)).all()
    contacts = {r.reporter_id: r.contact for r in rows}
    assert contacts == {old: None, recent: "phone:2", still_open: "phone:3"}
    # (The schema's migration recorded itself first: it had nothing to move here.)
    assert [e["kind"] for e in privacy_log(store_engine)] == ["migration", "retention"]
    # The CLI applies the configured rule too (nothing more to erase at 180 days).
    assert privacy.apply_retention(store_engine, Settings(), now=now) == []


def test_the_service_sweeps_on_its_own(store_engine: Engine, store_url: str) -> None:
    from gridgov.store.reporter_rows import insert_reporter

    now = datetime.now(UTC)
    with store.begin_write(store_engine) as connection:
        rid = insert_reporter(connection, "phone:4", now)
        connection.execute(
            insert(INCIDENTS).values(
                incident_id="R-SWEEP",
                matter_code="UM-04",
                geometry=shapely.Point(104.05, 30.69),
                reported_at=now,
                status="closed",
                created_at=now,
                updated_at=now - timedelta(days=2),
                reporter_id=rid,
            )
        )
    settings = Settings(
        database_url=store_url, contact_retention_days=1, retention_sweep_interval_s=0.05
    )
    with TestClient(create_app(settings, engine=store_engine)):
        for _ in range(200):
            if any(e["kind"] == "retention" for e in privacy_log(store_engine)):
                break
            time.sleep(0.05)
    with store_engine.connect() as connection:
        assert connection.execute(select(REPORTERS.c.contact)).scalar_one() is None
