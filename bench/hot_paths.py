"""Benchmark: the AVL position fix, the batch of fixes and the live feed's 304, under uvicorn.

    python bench/hot_paths.py [--seconds 10] [--concurrency 16] [--workers 2]
                              [--paths bare-update,fix,batch,bare-read,poll304]

Same server, database and load generator as ``bench/api_load.py`` (a fresh clone of the
PostGIS template per path, ``uvicorn --factory``, a closed loop of keep-alive connections).
The baselines run in the same process against a bare FastAPI app defined here
(:func:`bare_hot_app_from_env`): ``bare-update`` is one ``UPDATE units SET position ...`` per
POST, ``bare-read`` one one-row ``SELECT`` from ``units`` per GET, each a sync route over
gridgov's engine factory, with no authentication. The gridgov paths:

- ``fix``: ``POST /api/v1/units/{id}/position`` with an admin token, a random unit each time;
- ``batch``: ``POST /api/v1/units/positions`` with ``--batch`` fixes of random units (the
  rate printed is fixes per second);
- ``poll304``: ``GET /api/v1/live?since=...`` with ``If-None-Match`` and an admin token (the
  whole district in scope) while nothing changes;
- ``streams``: ``--streams`` open ``GET /api/v1/live/stream`` (the district) while nothing
  changes, the server's and PostgreSQL's share of a core; then one position fix and how long
  each stream took to receive it.

Ratios are printed against the bare request of the same kind (UPDATE for the fixes, read for
the poll). The machine may be shared: compare ratios, not rates, between runs.
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_load
from api_load import (
    FACTORIES,
    Window,
    _Connection,
    _percentile,
    cloned_database,
    cpu_delta,
    cpu_snapshot,
    issue_token,
    prepare_template,
    start_server,
    stop_all_servers,
    stop_server,
)

if TYPE_CHECKING:
    from fastapi import FastAPI

FACTORIES["bare-hot"] = "hot_paths:bare_hot_app_from_env"
#: Which baseline each path is compared with.
BASELINE = {"fix": "bare-update", "batch": "bare-update", "poll304": "bare-read"}


class BareFix(BaseModel):
    lon: float
    lat: float


def bare_hot_app_from_env() -> FastAPI:
    """uvicorn factory of the baselines: one UPDATE per POST, one one-row read per GET."""
    from fastapi import FastAPI
    from sqlalchemy import text

    from gridgov.settings import get_settings
    from gridgov.store import create_engine_from_url

    engine = create_engine_from_url(get_settings().database_url)
    update = text(
        "UPDATE units SET position = ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), "
        "position_time = now(), position_source = 'avl' WHERE unit_id = :unit_id"
    )
    read = text(
        "SELECT unit_id, status, on_duty, ST_X(position) AS lon, ST_Y(position) AS lat, "
        "position_time FROM units WHERE unit_id = :unit_id"
    )
    app = FastAPI(title="bare update and read")

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/bare/units/{unit_id}/position")
    def fix(unit_id: str, body: BareFix) -> dict[str, Any]:
        with engine.begin() as connection:
            n = connection.execute(update, {"unit_id": unit_id, **body.model_dump()}).rowcount
        return {"unit_id": unit_id, "stored": bool(n)}

    @app.get("/bare/units/{unit_id}")
    def one(unit_id: str) -> dict[str, Any]:
        with engine.connect() as connection:
            row = connection.execute(read, {"unit_id": unit_id}).mappings().first()
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}

    return app


def _unit_ids(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(api_load._libpq(url)) as conn:
        return [r[0] for r in conn.execute("SELECT unit_id FROM units ORDER BY unit_id")]


def _post(port: int, path: str, token: str | None, body: bytes) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _get(port: int, path: str, token: str | None, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}{extra}\r\n".encode()


def _first_poll(port: int, token: str) -> tuple[str, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/live", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["cursor"], r.headers["ETag"]


def requests_for(
    path: str, port: int, token: str | None, units: list[str], args: argparse.Namespace
) -> Callable[[random.Random], bytes]:
    """A maker of the next raw request of ``path``."""
    lon0, lat0 = 104.05, 30.69

    def point(rng: random.Random) -> str:
        lon, lat = lon0 + rng.uniform(-0.03, 0.03), lat0 + rng.uniform(-0.03, 0.03)
        return f'"lon":{lon:.6f},"lat":{lat:.6f}'

    if path == "bare-update":
        return lambda rng: _post(
            port, f"/bare/units/{rng.choice(units)}/position", None, f"{{{point(rng)}}}".encode()
        )
    if path == "bare-read":
        return lambda rng: _get(port, f"/bare/units/{rng.choice(units)}", None)
    if path == "fix":
        return lambda rng: _post(
            port, f"/api/v1/units/{rng.choice(units)}/position", token, f"{{{point(rng)}}}".encode()
        )
    if path == "batch":

        def batch(rng: random.Random) -> bytes:
            fixes = ",".join(
                f'{{"unit_id":"{u}",{point(rng)}}}' for u in rng.sample(units, args.batch)
            )
            return _post(port, "/api/v1/units/positions", token, f'{{"fixes":[{fixes}]}}'.encode())

        return batch
    if path == "poll304":
        assert token is not None
        cursor, etag = _first_poll(port, token)
        raw = _get(port, f"/api/v1/live?since={cursor}", token, f"If-None-Match: {etag}\r\n")
        return lambda rng: raw
    msg = f"unknown path {path!r}"
    raise ValueError(msg)


async def drive(
    port: int, make: Callable[[random.Random], bytes], concurrency: int, seconds: float, seed: int
) -> Window:
    """A closed loop of ``concurrency`` keep-alive connections for ``seconds``."""
    window = Window()
    conns = [_Connection("127.0.0.1", port) for _ in range(concurrency)]
    clock = time.perf_counter

    async def worker(conn: _Connection, rng: random.Random, deadline: float) -> None:
        while clock() < deadline:
            raw = make(rng)
            t = clock()
            try:
                status, body = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                window.failures[type(exc).__name__] += 1
                await conn.close()
                continue
            window.latencies.append(clock() - t)
            window.statuses[status] += 1
            window.samples.setdefault(status, body[:300])

    start = clock()
    await asyncio.gather(
        *[worker(c, random.Random(seed + i), start + seconds) for i, c in enumerate(conns)]
    )
    window.seconds = clock() - start
    await asyncio.gather(*[c.close() for c in conns])
    return window


async def idle_streams(
    port: int, token: str, unit_id: str, n: int, seconds: float, pgid: int
) -> dict[str, Any]:
    """``n`` open streams of the district while nothing changes: the server's CPU; then one
    position fix, and how long each stream took to hear of it."""
    cursor, _ = _first_poll(port, token)
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_get(port, f"/api/v1/live/stream?since={cursor}&max_seconds=600", token))
        opened.append((reader, writer))
    for reader, _ in opened:
        await reader.readuntil(b"\r\n\r\n")
    settled_s = await api_load.settled(pgid)
    before = cpu_snapshot(pgid)
    await asyncio.sleep(seconds)
    idle = cpu_delta(before, cpu_snapshot(pgid))
    heard: list[float] = []

    async def listen(reader: asyncio.StreamReader, sent: list[float]) -> None:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            if b"event: change" in chunk:
                heard.append(time.perf_counter() - sent[0])
                return

    sent = [0.0]
    tasks = [asyncio.create_task(listen(r, sent)) for r, _ in opened]
    body = b'{"lon":104.05,"lat":30.69}'
    conn = _Connection("127.0.0.1", port)
    sent[0] = time.perf_counter()
    status, _ = await conn.request(_post(port, f"/api/v1/units/{unit_id}/position", token, body))
    await asyncio.wait(tasks, timeout=10)
    for t in tasks:
        t.cancel()
    await conn.close()
    for _, writer in opened:
        writer.close()
    return {
        "streams": n,
        "settled_s": settled_s,
        "idle_server_core_share": idle["server"] / idle["wall"],
        "idle_postgres_core_share": idle["postgres"] / idle["wall"],
        "fix_status": status,
        "delivered": len(heard),
        "delivery_p50_ms": _percentile(heard, 50),
        "delivery_p99_ms": _percentile(heard, 99),
    }


def run_streams(url: str, units: list[str], args: argparse.Namespace) -> dict[str, Any]:
    with cloned_database(url) as db_url:
        token = issue_token(db_url)
        proc, port = start_server("gridgov", args.workers, db_url, args.log)
        try:
            return dict(
                api_load._run_async(
                    idle_streams(port, token, units[0], args.streams, args.seconds, proc.pid)
                )
            )
        finally:
            stop_server(proc)


def run_path(path: str, url: str, units: list[str], args: argparse.Namespace) -> dict[str, Any]:
    app = "bare-hot" if path.startswith("bare") else "gridgov"
    with cloned_database(url) as db_url:
        token = None if app == "bare-hot" else issue_token(db_url)
        proc, port = start_server(app, args.workers, db_url, args.log)
        try:
            make = requests_for(path, port, token, units, args)
            api_load._run_async(api_load.settled(proc.pid))
            api_load._run_async(drive(port, make, args.concurrency, args.warmup, args.seed))
            before = cpu_snapshot(proc.pid)
            window = api_load._run_async(
                drive(port, make, args.concurrency, args.seconds, args.seed)
            )
            cpu = cpu_delta(before, cpu_snapshot(proc.pid))
        finally:
            stop_server(proc)
    n = len(window.latencies)
    per = args.batch if path == "batch" else 1
    ok = sum(v for s, v in window.statuses.items() if 200 <= s < 400)
    return {
        "path": path,
        "requests": n,
        "rate": n / window.seconds,
        "items_per_s": n * per / window.seconds,
        "p50_ms": _percentile(window.latencies, 50),
        "p99_ms": _percentile(window.latencies, 99),
        "errors": n - ok + sum(window.failures.values()),
        "statuses": dict(window.statuses),
        "server_cpu_ms": cpu["server"] * 1e3 / n if n else float("nan"),
        "postgres_cpu_ms": cpu["postgres"] * 1e3 / n if n else float("nan"),
        "samples": {s: b.decode("utf-8", "replace") for s, b in window.samples.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=200, help="fixes per batch request")
    parser.add_argument("--paths", default="bare-update,fix,batch,bare-read,poll304,streams")
    parser.add_argument("--streams", type=int, default=200, help="open streams of 'streams'")
    parser.add_argument("--url", default=api_load.DEFAULT_URL)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log", type=Path, default=Path("/tmp/gridgov-bench-hot.log"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, api_load._on_signal)
    signal.signal(signal.SIGINT, api_load._on_signal)
    print(
        f"gridgov hot paths: {args.workers} worker(s), {args.concurrency} connections, "
        f"{args.seconds:g} s each after {args.warmup:g} s warm-up; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    prepare_template(args.url)
    units = _unit_ids(args.url)
    results: dict[str, dict[str, Any]] = {}
    try:
        for path in [p.strip() for p in args.paths.split(",") if p.strip()]:
            if path == "streams":
                results[path] = s = run_streams(args.url, units, args)
                # PostgreSQL's share counts every backend of the server (other users' too).
                print(
                    f"  streams      {s['streams']} open, idle {args.seconds:g} s (after "
                    f"{s['settled_s']:.0f} s for the server's start-up to settle): "
                    f"server {s['idle_server_core_share']:.1%} of a core, PostgreSQL "
                    f"{s['idle_postgres_core_share']:.1%}; a fix reached {s['delivered']} "
                    f"streams, p50 {s['delivery_p50_ms']:.0f} ms, "
                    f"p99 {s['delivery_p99_ms']:.0f} ms",
                    flush=True,
                )
                continue
            r = results[path] = run_path(path, args.url, units, args)
            print(
                f"  {path:<12} {r['rate']:7.0f} req/s {r['items_per_s']:8.0f} items/s "
                f"p50 {r['p50_ms']:6.1f} p99 {r['p99_ms']:6.1f} ms  srv {r['server_cpu_ms']:5.2f} "
                f"pg {r['postgres_cpu_ms']:5.2f} ms/req  errors {r['errors']} {r['statuses']}",
                flush=True,
            )
            if r["errors"]:
                print(f"    sample: {r['samples']}")
    finally:
        stop_all_servers()
    print()
    for path, r in results.items():
        base = results.get(BASELINE.get(path, ""))
        if path == "streams":
            continue
        if base:
            print(
                f"  {path:<12} {r['items_per_s']:8.0f}/s vs {BASELINE[path]} "
                f"{base['rate']:6.0f}/s = {r['items_per_s'] / base['rate']:5.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
