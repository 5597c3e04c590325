"""Who tells a process that the store changed: the database side of the pushed live feed.

- PostgreSQL: a trigger of migration 0011 sends ``pg_notify('gridgov_live', 'events')`` at
  every commit that appends to the event log. Each process LISTENs on one connection of its
  own, so every worker of every host hears every change, whoever wrote it. Unit rows (fixes,
  status) do not notify: a notifying transaction holds a database-wide lock through its commit,
  which made fixes commit one at a time. The same connection probes the units every
  :data:`UNIT_PROBE_S` instead (per process, not per stream) for rows written by transactions
  its last probe's snapshot did not see: the live feed's own rule
  (:func:`gridgov.store.live_feed.units_probe`), compiled for this connection.
- SQLite: the engine's own commits in this process (one writer process is SQLite's deployment).

A signal only says "look"; readers then read what changed since their own cursor, so a missed
or doubled signal costs at most one read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from gridgov.store.engine import detect_backend
from gridgov.store.live_feed import units_probe

__all__ = ["CHANNEL", "UNIT_PROBE_S", "watch_changes"]

#: The notification channel of migration 0011's trigger.
CHANNEL = "gridgov_live"
#: How often a process looks whether a unit row was written (fixes, status).
UNIT_PROBE_S = 0.5


def watch_changes(engine: Engine, wake: Callable[[], None]) -> None:
    """Call ``wake`` whenever the store may have changed (from a daemon thread on PostgreSQL,
    from the committing thread on SQLite)."""
    if detect_backend(engine) == "postgresql":
        threading.Thread(target=_listen, args=(engine, wake), daemon=True).start()
    else:
        event.listen(engine, "commit", lambda connection: wake())


def listener_connection(engine: Engine) -> Any:
    """A psycopg connection of its own (autocommit) to the engine's database, made with the
    arguments the engine's driver connects with: a URL rendered back to text spells the
    spaces of ``options`` (the statement timeout) as '+', which the server refuses."""
    import psycopg

    args, kwargs = engine.dialect.create_connect_args(engine.url)
    return psycopg.connect(*args, **{**kwargs, "autocommit": True})


def _listen(engine: Engine, wake: Callable[[], None]) -> None:
    import psycopg

    # The live feed's statement, rendered in the engine's dialect for the raw connection
    # (psycopg's placeholders): the rule of a poll and of this probe has one owner.
    compiled = units_probe().compile(dialect=engine.dialect)
    probe, constants = str(compiled), dict(compiled.params)
    while True:
        try:
            with listener_connection(engine) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                wake()  # anything missed while (re)connecting
                units: tuple[int, int, int] | None = None  # (mark, count, sum)
                while True:
                    for _ in conn.notifies(timeout=UNIT_PROBE_S, stop_after=1):
                        wake()
                    last = units[0] if units is not None else None
                    row = conn.execute(probe, {**constants, "last": last}).fetchone()
                    if row is None:
                        continue
                    mark, n_then, sum_then, n_now, sum_now = row
                    if units is not None and (n_then, sum_then) != units[1:]:
                        wake()
                    units = (mark, n_now, sum_now)
        except psycopg.errors.UndefinedTable:
            return  # the store is gone (dropped): nothing to listen for any more
        except psycopg.Error:
            # The server went away: readers re-read at their own heartbeat meanwhile.
            threading.Event().wait(2.0)
