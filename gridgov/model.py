"""Domain types shared by every module.

Core functions pass areas and units around as GeoDataFrames (one row per record, WGS84 geometry);
the column names below are the contract. The dataclasses are the single-record view used at the
edges (CLI output, API schemas, store rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Level(StrEnum):
    """A level of the area hierarchy, outermost first."""

    DISTRICT = "district"
    STREET = "street"
    COMMUNITY = "community"
    GRID = "grid"
    MICROGRID = "microgrid"

    @property
    def rank(self) -> int:
        return LEVELS.index(self)

    @property
    def parent(self) -> Level | None:
        return None if self is Level.DISTRICT else LEVELS[self.rank - 1]

    @property
    def child(self) -> Level | None:
        return None if self is Level.MICROGRID else LEVELS[self.rank + 1]

    @property
    def zh(self) -> str:
        return _LEVEL_ZH[self]

    @property
    def code_length(self) -> int:
        """Digits in a code of this level (statistical codes are 12; grids extend them)."""
        return _CODE_LENGTH[self]

    @property
    def prefix_length(self) -> int:
        """Leading digits a child's code shares with this area's code."""
        return _PREFIX_LENGTH[self]


LEVELS: tuple[Level, ...] = tuple(Level)

_LEVEL_ZH = {
    Level.DISTRICT: "区",
    Level.STREET: "街道",
    Level.COMMUNITY: "社区",
    Level.GRID: "网格",
    Level.MICROGRID: "微网格",
}
# GB/T 2260 + the statistical division code give 12 digits down to the community
# (6 district, 3 street, 3 community). Grids and micro-grids append 3 digits each, the usual
# practice of Chinese grid-management systems (社区代码 + 网格序号).
_CODE_LENGTH = {
    Level.DISTRICT: 12,
    Level.STREET: 12,
    Level.COMMUNITY: 12,
    Level.GRID: 15,
    Level.MICROGRID: 18,
}
_PREFIX_LENGTH = {
    Level.DISTRICT: 6,
    Level.STREET: 9,
    Level.COMMUNITY: 12,
    Level.GRID: 15,
    Level.MICROGRID: 18,
}

#: Columns of an areas GeoDataFrame (geometry in EPSG:4326, Polygon or MultiPolygon).
#: ``generated`` is about the polygon; ``name_source`` about the name and code: "official" (from a
#: published code table), "generated", or None when the source does not say.
AREA_COLUMNS = ("code", "name", "level", "parent_code", "generated", "name_source")
NAME_SOURCES = ("official", "generated")


class ForceKind(StrEnum):
    """The kinds of force stationed in a street."""

    JUDICIAL = "judicial"
    MARKET = "market"
    ENFORCEMENT = "enforcement"
    POLICE = "police"
    FIRE = "fire"
    HRSS = "hrss"
    HEALTH = "health"
    EMERGENCY = "emergency"
    GRID_WORKER = "grid_worker"

    @property
    def zh(self) -> str:
        return _FORCE_ZH[self]

    @property
    def en(self) -> str:
        return _FORCE_EN[self]


_FORCE_ZH = {
    ForceKind.JUDICIAL: "司法所",
    ForceKind.MARKET: "市场监管所",
    ForceKind.ENFORCEMENT: "综合执法中队",
    ForceKind.POLICE: "派出所",
    ForceKind.FIRE: "消防救援站",
    ForceKind.HRSS: "人社所",
    ForceKind.HEALTH: "卫健办",
    ForceKind.EMERGENCY: "应急办",
    ForceKind.GRID_WORKER: "网格员",
}
_FORCE_EN = {
    ForceKind.JUDICIAL: "judicial office",
    ForceKind.MARKET: "market-supervision office",
    ForceKind.ENFORCEMENT: "comprehensive law-enforcement squad",
    ForceKind.POLICE: "police station",
    ForceKind.FIRE: "fire and rescue station",
    ForceKind.HRSS: "human resources and social security",
    ForceKind.HEALTH: "health",
    ForceKind.EMERGENCY: "emergency management",
    ForceKind.GRID_WORKER: "grid worker",
}


class TravelMode(StrEnum):
    """How a unit moves; picks its speeds on the road network."""

    DRIVE = "drive"
    BIKE = "bike"
    WALK = "walk"


class UnitStatus(StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    OFF_DUTY = "off_duty"


class HandlingLevel(StrEnum):
    """The level that should handle a matter ("small matters stay in the community")."""

    GRID = "grid"
    COMMUNITY = "community"
    STREET = "street"


class EscalationLevel(StrEnum):
    """How far dispatch had to reach for a unit."""

    COMMUNITY = "community"
    STREET = "street"
    NEIGHBOUR = "neighbour"
    DISTRICT = "district"


@dataclass(frozen=True)
class Area:
    code: str
    name: str
    level: Level
    parent_code: str | None
    generated: bool


@dataclass(frozen=True)
class Office:
    """A department's office stationed in a street; the street commands it."""

    office_id: str
    name: str
    kind: ForceKind
    department: str
    street_code: str
    lon: float
    lat: float
    generated: bool = True


@dataclass(frozen=True)
class Unit:
    """A deployable unit. Owned by ``department`` through ``office_id``; commanded by the street."""

    unit_id: str
    name: str
    kind: ForceKind
    office_id: str
    department: str
    street_code: str
    travel_mode: TravelMode
    status: UnitStatus
    on_duty: bool
    lon: float | None
    lat: float | None
    position_time: datetime | None = None
    grid_code: str | None = None
    generated: bool = True


#: Columns of a units GeoDataFrame (Point geometry in EPSG:4326; empty/None when unknown).
UNIT_COLUMNS = (
    "unit_id",
    "name",
    "kind",
    "office_id",
    "department",
    "street_code",
    "travel_mode",
    "status",
    "on_duty",
    "grid_code",
    "generated",
)
#: Columns of a road-nodes GeoDataFrame (Point geometry in EPSG:4326).
ROAD_NODE_COLUMNS = ("node_id",)
#: Columns of a road-links GeoDataFrame: one row per directed link, LineString from ``u`` to ``v``
#: in EPSG:4326; a speed of 0 closes the link to that mode.
ROAD_LINK_COLUMNS = (
    "link_id",
    "u",
    "v",
    "length_m",
    "road_class",
    "road_name",
    "class_source",
    "oneway",
    "speed_drive_kmh",
    "speed_bike_kmh",
    "speed_walk_kmh",
)
#: Columns of an offices GeoDataFrame (Point geometry in EPSG:4326).
OFFICE_COLUMNS = ("office_id", "name", "kind", "department", "street_code", "generated")
