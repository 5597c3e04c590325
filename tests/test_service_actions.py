"""Workflow actions through the application layer (gridgov.service.actions), on both backends:
a return or a reopen is dispatched again in the same transaction as the action."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine
from test_store_dispatch import NOW
from test_store_workflow import act, actions, count_events, ctx, district, report, status, unit

from gridgov import dispatch, store
from gridgov.errors import InvalidTransitionError, StoreError
from gridgov.service import actions as service_actions

__all__ = ["ctx", "district"]  # fixtures


def test_a_return_is_dispatched_again_at_once(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    store.dispatch_stored(district, ctx, incident_id, now=NOW)
    assert unit(district, "E1") == {"status": "busy", "busy_incident_id": incident_id}
    t = NOW + timedelta(minutes=2)
    result = service_actions.act(
        district, ctx, incident_id, "return", at=t, actor="E-office", role="office", reason="no"
    )
    assert str(result.event.action) == "return"
    assert result.decision is not None
    # The returning office (E1's) is passed over: E2 of the other office goes.
    assert [a.unit_id for a in result.decision.assignments] == ["E2"]
    assert result.state == "dispatched" == status(district, incident_id)
    assert actions(district, incident_id)[-2:] == ["return", "dispatch"]
    freed = unit(district, "E1")
    assert freed["status"] == "available" and pd.isna(freed["busy_incident_id"])
    assert unit(district, "E2") == {"status": "busy", "busy_incident_id": incident_id}


def test_a_reopen_is_dispatched_again_at_once(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    incident_id = report(district)
    store.dispatch_stored(district, ctx, incident_id, now=NOW)
    t = NOW
    for action in ("acknowledge", "arrive", "resolve"):
        t += timedelta(minutes=10)
        act(district, incident_id, action, t)
    result = service_actions.act(
        district, ctx, incident_id, "reopen", at=t, actor="grid-1", role="grid_worker",
        reason="rubbish still there",
    )  # fmt: skip
    assert result.decision is not None
    assert [a.unit_id for a in result.decision.assignments] == ["E1"]
    assert status(district, incident_id) == "dispatched"
    assert actions(district, incident_id)[-2:] == ["reopen", "dispatch"]


def test_other_actions_dispatch_nothing(district: Engine, ctx: dispatch.DispatchContext) -> None:
    incident_id = report(district)
    store.dispatch_stored(district, ctx, incident_id, now=NOW)
    result = service_actions.act(
        district, ctx, incident_id, "acknowledge", at=NOW, actor="E-unit", role="unit"
    )
    assert result.decision is None and result.state == "acknowledged"


def test_a_failed_new_dispatch_leaves_the_return_unrecorded(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The action and its new dispatch commit together or not at all: the incident is never
    left returned, its units freed, with nobody sent."""
    incident_id = report(district)
    store.dispatch_stored(district, ctx, incident_id, now=NOW)
    before = count_events(district)

    def failing(*args: object, **kwargs: object) -> None:
        msg = "the database went away"
        raise StoreError(msg)

    monkeypatch.setattr(store, "dispatch_within", failing)
    with pytest.raises(StoreError, match="went away"):
        service_actions.act(
            district, ctx, incident_id, "return", at=NOW + timedelta(minutes=2),
            actor="E-office", role="office", reason="no",
        )  # fmt: skip
    assert count_events(district) == before
    assert status(district, incident_id) == "dispatched"
    assert unit(district, "E1") == {"status": "busy", "busy_incident_id": incident_id}


def test_a_refused_action_writes_nothing(district: Engine, ctx: dispatch.DispatchContext) -> None:
    incident_id = report(district)
    store.dispatch_stored(district, ctx, incident_id, now=NOW)
    before = count_events(district)
    with pytest.raises(InvalidTransitionError):
        service_actions.act(
            district, ctx, incident_id, "return", at=NOW, actor="E-office", role="office"
        )
    assert count_events(district) == before
