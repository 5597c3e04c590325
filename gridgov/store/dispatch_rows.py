"""Dispatch against the store: decisions committed atomically with the units' availability.

The decision itself is :func:`gridgov.dispatch.dispatch_incident` (pure). This module gives it
a snapshot of the units and then commits the decision in ONE transaction, so that a unit's
change of status and its assignment are never seen apart, and two dispatchers never take the
same unit:

1. *snapshot*: read the candidate units (available and on duty, plus, for a priority-1 matter,
   the busy ones with the priority of their incident) without locking anything
   (:mod:`gridgov.store.unit_snapshot`);
2. *decide*: :func:`gridgov.dispatch.dispatch_incident` on that snapshot;
3. *commit*: in one write transaction, lock the incident row(s), then the chosen unit rows
   (PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: the whole database, taken by
   ``BEGIN IMMEDIATE``), and re-check every chosen unit: still available and on duty, or, for a
   preemption, still busy on the incident it was chosen from. If one is not, or another
   transaction holds it, nothing is written: the transaction rolls back and the dispatch starts
   again at step 1 with those units excluded (recorded in the explanation). Otherwise the units
   become busy, the dispatch and its assignments are inserted, a preempted incident is
   re-queued (a ``requeue`` event), and the incident's ``dispatch`` event is recorded (when at
   least one unit was assigned), all before the one COMMIT.

A partial unique index (one active assignment per unit) backs this up in the database itself.
Incidents are inserted in their own transaction first (:func:`gridgov.store.create_incident`,
with their ``report`` and ``register`` events, or ``reject`` for a duplicate), so an incident is
never lost: it is ``registered`` until a dispatch commits, and stays so if dispatching fails or
finds no unit. The batch door commits many decisions in one transaction
(:func:`commit_batch`). An incident a department returned is dispatched again without the units
of the offices that returned it, unless no other unit of a kind can take it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import shapely
from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    and_,
    bindparam,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from gridgov import dispatch
from gridgov.catalog import Matter
from gridgov.errors import (
    InputError,
    NotFoundError,
    OutsideDistrictError,
    StoreError,
    UnknownMatterError,
)
from gridgov.model import UnitStatus
from gridgov.store.decision_rows import Attempts as _Attempts
from gridgov.store.decision_rows import write_decisions
from gridgov.store.district_load import (
    end_active_assignments,
)
from gridgov.store.engine import (
    RETRY_SQLSTATES,
    begin_write,
    translate_errors,
    write_transaction,
)
from gridgov.store.incident_rows import (
    DISPATCHABLE,
    INCIDENT_COLUMNS,
    WORKING,
    _aware,
    _geoframe,
    _incident_from_row,
    _not_dispatchable,
    _read_incident_row,
    _utc_columns,
)
from gridgov.store.journal import SYSTEM_ACTOR, append_event
from gridgov.store.many_rows import any_of
from gridgov.store.models import (
    ASSIGNMENTS,
    DISPATCHES,
    EVENTS,
    INCIDENTS,
    UNITS,
)
from gridgov.store.unit_rows import _free_status
from gridgov.store.unit_snapshot import _snapshot_pool
from gridgov.workflow import Action, Role

#: Columns of :func:`read_assignments` (besides the route geometry).
ASSIGNMENT_COLUMNS = (
    "assignment_id",
    "dispatch_id",
    "incident_id",
    "unit_id",
    "kind",
    "role",
    "level",
    "rule",
    "time_s",
    "over_max_travel",
    "preempts",
    "route_length_m",
    "active",
    "assigned_at",
    "released_at",
    "release_reason",
)
#: Rounds of decide-and-commit before a dispatch gives up (dispatch_stored's default).
_MAX_ATTEMPTS = 20
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_LOCK_INCIDENTS = (
    select(INCIDENTS.c.incident_id, INCIDENTS.c.status)
    .where(INCIDENTS.c.incident_id.in_(_IDS))
    .order_by(INCIDENTS.c.incident_id)
    .with_for_update()
)
_LOCK_UNITS = (
    select(
        UNITS.c.unit_id,
        UNITS.c.status,
        UNITS.c.on_duty,
        UNITS.c.busy_incident_id,
        UNITS.c.office_id,
    )
    # The units table keeps its size between loads: a plan made once fits every run.
    .where(any_of(UNITS.c.unit_id, "ids"))
    .order_by(UNITS.c.unit_id)
    .with_for_update(skip_locked=True)
)


class _UnitsTaken(Exception):
    """Raised inside the commit transaction to roll it back: these units are gone."""

    def __init__(self, unit_ids: Sequence[str]) -> None:
        super().__init__(", ".join(unit_ids))
        self.unit_ids = tuple(unit_ids)


def dispatch_reported(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    placement: dispatch.Placement,
    matter: Matter,
    *,
    now: datetime,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> dispatch.Decision:
    """Dispatch an incident :func:`create_incident` has just registered, and commit it.

    :func:`dispatch_stored` without reading the incident back: the caller (the intake) has
    its point, placement and matter already, and a brand-new incident has no return events,
    so no office is left out.
    """
    now = _aware(now, "now")
    # What dispatch_stored would read back: the incident as stored (UTC time, float point).
    stored_incident = dispatch.Incident(
        incident_id=incident.incident_id,
        matter_code=incident.matter_code,
        lon=float(incident.lon),
        lat=float(incident.lat),
        reported_at=incident.reported_at.astimezone(UTC),
    )
    return _dispatch_attempts(
        engine,
        ctx,
        stored_incident,
        _Returned(),
        now=now,
        max_attempts=_MAX_ATTEMPTS,
        routes=True,
        allow_preemption=True,
        actor=actor,
        role=role,
        placement=placement,
        matter=matter,
    )


def _decide(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    *,
    now: datetime,
    exclude: frozenset[str],
    routes: bool,
    allow_preemption: bool,
    placement: dispatch.Placement | None = None,
    matter: Matter | None = None,
    within: Connection | None = None,
) -> dispatch.Decision:
    """Snapshot the units and let the pure dispatcher decide (nothing is locked here).

    ``placement`` and ``matter`` are the incident's, when the caller has read them already;
    ``within`` is the caller's write transaction, when the snapshot must see its changes.
    """
    if matter is None:
        matter = ctx.catalog.get(incident.matter_code)
    kinds = [str(k) for k in matter.required_kinds]
    with_busy = allow_preemption and dispatch.may_preempt(matter.priority)
    pool = _snapshot_pool(engine, ctx, kinds, with_busy, now, within)
    if placement is None:
        placement = dispatch.locate_incident(incident, ctx)
    try:
        return dispatch.dispatch_pool(
            incident,
            pool,
            ctx,
            matter,
            placement,
            exclude=exclude,
            routes=routes,
            allow_preemption=allow_preemption,
        )
    except (OutsideDistrictError, UnknownMatterError):
        raise
    except InputError as exc:
        return dispatch.refused_decision(incident, ctx, matter, placement, str(exc))


def available_pool(
    engine: Engine, ctx: dispatch.DispatchContext, kinds: Sequence[str], *, now: datetime
) -> dispatch.UnitPool:
    """The available units of ``kinds`` on duty, as the pool a decision reads (a snapshot;
    nothing is locked), as the intake's micro-batches read it."""
    pool: dispatch.UnitPool = _snapshot_pool(
        engine, ctx, sorted(set(kinds)), False, _aware(now, "now")
    )
    return pool


def decide_stored(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    *,
    now: datetime,
    routes: bool = True,
    allow_preemption: bool = True,
    placement: dispatch.Placement | None = None,
    matter: Matter | None = None,
) -> dispatch.Decision:
    """What :func:`dispatch_stored` would decide for ``incident`` now: a dry run.

    The same snapshot (busy units with their incident's priority, for preemption), the same
    position fallbacks and the same refusal of points too far from the roads; nothing is
    stored and nothing is locked, so a real dispatch a moment later may choose differently.
    ``incident`` need not be stored.
    """
    return _decide(
        engine,
        ctx,
        incident,
        now=_aware(now, "now"),
        exclude=frozenset(),
        routes=routes,
        allow_preemption=allow_preemption,
        placement=placement,
        matter=matter,
    )


def dispatch_stored(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    now: datetime,
    max_attempts: int = _MAX_ATTEMPTS,
    routes: bool = True,
    allow_preemption: bool = True,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> dispatch.Decision:
    """Dispatch a stored incident and commit the decision atomically.

    See the module docstring for the snapshot / decide / lock-and-check / commit cycle. The
    incident ends ``dispatched`` (with a ``dispatch`` event) when at least one unit is
    assigned, and stays ``registered`` when none is; its dispatch row and explanation are
    written in every case. Units taken meanwhile by another dispatcher are excluded and the
    decision is made again (the explanation's ``store`` part lists them). The units of offices
    that returned the incident are left out too, unless that leaves a kind unfilled: then they
    are candidates again for that kind (the explanation's ``returned`` part says which).

    Parameters
    ----------
    engine
        The store.
    ctx
        The dispatch context (:func:`context_from_store`).
    incident_id
        A stored incident (:func:`create_incident`) that is ``registered``.
    now
        The dispatch time (timezone-aware): positions older than the configured maximum age
        are stale, and the assignments start at this time.
    max_attempts
        Rounds of decide-and-commit before giving up (the incident then stays as it was).
    routes
        Store each assignment's route geometry.
    allow_preemption
        Let a priority-1 matter take a unit busy on a low-priority incident.
    actor, role
        Recorded on the dispatch event (default: the system).

    Returns
    -------
    gridgov.dispatch.Decision
        The decision that was committed.

    Raises
    ------
    NotFoundError
        No such incident.
    InputError
        The incident is not dispatchable (already dispatched); nothing was written.
    OutsideDistrictError
        It lies outside the district; nothing was written and it stays registered. (A point
        inside but too far from the roads is not an error: its dispatch is committed as
        ``unassigned`` with the reason in ``explanation["refused"]``.)
    UnknownMatterError
        Its matter is not in the catalogue.
    StoreError
        Every attempt found its units taken, or the database failed.
    """
    now = _aware(now, "now")
    if max_attempts < 1:
        msg = f"max_attempts must be at least 1, got {max_attempts}"
        raise InputError(msg)
    with translate_errors(engine), engine.connect() as connection:
        row = _read_incident_row(connection, incident_id)
        if row.status not in DISPATCHABLE:
            raise _not_dispatchable(incident_id, row.status)
        returned = _returned_units(connection, incident_id)
    return _dispatch_attempts(
        engine,
        ctx,
        _incident_from_row(row),
        returned,
        now=now,
        max_attempts=max_attempts,
        routes=routes,
        allow_preemption=allow_preemption,
        actor=actor,
        role=role,
    )


def dispatch_within(
    connection: Connection,
    ctx: dispatch.DispatchContext,
    incident_id: str,
    *,
    now: datetime,
    max_attempts: int = _MAX_ATTEMPTS,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> dispatch.Decision:
    """:func:`dispatch_stored` inside the caller's write transaction.

    The units are read on that transaction, so they include the ones it has just freed (the
    units of a returned incident), and the decision commits with whatever else the
    transaction writes, or not at all. Units another dispatcher holds are left out and the
    decision made again, as in :func:`dispatch_stored`.

    Raises
    ------
    NotFoundError, InputError, OutsideDistrictError, UnknownMatterError, StoreError
        As :func:`dispatch_stored`; the caller's transaction then rolls back.
    """
    now = _aware(now, "now")
    engine = connection.engine
    row = _read_incident_row(connection, incident_id)
    if row.status not in DISPATCHABLE:
        raise _not_dispatchable(incident_id, row.status)
    incident = _incident_from_row(row)
    returned = _returned_units(connection, incident_id)
    attempts = _Attempts()
    excluded: set[str] = set()
    # The same "units taken: leave them out and decide again" rounds as _dispatch_attempts, but
    # the transaction is the caller's: a deadlock or serialisation failure cannot be retried
    # here (the caller retries the whole action), so only taken units loop.
    while attempts.count < max_attempts:
        attempts.count += 1
        decision = _decide_without_returned(
            engine,
            ctx,
            incident,
            returned,
            now=now,
            exclude=frozenset(excluded),
            routes=True,
            allow_preemption=True,
            within=connection,
        )
        try:
            _commit_within(connection, decision, now, attempts, actor=actor, role=role)
        except _UnitsTaken as taken:
            attempts.taken.extend(taken.unit_ids)
            excluded.update(taken.unit_ids)
            continue
        return decision
    msg = (
        f"incident {incident_id!r} was not dispatched after {attempts.count} attempt(s): "
        f"its units kept being taken by other dispatchers ({', '.join(attempts.taken)})"
    )
    raise StoreError(msg)


def _dispatch_attempts(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    returned: _Returned,
    *,
    now: datetime,
    max_attempts: int,
    routes: bool,
    allow_preemption: bool,
    actor: str,
    role: Role | str,
    placement: dispatch.Placement | None = None,
    matter: Matter | None = None,
) -> dispatch.Decision:
    """:func:`dispatch_stored`'s decide-and-commit rounds, for an incident known registered."""
    incident_id = incident.incident_id
    attempts = _Attempts()
    excluded: set[str] = set()
    while attempts.count < max_attempts:
        attempts.count += 1
        decision = _decide_without_returned(
            engine,
            ctx,
            incident,
            returned,
            now=now,
            exclude=frozenset(excluded),
            routes=routes,
            allow_preemption=allow_preemption,
            placement=placement,
            matter=matter,
        )
        try:
            _commit(engine, decision, now, attempts, actor=actor, role=role)
        except _UnitsTaken as taken:
            attempts.taken.extend(taken.unit_ids)
            excluded.update(taken.unit_ids)
            continue
        except IntegrityError as exc:  # pragma: no cover - the locks above prevent it
            msg = f"the database refused the dispatch of {incident_id!r}: {exc.orig}"
            raise StoreError(msg) from exc
        except DBAPIError as exc:
            sqlstate = getattr(exc.orig, "sqlstate", None)
            if sqlstate in RETRY_SQLSTATES:
                # PostgreSQL gave up on this transaction (deadlock, serialisation): try again.
                attempts.retried_errors.append(str(sqlstate))
                continue
            with translate_errors(engine):
                raise
        return decision
    msg = (
        f"incident {incident_id!r} was not dispatched after {attempts.count} attempt(s): "
        f"its units kept being taken by other dispatchers ({', '.join(attempts.taken)}); "
        "it stays registered"
    )
    raise StoreError(msg)


@dataclass(frozen=True)
class _Returned:
    """Offices that returned an incident, and their units (by kind)."""

    offices: tuple[str, ...] = ()
    units: dict[str, str] = field(default_factory=dict)  # unit id -> kind


def _returned_units(connection: Connection, incident_id: str) -> _Returned:
    offices = sorted(
        {
            r[0]
            for r in connection.execute(
                select(EVENTS.c.office_id).where(
                    EVENTS.c.incident_id == incident_id,
                    EVENTS.c.action == str(Action.RETURN),
                    EVENTS.c.office_id.is_not(None),
                )
            )
        }
    )
    if not offices:
        return _Returned()
    units = dict(
        connection.execute(
            select(UNITS.c.unit_id, UNITS.c.kind).where(UNITS.c.office_id.in_(offices))
        ).all()
    )
    return _Returned(offices=tuple(offices), units=units)


def _decide_without_returned(
    engine: Engine,
    ctx: dispatch.DispatchContext,
    incident: dispatch.Incident,
    returned: _Returned,
    *,
    now: datetime,
    exclude: frozenset[str],
    routes: bool,
    allow_preemption: bool,
    placement: dispatch.Placement | None = None,
    matter: Matter | None = None,
    within: Connection | None = None,
) -> dispatch.Decision:
    """Decide with the returning offices' units left out, unless a kind then finds nobody."""
    kwargs: dict[str, Any] = {
        "now": now,
        "routes": routes,
        "allow_preemption": allow_preemption,
        "placement": placement,
        "matter": matter,
        "within": within,
    }
    if not returned.offices:
        return _decide(engine, ctx, incident, exclude=exclude, **kwargs)
    decision = _decide(engine, ctx, incident, exclude=exclude | set(returned.units), **kwargs)
    unfilled = {str(k) for k in decision.unfilled}
    readmitted = sorted({k for k in returned.units.values() if k in unfilled})
    if readmitted:
        # No other office can take these kinds: the returning office is asked again rather
        # than the incident left without anyone.
        keep_out = {u for u, k in returned.units.items() if k not in readmitted}
        decision = _decide(engine, ctx, incident, exclude=exclude | keep_out, **kwargs)
    excluded_units = sorted(u for u, k in returned.units.items() if k not in readmitted)
    note = (
        f"the units of {', '.join(returned.offices)} (which returned this incident) were left out"
    )
    if readmitted:
        note += (
            f", except for {', '.join(readmitted)}: no other unit of that kind could take it, "
            "so the returning office's units were candidates again"
        )
    decision.explanation["returned"] = {
        "offices": list(returned.offices),
        "excluded_units": excluded_units,
        "readmitted_kinds": readmitted,
        "note": note,
    }
    return decision


def _commit(
    engine: Engine,
    decision: dispatch.Decision,
    now: datetime,
    attempts: _Attempts,
    *,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
) -> None:
    """Lock, re-check and write one decision in ONE transaction (or raise and write nothing)."""
    with begin_write(engine) as connection:
        _commit_within(connection, decision, now, attempts, actor=actor, role=role)


def _commit_within(
    connection: Connection,
    decision: dispatch.Decision,
    now: datetime,
    attempts: _Attempts,
    *,
    actor: str,
    role: Role | str,
) -> None:
    """:func:`_commit` inside the caller's transaction: every check comes before any write, so
    a :class:`_UnitsTaken` leaves the transaction as it was."""
    offices, requeued = check_within(connection, decision, now)
    write_decisions(
        connection,
        [decision],
        now,
        attempts=[attempts],
        offices=offices,
        requeued=[requeued],
        by=[(actor, role)],
    )


def check_within(
    connection: Connection, decision: dispatch.Decision, now: datetime
) -> tuple[dict[str, str | None], list[dict[str, Any]]]:
    """Lock and re-check one decision's incident and units and re-queue the incidents it
    preempts, everything :func:`_commit_within` does before writing the decision itself.

    Returns the offices of the units locked and the incidents re-queued, for
    :func:`write_decisions`. Raises :class:`_UnitsTaken` before writing anything.
    """
    incident_id = decision.incident.incident_id
    preempted = sorted({a.preempts for a in decision.assignments if a.preempts is not None})
    # Incidents first, then units, each in id order: every writer takes locks in the same
    # order, so two of them can wait for each other but never deadlock.
    statuses = _lock_incidents(connection, [incident_id, *preempted])
    if statuses.get(incident_id) not in DISPATCHABLE:
        raise _not_dispatchable(incident_id, statuses.get(incident_id, "missing"))
    gone, offices = _lock_units(connection, decision, statuses)
    if gone:
        raise _UnitsTaken(gone)
    requeued = [_requeue(connection, x, incident_id, decision, now) for x in preempted]
    return offices, requeued


def commit_batch(
    engine: Engine,
    decisions: Sequence[dispatch.Decision],
    *,
    now: datetime,
    actor: str = SYSTEM_ACTOR,
    role: Role | str = Role.SYSTEM,
    by: dict[str, tuple[str, Role | str]] | None = None,
) -> dict[str, str]:
    """Commit many decisions (a batch assignment) in ONE transaction, leaving out the ones
    that can no longer be committed as decided.

    ``by`` gives the actor and role of some incidents' dispatch events (the intake's
    micro-batches, :mod:`gridgov.store.intake_rows`, hold reports of several callers); the others
    are ``actor``'s.

    Every incident is locked, then every chosen unit (in id order, as single dispatch does:
    PostgreSQL skips rows another transaction holds). A decision is left out, whole, when its
    incident is no longer queued (cancelled, dispatched meanwhile...) or one of its units is
    no longer available; all others are written as :func:`dispatch_stored` writes one. No
    unit is ever assigned twice: the decisions share none (the caller's optimiser gives each
    unit one slot at most), and each is checked free under its lock.

    Returns
    -------
    dict
        Incident id → why it was left out, for the decisions not committed.
    """
    now = _aware(now, "now")
    ids = [d.incident.incident_id for d in decisions]
    if len(set(ids)) != len(ids):
        msg = "a batch holds each incident once"
        raise InputError(msg)
    units = [a.unit_id for d in decisions for a in d.assignments]
    if len(set(units)) != len(units) or any(
        a.preempts is not None for d in decisions for a in d.assignments
    ):
        msg = "a batch assigns each unit once and preempts nobody"
        raise InputError(msg)

    return write_transaction(
        engine, lambda connection: _commit_batch_within(connection, decisions, now, actor, role, by)
    )


def _commit_batch_within(
    connection: Connection,
    decisions: Sequence[dispatch.Decision],
    now: datetime,
    actor: str,
    role: Role | str,
    by: dict[str, tuple[str, Role | str]] | None,
    checked: Sequence[Checked] = (),
) -> dict[str, str]:
    """:func:`commit_batch`'s work inside the caller's transaction; the decisions ``checked``
    already (:func:`check_within`) are written with the others, in the same statements."""
    ids = [d.incident.incident_id for d in decisions]
    statuses = _lock_incidents(connection, ids) if ids else {}
    left_out: dict[str, str] = {}
    for d in decisions:
        status = statuses.get(d.incident.incident_id)
        if status not in DISPATCHABLE:
            left_out[d.incident.incident_id] = (
                f"it is {status or 'gone'} now, no longer queued for dispatch"
            )
    live = [d for d in decisions if d.incident.incident_id not in left_out]
    chosen = sorted(a.unit_id for d in live for a in d.assignments)
    found = (
        {r.unit_id: r for r in connection.execute(_LOCK_UNITS, {"ids": chosen})} if chosen else {}
    )
    for d in live:
        gone = [a.unit_id for a in d.assignments if _unit_gone(found.get(a.unit_id), a, {})]
        if gone:
            left_out[d.incident.incident_id] = (
                f"its unit(s) {', '.join(gone)} were taken meanwhile; dispatch it again"
            )
    offices = {u: r.office_id for u, r in found.items()}
    written = [d for d in live if d.incident.incident_id not in left_out]
    requeued: list[list[dict[str, Any]]] = [[] for _ in written]
    for c in checked:
        written.append(c.decision)
        offices.update(c.offices)
        requeued.append(c.requeued)
    write_decisions(
        connection,
        written,
        now,
        attempts=[_Attempts(count=1) for _ in written],
        offices=offices,
        requeued=requeued,
        by=[(by or {}).get(d.incident.incident_id, (actor, role)) for d in written],
    )
    return left_out


@dataclass(frozen=True)
class Checked:
    """A decision :func:`check_within` has locked and re-checked, waiting to be written."""

    decision: dispatch.Decision
    offices: dict[str, str | None]
    requeued: list[dict[str, Any]]


def _lock_incidents(connection: Connection, incident_ids: Sequence[str]) -> dict[str, str]:
    rows = connection.execute(_LOCK_INCIDENTS, {"ids": sorted(set(incident_ids))})
    return {r.incident_id: r.status for r in rows}


def _lock_units(
    connection: Connection, decision: dispatch.Decision, incident_status: dict[str, str]
) -> tuple[list[str], dict[str, str | None]]:
    """Lock the chosen units (skipping rows another transaction holds).

    Returns the units gone, and the office of each unit locked.
    """
    chosen = {a.unit_id: a for a in decision.assignments}
    if not chosen:
        return [], {}
    found = {r.unit_id: r for r in connection.execute(_LOCK_UNITS, {"ids": sorted(chosen)})}
    gone = [
        unit_id
        for unit_id, a in sorted(chosen.items())
        if _unit_gone(found.get(unit_id), a, incident_status)
    ]
    return gone, {u: r.office_id for u, r in found.items()}


def _unit_gone(row: Any, a: dispatch.Assignment, incident_status: dict[str, str]) -> bool:
    """Whether a locked unit row (None: not locked) can no longer take assignment ``a``."""
    if row is None:  # held by another transaction (PostgreSQL) or deleted by a reload
        return True
    if a.preempts is None:
        return not (
            row.status == str(UnitStatus.AVAILABLE) and row.on_duty and row.busy_incident_id is None
        )
    return not (
        row.status == str(UnitStatus.BUSY)
        and row.busy_incident_id == a.preempts
        and incident_status.get(a.preempts) in WORKING
    )


def _requeue(
    connection: Connection,
    preempted: str,
    by: str,
    decision: dispatch.Decision,
    now: datetime,
) -> dict[str, Any]:
    """End every active assignment of a preempted incident and put it back in the queue.

    The preempted unit moves on to ``by``; the incident's other units are freed, so that a
    ``registered`` incident never has units out working on it and is dispatched again whole.
    The ``requeue`` event records it.
    """
    taken = {a.unit_id for a in decision.assignments if a.preempts == preempted}
    others = connection.execute(
        select(UNITS.c.unit_id, UNITS.c.on_duty)
        .where(UNITS.c.busy_incident_id == preempted, UNITS.c.unit_id.not_in(sorted(taken)))
        .order_by(UNITS.c.unit_id)
        .with_for_update()
    ).all()
    for unit_id in sorted(taken):
        end_active_assignments(
            connection,
            now,
            f"preempted by {by}",
            and_(ASSIGNMENTS.c.unit_id == unit_id, ASSIGNMENTS.c.incident_id == preempted),
            requeue=False,
        )
    for other in others:
        connection.execute(
            update(UNITS)
            .where(UNITS.c.unit_id == other.unit_id)
            .values(status=_free_status(other.on_duty), busy_incident_id=None)
        )
    end_active_assignments(
        connection,
        now,
        f"incident {preempted} re-queued: preempted by {by}",
        ASSIGNMENTS.c.incident_id == preempted,
        requeue=False,
    )
    append_event(
        connection,
        preempted,
        Action.REQUEUE,
        at=now,
        clamp=True,
        reason=f"preempted by {by}: its unit {', '.join(sorted(taken))} was taken for a "
        "priority-1 matter",
        data={"by": by, "units": sorted(taken), "freed": [o.unit_id for o in others]},
    )
    return {
        "incident_id": preempted,
        "units": sorted(taken),
        "freed": [other.unit_id for other in others],
    }


def read_assignments(
    engine: Engine,
    *,
    incident_id: str | None = None,
    unit_id: str | None = None,
    active: bool | None = None,
) -> gpd.GeoDataFrame:
    """Read assignments in the order they were made, optionally filtered.

    Returns
    -------
    geopandas.GeoDataFrame
        :data:`ASSIGNMENT_COLUMNS` + the route (LineString, None when not stored), times UTC.
    """
    table = ASSIGNMENTS
    stmt = select(*[table.c[c] for c in ASSIGNMENT_COLUMNS], table.c.route).order_by(
        table.c.assignment_id
    )
    if incident_id is not None:
        stmt = stmt.where(table.c.incident_id == incident_id)
    if unit_id is not None:
        stmt = stmt.where(table.c.unit_id == unit_id)
    if active is not None:
        stmt = stmt.where(table.c.active.is_(bool(active)))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    gdf = _geoframe(rows, ASSIGNMENT_COLUMNS)
    _utc_columns(gdf, ["assigned_at", "released_at"])
    for column in ("active", "over_max_travel"):
        gdf[column] = gdf[column].astype(bool)
    for column in ("time_s", "route_length_m"):
        gdf[column] = gdf[column].astype(float)
    return gdf


def _assignment_json(row: Any) -> dict[str, Any]:
    out = {c: row._mapping[c] for c in ASSIGNMENT_COLUMNS}
    route = row._mapping["route"]
    out["route"] = None if route is None else shapely.geometry.mapping(route)
    return out


def read_dispatch(engine: Engine, incident_id: str) -> dict[str, Any]:
    """The latest dispatch of an incident, with its explanation and assignments.

    Returns
    -------
    dict
        ``dispatch_id``, ``incident_id``, ``created_at``, ``level``, ``status``
        (assigned / partial / unassigned), ``travel_model``, ``attempts``, ``explanation``
        (as the dispatcher wrote it, plus a ``store`` part: attempts, units taken meanwhile,
        re-queued incidents), ``assignments`` (routes as GeoJSON), ``incident`` (its row,
        with ``lon``/``lat``) and ``dispatches`` (how many times it was dispatched).

    Raises
    ------
    NotFoundError
        No such incident, or it was never dispatched.
    """
    with translate_errors(engine), engine.connect() as connection:
        incident = _read_incident_row(connection, incident_id)
        rows = connection.execute(
            select(DISPATCHES)
            .where(DISPATCHES.c.incident_id == incident_id)
            .order_by(DISPATCHES.c.dispatch_id.desc())
        ).all()
        if not rows:
            msg = f"incident {incident_id!r} has not been dispatched yet"
            raise NotFoundError(msg)
        latest = rows[0]
        assignments = connection.execute(
            select(*[ASSIGNMENTS.c[c] for c in ASSIGNMENT_COLUMNS], ASSIGNMENTS.c.route)
            .where(ASSIGNMENTS.c.dispatch_id == latest.dispatch_id)
            .order_by(ASSIGNMENTS.c.assignment_id)
        ).all()
    incident_out = {c: incident._mapping[c] for c in INCIDENT_COLUMNS}
    incident_out.update(lon=float(incident.geometry.x), lat=float(incident.geometry.y))
    return {
        **dict(latest._mapping),
        "assignments": [_assignment_json(a) for a in assignments],
        "incident": incident_out,
        "dispatches": len(rows),
    }
