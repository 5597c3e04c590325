"""The dispatcher's records: an incident, its placement, the units considered and assigned,
the decision with its explanation, a batch's result, and their JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np
import orjson
import shapely

from gridgov.model import EscalationLevel, ForceKind, TravelMode
from gridgov.travel_model import Route


@dataclass(frozen=True)
class Incident:
    """An incident to dispatch: a matter at a WGS84 point, reported at a UTC time."""

    incident_id: str
    matter_code: str
    lon: float
    lat: float
    reported_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The incident as a JSON-able dict."""
        return {
            "incident_id": self.incident_id,
            "matter_code": self.matter_code,
            "lon": json_float(self.lon),
            "lat": json_float(self.lat),
            "reported_at": self.reported_at.isoformat(),
        }


@dataclass(frozen=True)
class Placement:
    """Where an incident lies in the hierarchy (codes of each level)."""

    district_code: str | None
    street_code: str
    community_code: str | None
    grid_code: str | None
    microgrid_code: str | None

    def to_json(self) -> dict[str, Any]:
        """The codes as a JSON-able dict."""
        return {
            "district_code": self.district_code,
            "street_code": self.street_code,
            "community_code": self.community_code,
            "grid_code": self.grid_code,
            "microgrid_code": self.microgrid_code,
        }


@dataclass(frozen=True)
class Considered:
    """One unit the dispatcher looked at, for the explanation.

    ``time_s`` is None when the unit was left out (``note`` says why), inf when it cannot reach
    the incident or lies beyond the search limit of its tier.
    """

    unit_id: str
    kind: ForceKind
    street_code: str
    mode: TravelMode
    tier: str
    time_s: float | None
    note: str | None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict (inf becomes None, with ``beyond`` saying so)."""
        out: dict[str, Any] = {
            "unit_id": self.unit_id,
            "kind": self.kind.value,
            "street_code": self.street_code,
            "mode": self.mode.value,
            "tier": self.tier,
            "time_s": json_float(self.time_s),
            "note": self.note,
        }
        if self.time_s is not None and not math.isfinite(self.time_s):
            out["beyond_search_limit"] = True
        return out


@dataclass(frozen=True)
class Assignment:
    """One unit sent to an incident, and why."""

    unit_id: str
    kind: ForceKind
    role: str
    level: EscalationLevel
    rule: str
    time_s: float
    over_max_travel: bool
    preempts: str | None
    route: Route | None

    def to_json(self) -> dict[str, Any]:
        """The assignment as a JSON-able dict; the route is a GeoJSON LineString with extras."""
        return {
            "unit_id": self.unit_id,
            "kind": self.kind.value,
            "role": self.role,
            "level": self.level.value,
            "rule": self.rule,
            "time_s": json_float(self.time_s),
            "over_max_travel": self.over_max_travel,
            "preempts": self.preempts,
            "route": None if self.route is None else route_to_geojson(self.route),
        }


@dataclass(frozen=True)
class Decision:
    """The dispatcher's answer for one incident, with its explanation."""

    incident: Incident
    matter_code: str
    priority: int
    placement: Placement
    assignments: tuple[Assignment, ...]
    unfilled: tuple[ForceKind, ...]
    level: EscalationLevel | None
    explanation: dict[str, Any]

    @property
    def status(self) -> str:
        """``assigned`` (every kind filled), ``partial`` or ``unassigned`` (none filled)."""
        if not self.assignments:
            return "unassigned"
        return "partial" if self.unfilled else "assigned"

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-able: enums as values, inf as None, routes as GeoJSON."""
        return {
            "incident": self.incident.to_json(),
            "matter_code": self.matter_code,
            "priority": self.priority,
            "placement": self.placement.to_json(),
            "status": self.status,
            "level": None if self.level is None else self.level.value,
            "assignments": [a.to_json() for a in self.assignments],
            "unfilled": [k.value for k in self.unfilled],
            "explanation": jsonable(self.explanation),
        }


@dataclass(frozen=True)
class BatchResult:
    """Decisions for many incidents at once and what they cost.

    ``weighted_cost_s`` sums ``PRIORITY_WEIGHT[priority] * time_s`` over the assignments.
    A slot left open costs ``PRIORITY_WEIGHT[priority] * horizon`` in ``unassigned_cost_s``
    (as much as the slowest acceptable response), so that results assigning different numbers
    of slots compare fairly; the optimiser minimises :attr:`objective_s`, their sum.
    ``assigned`` and ``unassigned`` count slots (one per incident and required kind).
    """

    decisions: tuple[Decision, ...]
    weighted_cost_s: float
    assigned: int
    unassigned: int
    unassigned_cost_s: float = 0.0
    method: str = "optimal"

    @property
    def objective_s(self) -> float:
        """The minimised total: weighted travel time plus the cost of the open slots."""
        return self.weighted_cost_s + self.unassigned_cost_s

    def gain_over(self, other: BatchResult) -> float:
        """Relative reduction of the objective against ``other`` (0.1 = 10 % lower).

        When both results fill the same slots this is the reduction of the weighted travel time.
        """
        if other.objective_s <= 0:
            return 0.0
        return (other.objective_s - self.objective_s) / other.objective_s


def route_to_geojson(route: Route) -> dict[str, Any]:
    """A route as a GeoJSON LineString, carrying its mode, time, length and road nodes."""
    coords = [[float(x), float(y)] for x, y in shapely.get_coordinates(route.geometry)]
    return {
        "type": "LineString",
        "coordinates": coords,
        "mode": route.mode.value,
        "time_s": json_float(route.time_s),
        "length_m": json_float(route.length_m),
        "node_ids": list(route.node_ids),
    }


def json_float(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


#: Types whose values JSON takes as they are (a float may be inf or nan: not one of them).
_AS_IS = frozenset({str, int, bool, type(None)})


# Dataclasses and times go through _json_default, as jsonable writes them.
_JSON_OPTIONS = (
    orjson.OPT_SERIALIZE_NUMPY
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, np.ndarray):  # one orjson does not write itself (not contiguous...)
        return jsonable(obj)
    return str(obj)


def json_text(obj: Any) -> str:
    """JSON text of ``obj`` by :func:`jsonable`'s rules, written without making its copy: the
    store's JSON columns (a decision's explanation is kilobytes, written in the intake's
    turn). Infinities and nan become null, an Enum its value, numpy values numbers, keys text
    and anything else ``str`` of it. (Two corners differ: a None key is written "null", and a
    float32 as its own shortest digits.) What orjson refuses (an integer beyond 64 bits, which
    a caller's document may hold) is written from jsonable's copy by the standard library."""
    try:
        return orjson.dumps(obj, default=_json_default, option=_JSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False)


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that json.dumps accepts: inf/nan -> None, enums -> values."""
    # The exact built-in types first: explanations are large and mostly made of them (an
    # Enum, a numpy scalar or a subclass takes the general path below).
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is dict:
        # Plain keys and leaves are taken as they are, without a call each: an explanation
        # holds thousands of them (a leaf of another type, even a float, takes the call).
        return {
            (k if type(k) is str else str(jsonable(k))): (v if type(v) in _AS_IS else jsonable(v))
            for k, v in obj.items()
        }
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is int:
        return obj
    if t is list:
        return [v if type(v) in _AS_IS else jsonable(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bool | str) or obj is None:
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return json_float(float(obj))
    if isinstance(obj, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, np.bool_):
        return bool(obj)
    return str(obj)
