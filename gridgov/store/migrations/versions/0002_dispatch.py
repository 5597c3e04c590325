"""Roads, incidents, dispatches and assignments; units learn what they are busy on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import GeometryType, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies, as in 0001: later changes need a new revision.
_OLD_DATASET_KINDS = ("areas", "offices", "units", "matters", "files")
_DATASET_KINDS = (*_OLD_DATASET_KINDS, "roads")
_SPEEDS = ("speed_drive_kmh", "speed_bike_kmh", "speed_walk_kmh")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _datasets_as_in_0001(kinds: tuple[str, ...]) -> sa.Table:
    """The datasets table as 0001 made it, for SQLite's table rebuild (it cannot ALTER a CHECK)."""
    return sa.Table(
        "datasets",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("loaded_at", UTCDateTime(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.CheckConstraint(_in("kind", kinds), name="ck_datasets_kind"),
        sa.Index("ix_datasets_kind_loaded_at", "kind", "loaded_at"),
    )


def _set_dataset_kinds(kinds: tuple[str, ...], old: tuple[str, ...]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f("ck_datasets_kind"), "datasets", type_="check")
        op.create_check_constraint(op.f("ck_datasets_kind"), "datasets", _in("kind", kinds))
        return
    with op.batch_alter_table(
        "datasets", recreate="always", copy_from=_datasets_as_in_0001(old)
    ) as batch:
        batch.drop_constraint(op.f("ck_datasets_kind"), type_="check")
        batch.create_check_constraint(op.f("ck_datasets_kind"), _in("kind", kinds))


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"

    op.create_table(
        "road_nodes",
        sa.Column("node_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("geometry", GeometryType("POINT"), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name="pk_road_nodes"),
    )
    op.create_table(
        "road_links",
        sa.Column("link_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("u", sa.BigInteger(), nullable=False),
        sa.Column("v", sa.BigInteger(), nullable=False),
        sa.Column("length_m", sa.Float(), nullable=False),
        sa.Column("road_class", sa.String(32), nullable=True),
        sa.Column("road_name", sa.Text(), nullable=True),
        sa.Column("class_source", sa.String(16), nullable=True),
        sa.Column("oneway", sa.Boolean(), nullable=False),
        *(sa.Column(name, sa.Float(), nullable=True) for name in _SPEEDS),
        sa.Column("geometry", GeometryType("LINESTRING"), nullable=False),
        sa.PrimaryKeyConstraint("link_id", name="pk_road_links"),
        sa.ForeignKeyConstraint(
            ["u"],
            ["road_nodes.node_id"],
            name="fk_road_links_u_road_nodes",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.ForeignKeyConstraint(
            ["v"],
            ["road_nodes.node_id"],
            name="fk_road_links_v_road_nodes",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.CheckConstraint("length_m > 0", name=op.f("ck_road_links_length")),
        sa.CheckConstraint(
            " AND ".join(f"({c} IS NULL OR {c} >= 0)" for c in _SPEEDS),
            name=op.f("ck_road_links_speeds"),
        ),
    )
    op.create_index("ix_road_links_u", "road_links", ["u"])
    op.create_index("ix_road_links_v", "road_links", ["v"])

    op.create_table(
        "incidents",
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("matter_code", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("geometry", GeometryType("POINT"), nullable=False),
        sa.Column("reported_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=True),
        sa.Column("community_code", sa.String(18), nullable=True),
        sa.Column("grid_code", sa.String(18), nullable=True),
        sa.Column("microgrid_code", sa.String(18), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("incident_id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_status_reported_at", "incidents", ["status", "reported_at"])
    op.create_index("ix_incidents_street_code", "incidents", ["street_code"])

    op.create_table(
        "dispatches",
        sa.Column("dispatch_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("travel_model", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("dispatch_id", name="pk_dispatches"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.incident_id"], name="fk_dispatches_incident_id_incidents"
        ),
    )
    op.create_index("ix_dispatches_incident_id", "dispatches", ["incident_id"])

    op.create_table(
        "assignments",
        sa.Column("assignment_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dispatch_id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("unit_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("time_s", sa.Float(), nullable=False),
        sa.Column("over_max_travel", sa.Boolean(), nullable=False),
        sa.Column("preempts", sa.String(64), nullable=True),
        sa.Column("route", GeometryType("LINESTRING"), nullable=True),
        sa.Column("route_length_m", sa.Float(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("assigned_at", UTCDateTime(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("assignment_id", name="pk_assignments"),
        sa.ForeignKeyConstraint(
            ["dispatch_id"],
            ["dispatches.dispatch_id"],
            name="fk_assignments_dispatch_id_dispatches",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.incident_id"],
            name="fk_assignments_incident_id_incidents",
        ),
        sa.ForeignKeyConstraint(
            ["preempts"], ["incidents.incident_id"], name="fk_assignments_preempts_incidents"
        ),
        sa.CheckConstraint(
            "(active AND released_at IS NULL) OR (NOT active AND released_at IS NOT NULL)",
            name=op.f("ck_assignments_released"),
        ),
    )
    op.create_index("ix_assignments_dispatch_id", "assignments", ["dispatch_id"])
    op.create_index("ix_assignments_incident_id", "assignments", ["incident_id"])
    op.create_index("ix_assignments_unit_id_assigned_at", "assignments", ["unit_id", "assigned_at"])
    # The last line of defence against a unit on two jobs: whatever the code does, the database
    # refuses a second active assignment of one unit.
    op.create_index(
        "ux_assignments_active_unit",
        "assignments",
        ["unit_id"],
        unique=True,
        postgresql_where=sa.text("active"),
        sqlite_where=sa.text("active"),
    )

    # Plain ADD COLUMN works on both backends without rebuilding units.
    op.add_column("units", sa.Column("position_source", sa.String(32), nullable=True))
    op.add_column("units", sa.Column("busy_incident_id", sa.String(64), nullable=True))
    op.create_index("ix_units_busy_incident_id", "units", ["busy_incident_id"])

    _set_dataset_kinds(_DATASET_KINDS, _OLD_DATASET_KINDS)

    if postgres:
        op.create_index(
            "ix_road_nodes_geometry_gist", "road_nodes", ["geometry"], postgresql_using="gist"
        )
        op.create_index(
            "ix_road_links_geometry_gist", "road_links", ["geometry"], postgresql_using="gist"
        )
        op.create_index(
            "ix_incidents_geometry_gist", "incidents", ["geometry"], postgresql_using="gist"
        )


def downgrade() -> None:
    op.execute("DELETE FROM datasets WHERE kind = 'roads'")
    _set_dataset_kinds(_OLD_DATASET_KINDS, _DATASET_KINDS)
    op.drop_index("ix_units_busy_incident_id", table_name="units")
    # Native DROP COLUMN (SQLite >= 3.35) keeps the units table's CHECK constraints intact.
    op.execute("ALTER TABLE units DROP COLUMN busy_incident_id")
    op.execute("ALTER TABLE units DROP COLUMN position_source")
    for table in ("assignments", "dispatches", "incidents", "road_links", "road_nodes"):
        op.drop_table(table)
