"""Reads sent to a streaming replica; the read-your-writes rule (:meth:`ReadRouting.engine_for`).

PostgreSQL's own streaming replication keeps the replica a moment behind the primary. Reads
that tolerate that moment (the live feed's first snapshot, lists, analysis) go to the replica,
except for a caller who has just written: after each of its writes the primary's WAL position
is noted, and its reads stay on the primary until the replica has replayed past it. Nothing is
noted for callers who only read, so routing them costs nothing.

The notes live in this process: a caller whose next request lands on another host reads from
the replica there (a load balancer keeping a token on one host, or no replica, keeps the rule
across hosts; docs/scaling.md).
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from gridgov import forking
from gridgov.store.engine import detect_backend

__all__ = ["ReadRouting"]

#: Callers with a write the replica has not confirmed; the oldest notes go first beyond this.
_MAX_NOTES = 10_000


class ReadRouting:
    """Which engine a caller's replica-tolerant reads use.

    Parameters
    ----------
    primary
        The store everything is written to.
    replica
        A streaming replica of it (PostgreSQL), or None: every read goes to the primary.
    """

    def __init__(self, primary: Engine, replica: Engine | None = None) -> None:
        if replica is not None and detect_backend(primary) != "postgresql":
            msg = "a read replica needs PostgreSQL streaming replication"
            raise ValueError(msg)
        self.primary = primary
        self.replica = replica
        self._written: dict[str, str] = {}
        self._lock = threading.Lock()
        forking.renew_in_child(self, "_lock")

    def wrote(self, caller: str) -> None:
        """Note that ``caller``'s write has committed (call after the commit)."""
        if self.replica is None:
            return
        with self.primary.connect() as connection:
            lsn = str(connection.execute(text("SELECT pg_current_wal_lsn()")).scalar_one())
        with self._lock:
            self._written.pop(caller, None)
            self._written[caller] = lsn
            while len(self._written) > _MAX_NOTES:
                self._written.pop(next(iter(self._written)))

    def engine_for(self, caller: str | None) -> Engine:
        """The engine for ``caller``'s replica-tolerant reads: the rule.

        The replica, unless ``caller`` wrote something it has not replayed yet (then the
        primary); the primary when there is no replica or it cannot be asked.
        """
        if self.replica is None:
            return self.primary
        if caller is None:
            return self.replica
        with self._lock:
            lsn = self._written.get(caller)
        if lsn is None:
            return self.replica
        try:
            with self.replica.connect() as connection:
                replayed = connection.execute(
                    text(
                        "SELECT coalesce(pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn), false)"
                    ),
                    {"lsn": lsn},
                ).scalar_one()
        except DBAPIError:  # an unreachable replica: the primary answers
            return self.primary
        if not replayed:
            return self.primary
        with self._lock:
            if self._written.get(caller) == lsn:
                del self._written[caller]
        return self.replica
