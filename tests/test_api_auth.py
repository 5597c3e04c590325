"""Role × endpoint matrix: every role against every native endpoint, allowed and denied.

Each cell names the exact status: 2xx where the role may act, 403 where its role may not,
404 where the record lies outside its scope (answered exactly like a missing one), and 401
without a bearer token. Incidents and units are made fresh for each cell, so a cell's outcome
never depends on another's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from api.app import create_app
from gridgov import store
from gridgov.photos import examine
from gridgov.service import intake, manual, media
from gridgov.settings import Settings
from gridgov.store.models import CREDENTIALS

STREET_A = "510106024000"  # 西安路街道
STREET_B = "510106025000"  # 西华街道
MATTER = "UM-04"  # street vending: enforcement, no assisting kind, priority 3

ROLES = (
    "anonymous",
    "citizen",
    "admin",
    "analyst",
    "commander_a",
    "dispatcher_a",
    "dispatcher_b",
    "unit_assigned",
    "unit_other",
    "grid_worker_here",
    "grid_worker_elsewhere",
)


@dataclass
class World:
    engine: Any
    client: TestClient
    point_a: tuple[float, float]  # in grid_here of street A
    point_b: tuple[float, float]  # in street B
    grid_here: str
    grid_elsewhere: str
    static: dict[str, str] = field(default_factory=dict)  # role → secret
    seq: int = 0
    settings: Settings = field(default_factory=Settings)

    def token(self, role: str, **scope: Any) -> str:
        _, secret = store.issue_credential(self.engine, role, label=f"matrix {role}", **scope)
        return secret

    def incident(
        self, *, resolved: bool = False, queued: bool = False, backup: bool = False
    ) -> tuple[str, str, str]:
        """A fresh incident at point_a, dispatched: (incident id, assigned unit, other unit).

        ``queued``: left waiting for dispatch (the units are two free ones of the street);
        ``backup``: a second unit added, so that one can be released."""
        self.seq += 1
        now = datetime.now(UTC)
        incident_id = f"MX-{self.seq:05d}-{now:%H%M%S%f}"
        ctx = store.context_from_store(self.engine)
        lon, lat = self.point_a
        report = intake.report(
            self.engine,
            ctx,
            matter_code=MATTER,
            lon=lon,
            lat=lat,
            incident_id=incident_id,
            reported_at=now,
            check_duplicates=False,
            now=now,
            dispatch_now=not queued,
            reporter="phone:138-0000-0000",
        )
        if queued:
            free = store.read_units(self.engine, street_code=STREET_A)
            free = free[free["busy_incident_id"].isna()]["unit_id"]
            return incident_id, str(free.iloc[0]), str(free.iloc[1])
        assert report.decision is not None and report.decision.assignments, report
        unit = report.decision.assignments[0].unit_id
        if resolved:
            for action in ("acknowledge", "arrive", "resolve"):
                store.apply_action(
                    self.engine,
                    incident_id,
                    action,
                    at=datetime.now(UTC),
                    actor=unit,
                    role="unit",
                    unit_id=unit,
                )
        if backup:
            manual.backup(self.engine, ctx, incident_id, actor="matrix", now=datetime.now(UTC))
        units = store.read_units(self.engine, street_code=STREET_A)
        other = units[(units["unit_id"] != unit) & (units["busy_incident_id"].isna())]
        return incident_id, unit, str(other["unit_id"].iloc[0])

    def photo(self, incident_id: str) -> int:
        """A report photo of the incident: its media id."""
        photo = examine(PHOTO, local_tz=UTC)
        stored = media.attach(
            self.engine, self.settings, incident_id, "report", [photo], actor="matrix"
        )
        return int(stored[0]["media_id"])

    def consultation(self, *, answered: bool = False) -> tuple[int, int]:
        """A fresh project around point_a (street A only): (consultation id, A's request)."""
        from gridgov.footprints import read_footprint
        from gridgov.service import consultations
        from gridgov.service.scope import OPERATOR

        lon, lat = self.point_a
        registered = consultations.register(
            self.engine,
            OPERATOR,
            item_code="P-DET-09",
            stage="implementation",
            title="matrix project",
            letter="matrix letter",
            department="matrix department",
            footprint=read_footprint(f"POINT ({lon} {lat})", radius_m=30),
            buffer_m=0.0,
            at=datetime.now(UTC),
            actor="matrix",
        )
        requests = store.read_consultation_requests(
            self.engine, consultation_id=registered.consultation_id, street_code=STREET_A
        )
        request_id = int(requests["request_id"].iloc[0])
        if answered:
            consultations.respond(
                self.engine,
                OPERATOR,
                request_id,
                opinion="agree",
                text=None,
                at=datetime.now(UTC),
                actor="matrix",
            )
        return registered.consultation_id, request_id

    def finish(self, incident_id: str) -> None:
        """Cancel the incident if it is still open, freeing its units for the next cell."""
        status = store.query_incidents(self.engine, incident_ids=[incident_id])[0]["status"]
        if status.iloc[0] in ("dispatched", "acknowledged", "on_scene", "registered"):
            store.apply_action(
                self.engine,
                incident_id,
                "cancel",
                at=datetime.now(UTC),
                actor="matrix",
                role="dispatcher",
                reason="test cell finished",
            )


@pytest.fixture(scope="module")
def world(reference_store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    engine = store.open_store(reference_store_url)
    ctx = store.context_from_store(engine)
    areas = ctx.gdf_areas
    grids = areas[(areas["level"] == "grid") & areas["code"].str.startswith(STREET_A[:9])]
    here, elsewhere = grids.iloc[0], grids.iloc[1]
    p_a = here.geometry.representative_point()
    street_b = areas[areas["code"] == STREET_B].iloc[0].geometry.representative_point()
    settings = Settings(media_root=tmp_path_factory.mktemp("media"))
    app = create_app(settings, engine=engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        w = World(
            engine=engine,
            client=client,
            point_a=(p_a.x, p_a.y),
            point_b=(street_b.x, street_b.y),
            grid_here=str(here["code"]),
            grid_elsewhere=str(elsewhere["code"]),
            settings=settings,
        )
        w.static = {
            "admin": w.token("admin"),
            "analyst": w.token("analyst"),
            "commander_a": w.token("commander", street_code=STREET_A),
            "dispatcher_a": w.token("dispatcher", street_code=STREET_A),
            "dispatcher_b": w.token("dispatcher", street_code=STREET_B),
            "grid_worker_here": w.token("grid_worker", grid_code=w.grid_here),
            "grid_worker_elsewhere": w.token("grid_worker", grid_code=w.grid_elsewhere),
            "citizen": w.token("citizen", kind="api_key"),
        }
        yield w
    engine.dispose()


def _png() -> bytes:
    out = BytesIO()
    Image.new("RGB", (8, 8), (9, 99, 9)).save(out, "PNG")
    return out.getvalue()


#: The photo the multipart cells send.
PHOTO = _png()


@dataclass
class Cell:
    """One request: built from the world, the fresh incident and units, sent as a role."""

    method: str
    # format fields: {incident}, {unit}, {other}, {level}, {media}, {street}, {consultation},
    # {request}
    path: str
    expected: dict[str, int]
    body: Callable[[World], Any] | None = None
    # "none", "dispatched", "resolved", "queued", "backup", "photo" (dispatched, with one);
    # "consultation" or "answered" (a fresh one in street A)
    needs: str = "none"
    form: Callable[[World], dict[str, str]] | None = None  # multipart fields, sent with PHOTO


def _all(code: int, **overrides: int) -> dict[str, int]:
    out = dict.fromkeys(ROLES, code)
    out.update(overrides)
    return out


def _staff(code: int, **overrides: int) -> dict[str, int]:
    """Anonymous and citizen callers have no bearer token: 401 on the native API."""
    return _all(code, anonymous=401, citizen=401, **overrides)


#: Roles that may not confirm, override, release or add units (a dispatcher of another street
#: does not see the incident: 404).
CHOOSERS_ONLY = {
    "analyst": 403,
    "unit_assigned": 403,
    "unit_other": 403,
    "grid_worker_here": 403,
    "grid_worker_elsewhere": 403,
    "dispatcher_b": 404,
}

CELLS: dict[str, Cell] = {
    "health": Cell("GET", "/health", _all(200)),
    "ready": Cell("GET", "/health/ready", _all(200)),
    "areas": Cell("GET", "/api/v1/areas/{level}", _all(200)),
    "locate": Cell("GET", "/api/v1/locate?lon=104.05&lat=30.69", _all(200)),
    # Roads are public like the areas (the same street map is posted in every community).
    "roads": Cell("GET", "/api/v1/roads?bbox=104.03,30.67,104.07,30.70&zoom=14", _all(200)),
    "units.list": Cell("GET", "/api/v1/units", _staff(200)),
    "units.get": Cell(
        "GET",
        "/api/v1/units/{unit}",
        _staff(200, dispatcher_b=404, unit_other=404),
        needs="dispatched",
    ),
    "units.status": Cell(
        "POST",
        "/api/v1/units/{other}/status",
        _staff(
            200,
            analyst=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
            dispatcher_b=404,
            unit_assigned=404,
        ),
        body=lambda w: {"status": "available"},
        needs="dispatched",
    ),
    "units.position": Cell(
        "POST",
        "/api/v1/units/{other}/position",
        _staff(
            200,
            analyst=403,
            commander_a=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
            dispatcher_b=404,
            unit_assigned=404,
        ),
        body=lambda w: {"lon": w.point_a[0], "lat": w.point_a[1]},
        needs="dispatched",
    ),
    # A gateway's batch: callers outside the unit's scope get 200 with out_of_scope answers.
    "units.positions": Cell(
        "POST",
        "/api/v1/units/positions",
        _staff(
            200,
            analyst=403,
            commander_a=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
        ),
        body=lambda w: {
            "fixes": [
                {
                    "unit_id": str(store.read_units(w.engine, street_code=STREET_A)["unit_id"][0]),
                    "lon": w.point_a[0],
                    "lat": w.point_a[1],
                }
            ]
        },
    ),
    "incidents.create": Cell(
        "POST",
        "/api/v1/incidents",
        _staff(201, analyst=403, dispatcher_b=403, grid_worker_elsewhere=403),
        body=lambda w: {"matter_code": MATTER, "lon": w.point_a[0], "lat": w.point_a[1]},
        needs="dispatched",  # so that the unit roles exist
    ),
    "incidents.list": Cell("GET", "/api/v1/incidents", _staff(200)),
    # The wall display's feed: each role gets its own scope (tests/test_live.py checks what).
    "live": Cell("GET", "/api/v1/live", _staff(200)),
    # The pushed feed, closed after its first event.
    "live.stream": Cell("GET", "/api/v1/live/stream?max_seconds=0", _staff(200)),
    "incidents.get": Cell(
        "GET",
        "/api/v1/incidents/{incident}",
        _staff(200, dispatcher_b=404, unit_other=404, grid_worker_elsewhere=404),
        needs="dispatched",
    ),
    # Personal data: only the street's dispatcher, who calls the reporter back.
    "incidents.reporter": Cell(
        "GET",
        "/api/v1/incidents/{incident}/reporter",
        _staff(
            403,
            dispatcher_a=200,
            dispatcher_b=404,
            unit_other=404,
            grid_worker_elsewhere=404,
        ),
        needs="dispatched",
    ),
    "incidents.acknowledge": Cell(
        "POST",
        "/api/v1/incidents/{incident}/actions/acknowledge",
        _staff(
            200,
            analyst=403,
            commander_a=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
            dispatcher_b=404,
            unit_other=404,
        ),
        needs="dispatched",
    ),
    "incidents.verify": Cell(
        "POST",
        "/api/v1/incidents/{incident}/actions/verify",
        _staff(
            200,
            analyst=403,
            unit_assigned=403,
            unit_other=403,
            dispatcher_b=404,
            grid_worker_elsewhere=404,
        ),
        needs="resolved",
    ),
    "incidents.cancel": Cell(
        "POST",
        "/api/v1/incidents/{incident}/actions/cancel",
        _staff(
            200,
            analyst=403,
            unit_assigned=403,
            unit_other=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
            dispatcher_b=404,
        ),
        body=lambda w: {"reason": "reported twice by phone"},
        needs="dispatched",
    ),
    "incidents.batch": Cell(
        "POST",
        "/api/v1/incidents/dispatch",
        _staff(
            200,
            analyst=403,
            unit_assigned=403,
            unit_other=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
        ),
        needs="dispatched",
    ),
    "media.add": Cell(
        "POST",
        "/api/v1/incidents/{incident}/media",
        _staff(201, analyst=403, dispatcher_b=404, unit_other=404, grid_worker_elsewhere=404),
        form=lambda w: {"kind": "report"},
        needs="dispatched",
    ),
    "media.list": Cell(
        "GET",
        "/api/v1/incidents/{incident}/media",
        _staff(200, dispatcher_b=404, unit_other=404, grid_worker_elsewhere=404),
        needs="photo",
    ),
    "media.get": Cell(
        "GET",
        "/api/v1/incidents/{incident}/media/{media}",
        _staff(200, dispatcher_b=404, unit_other=404, grid_worker_elsewhere=404),
        needs="photo",
    ),
    "media.thumbnail": Cell(
        "GET",
        "/api/v1/incidents/{incident}/media/{media}/thumbnail",
        _staff(200, dispatcher_b=404, unit_other=404, grid_worker_elsewhere=404),
        needs="photo",
    ),
    "media.delete": Cell(
        "DELETE",
        "/api/v1/incidents/{incident}/media/{media}?reason=privacy",
        _staff(
            200,
            analyst=403,
            unit_assigned=403,
            unit_other=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
            dispatcher_b=404,
        ),
        needs="photo",
    ),
    "field.report": Cell(
        "POST",
        "/api/v1/field/reports",
        _staff(201, analyst=403, dispatcher_b=403, grid_worker_elsewhere=403),
        form=lambda w: {"matter_code": MATTER, "lon": str(w.point_a[0]), "lat": str(w.point_a[1])},
        needs="dispatched",  # so that the unit roles exist
    ),
    "field.verify": Cell(
        "POST",
        "/api/v1/field/incidents/{incident}/actions/verify",
        _staff(
            200,
            analyst=403,
            unit_assigned=403,
            unit_other=403,
            dispatcher_b=404,
            grid_worker_elsewhere=404,
        ),
        form=lambda w: {},
        needs="resolved",
    ),
    "field.tasks": Cell("GET", "/api/v1/field/tasks", _staff(200)),
    # The dispatcher's workspace: choices are the street's dispatchers' and commanders'.
    "console.recommendation": Cell(
        "POST",
        "/api/v1/incidents/{incident}/recommendation",
        _staff(200, **CHOOSERS_ONLY),
        needs="dispatched",
    ),
    "console.assign": Cell(
        "POST",
        "/api/v1/incidents/{incident}/assignments",
        _staff(201, **CHOOSERS_ONLY),
        body=lambda w: {},
        needs="queued",
    ),
    "console.release": Cell(
        "DELETE",
        "/api/v1/incidents/{incident}/assignments/{unit}?reason=not+needed",
        _staff(200, **CHOOSERS_ONLY),
        needs="backup",
    ),
    "console.backup": Cell(
        "POST",
        "/api/v1/incidents/{incident}/backup",
        _staff(200, **CHOOSERS_ONLY),
        needs="dispatched",
    ),
    "console.queue": Cell("GET", "/api/v1/console/queue", _staff(200)),
    "console.units": Cell("GET", "/api/v1/console/units", _staff(200)),
    "console.matters": Cell("GET", "/api/v1/console/matters", _staff(200)),
    # A street's mode: read in its scope (unit and grid worker tokens carry their street).
    "mode.get": Cell(
        "GET",
        "/api/v1/streets/{street}/dispatch-mode",
        _staff(200, dispatcher_b=404),
    ),
    "mode.put": Cell(
        "PUT",
        "/api/v1/streets/{street}/dispatch-mode",
        _staff(403, admin=200, commander_a=200),
        body=lambda w: {"mode": "auto"},
    ),
    "assessment": Cell(
        "GET",
        "/api/v1/assessment?period=2026-11",
        _staff(
            200,
            unit_assigned=403,
            unit_other=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
        ),
        needs="dispatched",
    ),
    # Consultations (powers 2 and 4): streets see the requests addressed to them, departments
    # their own (tests/test_api_consultations.py), the district all.
    "consultations.register": Cell(
        "POST",
        "/api/v1/consultations",
        _staff(403, admin=201),
        body=lambda w: {
            "item_code": "P-DET-09",
            "stage": "implementation",
            "title": "matrix",
            "letter": "matrix",
            "department": "matrix department",
            "footprint": f"POINT ({w.point_a[0]} {w.point_a[1]})",
            "radius_m": 30,
        },
    ),
    "consultations.list": Cell(
        "GET",
        "/api/v1/consultations",
        _staff(
            200,
            unit_assigned=403,
            unit_other=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
        ),
    ),
    "consultations.get": Cell(
        "GET",
        "/api/v1/consultations/{consultation}",
        _staff(
            200,
            dispatcher_b=404,
            unit_assigned=403,
            unit_other=403,
            grid_worker_here=403,
            grid_worker_elsewhere=403,
        ),
        needs="consultation",
    ),
    "consultations.respond": Cell(
        "POST",
        "/api/v1/consultations/requests/{request}/respond",
        _staff(403, admin=200, commander_a=200, dispatcher_a=200, dispatcher_b=404),
        body=lambda w: {"opinion": "conditional", "text": "keep the trees"},
        needs="consultation",
    ),
    "consultations.adopt": Cell(
        "POST",
        "/api/v1/consultations/requests/{request}/adopt",
        _staff(403, admin=200),
        body=lambda w: {"adoption": "partly", "reason": "the trees stay, the plaza goes"},
        needs="answered",
    ),
    "consultations.accept": Cell(
        "POST",
        "/api/v1/consultations/requests/{request}/accept",
        _staff(403, admin=200, commander_a=200, dispatcher_a=200, dispatcher_b=404),
        body=lambda w: {"accepted": False, "reason": "paving unfinished"},
        needs="consultation",
    ),
    "consultations.suggest": Cell(
        "POST",
        "/api/v1/consultations/suggestions",
        _staff(201, analyst=403, dispatcher_b=403, grid_worker_elsewhere=403),
        body=lambda w: {"lon": w.point_a[0], "lat": w.point_a[1], "text": "keep the trees"},
        needs="consultation",
    ),
}


def test_the_matrix_covers_every_native_route() -> None:
    """A new route must get its row in the matrix (Open311 has its own tests)."""
    app = create_app(engine=store.create_engine_from_url("sqlite://"))
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if not path.startswith("/open311/")
    }
    covered = set()
    for cell in CELLS.values():
        path = cell.path.split("?")[0]
        for name, field_ in (
            ("{incident}", "{incident_id}"),
            ("{unit}", "{unit_id}"),
            ("{media}", "{media_id}"),
            ("{street}", "{street_code}"),
            ("{consultation}", "{consultation_id}"),
            ("{request}", "{request_id}"),
        ):
            path = path.replace(name, field_)
        path = re.sub(r"/actions/\w+$", "/actions/{action}", path)
        covered.add((cell.method, path.replace("{other}", "{unit_id}")))
    assert len(documented) >= 14
    assert documented == covered


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(CELLS))
def test_role_endpoint(world: World, name: str, role: str) -> None:
    cell = CELLS[name]
    incident = unit = other = media_id = None
    consultation = request = None
    if cell.needs in ("consultation", "answered"):
        consultation, request = world.consultation(answered=cell.needs == "answered")
    if cell.needs in ("dispatched", "resolved", "queued", "backup", "photo"):
        incident, unit, other = world.incident(
            resolved=cell.needs == "resolved",
            queued=cell.needs == "queued",
            backup=cell.needs == "backup",
        )
        if cell.needs == "photo":
            media_id = world.photo(incident)
    else:
        unit, other = store.read_units(world.engine, street_code=STREET_A)["unit_id"].iloc[:2]
    headers: dict[str, str] = {}
    if role == "unit_assigned":
        secret: str | None = world.token("unit", unit_id=unit)
    elif role == "unit_other":
        secret = world.token("unit", unit_id=other)
    else:
        secret = world.static.get(role)
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    path = cell.path.format(
        incident=incident,
        unit=unit,
        other=other,
        level="street",
        media=media_id,
        street=STREET_A,
        consultation=consultation,
        request=request,
    )
    body = cell.body(world) if cell.body else None
    try:
        if cell.form is not None:
            response = world.client.request(
                cell.method,
                path,
                data=cell.form(world),
                files=[("photo", ("cell.png", PHOTO, "image/png"))],
                headers=headers,
            )
        else:
            response = world.client.request(cell.method, path, json=body, headers=headers)
        expected = cell.expected[role]
        assert response.status_code == expected, (name, role, response.text)
        if expected == 404:
            # Outside the scope reads exactly like a missing record: no hint it exists.
            assert "outside" not in response.text and "scope" not in response.text
        if expected == 401:
            assert response.headers.get("www-authenticate") == "Bearer"
    finally:
        if incident is not None:
            world.finish(incident)


def test_lists_are_scoped(world: World) -> None:
    """Another street's incidents never appear in a dispatcher's list, and the analyst sees
    both streets."""
    ctx = store.context_from_store(world.engine)
    now = datetime.now(UTC)
    ids = []
    for point in (world.point_a, world.point_b):
        world.seq += 1
        incident_id = f"LS-{world.seq:05d}-{now:%H%M%S%f}"
        intake.report(
            world.engine,
            ctx,
            matter_code=MATTER,
            lon=point[0],
            lat=point[1],
            incident_id=incident_id,
            reported_at=now,
            dispatch_now=False,
            check_duplicates=False,
        )
        ids.append(incident_id)

    def listed(role: str, **params: Any) -> set[str]:
        headers = {"Authorization": f"Bearer {world.static[role]}"}
        page = world.client.get(
            "/api/v1/incidents", params={"limit": 1000, **params}, headers=headers
        )
        assert page.status_code == 200, page.text
        return {item["incident_id"] for item in page.json()["items"]}

    assert ids[0] in listed("dispatcher_a") and ids[1] not in listed("dispatcher_a")
    assert ids[1] in listed("dispatcher_b") and ids[0] not in listed("dispatcher_b")
    # Asking for the other street explicitly gives an empty page, not its incidents.
    assert listed("dispatcher_a", street_code=STREET_B) == set()
    assert set(ids) <= listed("analyst")
    assert ids[0] in listed("grid_worker_here") and ids[0] not in listed("grid_worker_elsewhere")
    for incident_id in ids:
        world.finish(incident_id)


def test_secrets_are_stored_hashed_and_revocation_is_immediate(world: World) -> None:
    credential, secret = store.issue_credential(world.engine, "analyst", label="hash check")
    with world.engine.connect() as connection:
        stored = connection.execute(
            select(CREDENTIALS).where(CREDENTIALS.c.credential_id == credential.credential_id)
        ).one()
    assert secret.split("_", 2)[2] not in str(tuple(stored))
    assert len(stored.secret_sha256) == 64
    headers = {"Authorization": f"Bearer {secret}"}
    assert world.client.get("/api/v1/units", headers=headers).status_code == 200
    store.revoke_credential(world.engine, credential.credential_id)
    assert world.client.get("/api/v1/units", headers=headers).status_code == 401
    # A right id with a wrong secret is refused like an unknown token.
    forged = f"gg_{credential.credential_id}_{'x' * 43}"
    response = world.client.get("/api/v1/units", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_expired_tokens_are_refused(world: World) -> None:
    _, secret = store.issue_credential(
        world.engine,
        "analyst",
        label="expired",
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    response = world.client.get("/api/v1/units", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("role", "scope", "message"),
    [
        ("dispatcher", {}, "scoped to a street"),
        ("dispatcher", {"street_code": "510106024010"}, "scoped to a street"),  # a community
        ("unit", {"unit_id": "nope"}, "no unit 'nope'"),
        ("grid_worker", {"grid_code": STREET_A}, "scoped to a grid"),
        ("wizard", {}, "unknown role"),
        ("citizen", {}, "API keys"),
    ],
)
def test_issuing_needs_the_right_scope(
    world: World, role: str, scope: dict[str, Any], message: str
) -> None:
    from gridgov.errors import InputError

    with pytest.raises(InputError, match=message):
        store.issue_credential(world.engine, role, label="bad", **scope)
