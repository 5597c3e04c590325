"""The ``gridgov`` command.

Every command is thin: it parses arguments, calls one core, service or store function, and
prints. Domain errors become a one-line message and exit code 1, never a traceback.

This module holds the typer ``app`` and registers the commands, in the order ``gridgov --help``
lists them; the commands live in modules by topic:

- ``district_commands``: init, load, validate, locate, info, export, build-reference, generate,
  route;
- ``dispatch_commands``: dispatch, dispatch-batch, simulate, supervise, notices, act, history;
- ``analysis_commands``: report, map, coverage, hotspots;
- ``admin_commands``: serve, demo and the ``consultation`` (also ``consult``) and ``token``
  groups; ``consult_commands`` adds the consultations of powers 2 and 4 to the first;
- ``toolkit_commands``: isochrone, sites, workload;
- ``privacy_commands``: the ``privacy`` group (erase, retention, log);
- ``command_support``: the consoles, common options and error handling they share.
"""

from __future__ import annotations

import typer

from gridgov.cli import (
    admin_commands,
    analysis_commands,
    consult_commands,
    dispatch_commands,
    district_commands,
    privacy_commands,
    toolkit_commands,
)

app = typer.Typer(
    name="gridgov",
    help="Grid governance and enforcement dispatch for a street command centre.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(district_commands.init)
app.command()(district_commands.load)
app.command()(district_commands.validate)
app.command()(district_commands.locate)
app.command()(district_commands.info)
app.command("export")(district_commands.export_)
app.command("build-reference")(district_commands.build_reference)
app.command()(district_commands.generate)
app.command("dispatch")(dispatch_commands.dispatch_)
app.command("dispatch-batch")(dispatch_commands.dispatch_batch)
app.command("simulate")(dispatch_commands.simulate_)
app.command()(dispatch_commands.supervise)
app.command()(dispatch_commands.notices)
app.command("act")(dispatch_commands.act)
app.command()(dispatch_commands.history)
app.command()(analysis_commands.report)
app.command("map")(analysis_commands.map_)
app.add_typer(admin_commands.consultation_app, name="consultation")
# The name for the same group (one consultation model, two spellings).
app.add_typer(consult_commands.consultation_app, name="consult")
app.command()(analysis_commands.coverage)
app.command()(analysis_commands.hotspots)
app.command()(toolkit_commands.isochrone)
app.command()(toolkit_commands.sites)
app.command()(toolkit_commands.workload)
app.command()(district_commands.route)
app.command()(admin_commands.serve)
app.add_typer(admin_commands.token_app, name="token")
app.add_typer(privacy_commands.privacy_app, name="privacy")
app.command()(admin_commands.demo)


def main() -> None:  # pragma: no cover - console entry point
    """Run the ``gridgov`` command."""
    app()
