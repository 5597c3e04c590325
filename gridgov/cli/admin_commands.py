"""Commands that run and administer the service.

Consultations (the ``consultation`` group: power 1's commands here, powers 2 and 4's in
``consult_commands``), API credentials (the ``token`` group),
the HTTP service (``serve``) and the first-run tour (``demo``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from gridgov.cli.command_support import (
    UrlOption,
    database_url,
    domain_errors,
    err,
    fail,
    local_time,
    out,
    parse_instant,
    redact,
)
from gridgov.cli.dispatch_commands import history
from gridgov.cli.district_commands import DEMO_DATASET, info, init, load, locate
from gridgov.errors import InputError
from gridgov.settings import get_settings

consultation_app = typer.Typer(
    help="Consultations of the streets. Power 1 (record, opinion, check): before a department "
    "moves the head of an office stationed in a street, it consults the street in writing. "
    "Powers 2 and 4 (register, respond, adopt, accept, suggest): plans, projects and decisions "
    "whose footprint decides which streets are asked. `list` shows both.",
    no_args_is_help=True,
)


@consultation_app.command("record")
def consultation_record(
    office: Annotated[str, typer.Option(help="The stationed office whose head would move.")],
    head: Annotated[str, typer.Option(help="The office head concerned.")],
    move: Annotated[str, typer.Option(help="What the department proposes (transfer, ...).")],
    letter: Annotated[
        str, typer.Option(help="The department's written consultation (text, or @FILE).")
    ],
    by: Annotated[str, typer.Option(help="Who records it.")],
    at: Annotated[
        str | None, typer.Option(help="When the letter was sent (ISO 8601; default now).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Record a department's written consultation of the street; prints its id."""
    from gridgov import store

    with domain_errors():
        text = letter
        if letter.startswith("@"):
            try:
                text = Path(letter[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                msg = f"cannot read the letter {letter[1:]}: {exc.strerror}"
                raise InputError(msg) from None
        consultation_id = store.record_consultation(
            store.open_store(database_url(url)),
            office_id=office,
            head_name=head,
            proposed_move=move,
            letter=text,
            consulted_at=parse_instant(at, "--at"),
            recorded_by=by,
        )
    out.print(f"consultation {consultation_id} recorded for {office}", highlight=False)


@consultation_app.command("opinion")
def consultation_opinion(
    consultation_id: Annotated[int, typer.Argument(help="The consultation.")],
    opinion: Annotated[str, typer.Option(help="agree, disagree or conditional.")],
    text: Annotated[
        str | None, typer.Option(help="The street's written opinion (required unless agree).")
    ] = None,
    at: Annotated[str | None, typer.Option(help="When (ISO 8601; default now).")] = None,
    url: UrlOption = None,
) -> None:
    """Record the street's opinion on a consultation (once)."""
    from gridgov import store

    with domain_errors():
        store.record_street_opinion(
            store.open_store(database_url(url)),
            consultation_id,
            opinion=opinion,
            opinion_at=parse_instant(at, "--at"),
            opinion_text=text,
        )
    out.print(f"consultation {consultation_id}: the street's opinion is {opinion}", highlight=False)


@consultation_app.command("check")
def consultation_check(
    office: Annotated[str, typer.Argument(help="The office whose head would move.")],
    at: Annotated[str | None, typer.Option(help="The move's date (default now).")] = None,
    url: UrlOption = None,
) -> None:
    """Exit 0 if the street was consulted and answered before the move; 1 saying why if not."""
    from gridgov import store

    with domain_errors():
        found = store.check_head_move(
            store.open_store(database_url(url)), office, parse_instant(at, "--at")
        )
    out.print(
        f"{office}: the street was consulted (consultation {found['consultation_id']}) and "
        f"answered {found['opinion']} on {local_time(found['opinion_at'])}",
        highlight=False,
    )


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: settings.api_workers).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Run the HTTP service: the native API (/api/v1), Open311 (/open311/v2), the live
    command-centre display (/) and the OpenAPI document (/docs).

    It serves the embedded SQLite store by default, and PostGIS when GRIDGOV_DATABASE_URL
    (or --url) points there. Tokens come from `gridgov token issue`.
    """
    import os

    import uvicorn

    from gridgov import store

    settings = get_settings()
    with domain_errors():
        database = database_url(url)
        engine = store.open_store(database)
        if not store.is_initialised(engine):
            raise fail(f"the store at {redact(database)} is not initialised; run `gridgov init`")
        engine.dispose()
    # Each worker builds its own app from the environment (api.app.app_from_env). With one
    # worker that is this process, whose settings were cached above with the old URL: clear
    # them, or the app would serve another database than the one announced.
    os.environ["GRIDGOV_DATABASE_URL"] = database
    get_settings.cache_clear()
    count = workers if workers is not None else settings.api_workers
    err.print(
        f"serving {redact(database)} on http://{host}:{port} with {count} worker(s)",
        highlight=False,
    )
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=count,
        access_log=False,
        log_level="info",
        # Open live streams would hold a restart up for good: they end after 5 s, and the
        # pages reconnect to the next server from their cursor.
        timeout_graceful_shutdown=5,
    )


token_app = typer.Typer(
    help="API credentials: bearer tokens for staff and units, API keys for Open311 apps.",
    no_args_is_help=True,
)


@token_app.command("issue")
def token_issue(
    role: Annotated[
        str,
        typer.Argument(
            help="admin, commander, dispatcher, unit, grid_worker, analyst, department or "
            "citizen (an Open311 API key)."
        ),
    ],
    label: Annotated[str, typer.Option(help="Who holds it (a name, a device, an app).")],
    street: Annotated[
        str | None, typer.Option(help="The street of a commander or dispatcher.")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="The unit of a unit token.")] = None,
    grid: Annotated[str | None, typer.Option(help="The grid of a grid worker.")] = None,
    department: Annotated[
        str | None, typer.Option(help="The department of a department token (its name).")
    ] = None,
    days: Annotated[
        float | None, typer.Option(help="Expires after this many days (default: never).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Issue a token (or a citizen app's API key). The secret is printed once, on stdout;
    only its hash is stored."""
    from gridgov import store

    with domain_errors():
        engine = store.open_store(database_url(url))
        now = datetime.now(UTC)
        credential, secret = store.issue_credential(
            engine,
            role,
            label=label,
            kind="api_key" if role == "citizen" else "token",
            street_code=street,
            unit_id=unit,
            grid_code=grid,
            department=department,
            expires_at=None if days is None else now + timedelta(days=days),
            now=now,
        )
    scope = credential.street_code or credential.department or ""
    if credential.unit_id or credential.grid_code:
        scope = f"{credential.unit_id or credential.grid_code} ({scope})"
    err.print(
        f"issued {credential.kind} {credential.credential_id} for {role} {scope}".rstrip()
        + "; store the secret now, it is not shown again:",
        highlight=False,
    )
    out.print(secret, highlight=False)


@token_app.command("list")
def token_list(url: UrlOption = None) -> None:
    """List credentials (never their secrets)."""
    from gridgov import store

    with domain_errors():
        df = store.list_credentials(store.open_store(database_url(url)))
    for row in df.astype(object).where(df.notna(), None).to_dict("records"):
        state = "revoked" if row["revoked_at"] is not None else ""
        scope = str(
            row["street_code"]
            or row["unit_id"]
            or row["grid_code"]
            or row["department"]
            or "district"
        )
        out.print(
            f"{row['credential_id']}  {row['kind']:<7} {row['role']:<11} {scope:<18} "
            f"{row['label']}  {state}",
            highlight=False,
        )


@token_app.command("revoke")
def token_revoke(
    credential_id: Annotated[str, typer.Argument(help="The id `token list` shows.")],
    url: UrlOption = None,
) -> None:
    """Revoke a credential at once."""
    from gridgov import store

    with domain_errors():
        store.revoke_credential(store.open_store(database_url(url)), credential_id)
    out.print(f"revoked {credential_id}", highlight=False)


def demo(
    url: UrlOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a store that holds another district.")
    ] = False,
) -> None:
    """First run: create the embedded store, load the reference district, and show it working."""
    from gridgov import store

    target = database_url(url)
    out.rule("gridgov demo")
    out.print(f"store: {redact(target)}")
    init(url=target)
    with domain_errors():
        held = store.summarize(store.open_store(target))["datasets"]
    others = sorted({d["name"] for d in held.values()} - {DEMO_DATASET})
    if others and not force:
        raise fail(
            f"the store at {redact(target)} holds {', '.join(others)}; the demo would replace "
            "it. Give the demo its own store with --url sqlite:///demo.db, or pass --force"
        )
    load(paths=None, units=None, offices=None, roads=None, crs=None, url=target)
    out.rule("what is loaded")
    info(url=target)
    out.rule("locate 104.05 30.69 (WGS84), then the same place as a phone reports it (GCJ-02)")
    locate(104.05, 30.69, crs="wgs84", url=target)
    from gridgov.crs import from_wgs84

    glon, glat = from_wgs84(104.05, 30.69, "gcj02")
    locate(round(float(glon[0]), 7), round(float(glat[0]), 7), crs="gcj02", url=target)
    out.rule(f"dispatch a fire ({DEMO_MATTER}) at 104.05 30.69 over the reference roads")
    incident_id = _demo_dispatch(target)
    if incident_id is not None:
        out.rule("the call answered, through the workflow")
        _demo_workflow(target, incident_id)


#: The matter the demo dispatches: a fire, with a joint assisting unit.
DEMO_MATTER = "FS-01"


#: How long ago the demo's fire is reported: its whole workflow then lies in the past.
DEMO_BACKDATE = timedelta(minutes=90)


def _demo_dispatch(url: str) -> str | None:
    """One committed dispatch, printed as one line per unit (``gridgov dispatch`` prints all).

    Returns the incident's id when a lead unit was sent (the demo then walks its workflow).
    """
    from gridgov import store
    from gridgov.dispatch import Incident

    now = datetime.now(UTC) - DEMO_BACKDATE
    with domain_errors():
        engine = store.open_store(url)
        ctx = store.context_from_store(engine)
        incident = Incident(
            f"DEMO-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", DEMO_MATTER, 104.05, 30.69, now
        )
        # Every demo run reports a fire at the same spot; each is a new incident on purpose.
        store.create_incident(engine, incident, source="demo", now=now, check_duplicates=False)
        decision = store.dispatch_stored(engine, ctx, incident.incident_id, now=now, routes=False)
    out.print(
        f"incident {incident.incident_id}: {decision.status}, level "
        f"{decision.level.value if decision.level else '-'} "
        f"({decision.explanation.get('travel_model', {}).get('kind', '?')} travel times)",
        highlight=False,
    )
    width = max((len(a.unit_id) for a in decision.assignments), default=0)
    for a in decision.assignments:
        out.print(
            f"  {a.role:6} {a.kind.value:12} {a.unit_id:{width}}  {a.time_s / 60:5.1f} min  "
            f"{a.level.value:9}  {a.rule}",
            highlight=False,
        )
    for kind in decision.unfilled:
        out.print(f"  unfilled {kind.value}", highlight=False)
    lead = [a for a in decision.assignments if a.role == "lead"]
    return incident.incident_id if lead else None


def _demo_workflow(url: str, incident_id: str) -> None:
    """Answer the demo's call through the workflow (as the units and the grid worker would)."""
    from gridgov import store

    with domain_errors():
        engine = store.open_store(url)
        events = store.read_events(engine, incident_id=incident_id)
        called = events.loc[events["action"] == "dispatch", "at"].iloc[-1].to_pydatetime()
        lead = events.loc[events["action"] == "dispatch", "data"].iloc[-1]["units"][0]
        steps = (
            ("acknowledge", 2, lead, "unit", None, None),
            ("arrive", 9, lead, "unit", None, None),
            ("resolve", 50, lead, "unit", None, None),
            ("verify", 70, "demo-grid-worker", "grid_worker", None, None),
            ("close", 71, "demo-dispatcher", "dispatcher", None, None),
            ("evaluate", 85, "demo-reporter", "reporter", None, "satisfied"),
        )
        for action, minutes, actor, role, reason, satisfaction in steps:
            store.apply_action(
                engine,
                incident_id,
                action,
                at=called + timedelta(minutes=minutes),
                actor=actor,
                role=role,
                reason=reason,
                satisfaction=satisfaction,
            )
    history(incident_id, url=url)
