"""The ``privacy`` group: erasing a reporter's personal data on request, applying the retention
rule, and reading the privacy log (reads and erasures, never the details themselves)."""

from __future__ import annotations

from typing import Annotated

import typer

from gridgov.cli.command_support import UrlOption, database_url, domain_errors, print_json

privacy_app = typer.Typer(
    help="Reporters' personal data: erase on request, apply the retention rule, show the log.",
    no_args_is_help=True,
)


@privacy_app.command("erase")
def privacy_erase(
    reporter: Annotated[
        list[str],
        typer.Option(
            help="Whose data: a reporter id (rep-...), or an email, phone number or account "
            "they gave; repeat it for each one the person names."
        ),
    ],
    by: Annotated[str, typer.Option(help="Who handles the request (recorded).")] = "cli",
    url: UrlOption = None,
) -> None:
    """Erase one person's contact details from every report they made. The events stay (they
    name the reporter by an opaque id) and the privacy log records the erasure."""
    from gridgov import store
    from gridgov.service import privacy

    with domain_errors():
        erased = privacy.erase(store.open_store(database_url(url)), reporter, actor=by)
    print_json({"erased_reporter_ids": erased, "count": len(erased)})


@privacy_app.command("retention")
def privacy_retention(url: UrlOption = None) -> None:
    """Erase the contacts whose incidents all ended more than GRIDGOV_CONTACT_RETENTION_DAYS
    ago (the running service does this on its own every GRIDGOV_RETENTION_SWEEP_INTERVAL_S)."""
    from gridgov import store
    from gridgov.service import privacy
    from gridgov.settings import get_settings

    settings = get_settings()
    with domain_errors():
        erased = privacy.apply_retention(store.open_store(database_url(url)), settings)
    print_json(
        {
            "erased_reporter_ids": erased,
            "count": len(erased),
            "days": settings.contact_retention_days,
        }
    )


@privacy_app.command("log")
def privacy_log(
    reporter: Annotated[str | None, typer.Option(help="Only this reporter id.")] = None,
    url: UrlOption = None,
) -> None:
    """The privacy log: every read of a contact and every erasure, oldest first."""
    from gridgov import store
    from gridgov.store.reporter_rows import privacy_log as read_log

    with domain_errors():
        print_json(read_log(store.open_store(database_url(url)), reporter))
