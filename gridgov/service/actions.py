"""Workflow actions as every front end takes them (the API's act route and ``gridgov act``).

The state machine is :mod:`gridgov.workflow`'s and the writing the store's; this module owns
the rule between them: **a return or a reopen is dispatched again**, in the SAME transaction as
the action. A returned incident is therefore never seen ``registered`` with its units freed and
nobody sent; if the new dispatch fails (the database gives up, the point cannot be served),
the action is not recorded either and the caller may try again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gridgov import dispatch, store
from gridgov.store import Connection, Engine
from gridgov.workflow import Action, Event, Role, Satisfaction, State

#: Actions that put an incident back in the queue for a new dispatch at once.
DISPATCHED_AGAIN = frozenset({Action.RETURN, Action.REOPEN})


@dataclass(frozen=True)
class ActionResult:
    """The recorded event, and the new dispatch when the action called for one."""

    event: Event
    decision: dispatch.Decision | None = None

    @property
    def state(self) -> str:
        """The incident's state after the action (and its dispatch)."""
        if self.decision is None:
            return str(self.event.to_state)
        return str(State.DISPATCHED) if self.decision.assignments else str(State.REGISTERED)


def act(
    engine: Engine,
    ctx: dispatch.DispatchContext | None,
    incident_id: str,
    action: Action | str,
    *,
    at: datetime,
    actor: str,
    role: Role | str,
    reason: str | None = None,
    satisfaction: Satisfaction | str | None = None,
    unit_id: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> ActionResult:
    """Take one workflow action; a return or a reopen is dispatched again in the same
    transaction (the returning office's units are passed over unless no other can go).

    Parameters are those of :func:`gridgov.store.record_action`; ``ctx`` is the dispatch
    context for the new dispatch (None: built from the store when one is needed, which saves
    a one-shot command building it for every other action). The new dispatch is the
    system's (actor ``gridgov``).

    Raises
    ------
    NotFoundError, InvalidTransitionError, InputError
        As :func:`gridgov.store.apply_action`; nothing was written.
    OutsideDistrictError, StoreError
        The new dispatch failed; nothing was written (not the action either).
    """

    def work(connection: Connection) -> ActionResult:
        event = store.record_action(
            connection,
            incident_id,
            action,
            at=at,
            actor=actor,
            role=role,
            reason=reason,
            satisfaction=satisfaction,
            unit_id=unit_id,
            data=data,
        )
        if event.action not in DISPATCHED_AGAIN:
            return ActionResult(event)
        context = store.context_from_store(engine) if ctx is None else ctx
        decision = store.dispatch_within(connection, context, incident_id, now=event.at)
        return ActionResult(event, decision)

    return store.write_transaction(engine, work)
