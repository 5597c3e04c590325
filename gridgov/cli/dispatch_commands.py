"""Commands on incidents as they happen.

Dispatch one incident or the queue as an optimal batch, simulate a shift, take a workflow action,
read an incident's history, supervise what is overdue and list the notices: ``dispatch``,
``dispatch-batch``, ``simulate``, ``act``, ``history``, ``supervise``, ``notices``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from gridgov.cli.command_support import (
    CrsOption,
    UrlOption,
    check_choice,
    database_url,
    domain_errors,
    err,
    fail,
    local_time,
    out,
    parse_instant,
    print_json,
    progress_bar,
)
from gridgov.errors import InputError
from gridgov.settings import get_settings


def dispatch_(
    lon: Annotated[float, typer.Argument(help="Longitude (or x in an EPSG CRS).")],
    lat: Annotated[float, typer.Argument(help="Latitude (or y).")],
    matter: Annotated[str, typer.Argument(help="Matter code of the catalogue, e.g. FS-01.")],
    crs: CrsOption = "wgs84",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Decide and print, but store nothing and keep units free."),
    ] = False,
    incident_id: Annotated[
        str | None, typer.Option("--id", help="Incident id (default: CLI-<time>-<random>).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Dispatch one incident and print the decision with its explanation, as JSON.

    The incident is stored, its units are chosen (DESIGN "Dispatch semantics") and the
    assignments and the units' new status are committed in one transaction. A point outside the
    district or an unknown matter is refused before anything is stored. A point inside the
    district but farther than max_snap_m from every road its units use is stored as unassigned
    (an incident is never lost), its decision printed, and the command exits 1 saying why.
    """
    from gridgov import store
    from gridgov.service import intake

    with domain_errors():
        engine = store.open_store(database_url(url))
        report = intake.report(
            engine,
            store.context_from_store(engine),
            matter_code=matter,
            lon=lon,
            lat=lat,
            crs=crs,
            incident_id=incident_id,
            id_prefix="CLI",
            source="cli",
            dry_run=dry_run,
        )
    decision = report.decision
    if decision is None:
        # A duplicate (linked, rejected) or, with auto_register off, a report waiting for a
        # dispatcher: stored either way, and not dispatched.
        print_json(
            {
                "incident_id": report.incident_id,
                "status": report.state,
                "reason": report.reason,
                "duplicate_of": report.duplicate_of,
            }
        )
        return
    print_json({**decision.to_json(), "dry_run": dry_run})
    refused = decision.explanation.get("refused")
    if refused:
        what = (
            "dry run: nothing stored"
            if dry_run
            else f"stored as {report.incident_id}: no unit could be sent, unassigned "
            "(it stays registered)"
        )
        raise fail(f"{refused}; {what}")
    if decision.unfilled:
        kinds = ", ".join(k.value for k in decision.unfilled)
        err.print(f"[yellow]warning:[/] no available unit of: {escape(kinds)}", highlight=False)


def dispatch_batch(
    incident_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Incidents to dispatch (default: every queued one)."),
    ] = None,
    street: Annotated[
        str | None, typer.Option("--street", help="Only the queued incidents of this street.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Dispatch the queued incidents together, optimally, and print the outcome as JSON.

    The assignment minimises the priority-weighted total travel time, each unit going to one
    incident at most (DESIGN "Batch mode"), and is committed in one transaction; ``gain`` is the
    reduction against greedy nearest-first. Incidents not queued, or changed meanwhile
    (cancelled...), are listed as skipped and the others commit.
    """
    from gridgov import store
    from gridgov.service import assign

    with domain_errors():
        engine = store.open_store(database_url(url))
        outcome = assign.dispatch_queue(
            engine,
            store.context_from_store(engine),
            incident_ids=incident_ids or None,
            filters={"street_code": street} if street else None,
        )
    print_json(outcome.to_json())


def simulate_(
    hours: Annotated[float, typer.Option(help="Length of the simulated shift (hours).")] = 24.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same shift.")] = 0,
    rate: Annotated[
        float | None,
        typer.Option(help="Mean incidents per hour over the day (default: 40)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Start of the shift (ISO 8601; no offset = local time; default "
            "2026-11-30T00:00+08:00)."
        ),
    ] = None,
    month: Annotated[
        str | None,
        typer.Option(help="Simulate this whole month (YYYY-MM, local time): sets start and hours."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Arrival timing: a measured demand profile by name (boston311: 121,145 real "
            "311 requests, hour of the week); default: the built-in urban day curve."
        ),
    ] = None,
    verify_fail_rate: Annotated[
        float | None,
        typer.Option(help="Share of verifications that fail and send the work back (0.05)."),
    ] = None,
    return_rate: Annotated[
        float | None,
        typer.Option(help="Share of calls the department returns instead of answering (0.02)."),
    ] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save",
            help="Store the simulated incidents and their event logs, so that `gridgov report` "
            "can assess them.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the summary and every record to this JSON file."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Simulate a shift of random incidents through the dispatcher and the workflow.

    Reads the district (areas, units, offices, roads) from the store and runs in memory. Poisson
    arrivals by grid with an urban day profile, the catalogue's matter mix, lognormal on-scene
    times; each incident goes through acknowledgement, arrival, resolution, verification (a few
    fail and are reworked) and evaluation. The assumptions are listed in gridgov.simulate.
    The store is changed only with --save, which adds the incidents and their events (with
    `--month 2026-10 --save`, `gridgov report --period 2026-10` then assesses that month).
    """
    from gridgov import store
    from gridgov.simulate import (
        DEFAULT_RATE_PER_HOUR,
        DEFAULT_START,
        RETURN_RATE,
        VERIFY_FAIL_RATE,
        format_summary,
        simulate,
    )

    with domain_errors():
        demand = None
        if profile is not None:
            from gridgov.analysis.demand_profile import load_profile

            demand = load_profile(profile)
        if json_out is not None and json_out.suffix.lower() != ".json":
            msg = f"--json must name a .json file, not {json_out}"
            raise InputError(msg)
        begin = DEFAULT_START if start is None else parse_instant(start, "--start")
        if month is not None:
            from gridgov.periods import Period

            if start is not None:
                msg = "give either --month or --start, not both"
                raise InputError(msg)
            period = Period.parse(month)
            begin = period.start
            hours = (period.end - period.start).total_seconds() / 3600
        engine = store.open_store(database_url(url))
        ctx = store.context_from_store(engine)
        gdf_units = store.read_units(engine)
        if gdf_units.empty:
            msg = "the store holds no units; load a district with its units first (`gridgov load`)"
            raise InputError(msg)
        gdf_offices = store.read_offices(engine)
        with progress_bar("simulating", total=hours) as advance:
            done = [0.0]

            def report(now_h: float, total_h: float) -> None:
                advance(now_h - done[0], f"simulating hour {now_h:.0f} of {total_h:g}")
                done[0] = now_h

            result = simulate(
                ctx,
                gdf_units,
                gdf_offices=gdf_offices,
                hours=hours,
                seed=seed,
                start=begin,
                rate_per_hour=DEFAULT_RATE_PER_HOUR if rate is None else rate,
                # Saved runs must not collide with earlier ones (other months, other seeds).
                id_prefix=f"SIM-{begin:%Y%m%d}-{seed}-" if save else "SIM-",
                verify_fail_rate=VERIFY_FAIL_RATE if verify_fail_rate is None else verify_fail_rate,
                return_rate=RETURN_RATE if return_rate is None else return_rate,
                profile=None if demand is None else demand.hour_of_week,
                progress=report,
            )
        summary = result.summary()
        if save:
            store.import_history(engine, result.incidents, result.events)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            record = result.to_json()
            if demand is not None:
                record["demand_profile"] = {"name": demand.name, "source": demand.source}
            json_out.write_text(
                json.dumps(record, ensure_ascii=False, indent=1, default=str),
                encoding="utf-8",
            )
    if demand is not None:
        out.print(f"arrival timing: {demand.name} ({demand.source})", highlight=False)
    out.print(format_summary(summary), highlight=False, markup=False)
    if save:
        out.print(
            f"stored {len(result.incidents)} incidents and {len(result.events)} events",
            highlight=False,
        )
    if json_out is not None:
        out.print(f"wrote {json_out}", highlight=False, markup=False)


def _minutes(delta: Any) -> str:
    total = delta.total_seconds() / 60
    return f"{total:.0f} min" if total < 120 else f"{total / 60:.1f} h"


def supervise(
    at: Annotated[
        str | None,
        typer.Option(help="The instant to check (ISO 8601; default: now; no offset = local)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what is overdue without recording anything.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """List what is overdue (督办) and record the supervision with its notices.

    A stage (acknowledge, arrive, resolve) is overdue once its catalogue deadline, counted from
    dispatch, has passed. Supervision starts at the street and escalates to the district when
    the stage is overdue by `supervise_district_after` times its deadline. Recording is
    idempotent: a second run at the same instant records nothing new.

    The streets' consultation requests (powers 2 and 4) are listed beside them: an answer
    overdue after its working-day deadline, and a department's decision on an answer overdue
    after as many working days again; they escalate to the district by the same rule.
    """
    from gridgov import store
    from gridgov.service import consultations

    with domain_errors():
        when = parse_instant(at, "--at")
        engine = store.open_store(database_url(url))
        if dry_run:
            items = store.list_overdue_stored(engine, when)
        else:
            items = store.supervise_stored(engine, when)
        overdue = store.list_overdue_stored(engine, when) if not dry_run else items
    out.print(f"overdue at {local_time(when)} ({get_settings().display_tz}): {len(overdue)}")
    for item in overdue:
        out.print(
            f"  {item.incident_id}  {item.stage:<11} {item.state:<12} overdue by "
            f"{_minutes(item.overdue_by):>8} (due {local_time(item.deadline)})  {item.level:<8} "
            f"office {item.office_id or '-'}",
            highlight=False,
            markup=False,
        )
    if not dry_run:
        out.print(f"recorded {len(items)} supervision(s) with their notices", highlight=False)
    # The streets' consultation requests, beside the incidents, with the same escalation.
    with domain_errors():
        requests = (consultations.overdue if dry_run else consultations.supervise)(engine, when)
    out.print(f"consultation requests overdue: {len(requests)}", highlight=False)
    for request in requests:
        out.print(
            f"  request {request.request_id:<6} {request.stage:<11} street "
            f"{request.street_code} overdue by {request.overdue_by.total_seconds() / 86400:.1f} d "
            f"(due {local_time(request.due)})  {request.level:<8} department {request.department}",
            highlight=False,
            markup=False,
        )


def notices(
    incident_id: Annotated[
        str | None, typer.Option("--incident", help="Only this incident's notices.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="supervision (督办 orders) or outcome (what reporters are told)."),
    ] = None,
    recipient: Annotated[
        str | None, typer.Option(help="Only notices to this office, department or reporter.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only notices written at or after (ISO 8601).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """List notices: supervision orders to offices and departments, and the outcomes sent to
    reporters (of an incident and of every duplicate linked to it)."""
    from gridgov import store

    with domain_errors():
        frame = store.read_notices(
            store.open_store(database_url(url)),
            incident_id=incident_id,
            kind=kind,
            recipient=recipient,
            since=None if since is None else parse_instant(since, "--since"),
        )
    for row in frame.itertuples():
        out.print(
            f"{local_time(row.created_at)}  {row.kind:<11} {row.incident_id}  "
            f"to {row.recipient_kind} {row.recipient}: {row.message}",
            highlight=False,
            markup=False,
        )
    out.print(f"{len(frame)} notice(s)", highlight=False)


def act(
    incident_id: Annotated[str, typer.Argument(help="The incident.")],
    action: Annotated[
        str,
        typer.Argument(
            help="acknowledge, arrive, resolve, verify, reopen, close, evaluate, return, "
            "cancel, register or reject."
        ),
    ],
    actor: Annotated[str, typer.Option(help="Who acts (a unit id, a user name...).")] = "cli",
    role: Annotated[
        str,
        typer.Option(
            help="The actor's role: dispatcher, commander, unit, office, grid_worker, reporter."
        ),
    ] = "dispatcher",
    reason: Annotated[
        str | None, typer.Option(help="Required for return, reopen, reject and cancel.")
    ] = None,
    satisfaction: Annotated[
        str | None,
        typer.Option(help="For evaluate: satisfied, basically_satisfied or dissatisfied."),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="When (ISO 8601; default: now; no offset = local).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Take one workflow action on an incident (the street calls, the department responds).

    The action is checked against the state machine; a refused one changes nothing and exits 1
    naming the actions the incident's state allows. A returned or reopened incident is
    dispatched again at once (a returning office is passed over unless no other can take it).
    """
    from gridgov import store
    from gridgov.service import actions
    from gridgov.workflow import REASON_REQUIRED, Action, Role, Satisfaction

    with domain_errors():
        # What the action needs is known before the store is opened: say so at once.
        check_choice(action, [a.value for a in Action], "ACTION")
        check_choice(role, [r.value for r in Role], "--role")
        if Action(action) in REASON_REQUIRED and not (reason or "").strip():
            msg = f"{action} needs a reason (--reason)"
            raise InputError(msg)
        if action == Action.EVALUATE:
            if satisfaction is None:
                msg = f"evaluate needs --satisfaction ({', '.join(Satisfaction)})"
                raise InputError(msg)
            check_choice(satisfaction, [v.value for v in Satisfaction], "--satisfaction")
        when = parse_instant(at, "--at")
        engine = store.open_store(database_url(url))
        result = actions.act(
            engine,
            None,
            incident_id,
            action,
            at=when,
            actor=actor,
            role=role,
            reason=reason,
            satisfaction=satisfaction,
        )
    event = result.event
    out.print(
        f"{incident_id}: {event.from_state} -> {event.to_state} ({event.action}, "
        f"event {event.seq})",
        highlight=False,
    )
    if result.decision is not None:
        units = ", ".join(a.unit_id for a in result.decision.assignments) or "none"
        out.print(f"dispatched again: {result.decision.status}; units {units}", highlight=False)


def history(
    incident_id: Annotated[str, typer.Argument(help="The incident.")],
    url: UrlOption = None,
) -> None:
    """Print an incident's event log (append-only: who did what, when, and why)."""
    from gridgov import store

    with domain_errors():
        engine = store.open_store(database_url(url))
        events = store.read_events(engine, incident_id=incident_id)
        if events.empty:
            msg = f"incident {incident_id!r} has no events (or does not exist)"
            raise InputError(msg)
    # Plain lines, not a table: an event log is read top to bottom, and stays legible in a
    # narrow terminal or a pipe.
    out.print(f"history of {incident_id} ({get_settings().display_tz})", highlight=False)
    for row in events.itertuples():
        line = (
            f"{row.seq:>3}  {local_time(row.at)}  {row.action:<11} -> {row.to_state:<12} "
            f"{row.actor} ({row.role})"
        )
        if isinstance(row.office_id, str) and row.office_id:
            line += f"  office {row.office_id}"
        if isinstance(row.reason, str) and row.reason:
            line += f"  reason: {row.reason}"
        out.print(line, highlight=False, markup=False)
