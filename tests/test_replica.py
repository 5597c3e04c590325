"""Reads from a real streaming replica, writes to the primary, and a caller reads its own write.

A second PostgreSQL cluster is made here with ``pg_basebackup`` from the test server (streaming
replication over loopback; scripts/ensure-postgis.sh allows the replication connection) and
started on a free port as the ``postgres`` OS user in a temporary folder, then stopped and
removed. Replay is paused on the replica while a caller writes: the reads it routes there
cannot see the write, so who sees the new incident tells which server answered.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from live_server import free_port
from sqlalchemy import event
from sqlalchemy.engine import make_url

from api.app import create_app
from gridgov import store
from gridgov.settings import Settings, get_settings

pytestmark = pytest.mark.postgis

STREET = "510106024000"
MATTER = "UM-04"


def _unavailable(reason: str) -> None:
    if get_settings().require_postgis:
        pytest.fail(f"cannot make a replica: {reason}")
    # Only bare `pytest` on a machine without a usable server gets here; `make test` and CI
    # set GRIDGOV_REQUIRE_POSTGIS, which makes it the failure above.
    pytest.skip(f"cannot make a replica: {reason}")


def _libpq(url: str, **changes: Any) -> str:
    u = make_url(url).set(drivername="postgresql", **changes)
    return u.render_as_string(hide_password=False).split("?")[0]


@pytest.fixture(scope="module")
def replica_port(postgis_url: str) -> Iterator[int]:
    """A streaming replica of the test server, on a free port; removed afterwards."""
    primary = make_url(postgis_url)
    host, port = primary.host or "127.0.0.1", primary.port or 5432
    admin = f"postgresql://postgres@{host}:{port}/postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
            limits = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in (
                    "max_connections",
                    "max_worker_processes",
                    "max_prepared_transactions",
                    "max_locks_per_transaction",
                    "max_wal_senders",
                )
            }
    except psycopg.Error as exc:
        _unavailable(f"no superuser connection to {host}:{port} ({exc})")
    bindir = Path(f"/usr/lib/postgresql/{major}/bin")
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        _unavailable("no postgres OS user")
    if os.geteuid() not in (0, owner.pw_uid) or not (bindir / "pg_ctl").exists():
        _unavailable(f"needs root or the postgres user, and {bindir}/pg_ctl")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="gridgov-replica-"))
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    data = folder / "data"
    new_port = free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_postgres, *cmd], capture_output=True, text=True, timeout=300)
        if done.returncode:
            pytest.fail(f"{' '.join(cmd)}: {done.stderr.strip()}")

    try:
        run(
            str(bindir / "pg_basebackup"),
            *("-h", host, "-p", str(port), "-U", "postgres"),
            *("-D", str(data), "-R", "-X", "stream", "-c", "fast"),
        )
        # The packaged server keeps its configuration outside the data folder: give the copy
        # its own (a standby needs the primary's limits at least).
        settings = {
            "port": new_port,
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{folder}'",
            "hot_standby": "on",
            **limits,
        }
        conf = "".join(f"{k} = {v}\n" for k, v in settings.items())
        run("sh", "-c", f"printf '%s' \"{conf}\" > {data}/postgresql.conf")
        hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        run("sh", "-c", f"printf '{hba}' > {data}/pg_hba.conf && touch {data}/pg_ident.conf")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start")
        yield new_port
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(folder, ignore_errors=True)


def _caught_up(primary_url: str, replica_url: str) -> None:
    with psycopg.connect(_libpq(primary_url)) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + 60
    with psycopg.connect(_libpq(replica_url), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    pytest.fail("the replica did not catch up within 60 s")


@pytest.mark.parametrize("reference_store_url", ["postgis"], indirect=True)
def test_reads_from_the_replica_writes_to_the_primary_own_writes_read_back(
    reference_store_url: str, replica_port: int
) -> None:
    primary = store.open_store(reference_store_url)
    replica_url = make_url(reference_store_url).set(host="127.0.0.1", port=replica_port)
    replica_text = replica_url.render_as_string(hide_password=False)
    app = create_app(
        Settings(database_url=reference_store_url, database_replica_url=replica_text),
        engine=primary,
    )
    routing = app.state.reads
    served: list[str] = []
    event.listen(routing.replica, "before_cursor_execute", lambda *a: served.append(a[2]))
    writer_cred, writer = store.issue_credential(
        primary, "dispatcher", street_code=STREET, label="replica"
    )
    _, reader = store.issue_credential(primary, "dispatcher", street_code=STREET, label="replica")
    areas = store.context_from_store(primary).gdf_areas
    micro = areas[(areas["level"] == "microgrid") & areas["code"].str.startswith(STREET[:9])]
    p = micro.geometry.iloc[len(micro) // 3].representative_point()
    _caught_up(reference_store_url, replica_text)
    control = psycopg.connect(_libpq(replica_text, username="postgres"), autocommit=True)

    def listed(token: str) -> set[str]:
        r = client.get(
            "/api/v1/incidents",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        return {x["incident_id"] for x in r.json()["items"]}

    def on_wall(token: str) -> set[str]:
        r = client.get("/api/v1/live", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return {row[3] for row in r.json()["incidents"]["rows"]}

    try:
        with TestClient(app) as client:
            control.execute("SELECT pg_wal_replay_pause()")
            r = client.post(
                "/api/v1/incidents",
                json={"matter_code": MATTER, "lon": p.x, "lat": p.y},
                headers={"Authorization": f"Bearer {writer}"},
            )
            assert r.status_code == 201, r.text  # the replica is read-only: the primary wrote
            new = r.json()["incident_id"]
            served.clear()
            # Another caller's reads come from the paused replica: not there yet.
            assert new not in listed(reader)
            assert new not in on_wall(reader)
            opened = client.get("/open311/v2/requests.json", params={"page_size": 1000})
            assert new not in {x["service_request_id"] for x in opened.json()}
            assert served, "no read reached the replica"
            # The writer reads its own write: from the primary, until the replica has it.
            served.clear()
            assert new in listed(writer)
            assert new in on_wall(writer)
            assert routing.engine_for(writer_cred.credential_id) is primary
            control.execute("SELECT pg_wal_replay_resume()")
            _caught_up(reference_store_url, replica_text)
            assert routing.engine_for(writer_cred.credential_id) is routing.replica
            served.clear()
            assert new in listed(writer) and new in listed(reader)
            assert served
    finally:
        control.execute("SELECT pg_wal_replay_resume()")
        control.close()
        routing.replica.dispose()
        primary.dispose()
