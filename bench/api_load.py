"""Benchmark: incident reports with automatic dispatch through the API, under uvicorn, on PostGIS.

    python bench/api_load.py [--seconds 20] [--concurrency 32] [--workers 1,2]
                             [--url postgresql+psycopg://postgres@127.0.0.1:5432/gridgov_bench]

Starts ``uvicorn --factory api.app:app_from_env`` as a deployment would (uvloop, httptools,
``--workers N``, no access log) on loopback against a PostGIS copy of the reference district,
and drives ``POST /api/v1/incidents`` (random matter, a micro-grid's representative point, an
admin bearer token, an ``Idempotency-Key`` per request) with a closed loop of ``--concurrency``
keep-alive connections. In the same run it drives a bare FastAPI app (defined here,
:func:`bare_app_from_env`) whose one POST endpoint inserts one row on the same server, under the
same uvicorn settings and load, as the ratio baseline, and (``--single-variant``, on by default)
gridgov again with the micro-batched intake off (``GRIDGOV_INTAKE_BATCH_MAX=0``), so that the
batched and the one-by-one intake are compared in one run. See bench/README.md for figures.

With ``--against DIR`` (another checkout of gridgov, e.g. ``git worktree add /tmp/base HEAD~1``,
run on this checkout's environment) the run is paired instead: gridgov from this checkout and
from DIR, alternated ``--pairs`` times (the order swapped each pair), and each pair's ratios
this/baseline of rate, p99, CPU a report and the turn's held time, with their medians. The
machine's speed moves by a third between runs minutes apart, so a change of a tenth shows only
in pairs.

The database at ``--url`` is the template: it is initialised and loaded with the reference
district if it holds none, and never written to otherwise. Every measured configuration runs on
a fresh clone of it (``<name>_run_<pid>``, dropped at the end), so configurations start from
the same state.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # the server processes import this module: keep its imports light
    from fastapi import FastAPI

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/gridgov_bench"
BARE_TABLE = "bench_bare_reports"
POOL_ENV = "GRIDGOV_BENCH_POOL_SIZE"
TARGET_RATE = 500.0
TARGET_P99_MS = 200.0
#: The issue's criterion: reports at this share of the bare insert's rate in the same run.
TARGET_RATIO = 0.3
#: Incident states the reset between rounds closes (gridgov.workflow.OPEN_STATES).
OPEN_STATES = (
    "reported",
    "registered",
    "dispatched",
    "acknowledged",
    "on_scene",
    "resolved",
    "verified",
)


# --------------------------------------------------------------------------------------------
# the baseline: a bare FastAPI app that inserts one row per POST
# --------------------------------------------------------------------------------------------


class BareReportIn(BaseModel):
    matter_code: str = Field(min_length=1, max_length=64)
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class BareReportOut(BaseModel):
    id: int
    matter_code: str


def _pool_kwargs() -> dict[str, int]:
    # Set by the bench in the server's environment (0: whatever create_engine_from_url gives,
    # i.e. the deployment's own pool settings).
    size = int(os.environ.get(POOL_ENV, "0"))
    return {"pool_size": size, "max_overflow": 0} if size > 0 else {}


def pooled_gridgov_app_from_env() -> FastAPI:
    """uvicorn factory: gridgov's app exactly, but over an engine whose pool holds as many
    connections as the thread pool has threads (an experiment, see ``--pool-variant``)."""
    from api.app import create_app
    from gridgov.settings import get_settings
    from gridgov.store import create_engine_from_url

    return create_app(engine=create_engine_from_url(get_settings().database_url, **_pool_kwargs()))


def bare_app_from_env() -> FastAPI:
    """uvicorn factory of the baseline: one POST endpoint, one INSERT, nothing else.

    gridgov's engine factory (``create_engine_from_url``, so ``pool_pre_ping`` too) and
    database URL setting, a pool of ``--bare-pool`` connections (default 40, the size of the
    thread pool), a pydantic body and a sync route run in the thread pool as gridgov's routes
    are. No authentication, no idempotency, no dispatch.
    """
    from fastapi import FastAPI
    from sqlalchemy import text

    from gridgov.settings import get_settings
    from gridgov.store import create_engine_from_url

    engine = create_engine_from_url(get_settings().database_url, **_pool_kwargs())
    insert = text(
        f"INSERT INTO {BARE_TABLE} (matter_code, geom, created_at) VALUES "
        "(:matter_code, ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), now()) RETURNING id"
    )

    app = FastAPI(title="bare insert")

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/incidents", response_model=BareReportOut, status_code=201)
    def create(body: BareReportIn) -> dict[str, Any]:
        with engine.begin() as connection:
            new_id = connection.execute(insert, body.model_dump()).scalar_one()
        return {"id": new_id, "matter_code": body.matter_code}

    return app


# --------------------------------------------------------------------------------------------
# database: the template, per-configuration clones, the reset between rounds
# --------------------------------------------------------------------------------------------


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin_execute(url: str, *statements: str) -> None:
    """Run statements on the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    import psycopg

    with psycopg.connect(_libpq(_with_database(url, "postgres")), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def prepare_template(url: str) -> dict[str, Any]:
    """Make sure ``url`` holds an initialised store with the reference district loaded."""
    import psycopg
    from sqlalchemy.engine import make_url

    from gridgov import store
    from gridgov.catalog import load_catalog
    from gridgov.reference import read_reference_district
    from gridgov.settings import get_settings

    name = make_url(url).database
    with psycopg.connect(_libpq(_with_database(url, "postgres")), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not found:
            conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    store.init_db(url)
    engine = store.open_store(url)
    try:
        loaded = sum(store.summarize(engine)["areas"].values())
        if not loaded:
            print(f"loading the reference district into {name} ...", flush=True)
            ref = read_reference_district(get_settings().data_dir)
            store.load_district(
                engine,
                ref.gdf_areas,
                gdf_offices=ref.gdf_offices,
                gdf_units=ref.gdf_units,
                matters=list(load_catalog()),
                gdf_nodes=ref.gdf_nodes,
                gdf_links=ref.gdf_links,
                name="jinniu-reference",
                source=str(get_settings().data_dir),
            )
        micro = store.read_stored_areas(engine, "microgrid")
        points = micro.geometry.representative_point()
        matters = store.read_matters(engine)
        units = store.read_units(engine)
        with engine.connect() as connection:
            from sqlalchemy import text

            incidents = connection.execute(text("SELECT count(*) FROM incidents")).scalar()
    finally:
        engine.dispose()
    return {
        "points": list(zip(points.x.tolist(), points.y.tolist(), strict=True)),
        "matters": matters["code"].tolist(),
        "units": len(units),
        "units_by_kind": units["kind"].value_counts().to_dict(),
        "template_incidents": int(incidents or 0),
    }


@contextmanager
def cloned_database(template_url: str) -> Iterator[str]:
    """A fresh copy of the template database for one configuration, dropped afterwards."""
    from sqlalchemy.engine import make_url

    template = make_url(template_url).database
    # One name per bench process: two runs at once must not drop each other's copy.
    clone = f"{template}_run_{os.getpid()}"
    _admin_execute(
        template_url,
        f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)',
        f'CREATE DATABASE "{clone}" TEMPLATE "{template}"',
    )
    try:
        yield _with_database(template_url, clone)
    finally:
        _admin_execute(template_url, f'DROP DATABASE IF EXISTS "{clone}" WITH (FORCE)')


def create_bare_table(url: str) -> None:
    import psycopg

    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}")
        conn.execute(
            f"CREATE TABLE {BARE_TABLE} (id bigserial PRIMARY KEY, matter_code text NOT NULL, "
            "geom geometry(Point, 4326) NOT NULL, created_at timestamptz NOT NULL)"
        )


def issue_token(url: str) -> str:
    from gridgov import store

    engine = store.open_store(url)
    try:
        _, secret = store.issue_credential(engine, "admin", label="bench/api_load.py")
    finally:
        engine.dispose()
    return secret


def reset_between_rounds(url: str) -> None:
    """Outside the timed window: every unit free again and every open incident closed.

    Units finish their jobs and incidents get closed in real life too, at a pace no 500/s burst
    matches (the reference district has 8 fire engines): without this, later rounds would
    measure a district with no free unit and thousands of open incidents to check duplicates
    against. Plain SQL (no events), since only the bench's clone is touched.
    """
    import psycopg

    states = ", ".join(f"'{s}'" for s in OPEN_STATES)
    with psycopg.connect(_libpq(url)) as conn, conn.transaction():
        conn.execute(
            "UPDATE assignments SET active = false, released_at = greatest(now(), assigned_at), "
            "release_reason = 'bench: freed between rounds' WHERE active"
        )
        conn.execute(
            "UPDATE units SET status = 'available', busy_incident_id = NULL WHERE status = 'busy'"
        )
        conn.execute(
            f"UPDATE incidents SET status = 'closed', updated_at = now() WHERE status IN ({states})"
        )


def hold_every_street(url: str) -> None:
    """Every street of the clone in confirm mode, priority 1 included, as a commander sets it:
    each report is stored, registered and answered, and none is dispatched (the held variant)."""
    from gridgov import store

    engine = store.open_store(url)
    try:
        now = datetime.now(UTC)
        for code in store.read_stored_areas(engine, "street")["code"]:
            store.write_street_mode(engine, code, "confirm", False, now=now, by="bench")
    finally:
        engine.dispose()


def sessions_and_xid(url: str) -> tuple[int, int]:
    """Sessions opened on the database so far (each one a new PostgreSQL backend), and the
    server's transaction id counter: it moves once per transaction that writes (and once for
    this reading), at once, where the statistics' commit counts lag by up to seconds."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute(
            "SELECT sessions, pg_current_xact_id()::text::bigint FROM pg_stat_database "
            "WHERE datname = %s",
            (name,),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def outcome_counts(url: str, since: datetime) -> dict[str, int]:
    """What became of the reports created since ``since`` (read before the reset)."""
    import psycopg

    out: dict[str, int] = {}
    with psycopg.connect(_libpq(url)) as conn:
        for status, n in conn.execute(
            "SELECT status, count(*) FROM incidents WHERE created_at >= %s GROUP BY status",
            (since,),
        ):
            out[f"incident:{status}"] = n
        for status, level, n in conn.execute(
            "SELECT d.status, coalesce(d.level, '-'), count(*) FROM dispatches d "
            "WHERE d.created_at >= %s GROUP BY 1, 2",
            (since,),
        ):
            out[f"dispatch:{status}"] = out.get(f"dispatch:{status}", 0) + n
            out[f"level:{level}"] = out.get(f"level:{level}", 0) + n
    return out


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc (server processes, PostgreSQL backends, this process)
# --------------------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stats() -> Iterator[tuple[int, str, int, int, float]]:
    """(pid, command name, parent, process group, user+system CPU seconds) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        # fields after the name: state ppid pgrp ... utime(14th overall) stime(15th)
        yield int(entry), name, int(rest[1]), int(rest[2]), (int(rest[11]) + int(rest[12])) / _TICK


def cpu_snapshot(server_pgid: int) -> dict[str, Any]:
    """CPU seconds so far: per process (server group, the intake's turn processes among them,
    PostgreSQL), this process, the machine."""
    server: dict[int, float] = {}
    parents: dict[int, int] = {}
    postgres: dict[int, float] = {}
    for pid, name, ppid, pgrp, cpu in _proc_stats():
        if pgrp == server_pgid:
            server[pid], parents[pid] = cpu, ppid
        elif name == "postgres" or name.startswith("postgres:"):
            postgres[pid] = cpu
    # uvicorn's master starts the workers, and each worker its turn process: the group's
    # grandchildren are the turn processes (and their idle resource trackers).
    turn = {
        pid: cpu
        for pid, cpu in server.items()
        if parents[pid] != server_pgid and parents[pid] in server
    }
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # Whole machine: processes that lived and died inside the window (a PostgreSQL backend
    # per new connection) are missing from the per-process sums, never from this.
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    idle = int(fields[3]) + int(fields[4])
    machine = (sum(int(f) for f in fields[:8]) - idle) / _TICK
    return {
        "server": server,
        "turn": turn,
        "postgres": postgres,
        "generator": usage.ru_utime + usage.ru_stime,
        "machine": machine,
        "wall": time.perf_counter(),
    }


def cpu_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """CPU seconds spent between two snapshots (per process: those alive at the second)."""
    out = {}
    for key in ("server", "turn", "postgres"):
        out[key] = sum(cpu - before[key].get(pid, 0.0) for pid, cpu in after[key].items())
    for key in ("generator", "machine", "wall"):
        out[key] = after[key] - before[key]
    return out


async def settled(pgid: int, limit_s: float = 120.0) -> float:
    """Seconds until the server's processes use under 2 % of a core for a whole second. Each
    worker starts its turn process in the background, which loads the district for seconds
    of CPU; counted in the window, that start-up was read as the idle streams' cost."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        before = cpu_snapshot(pgid)
        await asyncio.sleep(1.0)
        spent = cpu_delta(before, cpu_snapshot(pgid))
        if spent["server"] < 0.02 * spent["wall"]:
            break
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# the server under test
# --------------------------------------------------------------------------------------------

_SERVERS: list[subprocess.Popen[bytes]] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _uvicorn() -> str:
    venv = Path(sys.executable).parent / "uvicorn"
    return str(venv) if venv.exists() else shutil.which("uvicorn") or "uvicorn"


FACTORIES = {
    "gridgov": "api.app:app_from_env",
    "gridgov-pool": "api_load:pooled_gridgov_app_from_env",
    # The same app with the micro-batched intake off: every report stored and dispatched alone.
    "gridgov-single": "api.app:app_from_env",
    # The same app with every street in confirm mode: reports stored and answered, none
    # dispatched, so the request path's own cost shows apart from the intake's turn.
    "gridgov-held": "api.app:app_from_env",
    "bare": "api_load:bare_app_from_env",
}


def start_server(
    app: str,
    workers: int,
    database_url: str,
    log: Path,
    pool_size: int = 0,
    turn_log: Path | None = None,
    root: Path = ROOT,
) -> tuple[Any, int]:
    """Start uvicorn as a deployment would, gridgov's app from checkout ``root``; returns
    (process, port) once /health/ready is ok."""
    port = _free_port()
    factory = FACTORIES[app]
    cmd = [
        _uvicorn(),
        "--factory",
        factory,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    if not factory.startswith("api."):  # a factory of a bench script
        cmd[1:1] = ["--app-dir", str(ROOT / "bench")]
    else:  # first on the path: its api and gridgov, in the workers and their turn processes
        cmd[1:1] = ["--app-dir", str(root)]
    env = {**os.environ, "GRIDGOV_DATABASE_URL": database_url, POOL_ENV: str(pool_size)}
    if app == "gridgov-single":
        env["GRIDGOV_INTAKE_BATCH_MAX"] = "0"
    if turn_log is not None:  # one line per intake turn, from every process that takes one
        env["GRIDGOV_TURN_LOG"] = str(turn_log)
    # One load generator on one address stands for thousands of phones and gateways: the
    # per-address and per-credential rate limits would measure themselves, not the paths.
    for limit in ("AUTH_FAILURES", "WRITES_PER_CREDENTIAL", "WRITES_PER_ADDRESS"):
        env.setdefault(f"GRIDGOV_RATE_LIMIT_{limit}", "0")
    with log.open("ab") as fh:
        # Its own session, so stopping it reaches every worker process it forked.
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    _SERVERS.append(proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"uvicorn exited with status {proc.returncode}; see {log}"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5) as r:
                if r.status == 200:
                    return proc, port
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    stop_server(proc)
    msg = f"uvicorn did not become ready within 120 s; see {log}"
    raise RuntimeError(msg)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc in _SERVERS:
        _SERVERS.remove(proc)


def stop_all_servers() -> None:
    for proc in list(_SERVERS):
        stop_server(proc)


def _on_signal(signum: int, frame: Any) -> None:
    stop_all_servers()
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------------
# the load generator: a closed loop of keep-alive HTTP/1.1 connections
# --------------------------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection. Hand-written and minimal: the client shares the 2
    cores with the server under test, so its own cost per request must stay small."""

    #: uvicorn closes a keep-alive connection idle for 5 s; like any HTTP client's pool, a
    #: connection idle longer than this is not reused (a request on one the server has just
    #: closed fails half-read, a failure of the client, not of the server).
    IDLE_S = 4.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is not None and (
            time.monotonic() - self.used > self.IDLE_S or (self.reader and self.reader.at_eof())
        ):
            await self.close()
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        body = b""
        at = lower.find(b"content-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at)
            body = await self.reader.readexactly(int(lower[at + 15 : end]))
        elif b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        self.used = time.monotonic()
        if b"connection: close" in lower:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class Window:
    """The requests of one timed window."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    samples: dict[int, bytes] = field(default_factory=dict)


class LoadGenerator:
    """``concurrency`` workers, each sending its next report as soon as the last one answered."""

    def __init__(
        self,
        port: int,
        token: str | None,
        points: list[tuple[float, float]],
        matters: list[str],
        concurrency: int,
        idempotency: bool,
        seed: int,
    ) -> None:
        self.port = port
        self.points, self.matters = points, matters
        self.concurrency = concurrency
        self.idempotency = idempotency
        self.rng = random.Random(seed)
        self.prefix = f"{os.getpid():x}{seed:x}{time.time_ns():x}"
        self.counter = 0
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.head = (
            f"POST /api/v1/incidents HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
        )
        self.connections = [_Connection("127.0.0.1", port) for _ in range(concurrency)]

    def _request(self) -> bytes:
        lon, lat = self.points[self.rng.randrange(len(self.points))]
        matter = self.matters[self.rng.randrange(len(self.matters))]
        body = f'{{"matter_code":"{matter}","lon":{lon:.7f},"lat":{lat:.7f}}}'.encode()
        head = self.head
        if self.idempotency:
            self.counter += 1
            head += f"Idempotency-Key: bench-{self.prefix}-{self.counter}\r\n"
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def _worker(self, conn: _Connection, deadline: float, window: Window) -> None:
        clock = time.perf_counter
        while clock() < deadline:
            raw = self._request()
            t = clock()
            try:
                status, body = await conn.request(raw)
            except (
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                ValueError,
            ) as exc:
                window.failures[type(exc).__name__] += 1
                await conn.close()
                continue
            window.latencies.append(clock() - t)
            window.statuses[status] += 1
            if status not in window.samples:
                window.samples[status] = body[:600]

    async def run(self, seconds: float) -> Window:
        # Fresh connections per window: between windows they sit idle past uvicorn's keep-alive
        # timeout (5 s) while the database is reset, and the server closes them.
        await self.close()
        window = Window()
        start = time.perf_counter()
        await asyncio.gather(*[self._worker(c, start + seconds, window) for c in self.connections])
        # Requests in flight at the deadline finish and count: the window is what they took.
        window.seconds = time.perf_counter() - start
        return window

    async def close(self) -> None:
        await asyncio.gather(*[c.close() for c in self.connections])


# --------------------------------------------------------------------------------------------
# one configuration
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    app: str
    workers: int
    idempotency: bool
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    failures: dict[str, int]
    outcomes: dict[str, int]
    cpu_ms: dict[str, float]
    samples: dict[int, str]
    rounds: list[dict[str, float]]
    turns: dict[str, float]
    checkout: str = ""  # "this" or "base" in a paired run (--against)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        bad = sum(n for s, n in self.statuses.items() if not 200 <= s < 300)
        return bad + sum(self.failures.values())

    @property
    def label(self) -> str:
        key = "key" if self.idempotency else "no key"
        app = f"{self.app}@{self.checkout}" if self.checkout else self.app
        return f"{app}, {self.workers}w, {key}"


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) * 1e3 if values else float("nan")


async def _drive(
    port: int,
    token: str | None,
    data: dict[str, Any],
    args: argparse.Namespace,
    idempotency: bool,
    db_url: str,
    gridgov: bool,
    pgid: int,
) -> tuple[Window, list[dict[str, Any]], dict[str, float], dict[str, int]]:
    gen = LoadGenerator(
        port, token, data["points"], data["matters"], args.concurrency, idempotency, args.seed
    )
    loop = asyncio.get_running_loop()
    try:
        warm = await gen.run(args.warmup)
        if sum(warm.statuses.values()) == 0:
            msg = f"no answer during the warm-up: {dict(warm.failures)}"
            raise RuntimeError(msg)
        total = Window()
        rounds: list[dict[str, Any]] = []
        outcomes: Counter[str] = Counter()
        cpu = dict.fromkeys(("server", "turn", "postgres", "generator", "machine", "wall"), 0.0)
        sessions = writes = 0
        remaining = args.seconds
        while remaining > 1e-9:
            span = min(args.round_seconds, remaining)
            remaining -= span
            if gridgov:
                await loop.run_in_executor(None, reset_between_rounds, db_url)
            since = datetime.now(UTC)
            opened, xid = await loop.run_in_executor(None, sessions_and_xid, db_url)
            before = cpu_snapshot(pgid)
            started = time.time()
            window = await gen.run(span)
            ended = time.time()
            after = cpu_snapshot(pgid)
            now_opened, now_xid = await loop.run_in_executor(None, sessions_and_xid, db_url)
            sessions += now_opened - opened
            # Less the id this reading took for itself.
            writes += now_xid - xid - 1
            for k, v in cpu_delta(before, after).items():
                cpu[k] += v
            if gridgov:
                outcomes.update(await loop.run_in_executor(None, outcome_counts, db_url, since))
            total.seconds += window.seconds
            total.latencies += window.latencies
            total.statuses.update(window.statuses)
            total.failures.update(window.failures)
            for s, b in window.samples.items():
                total.samples.setdefault(s, b)
            rounds.append(
                {
                    "seconds": window.seconds,
                    "requests": len(window.latencies),
                    "rate": len(window.latencies) / window.seconds,
                    "p99_ms": _percentile(window.latencies, 99),
                    "start": started,
                    "end": ended,
                }
            )
        outcomes["sessions"], outcomes["writes"] = sessions, writes
        return total, rounds, cpu, dict(outcomes)
    finally:
        await gen.close()


def run_config(
    app: str,
    workers: int,
    idempotency: bool,
    data: dict[str, Any],
    args: argparse.Namespace,
    log: Path,
    checkout: str = "",
    root: Path = ROOT,
) -> Result:
    with cloned_database(args.url) as db_url:
        if app == "bare":
            create_bare_table(db_url)
            token = None
        else:
            token = issue_token(db_url)
        if app == "gridgov-held":
            hold_every_street(db_url)
        pool = (
            args.bare_pool if app == "bare" else args.pool_variant if app == "gridgov-pool" else 0
        )
        # Beside the uvicorn log, for this configuration only (read below, then removed).
        turn_log = None if app == "bare" else log.with_name(f"{log.stem}-turns-{os.getpid()}.jsonl")
        if turn_log is not None:
            turn_log.unlink(missing_ok=True)
        proc, port = start_server(app, workers, db_url, log, pool, turn_log, root)
        try:
            if app != "bare":
                _wait_for_route(port, token, data, args.route_wait)
            _run_async(settled(proc.pid))
            window, rounds, cpu, outcomes = _run_async(
                _drive(port, token, data, args, idempotency, db_url, app != "bare", proc.pid)
            )
        finally:
            stop_server(proc)
        turns = turn_summary(turn_log, rounds) if turn_log is not None else {}
        if turn_log is not None:
            turn_log.unlink(missing_ok=True)
    n = len(window.latencies)
    wall = cpu.pop("wall")
    cpu_ms = {k: v * 1e3 / n if n else float("nan") for k, v in cpu.items()}
    cpu_ms["busy_cores"] = cpu["machine"] / wall if wall else float("nan")
    return Result(
        app=app,
        workers=workers,
        idempotency=idempotency,
        concurrency=args.concurrency,
        requests=n,
        seconds=window.seconds,
        p50_ms=_percentile(window.latencies, 50),
        p95_ms=_percentile(window.latencies, 95),
        p99_ms=_percentile(window.latencies, 99),
        max_ms=max(window.latencies) * 1e3 if n else float("nan"),
        statuses=dict(window.statuses),
        failures=dict(window.failures),
        outcomes=outcomes,
        cpu_ms=cpu_ms,
        samples={s: b.decode("utf-8", "replace") for s, b in window.samples.items()},
        rounds=rounds,
        turns=turns,
        checkout=checkout,
    )


def turn_summary(path: Path, rounds: list[dict[str, float]]) -> dict[str, float]:
    """The turns that ended within the timed rounds: their count, reports, each phase's wall
    time a report (ms), the time the turn was held a report, and the share of the rounds'
    wall time it was held (one turn at a time across every process: 1.0 is the ceiling)."""
    from gridgov.store.intake_rows import TURN_PHASES

    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    timed = [t for t in lines if any(r["start"] <= t["at"] <= r["end"] for r in rounds)]
    reports = sum(t["reports"] for t in timed)
    if not reports:
        return {}
    out: dict[str, float] = {"turns": len(timed), "reports": reports}
    for phase in TURN_PHASES:
        out[phase] = sum(t["ms"].get(phase, 0.0) for t in timed) / reports
    held = [p for p in TURN_PHASES if p != "wait"]
    out["held"] = sum(out[p] for p in held)
    # Of the held time, a report: the turn thread on a core, and ready but waiting for one
    # (the rest waits for PostgreSQL or the GIL). Lines without them (an older checkout's
    # server, a machine without schedstat) leave them out.
    for name, key in (("held_cpu", "cpu_ms"), ("held_queued", "queued_ms")):
        if all(key in t for t in timed):
            out[name] = sum(t[key].get(p, 0.0) for t in timed for p in held) / reports
    wall_ms = 1e3 * sum(r["end"] - r["start"] for r in rounds)
    out["held_share"] = out["held"] * reports / wall_ms
    return out


def print_turns(results: list[Result]) -> None:
    from gridgov.store.intake_rows import TURN_PHASES

    rows = [r for r in results if r.turns]
    if not rows:
        return
    print()
    print("the intake's turns (the server's turn log): wall ms a report in each phase; held:")
    print("every phase but the wait; of it, on cpu: the turn's thread running, queued: ready")
    print("but waiting for a core (the rest waits for PostgreSQL or the GIL); share: of the")
    print("timed wall time the turn was held")
    cols = (*TURN_PHASES, "held", "on cpu", "queued")
    head = (
        f"{'configuration':<24} {'turns':>6} {'a turn':>6} "
        + " ".join(f"{p:>8}" for p in cols)
        + f" {'share':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        t = r.turns
        values = [t[p] for p in (*TURN_PHASES, "held")]
        values += [t.get("held_cpu", float("nan")), t.get("held_queued", float("nan"))]
        print(
            f"{r.label:<24} {t['turns']:>6.0f} {t['reports'] / t['turns']:>6.1f} "
            + " ".join(f"{v:>8.2f}" for v in values)
            + f" {t['held_share']:>6.2f}"
        )


def print_pairs(results: list[Result]) -> None:
    """Each pair's ratios this/baseline (--against), and their medians."""
    import statistics

    this = [r for r in results if r.checkout == "this"]
    base = [r for r in results if r.checkout == "base"]
    if not this or len(this) != len(base):
        return

    def ratios(a: Result, b: Result) -> dict[str, float]:
        held_a, held_b = a.turns.get("held"), b.turns.get("held")
        return {
            "rate": a.rate / b.rate if b.rate else float("nan"),
            "p99": a.p99_ms / b.p99_ms if b.p99_ms else float("nan"),
            "cpu": a.cpu_ms["machine"] / b.cpu_ms["machine"],
            "held": held_a / held_b if held_a and held_b else float("nan"),
        }

    pairs = [ratios(a, b) for a, b in zip(this, base, strict=True)]
    print()
    print("this checkout against the baseline, pair by pair (this / base):")
    print(f"{'pair':<6} {'rate':>7} {'p99':>7} {'CPU a report':>13} {'turn held':>10}")
    for i, (a, b, q) in enumerate(zip(this, base, pairs, strict=True), 1):
        print(
            f"{i:<6} {q['rate']:>6.2f}x {q['p99']:>6.2f}x {q['cpu']:>12.2f}x {q['held']:>9.2f}x"
            f"   ({a.rate:.0f} against {b.rate:.0f}/s)"
        )
    med = {k: statistics.median(p[k] for p in pairs) for k in ("rate", "p99", "cpu", "held")}
    print(
        f"{'median':<6} {med['rate']:>6.2f}x {med['p99']:>6.2f}x {med['cpu']:>12.2f}x "
        f"{med['held']:>9.2f}x"
    )


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _wait_for_route(port: int, token: str | None, data: dict[str, Any], wait_s: float) -> None:
    """Poll until POST /api/v1/incidents answers 201 (the route may still be being written)."""
    deadline = time.monotonic() + wait_s
    lon, lat = data["points"][0]
    body = json.dumps({"matter_code": data["matters"][0], "lon": lon, "lat": lat}).encode()
    last = ""
    while True:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/incidents",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                if r.status == 201:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:300]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            msg = f"POST /api/v1/incidents does not answer 201 ({last})"
            raise RuntimeError(msg)
        print(f"  waiting for POST /api/v1/incidents: {last}", flush=True)
        time.sleep(min(30.0, max(1.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _share(outcomes: dict[str, int]) -> dict[str, float]:
    total = sum(v for k, v in outcomes.items() if k.startswith("incident:"))
    if not total:
        return {}
    return {
        "dispatched": outcomes.get("incident:dispatched", 0) / total,
        "unassigned": outcomes.get("incident:registered", 0) / total,
        "duplicate": outcomes.get("incident:rejected", 0) / total,
        "other": 1
        - sum(outcomes.get(f"incident:{s}", 0) for s in ("dispatched", "registered", "rejected"))
        / total,
    }


def print_table(results: list[Result]) -> None:
    head = (
        f"{'configuration':<24} {'reqs':>7} {'req/s':>7} {'p50':>7} {'p95':>7} {'p99':>7} "
        f"{'max':>7} {'err':>5} {'disp':>6} {'unas':>6} {'dup':>6} {'srv':>6} {'pg':>6} "
        f"{'turn':>5} {'gen':>5} {'all':>6} {'cores':>5} {'conns':>6} {'xacts':>5}"
    )
    print()
    print("latencies in ms; disp/unas/dup: share of reports dispatched (>= 1 unit), left")
    print("registered with no unit, rejected as duplicates; srv/pg/turn/gen/all: CPU ms per")
    print("request in the uvicorn processes, long-lived PostgreSQL backends, the intake's turn")
    print("processes (part of srv), this load generator, the whole machine; cores: busy cores")
    print("of the machine; conns: PostgreSQL sessions opened; xacts: transactions that wrote,")
    print("a request")
    print(head)
    print("-" * len(head))
    for r in results:
        share = _share(r.outcomes)

        def pct(k: str, share: dict[str, float] = share) -> str:
            return f"{share[k]:.0%}" if k in share else "-"

        xacts = r.outcomes.get("writes", 0) / max(r.requests, 1)
        print(
            f"{r.label:<24} {r.requests:>7} {r.rate:>7.0f} {r.p50_ms:>7.1f} {r.p95_ms:>7.1f} "
            f"{r.p99_ms:>7.1f} {r.max_ms:>7.0f} {r.errors:>5} {pct('dispatched'):>6} "
            f"{pct('unassigned'):>6} {pct('duplicate'):>6} {r.cpu_ms['server']:>6.2f} "
            f"{r.cpu_ms['postgres']:>6.2f} {r.cpu_ms['turn']:>5.2f} "
            f"{r.cpu_ms['generator']:>5.2f} "
            f"{r.cpu_ms['machine']:>6.2f} {r.cpu_ms['busy_cores']:>5.2f} "
            f"{r.outcomes.get('sessions', 0):>6} {xacts:>5.2f}"
        )


def print_ratios(results: list[Result]) -> None:
    bare = {r.workers: r for r in results if r.app == "bare"}
    print()
    print("gridgov against the bare insert (same workers, same run):")
    for r in results:
        if r.app == "bare" or r.workers not in bare:
            continue
        b = bare[r.workers]
        print(
            f"  {r.label:<24} {r.rate:6.0f}/s vs {b.rate:6.0f}/s = {r.rate / b.rate:5.2f}x the "
            f"rate; p99 {r.p99_ms:6.1f} vs {b.p99_ms:5.1f} ms = {r.p99_ms / b.p99_ms:5.1f}x"
        )
    print()
    print(f"target: >= {TARGET_RATE:.0f} reports/s with p99 <= {TARGET_P99_MS:.0f} ms")
    for r in results:
        if r.app != "bare":
            ok = r.rate >= TARGET_RATE and r.p99_ms <= TARGET_P99_MS and r.errors == 0
            print(
                f"  {r.label:<24} {r.rate:6.0f}/s, p99 {r.p99_ms:6.1f} ms, "
                f"{r.errors} errors: {'PASS' if ok else 'not met'}"
            )
    cores = os.cpu_count() or 1
    print()
    print(
        f"target: >= {TARGET_RATIO}x the bare insert with p99 <= {TARGET_P99_MS:.0f} ms; the "
        f"CPU a report that {cores} busy cores allow at that rate"
    )
    for r in results:
        if r.app == "bare" or r.workers not in bare:
            continue
        b = bare[r.workers]
        ok = r.rate >= TARGET_RATIO * b.rate and r.p99_ms <= TARGET_P99_MS and r.errors == 0
        # Every core busy and nothing else running: the most a report may cost at that rate.
        budget_ms = cores * 1e3 / (TARGET_RATIO * b.rate)
        print(
            f"  {r.label:<24} {r.rate / b.rate:5.2f}x, p99 {r.p99_ms:6.1f} ms: "
            f"{'PASS' if ok else 'not met'}; {budget_ms:5.2f} ms of CPU a report allowed, "
            f"{r.cpu_ms['machine']:5.2f} used"
        )
    for r in results:
        bad = {s: n for s, n in r.statuses.items() if not 200 <= s < 300}
        if bad or r.failures:
            print(f"  {r.label}: statuses {r.statuses}, failures {r.failures}")
            for s in bad:
                print(f"    HTTP {s}: {r.samples.get(s, '')[:300]}")
    for r in results:
        if r.outcomes:
            levels = {k[6:]: v for k, v in sorted(r.outcomes.items()) if k.startswith("level:")}
            print(f"  {r.label}: dispatch levels {levels}")


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def run_plan(workers: list[int], args: argparse.Namespace) -> list[tuple[str, int, bool]]:
    """The configurations of a run: (app, workers, with a key), for each worker count the bare
    insert first (unless `--only gridgov`)."""
    plan: list[tuple[str, int, bool]] = []
    for w in workers:
        if args.only != "gridgov":
            plan.append(("bare", w, False))
        if args.only != "bare":
            if args.idempotency in ("with", "both"):
                plan.append(("gridgov", w, True))
            if args.idempotency == "without" or (args.idempotency == "both" and w == workers[-1]):
                plan.append(("gridgov", w, False))
            if args.single_variant and w == workers[-1]:
                plan.append(("gridgov-single", w, args.idempotency != "without"))
            if args.held_variant and w == workers[-1]:
                if args.idempotency in ("with", "both"):
                    plan.append(("gridgov-held", w, True))
                if args.idempotency in ("without", "both"):
                    plan.append(("gridgov-held", w, False))
            if args.pool_variant and w == workers[-1]:
                plan.append(("gridgov-pool", w, args.idempotency != "without"))
    return plan


def paired_plan(
    workers: int, key: bool, against: Path, pairs: int
) -> list[tuple[str, int, bool, str, Path]]:
    """gridgov from this checkout and from ``against``, alternated, the order swapped each
    pair (so that neither always runs first on a machine that warms or cools)."""
    plan: list[tuple[str, int, bool, str, Path]] = []
    for i in range(max(1, pairs)):
        order = [("this", ROOT), ("base", against)]
        for checkout, root in order if i % 2 == 0 else order[::-1]:
            plan.append(("gridgov", workers, key, checkout, root))
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per run")
    parser.add_argument(
        "--round-seconds",
        type=float,
        default=5.0,
        help="units are freed and open incidents closed between rounds",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="untimed seconds first")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (closed loop)")
    parser.add_argument("--workers", default="1,2", help="uvicorn workers, comma-separated")
    parser.add_argument(
        "--idempotency",
        choices=("with", "without", "both"),
        default="both",
        help="send an Idempotency-Key; 'both' adds a keyless gridgov run at the "
        "largest worker count",
    )
    parser.add_argument("--only", choices=("bare", "gridgov"), default=None)
    parser.add_argument(
        "--bare-pool",
        type=int,
        default=40,
        help="connections in the baseline's pool (0: the engine's default)",
    )
    parser.add_argument(
        "--pool-variant",
        type=int,
        default=0,
        help="also run gridgov's app over an engine pool of N connections "
        "(largest worker count, with keys)",
    )
    parser.add_argument(
        "--single-variant",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run gridgov with the micro-batched intake off (largest worker count)",
    )
    parser.add_argument(
        "--held-variant",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run gridgov with every street in confirm mode (reports stored and answered, "
        "none dispatched: the request path without the turn; largest worker count)",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="template database (see above)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--route-wait",
        type=float,
        default=0.0,
        help="seconds to keep polling until POST /api/v1/incidents answers 201",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="a baseline checkout: gridgov from it and from this checkout, alternated (largest "
        "worker count; with keys unless --idempotency without)",
    )
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs with --against")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    parser.add_argument("--log", type=Path, default=Path("/tmp/gridgov-bench-uvicorn.log"))
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    workers = sorted({int(w) for w in str(args.workers).split(",") if w.strip()})
    print(
        f"gridgov API load, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}"
    )
    data = prepare_template(args.url)
    print(
        f"template {args.url}: {len(data['points'])} micro-grid points, "
        f"{len(data['matters'])} matters, {data['units']} units {data['units_by_kind']}"
    )
    import psycopg

    with psycopg.connect(_libpq(args.url)) as conn:
        row = conn.execute("SELECT version(), postgis_lib_version()").fetchone()
    assert row is not None
    print(f"{row[0].split(',')[0]}, PostGIS {row[1]}; uvicorn log: {args.log}")
    print(
        f"closed loop of {args.concurrency} keep-alive connections; warm-up {args.warmup:g} s,"
        f" then {args.seconds:g} s in rounds of {args.round_seconds:g} s (units freed and open "
        "incidents closed between rounds, untimed)"
    )
    if args.against is not None:
        against = args.against.resolve()
        if not (against / "api" / "app.py").is_file():
            parser.error(f"--against {against}: not a gridgov checkout (no api/app.py)")
        print(f"paired with the baseline checkout {against}, {args.pairs} pairs, order swapped")
        plan = paired_plan(workers[-1], args.idempotency != "without", against, args.pairs)
    else:
        plan = [(app, w, idem, "", ROOT) for app, w, idem in run_plan(workers, args)]
    results: list[Result] = []
    try:
        for app, w, idem, checkout, root in plan:
            print(
                f"running {app}{' from ' + checkout if checkout else ''}, {w} worker(s), "
                f"{'with' if idem else 'without'} Idempotency-Key ...",
                flush=True,
            )
            r = run_config(app, w, idem, data, args, args.log, checkout, root)
            results.append(r)
            print(
                f"  {r.rate:.0f}/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
                f"{r.errors} errors; rounds: "
                + ", ".join(f"{x['rate']:.0f}/s p99 {x['p99_ms']:.0f}" for x in r.rounds),
                flush=True,
            )
    finally:
        stop_all_servers()
    print_table(results)
    print_turns(results)
    if args.against is not None:
        print_pairs(results)
    else:
        print_ratios(results)
    if args.json:
        payload = [
            {**r.__dict__, "rate": r.rate, "errors": r.errors, "share": _share(r.outcomes)}
            for r in results
        ]
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
