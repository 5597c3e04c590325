"""Benchmark: the intake's two transactions, replayed without a server, paired with a baseline.

    python bench/turn_replay.py [--batches 80] [--warm 20] [--pairs 3] [--against DIR]
                                [--url postgresql+psycopg://postgres@127.0.0.1:5432/gridgov_bench]

Replays a fixed sequence of batches of 8 reports (seeded random matters at the reference
district's micro-grid points) through the intake's store transaction
(:func:`gridgov.store.store_batch`) and its turn (:func:`gridgov.store.dispatch_batch` with
:func:`gridgov.service.intake_batch.turn_batch`), in one process, on a fresh clone of the
``api_load.py`` template. It prints the CPU a report of the process (Python: the store's
statements, the decisions, the writes) and of the PostgreSQL backends it used.

With ``--against DIR`` (another checkout of gridgov, e.g. ``git worktree add /tmp/base
HEAD~1``) each pair runs the baseline's code at the same time as this checkout's, each on its
own clone: the machine's speed changes by a third from one minute to the next here, and two
runs side by side see the same machine. It then prints this checkout's CPU as a ratio of the
baseline's, pair by pair. The HTTP layer, the turn process and the Idempotency-Key are not in
it: ``api_load.py`` measures the whole path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from api_load import DEFAULT_URL, cloned_database, prepare_template  # noqa: E402

BATCH = 8


def _backend_ticks(monitor: Any, database: str) -> int:
    """CPU clock ticks so far of every backend connected to ``database`` (Linux /proc)."""
    rows = monitor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))
    total = 0
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def replay(url: str, batches: int, warm: int, seed: int) -> dict[str, float]:
    """One replay on the database at ``url`` (a clone): CPU ms a report of this process and
    of its PostgreSQL backends, over the batches after the ``warm`` first."""
    import psycopg
    from sqlalchemy.engine import make_url

    from gridgov import dispatch, store
    from gridgov.service import intake_batch, turn_process
    from gridgov.workflow import Role, State

    engine = store.open_store(url)
    ctx = store.context_from_store(engine)
    micro = store.read_stored_areas(engine, "microgrid").sort_values("code")
    points = micro.geometry.representative_point()
    xy = list(zip(points.x.tolist(), points.y.tolist(), strict=True))
    matters = sorted(store.read_matters(engine)["code"].tolist())
    rng = random.Random(seed)
    start = datetime.now(UTC)
    plan = []
    for b in range(warm + batches):
        now = start + timedelta(seconds=b)
        creates, reports = [], []
        for i in range(BATCH):
            lon, lat = rng.choice(xy)
            matter = ctx.catalog.get(rng.choice(matters))
            incident = dispatch.Incident(
                incident_id=f"REPLAY-{b}-{i}",
                matter_code=matter.code,
                lon=lon,
                lat=lat,
                reported_at=now,
            )
            placement = dispatch.locate_incident(incident, ctx)
            creates.append(
                {
                    "incident": incident,
                    "placement": placement,
                    "source": "api",
                    "now": now,
                    "reporter": None,
                    "description": None,
                    "check_duplicates": True,
                    "matter": matter,
                    "claim": None,
                }
            )
            reports.append(
                turn_process.Report(incident, placement, matter, now, "bench", Role.SYSTEM)
            )
        plan.append((creates, reports))

    def run(part: list[Any]) -> None:
        for creates, reports in part:
            stored = store.store_batch(engine, creates).stored
            waiting = [
                r
                for r, s in zip(reports, stored, strict=True)
                if not isinstance(s, Exception) and s.state == str(State.REGISTERED)
            ]
            if waiting:
                store.dispatch_batch(engine, ctx, lambda w=waiting: intake_batch.turn_batch(w, ctx))

    database = make_url(url).database
    admin = make_url(url).set(database="postgres", drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as mon:
        run(plan[:warm])
        ticks0, cpu0, wall0 = _backend_ticks(mon, database), time.process_time(), time.time()
        run(plan[warm:])
        ticks1, cpu1, wall1 = _backend_ticks(mon, database), time.process_time(), time.time()
    engine.dispose()
    n = batches * BATCH
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "client_ms": 1000 * (cpu1 - cpu0) / n,
        "pg_ms": 1000 * (ticks1 - ticks0) / hz / n,
        "wall_ms": 1000 * (wall1 - wall0) / n,
    }


def _child(args: argparse.Namespace) -> None:
    with cloned_database(args.url) as url:
        result = replay(url, args.batches, args.warm, args.seed)
    print(json.dumps(result), flush=True)


def _spawn(checkout: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--batches={args.batches}",
        f"--warm={args.warm}",
        f"--seed={args.seed}",
        f"--url={args.url}",
    ]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        msg = f"a replay failed (exit {proc.returncode})"
        raise SystemExit(msg)
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=80, help="timed batches of 8 reports")
    parser.add_argument("--warm", type=int, default=20, help="untimed batches first")
    parser.add_argument("--pairs", type=int, default=3, help="runs (side by side with --against)")
    parser.add_argument("--against", type=Path, default=None, help="a baseline checkout")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--url", default=DEFAULT_URL, help="template database (api_load.py's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    prepare_template(args.url)
    print(
        f"intake replay, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}; {args.batches} batches of {BATCH} after "
        f"{args.warm} untimed; CPU ms a report (this process, its PostgreSQL backends)"
    )
    if args.against is not None:
        print(f"baseline: {args.against} (run at the same time as this checkout, {ROOT})")
    ratios: dict[str, list[float]] = {"client_ms": [], "pg_ms": []}
    for pair in range(1, args.pairs + 1):
        mine = _spawn(ROOT, args)
        base = _spawn(args.against, args) if args.against is not None else None
        got = _result(mine)
        line = f"  run {pair}: this {got['client_ms']:.3f} + {got['pg_ms']:.3f}"
        if base is not None:
            theirs = _result(base)
            line += f"; baseline {theirs['client_ms']:.3f} + {theirs['pg_ms']:.3f}; ratio "
            line += ", ".join(
                f"{key[:-3]} {got[key] / theirs[key]:.3f}" for key in ("client_ms", "pg_ms")
            )
            for key in ratios:
                ratios[key].append(got[key] / theirs[key])
        print(line, flush=True)
    if args.against is not None:
        print(
            "median ratio, this / baseline: "
            + ", ".join(f"{k[:-3]} {statistics.median(v):.3f}" for k, v in ratios.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
