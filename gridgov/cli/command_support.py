"""What every ``gridgov`` command shares.

The two consoles (stdout and stderr), the common options (``--url``, ``--crs``, ``--layer``),
turning a domain error into a one-line message and exit code 1, the progress bar, JSON output,
and reading and printing instants and database URLs. Nothing here decides anything about the
district or its incidents: the commands call gridgov.service and gridgov.store for that.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gridgov.errors import GridgovError, InputError
from gridgov.settings import get_settings

out = Console(soft_wrap=True)
err = Console(stderr=True)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="Database URL (default: GRIDGOV_DATABASE_URL or sqlite:///gridgov.db)."
    ),
]
CrsOption = Annotated[
    str, typer.Option("--crs", help="CRS of the input coordinates: wgs84, gcj02, bd09 or EPSG:n.")
]
# Files carry their own CRS label; --crs overrides it (GCJ-02 data is often labelled EPSG:4326).
FileCrsOption = Annotated[
    str | None,
    typer.Option(
        "--crs",
        help="The files' real CRS (wgs84, gcj02, bd09 or EPSG:n); default: the files' own label.",
    ),
]
LayerOption = Annotated[
    str | None,
    typer.Option(
        "--layer",
        help="Layer of a multi-layer area file (e.g. a GeoPackage); default: the layer named "
        "'areas', else the one polygon layer with code, name and level (docs/formats.md).",
    ),
]


def database_url(url: str | None) -> str:
    """The ``--url`` given, else the configured database URL."""
    return url or get_settings().database_url


def check_choice(value: str, choices: Iterable[str], option: str) -> None:
    """Refuse an option value outside ``choices`` (before the command loads anything)."""
    allowed = [str(c) for c in choices]
    if str(value) not in allowed:
        msg = f"{option} must be one of {', '.join(allowed)}, not {value!r}"
        raise InputError(msg)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: MESSAGE`` on stderr and return the exit to raise."""
    # Escaped: messages carry brackets such as "[gcj02]" that rich would read as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn a GridgovError into a clean message and exit status 1."""
    try:
        yield
    except GridgovError as exc:
        raise fail(str(exc)) from None


@contextmanager
def progress_bar(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields ``advance(step=1, description=None)``."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>.0f}/{task.total:>.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(step: float = 1, description: str | None = None) -> None:
            if description is not None:
                progress.update(task, description=description)
            progress.advance(task, step)

        yield advance


def print_json(data: Any) -> None:
    """Write ``data`` to stdout as indented JSON, Chinese text unescaped."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def parse_instant(value: str | None, what: str) -> datetime:
    """An ISO 8601 instant; a time without an offset is read in the display time zone."""
    from zoneinfo import ZoneInfo

    if value is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{what} must be an ISO 8601 time such as 2026-10-01T08:00+08:00, not {value!r}"
        raise InputError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(get_settings().display_tz))
    return when.astimezone(UTC)


def local_time(when: Any) -> str:
    """Format an instant in the display time zone (Asia/Shanghai by default)."""
    from zoneinfo import ZoneInfo

    if when is None or (isinstance(when, float) and when != when):
        return "-"
    return str(when.astimezone(ZoneInfo(get_settings().display_tz)).strftime("%Y-%m-%d %H:%M"))


def redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
