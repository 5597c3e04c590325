"""The initial schema: areas, offices, units, matters and the dataset log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from gridgov.store.models import GeometryType, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the enumerations as they were when this revision was written; a later
# change to gridgov.model needs a new revision, not an edit here.
_LEVELS = ("district", "street", "community", "grid", "microgrid")
_KINDS = (
    "judicial",
    "market",
    "enforcement",
    "police",
    "fire",
    "hrss",
    "health",
    "emergency",
    "grid_worker",
)
_MODES = ("drive", "bike", "walk")
_STATUSES = ("available", "busy", "off_duty")
_HANDLING = ("grid", "community", "street")
_NAME_SOURCES = ("official", "generated")
_DATASET_KINDS = ("areas", "offices", "units", "matters", "files")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _fk(name: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [target], name=name, deferrable=True, initially="DEFERRED"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    op.create_table(
        "areas",
        sa.Column("code", sa.String(18), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("parent_code", sa.String(18), nullable=True),
        sa.Column("generated", sa.Boolean(), nullable=False),
        sa.Column("name_source", sa.String(16), nullable=True),
        sa.Column("minx", sa.Float(), nullable=False),
        sa.Column("miny", sa.Float(), nullable=False),
        sa.Column("maxx", sa.Float(), nullable=False),
        sa.Column("maxy", sa.Float(), nullable=False),
        sa.Column("geometry", GeometryType("MULTIPOLYGON"), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_areas"),
        _fk("fk_areas_parent_code_areas", "parent_code", "areas.code"),
        sa.CheckConstraint(_in("level", _LEVELS), name=op.f("ck_areas_level")),
        sa.CheckConstraint(
            "name_source IS NULL OR " + _in("name_source", _NAME_SOURCES),
            name=op.f("ck_areas_name_source"),
        ),
        sa.CheckConstraint("minx <= maxx AND miny <= maxy", name=op.f("ck_areas_bbox")),
    )
    op.create_index("ix_areas_level", "areas", ["level"])
    op.create_index("ix_areas_parent_code", "areas", ["parent_code"])
    op.create_index("ix_areas_minx_maxx_miny_maxy", "areas", ["minx", "maxx", "miny", "maxy"])

    op.create_table(
        "offices",
        sa.Column("office_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("department", sa.Text(), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=False),
        sa.Column("generated", sa.Boolean(), nullable=False),
        sa.Column("position", GeometryType("POINT"), nullable=True),
        sa.PrimaryKeyConstraint("office_id", name="pk_offices"),
        _fk("fk_offices_street_code_areas", "street_code", "areas.code"),
        sa.CheckConstraint(_in("kind", _KINDS), name=op.f("ck_offices_kind")),
    )
    op.create_index("ix_offices_street_code", "offices", ["street_code"])

    op.create_table(
        "units",
        sa.Column("unit_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("office_id", sa.String(64), nullable=True),
        sa.Column("department", sa.Text(), nullable=False),
        sa.Column("street_code", sa.String(18), nullable=False),
        sa.Column("travel_mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("on_duty", sa.Boolean(), nullable=False),
        sa.Column("grid_code", sa.String(18), nullable=True),
        sa.Column("position", GeometryType("POINT"), nullable=True),
        sa.Column("position_time", UTCDateTime(), nullable=True),
        sa.Column("generated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("unit_id", name="pk_units"),
        _fk("fk_units_office_id_offices", "office_id", "offices.office_id"),
        _fk("fk_units_street_code_areas", "street_code", "areas.code"),
        _fk("fk_units_grid_code_areas", "grid_code", "areas.code"),
        sa.CheckConstraint(_in("kind", _KINDS), name=op.f("ck_units_kind")),
        sa.CheckConstraint(_in("travel_mode", _MODES), name=op.f("ck_units_travel_mode")),
        sa.CheckConstraint(_in("status", _STATUSES), name=op.f("ck_units_status")),
    )
    op.create_index("ix_units_kind", "units", ["kind"])
    op.create_index("ix_units_street_code", "units", ["street_code"])

    op.create_table(
        "matters",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("name_zh", sa.Text(), nullable=False),
        sa.Column("name_en", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("keywords", sa.JSON(), nullable=False),
        sa.Column("lead_kind", sa.String(32), nullable=False),
        sa.Column("assist_kinds", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("acknowledge_min", sa.Float(), nullable=False),
        sa.Column("arrive_min", sa.Float(), nullable=False),
        sa.Column("resolve_h", sa.Float(), nullable=False),
        sa.Column("max_travel_min", sa.Float(), nullable=False),
        sa.Column("handling_level", sa.String(16), nullable=False),
        sa.Column("event_class", sa.String(8), nullable=False),
        sa.Column("event_class_name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("code", name="pk_matters"),
        sa.CheckConstraint(_in("lead_kind", _KINDS), name=op.f("ck_matters_lead_kind")),
        sa.CheckConstraint(
            _in("handling_level", _HANDLING), name=op.f("ck_matters_handling_level")
        ),
        sa.CheckConstraint("priority BETWEEN 1 AND 4", name=op.f("ck_matters_priority")),
    )

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("loaded_at", UTCDateTime(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.CheckConstraint(_in("kind", _DATASET_KINDS), name=op.f("ck_datasets_kind")),
    )
    op.create_index("ix_datasets_kind_loaded_at", "datasets", ["kind", "loaded_at"])

    if postgres:
        # GIST indexes make ST_Intersects, ST_DWithin and the KNN operator index-assisted.
        op.create_index("ix_areas_geometry_gist", "areas", ["geometry"], postgresql_using="gist")
        op.create_index(
            "ix_offices_position_gist", "offices", ["position"], postgresql_using="gist"
        )
        op.create_index("ix_units_position_gist", "units", ["position"], postgresql_using="gist")


def downgrade() -> None:
    for table in ("datasets", "matters", "units", "offices", "areas"):
        op.drop_table(table)
