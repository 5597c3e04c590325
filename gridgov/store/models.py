"""The one schema both stores share: SQLAlchemy 2 declarative models.

Geometry columns use :class:`GeometryType`, which becomes a PostGIS ``geometry(<type>, 4326)`` on
PostgreSQL and a plain WKB blob on SQLite, so the embedded store needs no SpatiaLite. Python code
always sees shapely geometries in WGS84.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import shapely
from geoalchemy2 import Geometry
from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from gridgov.model import NAME_SOURCES, ForceKind, HandlingLevel, Level, TravelMode, UnitStatus
from gridgov.workflow import Action, Role, Satisfaction, State

#: SRID of every stored geometry.
SRID = 4326

# Deterministic constraint names keep Alembic autogenerate and hand-written migrations in step.
_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class GeometryType(TypeDecorator[BaseGeometry]):
    """A shapely geometry column: PostGIS geometry on PostgreSQL, WKB bytes elsewhere.

    Parameters
    ----------
    geometry_type
        The PostGIS geometry type (``"POINT"``, ``"MULTIPOLYGON"``...).
    srid
        The spatial reference id; values are assumed to be in it already.
    """

    impl = LargeBinary
    cache_ok = True
    #: Read by GeoAlchemy2's DDL hooks: the GIST indexes are declared explicitly instead.
    spatial_index = False

    def __init__(self, geometry_type: str = "GEOMETRY", srid: int = SRID) -> None:
        super().__init__()
        self.geometry_type = geometry_type.upper()
        self.srid = srid

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        # GeoAlchemy2's DDL hooks probe types with dialect=None; answering "not spatial" keeps
        # them from adding indexes or columns of their own behind our migrations' back.
        if dialect is not None and dialect.name == "postgresql":
            # Spatial indexes are declared explicitly below so migrations and models match.
            return dialect.type_descriptor(
                Geometry(self.geometry_type, srid=self.srid, spatial_index=False)
            )
        if dialect is None:
            return LargeBinary()
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, BaseGeometry):
            msg = f"expected a shapely geometry, got {type(value).__name__}"
            raise TypeError(msg)
        if value.is_empty:
            return None
        if dialect.name == "postgresql":
            # Hex EWKB is accepted both by the geometry input function and ST_GeomFromEWKT.
            return shapely.to_wkb(shapely.set_srid(value, self.srid), hex=True, include_srid=True)
        return shapely.to_wkb(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> BaseGeometry | None:
        return geometry_from_db(value)

    def __repr__(self) -> str:
        return f"GeometryType({self.geometry_type!r}, srid={self.srid})"


def geometry_from_db(value: Any) -> BaseGeometry | None:
    """Turn whatever a driver returned for a geometry (WKB, hex EWKB, WKBElement) into shapely."""
    if value is None:
        return None
    data = getattr(value, "data", value)  # GeoAlchemy2 WKBElement keeps the bytes in .data
    if isinstance(data, memoryview):
        data = data.tobytes()
    geom = shapely.from_wkb(data)
    return shapely.set_srid(geom, 0) if geom is not None else None


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp, stored and returned in UTC on every backend.

    SQLite has no timezone type, so naive values there are read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            msg = f"expected a datetime, got {type(value).__name__}"
            raise TypeError(msg)
        if value.tzinfo is None:
            msg = f"naive datetime {value.isoformat()} is ambiguous; give a timezone"
            raise ValueError(msg)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_SPEED_COLUMNS = ("speed_drive_kmh", "speed_bike_kmh", "speed_walk_kmh")
#: What a dataset log entry can record (``roads`` since 0002).
DATASET_KINDS = ("areas", "offices", "units", "matters", "files", "roads")


def _in(column: str, values: list[str]) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({listed})"


def _deferred_fk(target: str) -> ForeignKey:
    # Deferred so a whole dataset can be replaced inside one transaction in any row order;
    # the references are checked once, at commit.
    return ForeignKey(target, deferrable=True, initially="DEFERRED")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class AreaRow(Base):
    """One area of the hierarchy (district ... micro-grid). Geometry is always a MultiPolygon."""

    __tablename__ = "areas"

    code: Mapped[str] = mapped_column(String(18), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(String(16))
    parent_code: Mapped[str | None] = mapped_column(String(18), _deferred_fk("areas.code"))
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    name_source: Mapped[str | None] = mapped_column(String(16))
    # The bounding box lets SQLite (no spatial index) prefilter with plain B-tree range scans.
    minx: Mapped[float] = mapped_column(Float)
    miny: Mapped[float] = mapped_column(Float)
    maxx: Mapped[float] = mapped_column(Float)
    maxy: Mapped[float] = mapped_column(Float)
    geometry: Mapped[BaseGeometry] = mapped_column(GeometryType("MULTIPOLYGON"))

    __table_args__ = (
        CheckConstraint(_in("level", [str(v) for v in Level]), name="level"),
        CheckConstraint(
            "name_source IS NULL OR " + _in("name_source", list(NAME_SOURCES)), name="name_source"
        ),
        CheckConstraint("minx <= maxx AND miny <= maxy", name="bbox"),
        Index(None, "level"),
        Index(None, "parent_code"),
        Index(None, "minx", "maxx", "miny", "maxy"),
        Index("ix_areas_geometry_gist", "geometry", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )


class OfficeRow(Base):
    """A department's office stationed in (and commanded by) a street."""

    __tablename__ = "offices"

    office_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    department: Mapped[str] = mapped_column(Text)
    street_code: Mapped[str] = mapped_column(String(18), _deferred_fk("areas.code"))
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[BaseGeometry | None] = mapped_column(GeometryType("POINT"))

    __table_args__ = (
        CheckConstraint(_in("kind", [str(v) for v in ForceKind]), name="kind"),
        Index(None, "street_code"),
        Index("ix_offices_position_gist", "position", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )


class UnitRow(Base):
    """A deployable unit: owned by a department's office, commanded by ``street_code``."""

    __tablename__ = "units"

    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    office_id: Mapped[str | None] = mapped_column(String(64), _deferred_fk("offices.office_id"))
    department: Mapped[str] = mapped_column(Text)
    street_code: Mapped[str] = mapped_column(String(18), _deferred_fk("areas.code"))
    travel_mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    on_duty: Mapped[bool] = mapped_column(Boolean, default=True)
    grid_code: Mapped[str | None] = mapped_column(String(18), _deferred_fk("areas.code"))
    position: Mapped[BaseGeometry | None] = mapped_column(GeometryType("POINT"))
    position_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    generated: Mapped[bool] = mapped_column(Boolean, default=False)
    # Added in 0002. Where the position came from ("road", "grid_interior", "avl", ...).
    position_source: Mapped[str | None] = mapped_column(String(32))
    # The incident a busy unit works on, stored (not derived from assignments) so that the
    # dispatcher's re-check of a locked row, "still busy on the incident I meant to preempt",
    # reads one row. No foreign key: SQLite cannot add one without rebuilding the table.
    busy_incident_id: Mapped[str | None] = mapped_column(String(64))
    # Added in 0011: a larger number at every write of the row, set by a trigger (the live
    # feed's "what changed since").
    change_seq: Mapped[int | None] = mapped_column(BigInteger)
    # Added in 0013, by the same trigger: the transaction that wrote the row (PostgreSQL's
    # 64-bit id; SQLite copies change_seq), so that "written since a snapshot" is an index
    # range (gridgov.store.live_feed).
    change_xid: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint(_in("kind", [str(v) for v in ForceKind]), name="kind"),
        CheckConstraint(_in("travel_mode", [str(v) for v in TravelMode]), name="travel_mode"),
        CheckConstraint(_in("status", [str(v) for v in UnitStatus]), name="status"),
        Index(None, "kind"),
        Index(None, "street_code"),
        Index(None, "busy_incident_id"),
        Index("ix_units_change_seq", "change_seq"),
        Index("ix_units_change_xid", "change_xid"),
        Index("ix_units_street_xid", "street_code", "change_xid"),
        Index("ix_units_position_gist", "position", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )


class MatterRow(Base):
    """One matter of the coordination catalogue (power 3): who leads, who assists, how fast."""

    __tablename__ = "matters"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    domain: Mapped[str] = mapped_column(Text)
    name_zh: Mapped[str] = mapped_column(Text)
    name_en: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    keywords: Mapped[list[str]] = mapped_column(JSON, default=list)
    lead_kind: Mapped[str] = mapped_column(String(32))
    assist_kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    priority: Mapped[int] = mapped_column(Integer)
    # The catalogue's own units: minutes to acknowledge and arrive, hours to resolve.
    acknowledge_min: Mapped[float] = mapped_column(Float)
    arrive_min: Mapped[float] = mapped_column(Float)
    resolve_h: Mapped[float] = mapped_column(Float)
    max_travel_min: Mapped[float] = mapped_column(Float)
    handling_level: Mapped[str] = mapped_column(String(16))
    event_class: Mapped[str] = mapped_column(String(8))
    event_class_name: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(_in("lead_kind", [str(v) for v in ForceKind]), name="lead_kind"),
        CheckConstraint(
            _in("handling_level", [str(v) for v in HandlingLevel]), name="handling_level"
        ),
        CheckConstraint("priority BETWEEN 1 AND 4", name="priority"),
    )


class CatalogRow(Base):
    """What the stored catalogue says beside its matters: version, source, the names of its
    domains and event major classes, and its matters' order (one row, written with them).

    It belongs to the matters whose codes it lists: once other matters are stored without it,
    it no longer describes them and is not used.
    """

    __tablename__ = "catalogs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    # Lists of {"code", "zh", "en"} in file order.
    event_majors: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    domains: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    # The matter codes in file order (Open311 lists its services in that order).
    matter_codes: Mapped[list[str]] = mapped_column(JSON)

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


class DatasetRow(Base):
    """What was loaded into the store, when, and how many records of each kind."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        CheckConstraint(_in("kind", list(DATASET_KINDS)), name="kind"),
        Index(None, "kind", "loaded_at"),
    )


class RoadNodeRow(Base):
    """A node (intersection or dead end) of the road network."""

    __tablename__ = "road_nodes"

    node_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    geometry: Mapped[BaseGeometry] = mapped_column(GeometryType("POINT"))

    __table_args__ = (
        Index("ix_road_nodes_geometry_gist", "geometry", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )


class RoadLinkRow(Base):
    """A directed road link from node ``u`` to node ``v``; its geometry runs from u to v.

    A speed of 0 closes the link to that mode; NULL speeds mean "take them from the road
    class" (:data:`gridgov.roads.SPEEDS_KMH`).
    """

    __tablename__ = "road_links"

    link_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    u: Mapped[int] = mapped_column(BigInteger, _deferred_fk("road_nodes.node_id"))
    v: Mapped[int] = mapped_column(BigInteger, _deferred_fk("road_nodes.node_id"))
    length_m: Mapped[float] = mapped_column(Float)
    road_class: Mapped[str | None] = mapped_column(String(32))
    road_name: Mapped[str | None] = mapped_column(Text)
    class_source: Mapped[str | None] = mapped_column(String(16))
    oneway: Mapped[bool] = mapped_column(Boolean, default=False)
    speed_drive_kmh: Mapped[float | None] = mapped_column(Float)
    speed_bike_kmh: Mapped[float | None] = mapped_column(Float)
    speed_walk_kmh: Mapped[float | None] = mapped_column(Float)
    geometry: Mapped[BaseGeometry] = mapped_column(GeometryType("LINESTRING"))

    __table_args__ = (
        CheckConstraint("length_m > 0", name="length"),
        CheckConstraint(
            " AND ".join(f"({c} IS NULL OR {c} >= 0)" for c in _SPEED_COLUMNS), name="speeds"
        ),
        Index(None, "u"),
        Index(None, "v"),
        Index("ix_road_links_geometry_gist", "geometry", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )


class ReporterRow(Base):
    """A reporter's contact details (personal data), apart from everything else: incidents,
    events and notices name the reporter by ``reporter_id`` only. Erasure (on request, or
    ``settings.contact_retention_days`` after closure) empties ``contact`` and keeps the row,
    so the opaque references stay valid."""

    __tablename__ = "reporters"

    reporter_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # "email:...; phone:...; name:..." as the channel gave it; NULL once erased.
    contact: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("contact IS NULL OR erased_at IS NULL", name="erased"),
        Index(None, "erased_at"),
    )


#: What the privacy log records: a read of contact details, an erasure on request, one by the
#: retention rule, and what a migration moved.
PRIVACY_LOG_KINDS = ("read", "erasure", "retention", "migration")


class PrivacyLogRow(Base):
    """The audit of personal data: every read of a reporter's contact details and every
    erasure (who, when, which reporter id; never the details themselves)."""

    __tablename__ = "privacy_log"

    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(Text)
    # No foreign keys: the audit outlives what it names.
    reporter_id: Mapped[str | None] = mapped_column(String(40))
    incident_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        CheckConstraint(_in("kind", list(PRIVACY_LOG_KINDS)), name="kind"),
        Index(None, "reporter_id"),
        Index(None, "kind", "at"),
    )


class IncidentRow(Base):
    """A reported incident. ``status`` is the workflow state of its latest event
    (:class:`gridgov.workflow.State`); free text (no CHECK), so the workflow can grow states
    without a table rebuild on SQLite."""

    __tablename__ = "incidents"

    incident_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    matter_code: Mapped[str] = mapped_column(String(64))
    # Copied from the catalogue when known, so queues and preemption need no join.
    priority: Mapped[int | None] = mapped_column(Integer)
    geometry: Mapped[BaseGeometry] = mapped_column(GeometryType("POINT"))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(32))
    # Codes as located at dispatch; no foreign keys, because an incident outlives a reload.
    street_code: Mapped[str | None] = mapped_column(String(18))
    community_code: Mapped[str | None] = mapped_column(String(18))
    grid_code: Mapped[str | None] = mapped_column(String(18))
    microgrid_code: Mapped[str | None] = mapped_column(String(18))
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Added in 0003. A duplicate report is kept, linked to the open incident it repeats.
    duplicate_of: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("incidents.incident_id")
    )
    # What the reporter said.
    description: Mapped[str | None] = mapped_column(Text)
    # Added in 0010 (replacing the contact column ``reporter``): who to tell the outcome, as an
    # opaque id of the reporters table, where the contact itself is kept and can be erased.
    reporter_id: Mapped[str | None] = mapped_column(String(40), ForeignKey("reporters.reporter_id"))

    __table_args__ = (
        Index(None, "status", "reported_at"),
        Index(None, "street_code"),
        Index(None, "duplicate_of"),
        Index(None, "reporter_id"),
        Index("ix_incidents_geometry_gist", "geometry", postgresql_using="gist").ddl_if(
            dialect="postgresql"
        ),
    )


#: Incident statuses: the workflow's states.
INCIDENT_STATUSES = tuple(str(s) for s in State)


class DispatchRow(Base):
    """One dispatch decision for an incident, with its explanation."""

    __tablename__ = "dispatches"

    dispatch_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), ForeignKey("incidents.incident_id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    level: Mapped[str | None] = mapped_column(String(16))
    # The decision's status: assigned, partial or unassigned.
    status: Mapped[str] = mapped_column(String(16))
    travel_model: Mapped[str] = mapped_column(String(32))
    # How many decide-lock-check rounds it took (units taken meanwhile force another).
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Added in 0006: a dispatcher's choice (NULL on the system's automatic dispatches). The
    # times are sums over the units (one per force kind), so overrides compare in plain SQL.
    decided_by: Mapped[str | None] = mapped_column(Text)
    override: Mapped[bool | None] = mapped_column(Boolean)
    override_reason: Mapped[str | None] = mapped_column(Text)
    recommended_units: Mapped[list[str] | None] = mapped_column(JSON)
    recommended_time_s: Mapped[float | None] = mapped_column(Float)
    chosen_time_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index(None, "incident_id"),)


#: Dispatch modes of a street: ``auto`` dispatches every report at once, ``confirm`` waits.
DISPATCH_MODES = ("auto", "confirm")


class StreetModeRow(Base):
    """A street's dispatch mode (added in 0006); a street without a row is ``auto``."""

    __tablename__ = "street_modes"

    street_code: Mapped[str] = mapped_column(String(18), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    # Priority-1 matters are dispatched at once even in confirm mode.
    priority1_auto: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(Text)

    __table_args__ = (CheckConstraint(_in("mode", list(DISPATCH_MODES)), name="mode"),)


class AssignmentRow(Base):
    """One unit sent to one incident. At most one active assignment per unit (enforced by a
    partial unique index on both backends, under the dispatcher's own locking)."""

    __tablename__ = "assignments"

    assignment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dispatch_id: Mapped[int] = mapped_column(Integer, ForeignKey("dispatches.dispatch_id"))
    incident_id: Mapped[str] = mapped_column(String(64), ForeignKey("incidents.incident_id"))
    # No foreign key: a dataset load replaces the units table, and the history must survive it.
    unit_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32))
    time_s: Mapped[float] = mapped_column(Float)
    over_max_travel: Mapped[bool] = mapped_column(Boolean, default=False)
    preempts: Mapped[str | None] = mapped_column(String(64), ForeignKey("incidents.incident_id"))
    route: Mapped[BaseGeometry | None] = mapped_column(GeometryType("LINESTRING"))
    route_length_m: Mapped[float | None] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    release_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(
            "(active AND released_at IS NULL) OR (NOT active AND released_at IS NOT NULL)",
            name="released",
        ),
        Index(None, "dispatch_id"),
        Index(None, "incident_id"),
        Index(None, "unit_id", "assigned_at"),
        Index(
            "ux_assignments_active_unit",
            "unit_id",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )


class EventRow(Base):
    """One workflow transition of an incident (:class:`gridgov.workflow.Event`). Append-only:
    triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL), see migration 0003."""

    __tablename__ = "events"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), ForeignKey("incidents.incident_id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    # No foreign keys to offices or areas: the log outlives a dataset reload.
    office_id: Mapped[str | None] = mapped_column(String(64))
    street_code: Mapped[str | None] = mapped_column(String(18))
    level: Mapped[str | None] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))
    satisfaction: Mapped[str | None] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        UniqueConstraint("incident_id", "seq"),
        CheckConstraint("seq >= 1", name="seq"),
        CheckConstraint(_in("action", [str(v) for v in Action]), name="action"),
        CheckConstraint(_in("role", [str(v) for v in Role]), name="role"),
        CheckConstraint(_in("to_state", [str(v) for v in State]), name="to_state"),
        CheckConstraint(
            "satisfaction IS NULL OR " + _in("satisfaction", [str(v) for v in Satisfaction]),
            name="satisfaction",
        ),
        Index(None, "action", "at"),
        Index(None, "office_id"),
        Index(None, "street_code", "at"),
    )


#: What a photo documents: the report, the resolution (处置后) or the verification (核查).
MEDIA_KINDS = ("report", "resolve", "verify")


class MediaRow(Base):
    """An evidence photo of an incident (files under the media root, named by ``sha256``, the
    digest of the bytes uploaded). A removed photo keeps its row, with who removed it and why,
    and loses its files."""

    __tablename__ = "media"

    media_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), ForeignKey("incidents.incident_id"))
    # The event it documents (events.seq of the incident).
    event_seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # From the photo's EXIF, when it has them; the served copy carries no EXIF.
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    gps_lon: Mapped[float | None] = mapped_column(Float)
    gps_lat: Mapped[float | None] = mapped_column(Float)
    # Whether the reporter agreed to publish it (Open311 media_url shows only these).
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    uploaded_by: Mapped[str] = mapped_column(Text)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_by: Mapped[str | None] = mapped_column(Text)
    removed_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("incident_id", "event_seq", "sha256"),
        CheckConstraint(_in("kind", list(MEDIA_KINDS)), name="kind"),
        CheckConstraint(
            "(removed_at IS NULL) = (removed_reason IS NULL)", name="removed_with_reason"
        ),
        Index(None, "incident_id"),
    )


#: Kinds of notice, and who receives them.
NOTICE_KINDS = ("supervision", "outcome")
RECIPIENT_KINDS = ("office", "department", "reporter")


class NoticeRow(Base):
    """A notice sent: a supervision (督办) to an office or department, or an outcome to a
    reporter (of the incident, or of a duplicate linked to it)."""

    __tablename__ = "notices"

    notice_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(64), ForeignKey("incidents.incident_id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(16))
    level: Mapped[str | None] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(16))
    recipient_kind: Mapped[str] = mapped_column(String(16))
    # An office id, a department, or a reporter's opaque id (never their contact, since 0010).
    recipient: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        CheckConstraint(_in("kind", list(NOTICE_KINDS)), name="kind"),
        CheckConstraint(_in("recipient_kind", list(RECIPIENT_KINDS)), name="recipient_kind"),
        Index(None, "incident_id"),
        Index(None, "kind", "created_at"),
        Index(None, "recipient_kind", "recipient"),
    )


#: The street's possible opinions: on an office head's move (power 1), on a plan, project or
#: decision (powers 2 and 4): agree, object, or agree with conditions.
OPINIONS = ("agree", "disagree", "conditional")
#: What a consultation is about: an office head's move (power 1), a plan or project (power 2),
#: a major decision (power 4). Added in 0008; rows before it are appointments.
CONSULTATION_KINDS = ("appointment", "planning", "decision")
#: How the proposing department took a street's opinion.
ADOPTIONS = ("adopted", "partly", "not_adopted")
#: Events of a planning or decision consultation (append-only, see migration 0008).
CONSULTATION_ACTIONS = ("register", "suggest", "respond", "adopt", "accept", "supervise")


class ConsultationRow(Base):
    """A department's written consultation of the streets. Power 1: before moving an office
    head, one street, the opinion on the row (NULL until it answers). Powers 2 and 4 (since
    0008): a plan, project or decision with its footprint; the streets asked are its
    :class:`ConsultationRequestRow` s and everything that follows is a
    :class:`ConsultationEventRow`."""

    __tablename__ = "consultations"

    consultation_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # No foreign key: the record outlives a reload of the offices.
    office_id: Mapped[str | None] = mapped_column(String(64))
    department: Mapped[str] = mapped_column(Text)
    street_code: Mapped[str | None] = mapped_column(String(18))
    head_name: Mapped[str | None] = mapped_column(Text)
    proposed_move: Mapped[str | None] = mapped_column(Text)
    consulted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    letter: Mapped[str] = mapped_column(Text)
    opinion: Mapped[str | None] = mapped_column(String(16))
    opinion_text: Mapped[str | None] = mapped_column(Text)
    opinion_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(Text)
    # Since 0008.
    kind: Mapped[str] = mapped_column(String(16), server_default="appointment")
    item_code: Mapped[str | None] = mapped_column(String(32))
    stage: Mapped[str | None] = mapped_column(String(16))
    # Registered after the stage its item was meant for (the catalogue's judgement, kept).
    late: Mapped[bool | None] = mapped_column(Boolean)
    title: Mapped[str | None] = mapped_column(Text)
    footprint: Mapped[BaseGeometry | None] = mapped_column(GeometryType("GEOMETRY"))
    buffer_m: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        CheckConstraint("opinion IS NULL OR " + _in("opinion", list(OPINIONS)), name="opinion"),
        CheckConstraint("(opinion IS NULL) = (opinion_at IS NULL)", name="answered"),
        CheckConstraint(_in("kind", list(CONSULTATION_KINDS)), name="kind"),
        CheckConstraint(
            "kind <> 'appointment' OR (office_id IS NOT NULL AND street_code IS NOT NULL "
            "AND head_name IS NOT NULL AND proposed_move IS NOT NULL)",
            name="appointment",
        ),
        CheckConstraint(
            "kind = 'appointment' OR (item_code IS NOT NULL AND stage IS NOT NULL "
            "AND footprint IS NOT NULL AND late IS NOT NULL)",
            name="footprinted",
        ),
        Index(None, "office_id"),
        Index(None, "street_code"),
    )


class ConsultationRequestRow(Base):
    """One street asked about a planning or decision consultation, with its deadline in
    working days. Written once when the footprint is routed; never changed."""

    __tablename__ = "consultation_requests"

    request_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consultation_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("consultations.consultation_id")
    )
    street_code: Mapped[str] = mapped_column(String(18))
    # The street's communities the (buffered) footprint reaches.
    community_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Touched by the footprint itself (False: within the buffer only).
    direct: Mapped[bool] = mapped_column(Boolean)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The working-day count crossed a year the holiday calendar does not cover.
    due_estimated: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (
        UniqueConstraint("consultation_id", "street_code"),
        Index(None, "street_code"),
    )


class ConsultationEventRow(Base):
    """What happened to a planning or decision consultation: registered, a resident's
    suggestion, a street's answer, the department's adoption, an acceptance, a supervision.
    Append-only (triggers, migration 0008), like the incident events."""

    __tablename__ = "consultation_events"

    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consultation_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("consultations.consultation_id")
    )
    request_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("consultation_requests.request_id")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(Text)
    street_code: Mapped[str | None] = mapped_column(String(18))
    community_code: Mapped[str | None] = mapped_column(String(18))
    opinion: Mapped[str | None] = mapped_column(String(16))
    adoption: Mapped[str | None] = mapped_column(String(16))
    accepted: Mapped[bool | None] = mapped_column(Boolean)
    level: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        CheckConstraint(_in("action", list(CONSULTATION_ACTIONS)), name="action"),
        CheckConstraint("opinion IS NULL OR " + _in("opinion", list(OPINIONS)), name="opinion"),
        CheckConstraint("adoption IS NULL OR " + _in("adoption", list(ADOPTIONS)), name="adoption"),
        Index(None, "consultation_id"),
        Index(None, "request_id"),
        Index(None, "action", "at"),
    )


#: Roles an API credential can hold (see api/auth.py for what each may do).
API_ROLES = (
    "admin",
    "commander",
    "dispatcher",
    "unit",
    "grid_worker",
    "analyst",
    "citizen",
    "department",
)
#: Bearer tokens for staff and units; API keys for Open311 citizens' apps.
CREDENTIAL_KINDS = ("token", "api_key")


class CredentialRow(Base):
    """An API credential. Only a SHA-256 digest of its secret is stored: the secret is 256
    random bits, so a fast digest cannot be brute-forced and every request can afford it (a
    slow password hash is for secrets people choose)."""

    __tablename__ = "credentials"

    credential_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    # The scope: a street for commanders and dispatchers, a unit, or a grid for grid workers.
    street_code: Mapped[str | None] = mapped_column(String(18))
    unit_id: Mapped[str | None] = mapped_column(String(64))
    grid_code: Mapped[str | None] = mapped_column(String(18))
    # A department's name (the ``department`` of its offices and consultations), since 0008.
    department: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(_in("kind", list(CREDENTIAL_KINDS)), name="kind"),
        CheckConstraint(_in("role", list(API_ROLES)), name="role"),
    )


class IdempotencyRow(Base):
    """A POST made with an ``Idempotency-Key``: its fingerprint and, once answered, the answer
    that every retry gets back. ``status`` is NULL while the request is in flight; meanwhile
    ``claim_id`` names the run holding the key until ``lease_until``, and ``incident_id`` the
    incident it stored (see :mod:`gridgov.store.idempotency_rows`)."""

    __tablename__ = "idempotency"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    media_type: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    claim_id: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    incident_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index(None, "created_at"),)


# Core-level handles for bulk statements (typed as Table, which ``__table__`` is at run time).
AREAS = cast(Table, AreaRow.__table__)
OFFICES = cast(Table, OfficeRow.__table__)
UNITS = cast(Table, UnitRow.__table__)
MATTERS = cast(Table, MatterRow.__table__)
CATALOGS = cast(Table, CatalogRow.__table__)
DATASETS = cast(Table, DatasetRow.__table__)
ROAD_NODES = cast(Table, RoadNodeRow.__table__)
ROAD_LINKS = cast(Table, RoadLinkRow.__table__)
INCIDENTS = cast(Table, IncidentRow.__table__)
DISPATCHES = cast(Table, DispatchRow.__table__)
STREET_MODES = cast(Table, StreetModeRow.__table__)
ASSIGNMENTS = cast(Table, AssignmentRow.__table__)
EVENTS = cast(Table, EventRow.__table__)
NOTICES = cast(Table, NoticeRow.__table__)
CONSULTATIONS = cast(Table, ConsultationRow.__table__)
CONSULTATION_REQUESTS = cast(Table, ConsultationRequestRow.__table__)
CONSULTATION_EVENTS = cast(Table, ConsultationEventRow.__table__)
CREDENTIALS = cast(Table, CredentialRow.__table__)
IDEMPOTENCY = cast(Table, IdempotencyRow.__table__)
MEDIA = cast(Table, MediaRow.__table__)
REPORTERS = cast(Table, ReporterRow.__table__)
PRIVACY_LOG = cast(Table, PrivacyLogRow.__table__)
