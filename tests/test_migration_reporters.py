"""Migration 0010: contacts move out of incidents, notices and past events, and it says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from shapely.geometry import Point
from sqlalchemy import Engine, text

from gridgov.store import begin_write, create_engine_from_url, init_db
from gridgov.store.engine import _MIGRATIONS
from gridgov.store.journal import read_incident_events
from gridgov.store.models import GeometryType, UTCDateTime
from gridgov.store.reporter_rows import privacy_log
from gridgov.workflow import replay

CONTACT = "email:li.old@example.org; phone:137-0000-1111"
T0 = datetime(2026, 10, 1, 8, tzinfo=UTC)

_incidents = sa.table(
    "incidents",
    sa.column("incident_id", sa.String()),
    sa.column("matter_code", sa.String()),
    sa.column("geometry", GeometryType("POINT")),
    sa.column("reported_at", UTCDateTime()),
    sa.column("status", sa.String()),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("reporter", sa.Text()),
)
_events = sa.table(
    "events",
    sa.column("incident_id", sa.String()),
    sa.column("seq", sa.Integer()),
    sa.column("at", UTCDateTime()),
    sa.column("actor", sa.Text()),
    sa.column("role", sa.String()),
    sa.column("action", sa.String()),
    sa.column("from_state", sa.String()),
    sa.column("to_state", sa.String()),
    sa.column("reason", sa.Text()),
    sa.column("data", sa.JSON()),
)
_notices = sa.table(
    "notices",
    sa.column("incident_id", sa.String()),
    sa.column("created_at", UTCDateTime()),
    sa.column("kind", sa.String()),
    sa.column("recipient_kind", sa.String()),
    sa.column("recipient", sa.Text()),
    sa.column("message", sa.Text()),
    sa.column("data", sa.JSON()),
)


def _config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _old_store(url: str) -> Engine:
    """A store at 0005 as an older release wrote it: the contact on the incident, as the
    report event's actor, and as an outcome notice's recipient."""
    engine = create_engine_from_url(url)
    with begin_write(engine) as connection:
        command.upgrade(_config(connection), "0005")
    steps = [
        ("report", None, "reported", CONTACT, "reporter"),
        ("register", "reported", "registered", "gridgov", "system"),
        ("cancel", "registered", "cancelled", "desk", "dispatcher"),
    ]
    with begin_write(engine) as connection:
        for incident_id, reporter in (("OLD-1", CONTACT), ("OLD-2", CONTACT), ("OLD-3", None)):
            connection.execute(
                sa.insert(_incidents).values(
                    incident_id=incident_id,
                    matter_code="UM-04",
                    geometry=Point(104.05, 30.69),
                    reported_at=T0,
                    status="cancelled",
                    created_at=T0,
                    updated_at=T0 + timedelta(hours=1),
                    reporter=reporter,
                )
            )
            for seq, (action, before, after, actor, role) in enumerate(steps, 1):
                if reporter is None and action == "report":
                    actor, role = "cli", "system"
                connection.execute(
                    sa.insert(_events).values(
                        incident_id=incident_id,
                        seq=seq,
                        at=T0 + timedelta(minutes=seq),
                        actor=actor,
                        role=role,
                        action=action,
                        from_state=before,
                        to_state=after,
                        reason="withdrawn" if action == "cancel" else None,
                        data={"source": "api"} if action == "report" else {},
                    )
                )
            if reporter is not None:
                connection.execute(
                    sa.insert(_notices).values(
                        incident_id=incident_id,
                        created_at=T0 + timedelta(hours=1),
                        kind="outcome",
                        recipient_kind="reporter",
                        recipient=reporter,
                        message="your report was cancelled",
                        data={},
                    )
                )
    return engine


def test_contacts_move_to_the_reporters_table_and_the_move_is_recorded(store_url: str) -> None:
    engine = _old_store(store_url)
    try:
        init_db(engine)
        with engine.connect() as connection:
            incidents = connection.execute(
                text("SELECT incident_id, reporter_id FROM incidents ORDER BY incident_id")
            ).all()
            reporters = connection.execute(text("SELECT reporter_id, contact FROM reporters")).all()
            notices = connection.execute(text("SELECT recipient FROM notices")).scalars().all()
            columns = {c["name"] for c in sa.inspect(connection).get_columns("incidents")}
            logs = {i: read_incident_events(connection, i) for i in ("OLD-1", "OLD-2", "OLD-3")}
        # One reporter row per distinct contact; incidents and notices name it by its id.
        assert [(r.reporter_id, r.contact) for r in reporters] == [(reporters[0][0], CONTACT)]
        rid = reporters[0][0]
        assert [tuple(r) for r in incidents] == [("OLD-1", rid), ("OLD-2", rid), ("OLD-3", None)]
        assert notices == [rid, rid]
        assert "reporter" not in columns
        # The report events name the role and the id, and every log still replays.
        for _incident_id, log in logs.items():
            assert str(replay(log)) == "cancelled"
            assert all("li.old" not in e.actor for e in log)
        assert logs["OLD-1"][0].actor == "reporter"
        assert logs["OLD-1"][0].data == {"source": "api", "reporter_id": rid}
        assert logs["OLD-3"][0].actor == "cli"
        [entry] = privacy_log(engine)
        assert entry["kind"] == "migration" and entry["actor"] == "migration-0010"
        assert entry["data"]["reporters_created"] == 1
        assert entry["data"]["incidents_linked"] == 2
        assert entry["data"]["notices_readdressed"] == 2
        assert entry["data"]["events_rewritten"] == 2
        assert "li.old" not in str(entry)
        # The events are append-only again after the migration.
        with engine.connect() as connection:
            try:
                connection.execute(text("UPDATE events SET actor = 'x'"))
            except sa.exc.DBAPIError as exc:
                assert "append-only" in str(exc)
            else:
                raise AssertionError("events could be updated after the migration")
        # Downgrading puts the contacts back where the old release reads them.
        with begin_write(engine) as connection:
            command.downgrade(_config(connection), "0005")
        with engine.connect() as connection:
            back = connection.execute(
                text("SELECT reporter FROM incidents ORDER BY incident_id")
            ).scalars()
            assert list(back) == [CONTACT, CONTACT, None]
    finally:
        engine.dispose()
