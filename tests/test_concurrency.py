"""Concurrent dispatchers on one store: no unit is ever assigned twice, no incident is lost.

Worker processes (forked after the dispatch context is built once) each create incidents at
random points of the reference district, with random matters, dispatch them through
:func:`gridgov.store.dispatch_stored`, and release the units of their older incidents so the
pool keeps moving (preemption re-queues some incidents, which are dispatched again). Then the
store is checked as a whole: at most one active assignment per unit, no two assignments of a
unit overlapping in time, every active assignment's unit busy on that very incident, and every
incident stored and finally dispatched, or registered after a dispatch that found nobody (never
left re-queued).

On PostGIS the dispatchers really run side by side (row locks, ``SKIP LOCKED``); on SQLite
their write transactions queue behind ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import Engine, select, text

from gridgov import dispatch
from gridgov.catalog import load_catalog
from gridgov.reference import read_reference_district
from gridgov.store import (
    context_from_store,
    create_engine_from_url,
    create_incident,
    dispatch_stored,
    init_db,
    load_district,
    read_assignments,
    read_incidents,
    release_unit,
)
from gridgov.store.models import DISPATCHES, UNITS

SEED = 20261128
FINAL = {"dispatched", "registered"}
# Incidents whose latest event is a re-queue (preempted): they still need a dispatch.
_REQUEUED = text(
    "SELECT e.incident_id FROM events e WHERE e.action = 'requeue' AND e.seq = "
    "(SELECT MAX(seq) FROM events f WHERE f.incident_id = e.incident_id) ORDER BY e.incident_id"
)


def _requeued(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return [r[0] for r in connection.execute(_REQUEUED)]


# Filled in by the parent just before forking; the workers inherit them.
_CONTEXT: dict[str, Any] = {}


def _random_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform random points inside the district (rejection sampling on its polygon)."""
    ref = _CONTEXT["ref"]
    district = ref.gdf_areas.loc[ref.gdf_areas["level"] == "district", "geometry"].iloc[0]
    minx, miny, maxx, maxy = district.bounds
    shapely.prepare(district)
    out = np.empty((0, 2))
    while len(out) < n:
        xy = np.column_stack([rng.uniform(minx, maxx, 4 * n), rng.uniform(miny, maxy, 4 * n)])
        inside = shapely.contains_xy(district, xy[:, 0], xy[:, 1])
        out = np.vstack([out, xy[inside]])
    return out[:n]


def _worker(url: str, worker: int, n: int, results: Any) -> None:
    """Create and dispatch ``n`` incidents; release older jobs as it goes. Reports a dict."""
    engine = create_engine_from_url(url)
    ctx = _CONTEXT["ctx"]
    rng = np.random.default_rng(SEED + worker)
    points = _random_points(n, rng)
    codes = rng.choice(np.array(_CONTEXT["codes"], dtype=object), n)
    report: dict[str, Any] = {
        "worker": worker,
        "dispatched": 0,
        "retries": 0,
        "preemptions": 0,
        "released": 0,
        "redispatched": 0,
        "errors": [],
    }
    open_jobs: deque[tuple[str, list[str]]] = deque()
    mine: list[str] = []
    try:
        for k in range(n):
            incident_id = f"W{worker}-{k:04d}"
            lon, lat = (float(v) for v in points[k])
            incident = dispatch.Incident(incident_id, str(codes[k]), lon, lat, datetime.now(UTC))
            # Random points: a rare duplicate would be rejected, not dispatched; not tested here.
            create_incident(engine, incident, source=f"worker-{worker}", check_duplicates=False)
            mine.append(incident_id)
            decision = dispatch_stored(engine, ctx, incident_id, now=datetime.now(UTC))
            report["dispatched"] += 1
            report["preemptions"] += sum(a.preempts is not None for a in decision.assignments)
            if decision.assignments:
                open_jobs.append((incident_id, [a.unit_id for a in decision.assignments]))
            # Each dispatcher keeps a few jobs open, so units keep coming and going.
            keep = int(rng.integers(2, 7))
            while len(open_jobs) > keep:
                done, units = open_jobs.popleft()
                for unit_id in units:
                    freed = release_unit(
                        engine, unit_id, now=datetime.now(UTC), reason="done", incident_id=done
                    )
                    report["released"] += freed is not None
        # Incidents of this worker re-queued by someone's preemption: dispatch them again.
        for incident_id in sorted(set(_requeued(engine)) & set(mine)):
            dispatch_stored(engine, ctx, incident_id, now=datetime.now(UTC))
            report["redispatched"] += 1
    except Exception:
        report["errors"].append(traceback.format_exc())
    finally:
        engine.dispose()
    results.put(report)


def _run_workers(url: str, workers: int, per_worker: int) -> tuple[list[dict[str, Any]], float]:
    """Fork the workers (they share the parent's dispatch context) and wait for them all."""
    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    procs = [
        fork.Process(target=_worker, args=(url, w, per_worker, results), daemon=True)
        for w in range(workers)
    ]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    reports = []
    try:
        for _ in procs:
            reports.append(results.get(timeout=1800))
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
    return reports, time.perf_counter() - start


@pytest.fixture
def _district_context() -> Iterator[None]:
    _CONTEXT["ref"] = read_reference_district()
    _CONTEXT["codes"] = list(load_catalog().codes)
    yield
    _CONTEXT.clear()


def _load_reference(url: str) -> None:
    init_db(url)
    engine = create_engine_from_url(url)
    try:
        ref = _CONTEXT["ref"]
        load_district(
            engine,
            ref.gdf_areas,
            ref.gdf_offices,
            ref.gdf_units,
            list(load_catalog()),
            gdf_nodes=ref.gdf_nodes,
            gdf_links=ref.gdf_links,
            name="jinniu",
        )
        # Built once here; the forked workers inherit it (and the engine is closed first,
        # so no connection crosses the fork).
        _CONTEXT["ctx"] = context_from_store(engine)
        assert _CONTEXT["ctx"].travel.kind == "network"
    finally:
        engine.dispose()


def _final_sweep(engine: Engine) -> int:
    """Dispatch whatever a late preemption re-queued after its worker had finished."""
    ctx = context_from_store(engine)
    swept = 0
    for _ in range(5):
        pending = _requeued(engine)
        if not pending:
            break
        for incident_id in pending:
            dispatch_stored(engine, ctx, incident_id, now=datetime.now(UTC))
            swept += 1
    return swept


def _check_store(engine: Engine, expected_ids: set[str]) -> dict[str, int]:
    """Every invariant the concurrency requirement names, checked on the whole store."""
    with engine.connect() as connection:
        doubled = connection.execute(
            text(
                "SELECT unit_id, COUNT(*) FROM assignments WHERE active "
                "GROUP BY unit_id HAVING COUNT(*) > 1"
            )
        ).all()
        attempts = [r[0] for r in connection.execute(select(DISPATCHES.c.attempts)).all()]
        units = pd.DataFrame(
            connection.execute(
                select(UNITS.c.unit_id, UNITS.c.status, UNITS.c.busy_incident_id)
            ).all(),
            columns=["unit_id", "status", "busy_incident_id"],
        ).set_index("unit_id")
    assert doubled == [], f"units with two active assignments: {doubled}"

    assignments = read_assignments(engine)
    # No two assignments of one unit overlap in [assigned_at, released_at).
    ordered = assignments.sort_values(["unit_id", "assigned_at", "assignment_id"])
    same_unit = ordered["unit_id"].to_numpy()[1:] == ordered["unit_id"].to_numpy()[:-1]
    prev_end = ordered["released_at"].to_numpy()[:-1][same_unit]
    next_start = ordered["assigned_at"].to_numpy()[1:][same_unit]
    assert not pd.isna(prev_end).any(), "an earlier assignment of a unit is still open"
    overlapping = int((prev_end > next_start).sum())
    assert overlapping == 0, f"{overlapping} overlapping assignment pairs"

    active = assignments[assignments["active"]]
    busy_on = units.loc[active["unit_id"]]
    assert (busy_on["status"] == "busy").all(), "an assigned unit is not busy"
    assert (busy_on["busy_incident_id"].to_numpy() == active["incident_id"].to_numpy()).all()
    working = units[units["busy_incident_id"].notna()]
    assert set(working.index) == set(active["unit_id"]), "a unit is busy on a job it lacks"

    incidents = read_incidents(engine)
    assert set(incidents["incident_id"]) == expected_ids, "incidents lost or invented"
    statuses = incidents["status"].value_counts().to_dict()
    assert set(statuses) <= FINAL, f"incidents left undone: {statuses}"
    assert _requeued(engine) == [], "re-queued incidents left undispatched"

    # Every preemption is recorded on both sides: the new job, and the ended old one.
    preempting = assignments[assignments["preempts"].notna()]
    ended = assignments.set_index(["unit_id", "incident_id"])
    for row in preempting.itertuples():
        old = ended.loc[[(row.unit_id, row.preempts)]]
        assert (old["release_reason"] == f"preempted by {row.incident_id}").any()
    return {
        "dispatches": len(attempts),
        "retried": sum(a > 1 for a in attempts),
        "max_attempts": max(attempts, default=0),
        "assignments": len(assignments),
        "preemptions": len(preempting),
        **{f"incidents_{k}": int(v) for k, v in statuses.items()},
    }


def _run_and_check(
    url: str, workers: int, per_worker: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _load_reference(url)
    reports, seconds = _run_workers(url, workers, per_worker)
    errors = [e for r in reports for e in r["errors"]]
    assert len(reports) == workers
    assert not errors, "\n\n".join(errors)
    engine = create_engine_from_url(url)
    try:
        swept = _final_sweep(engine)
        expected = {f"W{w}-{k:04d}" for w in range(workers) for k in range(per_worker)}
        summary = _check_store(engine, expected)
    finally:
        engine.dispose()
    assert sum(r["dispatched"] for r in reports) == workers * per_worker
    with capsys.disabled():
        released = sum(r["released"] for r in reports)
        redispatched = sum(r["redispatched"] for r in reports) + swept
        print(
            f"\n{workers} workers x {per_worker} dispatches in {seconds:.1f} s; "
            f"{released} releases, {redispatched} re-queued incidents dispatched again; {summary}"
        )


@pytest.mark.postgis
@pytest.mark.slow
@pytest.mark.usefixtures("_district_context")
def test_eight_dispatchers_on_postgis_never_share_a_unit(
    postgis_schema_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_and_check(postgis_schema_url, workers=8, per_worker=250, capsys=capsys)


@pytest.mark.usefixtures("_district_context")
def test_dispatchers_on_sqlite_are_serialised(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_and_check(sqlite_url, workers=4, per_worker=50, capsys=capsys)
