"""Units carry a change number, and the database announces changes (the live wall's push).

``units.change_seq`` takes a new, larger number whenever a unit's row is written (status,
release, position fix, load), set by a trigger so that every writer, in any process or host,
numbers its changes without knowing of it. The live feed then tells "nothing changed" from an
index probe instead of a digest of every unit in scope, and sends only the units that changed.

On PostgreSQL the numbers come from a sequence (no lock shared by writers), and a trigger on
the event log ``pg_notify('gridgov_live', 'events')``: every server process listening is
woken at commit (identical notifications of one transaction are sent once). Units do not
notify (see below); listeners probe their largest change number. SQLite has one writer at a time,
so the next number is the largest plus one; its server processes learn of commits in-process.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PG_UP = (
    "CREATE SEQUENCE units_change_seq",
    "UPDATE units SET change_seq = nextval('units_change_seq')",
    """CREATE FUNCTION gridgov_unit_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_seq := nextval('units_change_seq');
    RETURN NEW;
END $$""",
    "CREATE TRIGGER units_changed BEFORE INSERT OR UPDATE ON units "
    "FOR EACH ROW EXECUTE FUNCTION gridgov_unit_changed()",
    # One notification per statement. Events only: a transaction that notifies holds a
    # database-wide lock through its commit, so notifying from every position fix made the
    # fixes commit one at a time (measured: 18 fixes/s). Listeners probe the units' largest
    # change number instead (one index probe per process every half second).
    """CREATE FUNCTION gridgov_live_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gridgov_live', TG_TABLE_NAME);
    RETURN NULL;
END $$""",
    "CREATE TRIGGER events_notify AFTER INSERT ON events "
    "FOR EACH STATEMENT EXECUTE FUNCTION gridgov_live_notify()",
)
_PG_DOWN = (
    "DROP TRIGGER IF EXISTS events_notify ON events",
    "DROP FUNCTION IF EXISTS gridgov_live_notify()",
    "DROP TRIGGER IF EXISTS units_changed ON units",
    "DROP FUNCTION IF EXISTS gridgov_unit_changed()",
    "DROP SEQUENCE IF EXISTS units_change_seq",
)
_SQLITE_NEXT = (
    "UPDATE units SET change_seq = (SELECT coalesce(max(change_seq), 0) + 1 FROM units) "
    "WHERE unit_id = NEW.unit_id"
)
_SQLITE_UP = (
    "UPDATE units SET change_seq = rowid",
    # The inner UPDATE changes change_seq, so the WHEN clause keeps it from firing again.
    f"""CREATE TRIGGER units_changed AFTER UPDATE ON units FOR EACH ROW
WHEN NEW.change_seq IS OLD.change_seq BEGIN {_SQLITE_NEXT}; END""",
    f"""CREATE TRIGGER units_added AFTER INSERT ON units FOR EACH ROW
WHEN NEW.change_seq IS NULL BEGIN {_SQLITE_NEXT}; END""",
)
_SQLITE_DOWN = ("DROP TRIGGER IF EXISTS units_changed", "DROP TRIGGER IF EXISTS units_added")


def upgrade() -> None:
    with op.batch_alter_table("units") as batch:
        batch.add_column(sa.Column("change_seq", sa.BigInteger(), nullable=True))
    op.create_index("ix_units_change_seq", "units", ["change_seq"])
    op.create_index("ix_units_street_change", "units", ["street_code", "change_seq"])
    pg = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_UP if pg else _SQLITE_UP:
        op.execute(statement)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    for statement in _PG_DOWN if pg else _SQLITE_DOWN:
        op.execute(statement)
    op.drop_index("ix_units_street_change", table_name="units")
    op.drop_index("ix_units_change_seq", table_name="units")
    with op.batch_alter_table("units") as batch:
        batch.drop_column("change_seq")
