"""One report is one incident whatever fails: real uvicorn workers under a bounded load while
the database is broken in every way a deployment meets.

Two uvicorn worker processes serve the reference district from PostGIS. Phones (client
threads) send reports, each under its own Idempotency-Key, and retry on 409, 503 and lost
connections, as phones do. Meanwhile, in the first test (the shared server, reached through a
proxy the test controls, :mod:`pg_fault_proxy`): backends are killed every 2 s
(``pg_terminate_backend``), every connection is cut at once, connections are refused for 4 s,
then frozen (bytes held). In the second (a cluster of its own, :mod:`pg_cluster`): the server
restarts, stops and starts, and is frozen with SIGSTOP. Both end with a worker killed by SIGKILL
mid-burst. Then, for every key: at most one incident, the incident of every 2xx answer is stored
and given again on a retry, no key is held past its lease, no answer is a 500; the service
recovers from each fault within :data:`RECOVERY_S` (the times are printed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import _fresh_schema
from live_server import free_port
from pg_cluster import PrivateCluster
from pg_fault_proxy import FaultProxy
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from gridgov import store
from gridgov.store.models import IDEMPOTENCY, INCIDENTS

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
STREET = "510106024000"
#: The lease the workers run with: a key held by a killed worker is free again after it.
LEASE_S = 3.0
#: Each fault must be over (a fresh report answered 2xx) within this many seconds of its end.
RECOVERY_S = 15.0
#: Phones sending at once (the machine is small and shared: a bounded load).
PHONES = 4
#: Load before the first fault: each worker builds its dispatch context on its first request
#: (a second or more), which would otherwise be counted in the first recovery.
WARM_S = 5.0
MATTERS = ["UM-01", "UM-02", "UM-04", "MK-03", "EE-01", "PS-02", "LS-01", "FS-03"]


@dataclass
class Key:
    """One report and everything its phone heard back."""

    key: str
    body: dict[str, Any]
    statuses: list[int] = field(default_factory=list)
    incident_id: str | None = None
    first_409: float | None = None
    longest_wait_409: float = 0.0
    done: bool = False


@dataclass
class Service:
    base: str
    master: subprocess.Popen[bytes]
    admin: Any
    app_name: str
    token: str
    points: list[tuple[float, float]]
    engine: Any


def _wait_ready(base: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service at {base} did not become ready")


@contextmanager
def _serving(store_url: str, workers_url: str, admin_url: str) -> Iterator[Service]:
    """Load the reference district into ``store_url`` and serve it with two uvicorn workers
    that reach the database at ``workers_url`` (tagged with an application name)."""
    from typer.testing import CliRunner

    from gridgov.cli import app as cli

    runner = CliRunner()
    for args in (["init", "--url", store_url], ["load", "--url", store_url]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    engine = store.open_store(store_url)
    _, secret = store.issue_credential(engine, "dispatcher", street_code=STREET, label="f")
    areas = store.read_stored_areas(engine)
    micro = areas[(areas["level"] == "microgrid") & areas["code"].str.startswith(STREET[:9])]
    points = [(p.x, p.y) for p in micro.geometry.representative_point()]
    app_name = f"gridgov-fault-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **os.environ,
        "GRIDGOV_DATABASE_URL": make_url(workers_url)
        .update_query_dict({"application_name": app_name})
        .render_as_string(hide_password=False),
        "GRIDGOV_IDEMPOTENCY_LEASE_S": str(LEASE_S),
        "GRIDGOV_DB_STATEMENT_TIMEOUT_S": "2",
        "GRIDGOV_DB_CONNECT_TIMEOUT_S": "2",
        "GRIDGOV_DB_POOL_TIMEOUT_S": "2",
        "GRIDGOV_DB_POOL_SIZE": "4",
        "GRIDGOV_DB_MAX_OVERFLOW": "2",
        # As served by default: each worker's intake turn runs in its turn process, which
        # faces every fault below too (its sessions carry the same application name).
        "GRIDGOV_INTAKE_TURN_PROCESS": "1",
    }
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "api.app:app_from_env",
            "--workers",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, 120)
        yield Service(base, master, admin, app_name, secret, points, engine)
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(timeout=20)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        admin.dispose()
        engine.dispose()


@pytest.fixture(scope="module")
def proxied(postgis_url: str) -> Iterator[tuple[Service, FaultProxy]]:
    """The service on the shared server, through a proxy the test breaks."""
    with _fresh_schema(postgis_url) as url:
        upstream = make_url(url)
        proxy = FaultProxy((upstream.host or "127.0.0.1", upstream.port or 5432))
        via = upstream.set(host="127.0.0.1", port=proxy.port)
        try:
            with _serving(url, via.render_as_string(hide_password=False), postgis_url) as svc:
                yield svc, proxy
        finally:
            proxy.close()


@pytest.fixture(scope="module")
def private(postgis_url: str) -> Iterator[tuple[Service, PrivateCluster]]:
    """The service on a cluster of its own, which the test restarts, stops and freezes.
    (``postgis_url`` only so that it skips, or fails under GRIDGOV_REQUIRE_POSTGIS, as every
    PostGIS test does when there is no server.)"""
    root = Path(tempfile.mkdtemp(prefix="gridgov-faults-"))
    cluster = PrivateCluster(root)
    try:
        with _serving(cluster.url, cluster.url, cluster.url) as svc:
            yield svc, cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


class Phones:
    """Client threads that each send reports under new keys and retry each until answered."""

    def __init__(self, svc: Service, seed: int) -> None:
        self.svc = svc
        self.rng = random.Random(seed)
        self.keys: list[Key] = []
        self.lock = threading.Lock()
        self.sending = threading.Event()
        self.threads: list[threading.Thread] = []
        self.transport_errors = 0
        self.probes: list[list[int]] = []  # what each recovery probe heard, in order

    def new_key(self) -> Key:
        with self.lock:
            lon, lat = self.rng.choice(self.svc.points)
            key = Key(
                key=f"fault-{uuid.uuid4().hex[:12]}",
                body={
                    "matter_code": self.rng.choice(MATTERS),
                    "lon": lon,
                    "lat": lat,
                    "dispatch": self.rng.random() < 0.3,
                },
            )
            key.body["description"] = key.key
            self.keys.append(key)
            return key

    def send(self, client: httpx.Client, key: Key, deadline: float) -> bool:
        """Send until a final answer (True) or the deadline (False)."""
        headers = {"Authorization": f"Bearer {self.svc.token}", "Idempotency-Key": key.key}
        while time.monotonic() < deadline:
            try:
                answer = client.post("/api/v1/incidents", json=key.body, headers=headers)
            except httpx.TransportError:
                with self.lock:
                    self.transport_errors += 1
                time.sleep(0.2)
                continue
            key.statuses.append(answer.status_code)
            if answer.status_code == 409:
                now = time.monotonic()
                key.first_409 = key.first_409 or now
                key.longest_wait_409 = max(key.longest_wait_409, now - key.first_409)
                time.sleep(0.2)
                continue
            key.first_409 = None
            if answer.status_code == 503:
                time.sleep(0.2)
                continue
            if answer.status_code < 300:
                key.incident_id = answer.json()["incident_id"]
            key.done = True
            return True
        return False

    def _phone(self) -> None:
        with httpx.Client(base_url=self.svc.base, timeout=10) as client:
            while self.sending.is_set():
                self.send(client, self.new_key(), time.monotonic() + 120)

    def start(self) -> None:
        self.sending.set()
        for _ in range(PHONES):
            thread = threading.Thread(target=self._phone, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.sending.clear()
        for thread in self.threads:
            thread.join(timeout=150)

    def recovery(self, since: float) -> float:
        """Seconds from ``since`` (a fault's end) until a fresh report is answered 2xx."""
        with httpx.Client(base_url=self.svc.base, timeout=10) as client:
            key = self.new_key()
            assert self.send(client, key, time.monotonic() + 60), "no recovery within 60 s"
        assert key.incident_id is not None, key.statuses
        self.probes.append(key.statuses)
        return time.monotonic() - since


def _kill_backends(svc: Service) -> int:
    with svc.admin.connect() as connection:
        return len(
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": svc.app_name},
            ).all()
        )


def _workers(master_pid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == master_pid and b"spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def answered_keys(keys: list[Key]) -> list[Key]:
    return [k for k in keys if k.incident_id is not None]


def _frozen_health(base: str) -> tuple[float, float]:
    """While the database is frozen: the slowest /health (must answer) and /health/ready (must
    say not ready), in seconds."""
    health_s, ready_s = [], []
    for _ in range(3):
        t0 = time.monotonic()
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        health_s.append(time.monotonic() - t0)
        t0 = time.monotonic()
        assert httpx.get(f"{base}/health/ready", timeout=5).status_code == 503
        ready_s.append(time.monotonic() - t0)
        time.sleep(0.5)
    return max(health_s), max(ready_s)


def _kill_a_worker(svc: Service, phones: Phones, recovery: dict[str, float]) -> None:
    """SIGKILL of a worker mid-burst; the supervisor starts another one."""
    workers = _workers(svc.master.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    t_kill = time.monotonic()
    time.sleep(0.5)
    recovery["worker killed (SIGKILL)"] = phones.recovery(t_kill)
    time.sleep(LEASE_S + 1)  # the killed worker's keys are retried past their lease


def test_one_incident_per_key_through_killed_backends_cut_and_frozen_connections(
    proxied: tuple[Service, FaultProxy],
) -> None:
    svc, proxy = proxied
    phones = Phones(svc, seed=14)
    recovery: dict[str, float] = {}
    phones.start()
    try:
        time.sleep(WARM_S)
        killed = 0
        for _ in range(4):
            killed += _kill_backends(svc)
            time.sleep(2)
        recovery["backends killed every 2 s"] = phones.recovery(time.monotonic())
        assert killed > 0

        proxy.drop()  # every connection cut at once, as a restart does
        _kill_backends(svc)
        recovery["every connection cut"] = phones.recovery(time.monotonic())

        proxy.stop()
        time.sleep(4)
        proxy.start()
        recovery["refused for 4 s"] = phones.recovery(time.monotonic())

        proxy.pause()
        time.sleep(1)
        health = _frozen_health(svc.base)
        time.sleep(1.5)
        proxy.resume()
        recovery["connections frozen 5 s"] = phones.recovery(time.monotonic())

        _kill_a_worker(svc, phones, recovery)
    finally:
        phones.stop()
    _check(svc, phones, recovery, health)


def test_one_incident_per_key_through_restart_stop_start_and_sigstop(
    private: tuple[Service, PrivateCluster],
) -> None:
    svc, cluster = private
    phones = Phones(svc, seed=15)
    recovery: dict[str, float] = {}
    phones.start()
    try:
        time.sleep(WARM_S)
        cluster.restart()
        recovery["server restart"] = phones.recovery(time.monotonic())

        cluster.stop()
        time.sleep(4)
        cluster.start()
        recovery["stop, 4 s down, start"] = phones.recovery(time.monotonic())

        cluster.freeze()
        time.sleep(1)
        health = _frozen_health(svc.base)
        time.sleep(1.5)
        cluster.thaw()
        recovery["SIGSTOP 5 s"] = phones.recovery(time.monotonic())

        _kill_a_worker(svc, phones, recovery)
    finally:
        phones.stop()
    _check(svc, phones, recovery, health)


def _check(
    svc: Service, phones: Phones, recovery: dict[str, float], health: tuple[float, float]
) -> None:
    """Every key: at most one incident, every 2xx stored and given again, none held past its
    lease; no 500 anywhere; each recovery within RECOVERY_S."""
    keys = phones.keys
    with svc.engine.connect() as connection:
        counts = dict(
            connection.execute(
                select(INCIDENTS.c.description, func.count())
                .where(INCIDENTS.c.description.in_([k.key for k in keys]))
                .group_by(INCIDENTS.c.description)
            ).all()
        )
        stored_ids = dict(
            connection.execute(
                select(INCIDENTS.c.description, INCIDENTS.c.incident_id).where(
                    INCIDENTS.c.description.in_([k.key for k in keys])
                )
            ).all()
        )
        # A claim is finished, or its lease has run out (its answer was sent but not kept:
        # a retry resumes the incident); none is still held.
        unfinished = connection.execute(
            select(func.count())
            .select_from(IDEMPOTENCY)
            .where(IDEMPOTENCY.c.status.is_(None), IDEMPOTENCY.c.lease_until > datetime.now(UTC))
        ).scalar_one()
    # Every phone asks once more: each gets the incident it was told of (replayed or resumed).
    with httpx.Client(base_url=svc.base, timeout=10) as client:
        again = {}
        for k in answered_keys(keys):
            answer = client.post(
                "/api/v1/incidents",
                json=k.body,
                headers={"Authorization": f"Bearer {svc.token}", "Idempotency-Key": k.key},
            )
            again[k.key] = (answer.status_code, answer.json().get("incident_id"))
    statuses = [s for k in keys for s in k.statuses]
    duplicates = sum(1 for n in counts.values() if n > 1)
    answered = answered_keys(keys)
    lost = [k.key for k in answered if stored_ids.get(k.key) != k.incident_id]
    forgotten = [k.key for k in answered if again[k.key] != (201, k.incident_id)]
    not_done = [k.key for k in keys if not k.done]
    waited = max((k.longest_wait_409 for k in keys), default=0.0)
    print(
        f"\nfault test: {len(keys)} keys, {len(answered)} answered 2xx, {duplicates} duplicates, "
        f"{len(lost)} lost, {len(forgotten)} answers forgotten, {len(not_done)} unanswered, "
        f"{unfinished} claims still held, "
        f"{statuses.count(500)} answers of 500, {statuses.count(503)} of 503, "
        f"{statuses.count(409)} of 409 (longest wait {waited:.1f} s, lease {LEASE_S:g} s), "
        f"{phones.transport_errors} lost connections"
    )
    print(f"  while frozen: /health max {health[0]:.2f} s, /health/ready max {health[1]:.2f} s")
    for (fault, seconds), probe in zip(recovery.items(), phones.probes, strict=True):
        print(f"  recovery after {fault}: {seconds:.2f} s (the probe heard {probe})")
    assert statuses.count(500) == 0
    assert duplicates == 0
    assert lost == []
    assert forgotten == []
    assert not_done == []
    assert unfinished == 0
    assert all(s < 300 or s in (409, 503) for s in statuses), sorted(set(statuses))
    assert waited <= LEASE_S + 2.0  # no key is stuck past its lease
    assert health[0] < 1.0
    assert health[1] < 2.0
    assert all(seconds < RECOVERY_S for seconds in recovery.values()), recovery
