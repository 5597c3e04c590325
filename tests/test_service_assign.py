"""The batch door (gridgov.service.assign.dispatch_queue) on SQLite and PostGIS: the jointly
optimal assignment committed in one transaction, its gain over greedy, and incidents that
changed meanwhile left out while the rest commit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine
from test_store_dispatch import NOW, ctx, district, new_incident

from gridgov import dispatch, store
from gridgov.service import assign

__all__ = ["ctx", "district"]  # fixtures


def _units(engine: Engine) -> pd.DataFrame:
    return store.read_units(engine).set_index("unit_id")


def _greedy_trap(engine: Engine) -> tuple[str, str]:
    """Two enforcement jobs where nearest-first in arrival order is not optimal.

    A (reported first, by id) is one hop from E2 (750 m east) and one from E1 (870 m north);
    B is one hop from E2 and three from E1. Greedy sends E2 to A and E1 the long way to B;
    the optimum sends E1 to A and E2 to B.
    """
    return new_incident(engine, "T-ENF", (1, 3)), new_incident(engine, "T-ENF", (2, 4))


def test_the_optimal_batch_commits_with_its_gain(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    a, b = _greedy_trap(district)
    outcome = assign.dispatch_queue(district, ctx, now=NOW)
    assert [(i.incident_id, i.status, i.units) for i in outcome.items] == [
        (a, "assigned", ("E1",)),
        (b, "assigned", ("E2",)),
    ]
    assert outcome.dispatched == 2 and outcome.skipped == 0
    assert 0 < outcome.objective_s < outcome.greedy_objective_s
    assert outcome.gain == pytest.approx(
        (outcome.greedy_objective_s - outcome.objective_s) / outcome.greedy_objective_s
    )
    assert outcome.gain > 0.2  # 1,740 m of driving instead of 3,240 m
    units = _units(district)
    assert units.loc["E1", "busy_incident_id"] == a and units.loc["E2", "busy_incident_id"] == b
    statuses = store.read_incidents(district).set_index("incident_id")["status"]
    assert statuses[a] == statuses[b] == "dispatched"
    for incident_id in (a, b):
        stored = store.read_dispatch(district, incident_id)
        assert stored["explanation"]["method"] == "optimal"
        assert [e for e in store.read_events(district, incident_id=incident_id)["action"]][
            -1
        ] == "dispatch"
    json = outcome.to_json()
    assert json["gain"] == outcome.gain and json["method"] == "optimal"


def test_an_incident_cancelled_meanwhile_is_skipped_and_the_rest_commit(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = _greedy_trap(district)
    c = new_incident(district, "T-ENF", (6, 5))
    original = store.commit_batch

    def cancel_first(engine: Engine, decisions: Any, **kwargs: Any) -> dict[str, str]:
        # Another dispatcher cancels C between the optimisation and the commit.
        store.apply_action(
            engine, c, "cancel", at=NOW + timedelta(minutes=1), actor="d-2",
            role="dispatcher", reason="the owner cleared it",
        )  # fmt: skip
        return original(engine, decisions, **kwargs)

    monkeypatch.setattr(store, "commit_batch", cancel_first)
    outcome = assign.dispatch_queue(district, ctx, now=NOW + timedelta(minutes=2))
    items = {i.incident_id: i for i in outcome.items}
    assert items[a].status == items[b].status == "assigned"
    assert items[c].status == "skipped" and items[c].units == ()
    assert items[c].reason is not None and "cancelled" in items[c].reason
    assert outcome.dispatched == 2 and outcome.skipped == 1
    assert outcome.gain > 0
    units = _units(district)
    # C's unit was decided but never committed: still free.
    assert units.loc["E3", "status"] == "available" and pd.isna(units.loc["E3", "busy_incident_id"])
    statuses = store.read_incidents(district).set_index("incident_id")["status"]
    assert statuses[c] == "cancelled" and statuses[a] == statuses[b] == "dispatched"


def test_a_unit_taken_meanwhile_skips_its_incident_only(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No unit is ever assigned twice: a single dispatch that takes E1 between the
    optimisation and the commit leaves A (which the batch gave E1) out, and B commits."""
    a, b = _greedy_trap(district)
    original = store.commit_batch
    other: list[str] = []

    def race(engine: Engine, decisions: Any, **kwargs: Any) -> dict[str, str]:
        other.append(new_incident(engine, "T-ENF", (1, 2)))  # on E1's node
        store.dispatch_stored(engine, ctx, other[0], now=NOW)
        return original(engine, decisions, **kwargs)

    monkeypatch.setattr(store, "commit_batch", race)
    outcome = assign.dispatch_queue(district, ctx, incident_ids=[a, b], now=NOW)
    items = {i.incident_id: i for i in outcome.items}
    assert items[a].status == "skipped" and "E1" in str(items[a].reason)
    assert items[b].status == "assigned" and items[b].units == ("E2",)
    active = store.read_assignments(district, active=True)
    assert active["unit_id"].is_unique
    assert set(active["incident_id"]) == {other[0], b}


def test_ids_not_queued_are_listed_as_skipped(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    a = new_incident(district, "T-ENF", (1, 3))
    store.dispatch_stored(district, ctx, a, now=NOW)
    outcome = assign.dispatch_queue(district, ctx, incident_ids=[a, "NO-SUCH"], now=NOW)
    assert [(i.incident_id, i.status, i.reason) for i in outcome.items] == [
        (a, "skipped", assign.NOT_QUEUED),
        ("NO-SUCH", "skipped", assign.NOT_QUEUED),
    ]
    assert outcome.dispatched == 0 and outcome.gain == 0.0
