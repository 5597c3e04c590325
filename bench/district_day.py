"""Benchmark: Jinniu's real day on this machine, every path at once, at its own pace.

    python bench/district_day.py [--minutes 10] [--workers 2] [--report-factor 10]

One ``gridgov serve``-like server (``uvicorn --workers N``) over a PostGIS clone of the
reference district (the machinery of ``bench/api_load.py``), driven open-loop, each path at
its real rate rather than as fast as it answers:

- every unit sends a position fix (``POST /api/v1/units/{id}/position``): grid workers every
  10 s, the other forces every 5 s, each unit at its own phase (about 140 fixes/s);
- 50 wall displays hold the pushed feed open (``GET /api/v1/live/stream``, the district) and
  poll it every 10 s as the page does while streaming; 10 dispatcher consoles poll
  ``GET /api/v1/live`` every second (their street, with the cursor and ETag);
- reports with automatic dispatch (``POST /api/v1/incidents``) arrive as a Poisson stream at
  ``--report-factor`` times the busiest hour of the simulated day
  (``gridgov.simulate``'s default rate and profile).

A request's latency runs from when it was due, not from when a connection was free, so a
server that falls behind shows it; the backlog is what was due and not answered at the end.
Per path it prints the rate, p50 and p99, errors and the backlog, and CPU per request of the
server and of PostgreSQL; then the bare ceilings of ``bench/hot_paths.py`` (one UPDATE, one
one-row read) measured in the same run, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_load
import hot_paths
from api_load import (
    _Connection,
    _percentile,
    cloned_database,
    cpu_delta,
    cpu_snapshot,
    prepare_template,
    start_server,
    stop_all_servers,
    stop_server,
)

WALLS = 50
CONSOLES = 10
#: Seconds between two fixes of a grid worker, and of any other unit.
GRID_WORKER_PERIOD = 10.0
FORCE_PERIOD = 5.0


@dataclass
class PathStats:
    due: int = 0
    done: int = 0
    latencies: list[float] = field(default_factory=list)
    dues: list[float] = field(default_factory=list)  # when each answered request was due
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)


def _token(url: str, role: str, **scope: Any) -> str:
    from gridgov import store

    engine = store.open_store(url)
    try:
        return store.issue_credential(engine, role, label=f"district_day {role}", **scope)[1]
    finally:
        engine.dispose()


def _units(url: str) -> list[tuple[str, str, str]]:
    import psycopg

    with psycopg.connect(api_load._libpq(url)) as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute("SELECT unit_id, kind, street_code FROM units ORDER BY unit_id")
        ]


def busiest_hour_rate() -> float:
    """Reports per hour in the busiest hour of the simulated day."""
    from gridgov.simulate.arrivals import DEFAULT_RATE_PER_HOUR, URBAN_DAY_PROFILE

    mean = sum(URBAN_DAY_PROFILE) / len(URBAN_DAY_PROFILE)
    return DEFAULT_RATE_PER_HOUR * max(URBAN_DAY_PROFILE) / mean


class Pool:
    """Keep-alive connections serving one path's queue of due requests."""

    def __init__(self, port: int, size: int, stats: PathStats) -> None:
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.stats = stats
        self.tasks = [
            asyncio.create_task(self._serve(_Connection("127.0.0.1", port))) for _ in range(size)
        ]

    def put(self, due: float, raw: bytes) -> None:
        self.stats.due += 1
        self.queue.put_nowait((due, raw))

    async def _serve(self, conn: _Connection) -> None:
        while True:
            due, raw = await self.queue.get()
            try:
                status, _ = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.stats.failures[type(exc).__name__] += 1
                await conn.close()
                continue
            self.stats.done += 1
            self.stats.statuses[status] += 1
            self.stats.latencies.append(time.perf_counter() - due)
            self.stats.dues.append(due)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _stream(
    port: int, token: str, cursor: str, seconds: float, counts: Counter[str], latest: list[str]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /api/v1/live/stream?since={cursor}&max_seconds={seconds:.0f} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            counts["events"] += chunk.count(b"event: change")
            at = chunk.rfind(b"\nid: ")
            end = chunk.find(b"\n", at + 5)
            if at >= 0 and end > 0:  # the page keeps the cursor of the last event it applied
                latest[0] = chunk[at + 5 : end].decode()
    finally:
        writer.close()


async def _poller(
    port: int,
    token: str,
    cursor: list[str],
    etag: str | None,
    start: float,
    offsets: list[float],
    stats: PathStats,
) -> None:
    """A console (or a wall's safety net): polls at its times with its latest cursor and
    ETag, as the page does, and keeps the cursor of each answer."""
    conn = _Connection("127.0.0.1", port)
    for offset in offsets:
        wait = start + offset - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        due = start + offset
        stats.due += 1
        extra = f"If-None-Match: {etag}\r\n" if etag else ""
        raw = hot_paths._get(port, f"/api/v1/live?since={cursor[0]}", token, extra)
        try:
            try:
                status, body = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError):
                # Idle past the server's keep-alive (a wall polls every 10 s): reconnect.
                await conn.close()
                status, body = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            stats.failures[f"{type(exc).__name__}: {exc}"[:80]] += 1
            await conn.close()
            continue
        stats.done += 1
        stats.statuses[status] += 1
        stats.latencies.append(time.perf_counter() - due)
        stats.dues.append(due)
        if status == 200:
            cursor[0] = json.loads(body)["cursor"]
    await conn.close()


async def day(port: int, url: str, args: argparse.Namespace, pgid: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    admin = _token(url, "admin")
    units = _units(url)
    streets = sorted({s for _, _, s in units})
    consoles = [
        _token(url, "dispatcher", street_code=streets[i % len(streets)]) for i in range(CONSOLES)
    ]
    data = prepare_template(args.url)
    stats = {p: PathStats() for p in ("fix", "report", "console_poll", "wall_poll")}
    pools = {
        "fix": Pool(port, 24, stats["fix"]),
        "report": Pool(port, 8, stats["report"]),
    }
    cursors = {}
    for tok in {admin, *consoles}:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/live", headers={"Authorization": f"Bearer {tok}"}
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            cursors[tok] = (json.loads(r.read())["cursor"], r.headers["ETag"])
    seconds = args.minutes * 60
    pushed: Counter[str] = Counter()
    wall_cursors = [[cursors[admin][0]] for _ in range(args.walls)]
    walls = [
        asyncio.create_task(_stream(port, admin, cursors[admin][0], seconds + 5, pushed, c))
        for c in wall_cursors
    ]
    # The plan: (due offset, path, raw request), sorted.
    plan: list[tuple[float, str, bytes]] = []
    for unit_id, kind, _ in units:
        period = GRID_WORKER_PERIOD if kind == "grid_worker" else FORCE_PERIOD
        t = rng.uniform(0, period)
        while t < seconds:
            lon, lat = data["points"][rng.randrange(len(data["points"]))]
            body = f'{{"lon":{lon:.6f},"lat":{lat:.6f}}}'.encode()
            plan.append(
                (t, "fix", hot_paths._post(port, f"/api/v1/units/{unit_id}/position", admin, body))
            )
            t += period
    rate = busiest_hour_rate() * args.report_factor / 3600
    t = rng.expovariate(rate)
    while t < seconds:
        lon, lat = data["points"][rng.randrange(len(data["points"]))]
        matter = data["matters"][rng.randrange(len(data["matters"]))]
        body = f'{{"matter_code":"{matter}","lon":{lon:.7f},"lat":{lat:.7f}}}'.encode()
        plan.append((t, "report", hot_paths._post(port, "/api/v1/incidents", admin, body)))
        t += rng.expovariate(rate)
    plan.sort(key=lambda x: x[0])

    # The day starts once the server's start-up work is over (each worker's turn process
    # loads the district in the background for several seconds of CPU), as a district's
    # day does, not with the deployment's first minute.
    settled_s = await api_load.settled(pgid)
    before = cpu_snapshot(pgid)
    start = time.perf_counter()
    pollers = [
        asyncio.create_task(
            _poller(
                port,
                tok,
                [cursors[tok][0]],
                cursors[tok][1],
                start,
                [i / CONSOLES + k for k in range(int(seconds))],
                stats["console_poll"],
            )
        )
        for i, tok in enumerate(consoles)
    ] + [
        asyncio.create_task(
            _poller(
                port,
                admin,
                c,
                cursors[admin][1],
                start,
                [w / max(args.walls, 1) * 10 + k for k in range(0, int(seconds), 10)],
                stats["wall_poll"],
            )
        )
        for w, c in enumerate(wall_cursors)
    ]
    for offset, path, raw in plan:
        wait = start + offset - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        pools[path].put(start + offset, raw)
    # What was due is answered within a grace second, or counts as backlog.
    await asyncio.sleep(1.0)
    after = cpu_snapshot(pgid)
    wall = time.perf_counter() - start
    for p in pools.values():
        await p.close()
    for task in pollers:
        task.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    for w in walls:
        w.cancel()
    await asyncio.gather(*walls, return_exceptions=True)
    cpu = cpu_delta(before, after)
    total = sum(s.done for s in stats.values())
    return {
        "seconds": wall,
        "settled_s": settled_s,
        "paths": {
            name: {
                "due": s.due,
                "rate": s.done / wall,
                "p50_ms": _percentile(s.latencies, 50),
                "p99_ms": _percentile(s.latencies, 99),
                "backlog": s.due - s.done - sum(s.failures.values()),
                "errors": sum(n for st, n in s.statuses.items() if st >= 400)
                + sum(s.failures.values()),
                "statuses": dict(s.statuses),
                # A p99 of few requests is the worst few: say when in the day they were due.
                "slowest": sorted(
                    (
                        (lat * 1e3, due - start)
                        for lat, due in zip(s.latencies, s.dues, strict=True)
                    ),
                    reverse=True,
                )[:3],
                "failures": dict(s.failures),
            }
            for name, s in stats.items()
        },
        "pushed_events": pushed["events"],
        "server_cpu_ms_per_request": cpu["server"] * 1e3 / max(total, 1),
        "postgres_cpu_ms_per_request": cpu["postgres"] * 1e3 / max(total, 1),
        "server_cores": cpu["server"] / wall,
        "postgres_cores": cpu["postgres"] / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the day run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report-factor", type=float, default=10.0)
    parser.add_argument("--walls", type=int, default=WALLS, help="wall displays streaming")
    parser.add_argument("--ceiling-seconds", type=float, default=5.0, help="bare runs, each")
    parser.add_argument("--url", default=api_load.DEFAULT_URL)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log", type=Path, default=Path("/tmp/gridgov-bench-day.log"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, api_load._on_signal)
    signal.signal(signal.SIGINT, api_load._on_signal)
    print(
        f"district day: {args.minutes:g} min, {args.workers} worker(s), reports at "
        f"{args.report_factor:g}x the busiest hour ({busiest_hour_rate() * args.report_factor:.0f}"
        f"/h), {args.walls} walls streaming, {CONSOLES} consoles polling; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    prepare_template(args.url)
    units = [u for u, _, _ in _units(args.url)]
    try:
        with cloned_database(args.url) as db_url:
            proc, port = start_server("gridgov", args.workers, db_url, args.log)
            try:
                result = api_load._run_async(day(port, db_url, args, proc.pid))
            finally:
                stop_server(proc)
        ceiling_args = argparse.Namespace(
            workers=args.workers,
            concurrency=16,
            warmup=1.0,
            seconds=args.ceiling_seconds,
            seed=args.seed,
            batch=1,
            log=args.log,
        )
        ceilings = {
            p: hot_paths.run_path(p, args.url, units, ceiling_args)
            for p in ("bare-update", "bare-read")
        }
    finally:
        stop_all_servers()
    print(f"the day began once the server's start-up settled ({result['settled_s']:.0f} s)")
    print(
        f"\n{'path':<14} {'due':>7} {'done/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'backlog':>7}"
    )
    for name, r in result["paths"].items():
        print(
            f"{name:<14} {r['due']:>7} {r['rate']:>7.1f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['errors']:>6} {r['backlog']:>7}"
        )
    slow = result["paths"]["report"]["slowest"]
    print("slowest reports: " + ", ".join(f"{ms:.0f} ms due at {at:.0f} s" for ms, at in slow))
    print(
        f"pushed change events received by the {args.walls} walls: {result['pushed_events']}\n"
        f"CPU per request: server {result['server_cpu_ms_per_request']:.2f} ms, PostgreSQL "
        f"{result['postgres_cpu_ms_per_request']:.2f} ms; busy cores: server "
        f"{result['server_cores']:.2f}, PostgreSQL {result['postgres_cores']:.2f}"
    )
    for name, c in ceilings.items():
        print(
            f"ceiling {name:<12} {c['rate']:7.0f}/s  p99 {c['p99_ms']:6.1f} ms "
            "(closed loop, 16 connections)"
        )
    if args.json:
        args.json.write_text(json.dumps({"day": result, "ceilings": ceilings}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
