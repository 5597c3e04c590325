"""Micro-batched intake (gridgov.service.intake_batch, gridgov.dispatch.together).

Reports that arrive together are stored in one transaction and decided on one snapshot: each
request still gets its own answer and decision, a batch is never worse in total weighted
travel time than the single path on the same sequence, and nothing is lost, duplicated or
assigned twice. The district is test_store_dispatch's lattice (straight roads, known times).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import Point
from sqlalchemy import Engine, func, select
from test_store import STREET_1, STREET_2
from test_store_dispatch import CATALOG, NOW, N, ctx, district, load_tiny, units_frame, xy

from gridgov import dispatch, store
from gridgov.errors import InputError
from gridgov.model import EscalationLevel
from gridgov.service import intake, intake_batch
from gridgov.settings import get_settings
from gridgov.store.models import ASSIGNMENTS, INCIDENTS

__all__ = ["ctx", "district"]  # fixtures used here

_LEVEL_RANK = {lv: i for i, lv in enumerate(EscalationLevel)}


def _report(
    engine: Engine,
    context: dispatch.DispatchContext,
    matter: str,
    at: tuple[float, float],
    **kw: Any,
) -> intake.Report:
    lon, lat = xy(*at) if isinstance(at[0], int) else at  # lattice node or (lon, lat)
    return intake.report(
        engine,
        context,
        matter_code=matter,
        lon=lon,
        lat=lat,
        reported_at=NOW,
        now=NOW,
        check_duplicates=False,
        **kw,
    )


def _on_lattice(i: float, j: float) -> tuple[float, float]:
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    return x0 + i * (x1 - x0), y0 + j * (y1 - y0)


@contextmanager
def _one_batch(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Queue reports behind a batch that is held open, so that they form the next batch
    together, in the order they were queued (as a loaded intake groups them).

    The report held open is one not to dispatch (``dispatch_now=False``): a dispatch collects
    every stored report once it holds the intake's turn, so a held report to dispatch could
    join the next batch's dispatch or not, as the threads happen to run."""
    entered, gate = threading.Event(), threading.Event()
    real = store.store_batch

    def held(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set():
            entered.set()
            assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "store_batch", held)
    threads: list[threading.Thread] = []
    results: dict[int, Any] = {}

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    def queue(call: Callable[[], Any]) -> int:
        i = len(threads)
        threads.append(threading.Thread(target=run, args=(i, call)))
        threads[-1].start()
        if i == 0:  # the batch held open
            assert entered.wait(30)
        else:
            deadline = time.monotonic() + 30
            while intake_batch.waiting(engine) < i:
                assert time.monotonic() < deadline, "a report never queued"
                time.sleep(0.005)
        return i

    queue.results = results  # type: ignore[attr-defined]
    try:
        yield queue
    finally:
        gate.set()
        for t in threads:
            t.join(60)
        monkeypatch.setattr(store, "store_batch", real)


def _active(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(ASSIGNMENTS.c.unit_id, ASSIGNMENTS.c.incident_id).where(ASSIGNMENTS.c.active)
        ).all()
    units = [r.unit_id for r in rows]
    assert len(units) == len(set(units)), "a unit in two active assignments"
    return {r.unit_id: r.incident_id for r in rows}


def _weighted(reports: list[intake.Report]) -> float:
    return dispatch.weighted_time_s([r.decision for r in reports if r.decision is not None])


# --------------------------------------------------------------------------------------------
# a hand-made contest: the sequence sends the far unit, the joint assignment swaps them
# --------------------------------------------------------------------------------------------

# E1 stands on node (1, 2), E2 on (2, 3). A lies on the road (1, 2)-(1, 3), 0.9 of the way up:
# E1 is 783 m away, E2 837 m. B lies on node (0, 2): E1 750 m, E2 2,370 m. In arrival order
# A takes E1 and B is left E2; together, A takes E2 and B E1.
A = _on_lattice(1, 2.9)
B = _on_lattice(0, 2)


def test_competing_reports_are_assigned_jointly(
    district: Engine,
    ctx: dispatch.DispatchContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with _one_batch(district, monkeypatch) as queue:
        queue(
            lambda: _report(district, ctx, "T-HRSS", (5, 5), dispatch_now=False)
        )  # held open, stored only
        a = queue(lambda: _report(district, ctx, "T-ENF", A, incident_id="JOINT-A"))
        b = queue(lambda: _report(district, ctx, "T-ENF", B, incident_id="JOINT-B"))
    got_a, got_b = queue.results[a], queue.results[b]  # type: ignore[attr-defined]
    assert [x.unit_id for x in got_a.decision.assignments] == ["E2"]
    assert [x.unit_id for x in got_b.decision.assignments] == ["E1"]
    for got, before in ((got_a, "E1"), (got_b, "E2")):
        assert got.state == "dispatched"
        (assignment,) = got.decision.assignments
        assert assignment.rule == dispatch.RULE_JOINT
        assert assignment.level is EscalationLevel.STREET
        assert (
            assignment.route is not None and abs(assignment.route.time_s - assignment.time_s) < 1e-3
        )
        batch = got.decision.explanation["batch"]
        assert batch["reports"] == 2 and batch["moved"][0]["from_unit"] == before
    assert batch["units_taken_earlier"] == ["E1"]  # B, second in the batch, saw A take E1
    assert _active(district) == {"E2": "JOINT-A", "E1": "JOINT-B"}
    stored = store.read_dispatch(district, "JOINT-A")
    assert stored["explanation"]["batch"]["moved"][0]["to_unit"] == "E2"

    # The single path on the same sequence, on a store of its own: A takes E1, B gets E2.
    single = _single_path_store(tmp_path)
    monkeypatch.setattr(get_settings(), "intake_batch_max", 0)
    one_by_one = [
        _report(single, store.context_from_store(single, CATALOG), "T-ENF", p) for p in (A, B)
    ]
    assert [r.decision.assignments[0].unit_id for r in one_by_one] == ["E1", "E2"]
    assert _weighted([got_a, got_b]) < _weighted(one_by_one) - 100.0
    single.dispose()


def _single_path_store(folder: Path, units: gpd.GeoDataFrame | None = None) -> Engine:
    """A fresh SQLite store holding the lattice district (the single path's twin)."""
    url = f"sqlite:///{folder / f'single-{random.getrandbits(32):08x}.db'}"
    store.init_db(url)
    engine = store.create_engine_from_url(url)
    load_tiny(engine, units)
    return engine


# --------------------------------------------------------------------------------------------
# never worse than the single path on the same sequence
# --------------------------------------------------------------------------------------------


def _random_units(rng: random.Random) -> gpd.GeoDataFrame:
    spec = [("enforcement", 10), ("police", 5), ("fire", 4)]
    rows, points = [], []
    for kind, count in spec:
        for k in range(count):
            i, j = rng.randrange(N), rng.randrange(N)
            rows.append((f"{kind[0].upper()}{k:02d}", kind, STREET_1 if i < N // 2 else STREET_2))
            points.append(Point(*xy(i, j)))
    return units_frame(rows, points)


def _sequence(rng: random.Random, n: int) -> list[tuple[str, tuple[float, float]]]:
    matters = ["T-ENF", "T-ENF", "T-LOW", "T-JOINT"]
    return [
        (rng.choice(matters), _on_lattice(rng.uniform(0, N - 1), rng.uniform(0, N - 1)))
        for _ in range(n)
    ]


def test_a_batch_is_never_worse_than_the_single_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve random districts and sequences of eight reports: the batch's total weighted
    travel time is at most the single path's, it fills the same slots, and no report is sent
    a wider escalation; and the joint step does change something in some of them."""
    gains = []
    for seed in range(12):
        rng = random.Random(seed)
        units = _random_units(rng)
        sequence = _sequence(rng, 8)
        single = _single_path_store(tmp_path, units)
        batched = _single_path_store(tmp_path, units)
        single_ctx = store.context_from_store(single, CATALOG)
        batched_ctx = store.context_from_store(batched, CATALOG)
        with monkeypatch.context() as one:
            one.setattr(get_settings(), "intake_batch_max", 0)
            one_by_one = [_report(single, single_ctx, m, p) for m, p in sequence]
        with _one_batch(batched, monkeypatch) as queue:
            queue(partial(_report, batched, batched_ctx, "T-HRSS", (4, 4), dispatch_now=False))
            slots = [queue(partial(_report, batched, batched_ctx, m, p)) for m, p in sequence]
        together = [queue.results[i] for i in slots]  # type: ignore[attr-defined]
        for r in together:
            assert isinstance(r, intake.Report), r
            assert r.decision is not None and r.decision.explanation["batch"]["reports"] == 8
        for s, t in zip(one_by_one, together, strict=True):
            assert s.decision is not None and t.decision is not None
            assert len(t.decision.assignments) == len(s.decision.assignments)
            assert t.decision.unfilled == s.decision.unfilled
            if s.decision.level is not None:
                assert _LEVEL_RANK[t.decision.level] <= _LEVEL_RANK[s.decision.level]
        assert _weighted(together) <= _weighted(one_by_one) + 1e-6, seed
        gains.append(_weighted(one_by_one) - _weighted(together))
        assert len(_active(batched)) == sum(len(r.decision.assignments) for r in together)
        single.dispose()
        batched.dispose()
    # Without the joint step every gain is 0: the test must be able to see it work.
    assert sum(g > 1.0 for g in gains) >= 2, gains


def test_one_report_of_a_batch_is_exactly_the_single_path(
    district: Engine,
    ctx: dispatch.DispatchContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A lone report (a batch of one) is decided as the single path decides it."""
    got = _report(district, ctx, "T-LOW", (3, 3))
    single = _single_path_store(tmp_path)
    monkeypatch.setattr(get_settings(), "intake_batch_max", 0)
    want = _report(single, store.context_from_store(single, CATALOG), "T-LOW", (3, 3))
    single.dispose()
    assert got.decision is not None and want.decision is not None
    for g, w in zip(got.decision.assignments, want.decision.assignments, strict=True):
        assert (g.unit_id, g.rule, g.level, g.role) == (w.unit_id, w.rule, w.level, w.role)
        assert g.time_s == pytest.approx(w.time_s, abs=1e-9)
    assert got.decision.explanation["kinds"] == want.decision.explanation["kinds"]


# --------------------------------------------------------------------------------------------
# faults: one bad report, units taken meanwhile, many threads at once
# --------------------------------------------------------------------------------------------


def test_a_failing_report_leaves_the_rest_of_its_batch_stored(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    _report(district, ctx, "T-HRSS", (6, 1), incident_id="TAKEN-ID")
    with _one_batch(district, monkeypatch) as queue:
        queue(lambda: _report(district, ctx, "T-HRSS", (5, 5), dispatch_now=False))
        first = queue(lambda: _report(district, ctx, "T-ENF", (1, 1), incident_id="OK-1"))
        bad = queue(lambda: _report(district, ctx, "T-ENF", (2, 2), incident_id="TAKEN-ID"))
        last = queue(lambda: _report(district, ctx, "T-ENF", (3, 3), incident_id="OK-2"))
    results = queue.results  # type: ignore[attr-defined]
    assert isinstance(results[bad], InputError) and "exists already" in str(results[bad])
    assert results[first].state == "dispatched" and results[last].state == "dispatched"
    with district.connect() as connection:
        ids = connection.execute(select(INCIDENTS.c.incident_id)).scalars().all()
    assert sorted(i for i in ids if i != "TAKEN-ID" and not i.startswith("RPT")) == [
        "OK-1",
        "OK-2",
    ]
    assert sorted(_active(district).values()) == ["OK-1", "OK-2"]


def test_a_unit_taken_meanwhile_sends_the_report_the_single_way(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that takes no dispatch turn (a dispatcher's manual choice, a fix taking the
    unit off duty) took the chosen unit after the snapshot the batch decided on: the commit
    leaves that decision out and the report is dispatched the single way.

    The batch reads its snapshot inside its own transaction, where SQLite lets no other writer
    in; so the snapshot is made stale instead: read before the unit was taken."""
    from gridgov.store import intake_rows

    stale = store.available_pool(district, ctx, ["enforcement"], now=NOW)
    store.set_unit_status(district, "E1", "busy")
    monkeypatch.setattr(intake_rows, "_snapshot_pools", lambda *a, **k: [stale])
    got = _report(district, ctx, "T-ENF", A, incident_id="TAKEN-MEANWHILE")
    assert [a.unit_id for a in got.decision.assignments] == ["E2"]
    assert "batch" not in got.decision.explanation  # decided the single way
    assert _active(district) == {"E2": "TAKEN-MEANWHILE"}


def _reports_at_once(
    engine: Engine, context: dispatch.DispatchContext, prefix: str, n: int, *, seed: int
) -> tuple[list[tuple[float, float]], dict[int, Any], list[threading.Thread]]:
    """``n`` enforcement reports at random lattice points, sent by ``n`` threads at once; the
    points, each thread's report or exception, and the threads (joined, or given up on)."""
    rng = random.Random(seed)
    points = [_on_lattice(rng.uniform(0, N - 1), rng.uniform(0, N - 1)) for _ in range(n)]
    results: dict[int, Any] = {}
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = _report(
                engine, context, "T-ENF", points[i], incident_id=f"{prefix}-{i:02d}"
            )
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return points, results, threads


def test_many_threads_each_get_their_own_decision(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    points, results, _ = _reports_at_once(district, ctx, "MANY", 24, seed=5)
    assert all(isinstance(r, intake.Report) for r in results.values()), results
    active = _active(district)
    answered = {a.unit_id: r.incident_id for r in results.values() for a in r.decision.assignments}
    assert active == answered  # the store holds exactly what each caller was told
    # Batches take their kinds' dispatch turn before their snapshot: none chose a unit an
    # earlier batch had taken, so none was left out to the single way.
    assert all("batch" in r.decision.explanation for r in results.values())
    with district.connect() as connection:
        stored = connection.execute(
            select(func.count()).where(INCIDENTS.c.incident_id.like("MANY-%"))
        ).scalar_one()
    assert stored == len(points)
    # Three enforcement units: three are dispatched, the rest wait (registered, no unit).
    assert sorted(r.state for r in results.values()).count("dispatched") == 3


def test_storing_together_equals_storing_one_by_one(district: Engine, tmp_path: Path) -> None:
    """create_incidents' few statements give each report the outcome create_incident gives it
    one by one: duplicates of stored incidents and of earlier reports of the same call, on
    either side of the duplicate radius. The twin is SQLite, which reads every open incident
    of the matter; on PostGIS both the single path and the batch read only the candidates
    near their reports."""
    rng = random.Random(11)
    spots = [_on_lattice(rng.uniform(0, N - 1), rng.uniform(0, N - 1)) for _ in range(6)]
    reports = []
    for k in range(40):
        lon, lat = rng.choice(spots)
        if rng.random() < 0.5:
            shift = rng.uniform(-1e-4, 1e-4)  # ~10 m: within the duplicate radius
        else:  # 211-287 m: about the radius (250 m) from the spot, both sides of it
            shift = rng.choice([-1, 1]) * rng.uniform(0.0022, 0.0030)
        incident = dispatch.Incident(
            f"TOGETHER-{k:02d}", rng.choice(["T-ENF", "T-LOW"]), lon + shift, lat, NOW
        )
        reports.append(
            {
                "incident": incident,
                "placement": None,
                "source": "test",
                "now": NOW,
                "reporter": None,
                "description": None,
                "check_duplicates": True,
                "matter": CATALOG.get(incident.matter_code),
            }
        )
    one, many = _single_path_store(tmp_path), district
    # Half stored before, one by one on both (the single path's read): the later reports may
    # duplicate them (read from the store) or an earlier report of their batch.
    for r in reports[:20]:
        assert store.create_incident(one, **r) == store.create_incident(many, **r)
    alone = [store.create_incident(one, **r) for r in reports[20:]]
    together = store.create_incidents(many, reports[20:])
    assert together == alone
    # The test does see duplicates, and reports kept near the radius.
    assert sum(s.state == "rejected" for s in alone) >= 5
    assert sum(s.state == "registered" for s in alone) >= 5
    one.dispose()


# --------------------------------------------------------------------------------------------
# priority 1 in a batch: decided first, as single dispatch decides it
# --------------------------------------------------------------------------------------------


def test_a_priority_one_report_in_a_batch_preempts_as_single_dispatch_does(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    low = _report(district, ctx, "T-LOW", (2, 1), incident_id="LOW")  # fire + police
    assert [a.unit_id for a in low.decision.assignments] == ["F1", "P1"]
    with _one_batch(district, monkeypatch) as queue:
        queue(lambda: _report(district, ctx, "T-HRSS", (5, 5), dispatch_now=False))  # held open
        fire = queue(lambda: _report(district, ctx, "T-FIRE", (1, 1), incident_id="FIRE"))
    got = queue.results[fire]  # type: ignore[attr-defined]
    # F2 is free but beyond three minutes; F1 is one hop away, on a priority-4 job.
    (a,) = got.decision.assignments
    assert (a.unit_id, a.rule, a.preempts) == ("F1", "preemption", "LOW")
    assert "batch" not in got.decision.explanation  # decided alone, as single dispatch does
    assert _active(district) == {"F1": "FIRE"}  # P1 freed with its re-queued incident
    with district.connect() as connection:
        rows = connection.execute(select(INCIDENTS.c.incident_id, INCIDENTS.c.status)).all()
    states = {r.incident_id: r.status for r in rows}
    assert (states["LOW"], states["FIRE"]) == ("registered", "dispatched")
    recorded = store.read_dispatch(district, "FIRE")["explanation"]
    assert recorded["store"]["requeued"] == [
        {"incident_id": "LOW", "units": ["F1"], "freed": ["P1"]}
    ]


def test_a_priority_one_report_is_decided_before_the_rest_of_its_batch(
    district: Engine,
    ctx: dispatch.DispatchContext,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The low-priority report arrives first and would take F1; the fire report, decided
    first, takes F1 free, and the low one gets F2: nobody is preempted. One by one, the low
    report takes F1 and the fire report then preempts it, re-queueing it."""
    with _one_batch(district, monkeypatch) as queue:
        queue(lambda: _report(district, ctx, "T-HRSS", (5, 5), dispatch_now=False))  # held open
        low = queue(lambda: _report(district, ctx, "T-LOW", (2, 1), incident_id="LOW"))
        fire = queue(lambda: _report(district, ctx, "T-FIRE", (1, 1), incident_id="FIRE"))
    got_low, got_fire = queue.results[low], queue.results[fire]  # type: ignore[attr-defined]
    assert [(a.unit_id, a.preempts) for a in got_fire.decision.assignments] == [("F1", None)]
    assert [a.unit_id for a in got_low.decision.assignments] == ["F2", "P1"]
    assert got_low.decision.explanation["batch"]["units_taken_earlier"] == ["F1"]
    assert _active(district) == {"F1": "FIRE", "F2": "LOW", "P1": "LOW"}

    single = _single_path_store(tmp_path)
    monkeypatch.setattr(get_settings(), "intake_batch_max", 0)
    context = store.context_from_store(single, CATALOG)
    first = _report(single, context, "T-LOW", (2, 1), incident_id="LOW")
    then = _report(single, context, "T-FIRE", (1, 1), incident_id="FIRE")
    assert [a.unit_id for a in first.decision.assignments] == ["F1", "P1"]
    assert [(a.unit_id, a.preempts) for a in then.decision.assignments] == [("F1", "LOW")]
    single.dispose()


# --------------------------------------------------------------------------------------------
# the pipeline: a dispatch takes what was stored while it waited for the turn
# --------------------------------------------------------------------------------------------


@pytest.mark.postgis
def test_reports_stored_while_a_dispatch_waits_for_the_turn_go_with_it(
    postgis_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Report A's dispatch waits for the intake's turn (another process holds it); B and C are
    stored meanwhile, by the store stage, which never waits for the turn. When the turn comes,
    A's dispatch takes all three: one batch, in the order stored. (PostgreSQL only: on SQLite
    the turn is the one writer's lock, which storing needs too.)"""
    from gridgov.store import intake_rows

    store.init_db(postgis_schema_url)
    engine = store.create_engine_from_url(postgis_schema_url)
    load_tiny(engine)
    context = store.context_from_store(engine, CATALOG)
    entered, gate = threading.Event(), threading.Event()
    real = intake_rows._take_intake_turn

    def held(connection: Any) -> None:
        if not entered.is_set():
            entered.set()
            assert gate.wait(30)
        real(connection)

    monkeypatch.setattr(intake_rows, "_take_intake_turn", held)
    results: dict[str, Any] = {}

    def one(name: str, at: tuple[int, int]) -> None:
        results[name] = _report(engine, context, "T-ENF", at, incident_id=f"TURN-{name}")

    threads = [threading.Thread(target=one, args=("A", (1, 1)))]
    threads[0].start()
    assert entered.wait(30)
    for name, at in (("B", (3, 3)), ("C", (5, 5))):
        threads.append(threading.Thread(target=one, args=(name, at)))
        threads[-1].start()
        deadline = time.monotonic() + 30
        while not _stored(engine, f"TURN-{name}") or intake_batch.waiting(engine) < len(threads):
            assert time.monotonic() < deadline, f"{name} was never stored"
            time.sleep(0.005)
    gate.set()
    for t in threads:
        t.join(60)
    assert [results[n].state for n in "ABC"] == ["dispatched"] * 3
    for position, name in enumerate("ABC", start=1):
        batch = results[name].decision.explanation["batch"]
        assert (batch["reports"], batch["position"]) == (3, position)
    assert sorted(_active(engine).values()) == ["TURN-A", "TURN-B", "TURN-C"]
    engine.dispose()


def _stored(engine: Engine, incident_id: str) -> bool:
    with engine.connect() as connection:
        found = connection.execute(
            select(func.count()).where(INCIDENTS.c.incident_id == incident_id)
        ).scalar_one()
    return bool(found)


def test_a_turn_that_fails_sends_its_reports_the_single_way(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails as the dispatch asks for the intake's turn (a lost connection): the
    reports stored and waiting are taken all the same, and each is dispatched the single way,
    so none is lost and none waits for a turn that fails."""
    from gridgov.errors import StoreError
    from gridgov.store import intake_rows

    real = intake_rows._take_intake_turn
    failed: list[bool] = []

    def once(connection: Any) -> None:
        if not failed:
            failed.append(True)
            raise StoreError("the store cannot be reached")
        real(connection)

    monkeypatch.setattr(intake_rows, "_take_intake_turn", once)
    got = _report(district, ctx, "T-ENF", (1, 1), incident_id="TURN-FAILS")
    assert failed and got.state == "dispatched"
    assert "batch" not in got.decision.explanation  # decided the single way
    assert _active(district) == {a.unit_id: "TURN-FAILS" for a in got.decision.assignments}


def test_a_dispatch_that_breaks_answers_every_waiting_report(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault that is not the store's (a bug) in the dispatch stage: each report waiting for
    it gets the error, stored as it is, and the next report goes through again."""
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise RuntimeError("a bug in the dispatch stage")

    real = store.dispatch_batch
    monkeypatch.setattr(store, "dispatch_batch", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        _report(district, ctx, "T-ENF", (1, 1), incident_id="BROKEN-1")
    assert calls == [1]  # tried once, not again and again
    assert _stored(district, "BROKEN-1")
    monkeypatch.setattr(store, "dispatch_batch", real)
    after = _report(district, ctx, "T-ENF", (3, 3), incident_id="AFTER-1")
    assert after.state == "dispatched"


def test_a_dispatch_that_breaks_under_load_answers_every_waiting_thread(
    district: Engine, ctx: dispatch.DispatchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads wait on conditions of their own: a dispatch stage that fails before it takes
    its reports must still wake every thread whose report it ended (none hangs)."""
    real = store.dispatch_batch

    def broken(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)  # the other reports are stored and wait meanwhile
        raise RuntimeError("a bug in the dispatch stage")

    monkeypatch.setattr(store, "dispatch_batch", broken)
    points, results, threads = _reports_at_once(district, ctx, "BRK", 12, seed=11)
    assert not any(t.is_alive() for t in threads), "a report's thread was never woken"
    assert len(results) == len(points)
    assert all(isinstance(r, RuntimeError) for r in results.values()), results
    assert all(_stored(district, f"BRK-{i:02d}") for i in range(len(points)))
    assert intake_batch.waiting(district) == 0
    monkeypatch.setattr(store, "dispatch_batch", real)


def test_a_report_snapped_before_its_turn_is_decided_as_if_snapped_in_it(
    district: Engine, ctx: dispatch.DispatchContext
) -> None:
    """The intake snaps a report in its own thread, ahead of the dispatch turn; the turn finds
    the snap kept by the context. A kept snap is the one snapping again gives."""
    point = _on_lattice(1, 2.9)
    incident = dispatch.Incident("SNAP-1", "T-ENF", point[0], point[1], NOW)
    kinds = ctx.catalog.get("T-ENF").required_kinds
    first = _report(district, ctx, "T-ENF", point, incident_id="SNAP-0")
    modes = ctx.modes_for(kinds)
    assert modes  # learnt from the first dispatch of these kinds
    dispatch.presnap(ctx, incident, kinds)
    for mode in modes:
        kept = ctx.snap_point(incident.lon, incident.lat, mode)
        fresh = ctx.travel.snap([incident.lon], [incident.lat], mode)
        assert kept is ctx.snap_point(incident.lon, incident.lat, mode)
        for name in ("edge", "frac", "access_m", "far", "more_edge", "more_frac"):
            assert (getattr(kept, name) == getattr(fresh, name)).all(), name
    assert first.decision is not None
