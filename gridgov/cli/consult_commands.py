"""The consultations of powers 2 and 4 on the command line, in the ``consultation`` group (also
``consult``) beside the appointments of power 1: register, respond, adopt, accept, suggest;
``list`` shows both kinds.

The command line acts as the district's operator (:data:`gridgov.service.scope.OPERATOR`); who
did what is the ``--by`` text recorded in the events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gridgov.cli.admin_commands import consultation_app
from gridgov.cli.command_support import (
    CrsOption,
    UrlOption,
    check_choice,
    database_url,
    domain_errors,
    out,
    parse_instant,
    print_json,
)
from gridgov.errors import InputError

ByOption = Annotated[str, typer.Option("--by", help="Who records it (kept in the record).")]
AtOption = Annotated[str | None, typer.Option(help="When (ISO 8601; default now).")]
_KINDS = ("all", "appointment", "planning", "decision")


def _text_or_file(value: str, what: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the {what} {value[1:]}: {exc.strerror}"
        raise InputError(msg) from None


@consultation_app.command("register")
def consult_register(
    item: Annotated[str, typer.Option(help="The catalogue item (data/consultation.yaml).")],
    stage: Annotated[
        str, typer.Option(help="The stage (power 2) or step (power 4) the plan is at now.")
    ],
    title: Annotated[str, typer.Option(help="The plan, project or decision.")],
    letter: Annotated[str, typer.Option(help="What the streets are asked (text, or @FILE).")],
    department: Annotated[str, typer.Option(help="The proposing department.")],
    footprint: Annotated[
        str, typer.Option(help="WKT, GeoJSON text, or a vector file (GeoJSON, GeoPackage...).")
    ],
    by: ByOption,
    crs: Annotated[
        str | None,
        typer.Option("--crs", help="CRS of the footprint (default: WGS84 / the file's)."),
    ] = None,
    radius: Annotated[
        float | None, typer.Option(help="Radius in metres of a point footprint.")
    ] = None,
    buffer: Annotated[
        float, typer.Option(help="Also ask the streets within this many metres.")
    ] = 0.0,
    at: AtOption = None,
    url: UrlOption = None,
) -> None:
    """Register a plan, project or decision: every street its footprint reaches gets a request
    due in the item's working days. Prints the consultation id and the streets asked."""
    from gridgov import store
    from gridgov.footprints import read_footprint
    from gridgov.service import consultations
    from gridgov.service.scope import OPERATOR

    with domain_errors():
        registered = consultations.register(
            store.open_store(database_url(url)),
            OPERATOR,
            item_code=item,
            stage=stage,
            title=title,
            letter=_text_or_file(letter, "letter"),
            department=department,
            footprint=read_footprint(footprint, crs, radius),
            buffer_m=buffer,
            at=parse_instant(at, "--at"),
            actor=by,
        )
    late = " (late: after the stage its item was meant for)" if registered.late else ""
    out.print(
        f"consultation {registered.consultation_id} registered{late}: "
        f"{len(registered.streets)} street(s) asked: {', '.join(registered.streets)}",
        highlight=False,
    )


@consultation_app.command("respond")
def consult_respond(
    request: Annotated[int, typer.Argument(help="The request (from `list`).")],
    opinion: Annotated[
        str, typer.Option(help="agree, conditional (agree with conditions) or disagree (object).")
    ],
    by: ByOption,
    text: Annotated[
        str | None, typer.Option(help="The street's opinion (required unless agree; or @FILE).")
    ] = None,
    attach: Annotated[
        list[str] | None, typer.Option(help="An attachment's name or address (repeatable).")
    ] = None,
    at: AtOption = None,
    url: UrlOption = None,
) -> None:
    """Record the street's answer to a request (once)."""
    from gridgov import store
    from gridgov.service import consultations
    from gridgov.service.scope import OPERATOR

    with domain_errors():
        consultations.respond(
            store.open_store(database_url(url)),
            OPERATOR,
            request,
            opinion=opinion,
            text=None if text is None else _text_or_file(text, "opinion"),
            at=parse_instant(at, "--at"),
            actor=by,
            attachments=attach or [],
        )
    out.print(f"request {request}: the street answered {opinion}", highlight=False)


@consultation_app.command("adopt")
def consult_adopt(
    request: Annotated[int, typer.Argument(help="The request whose opinion is decided.")],
    adoption: Annotated[str, typer.Option(help="adopted, partly or not_adopted.")],
    by: ByOption,
    reason: Annotated[
        str | None, typer.Option(help="The department's reason (required unless adopted).")
    ] = None,
    at: AtOption = None,
    url: UrlOption = None,
) -> None:
    """Record how the proposing department took the street's opinion (once)."""
    from gridgov import store
    from gridgov.service import consultations
    from gridgov.service.scope import OPERATOR

    with domain_errors():
        consultations.adopt(
            store.open_store(database_url(url)),
            OPERATOR,
            request,
            adoption=adoption,
            reason=reason,
            at=parse_instant(at, "--at"),
            actor=by,
        )
    out.print(f"request {request}: the street's opinion was {adoption}", highlight=False)


@consultation_app.command("accept")
def consult_accept(
    request: Annotated[int, typer.Argument(help="The request of the project's street.")],
    by: ByOption,
    refuse: Annotated[
        bool, typer.Option("--refuse", help="Refuse the acceptance (give --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required to refuse).")] = None,
    at: AtOption = None,
    url: UrlOption = None,
) -> None:
    """The street signs off the project's acceptance, or refuses it with reasons."""
    from gridgov import store
    from gridgov.service import consultations
    from gridgov.service.scope import OPERATOR

    with domain_errors():
        consultations.accept(
            store.open_store(database_url(url)),
            OPERATOR,
            request,
            accepted=not refuse,
            reason=reason,
            at=parse_instant(at, "--at"),
            actor=by,
        )
    out.print(
        f"request {request}: acceptance {'refused' if refuse else 'signed off'}", highlight=False
    )


@consultation_app.command("suggest")
def consult_suggest(
    lon: Annotated[float, typer.Argument(help="Longitude (or x in an EPSG CRS).")],
    lat: Annotated[float, typer.Argument(help="Latitude (or y).")],
    text: Annotated[str, typer.Option(help="The resident's suggestion (no names or phones).")],
    by: ByOption,
    crs: CrsOption = "wgs84",
    at: AtOption = None,
    url: UrlOption = None,
) -> None:
    """Attach a resident's suggestion to the open consultations whose footprint covers it."""
    from gridgov import store
    from gridgov.crs import to_wgs84
    from gridgov.service import consultations
    from gridgov.service.scope import OPERATOR

    with domain_errors():
        x, y = to_wgs84(lon, lat, crs)
        attached = consultations.suggest(
            store.open_store(database_url(url)),
            OPERATOR,
            lon=float(x[0]),
            lat=float(y[0]),
            text=text,
            at=parse_instant(at, "--at"),
            actor=by,
        )
    out.print(
        f"suggestion attached to consultation(s) {', '.join(map(str, attached))}", highlight=False
    )


@consultation_app.command("list")
def list_consultations(
    kind: Annotated[
        str, typer.Option(help="all, appointment (power 1), planning (2) or decision (4).")
    ] = "all",
    office: Annotated[str | None, typer.Option(help="Only this office (appointments).")] = None,
    street: Annotated[str | None, typer.Option(help="Only this street.")] = None,
    department: Annotated[str | None, typer.Option(help="Only this department.")] = None,
    url: UrlOption = None,
) -> None:
    """List consultations as JSON: appointments (one per office head's move) and, for plans,
    projects and decisions, one record per street asked with where it stands."""
    from gridgov import store

    with domain_errors():
        check_choice(kind, _KINDS, "--kind")
        engine = store.open_store(database_url(url))
        records: list[dict[Any, Any]] = []
        if kind in ("all", "appointment"):
            frame = store.read_consultations(
                engine, office_id=office, street_code=street, department=department
            )
            frame.insert(0, "kind", "appointment")
            records += frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        if kind != "appointment" and office is None:
            requests = store.read_consultation_requests(
                engine, street_code=street, department=department
            )
            if kind != "all":
                requests = requests[requests["kind"] == kind]
            records += requests.astype(object).where(requests.notna(), None).to_dict("records")
    print_json(records)
