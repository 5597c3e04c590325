"""The dispatcher: the nearest suitable unit under street command, with escalation.

Single-incident dispatch follows DESIGN.md "Dispatch semantics" exactly. For each force kind the
catalogue matter requires (lead first, then the assisting kinds; joint enforcement takes one unit
of each, and no unit fills two slots), the candidates are the units of that kind that are
available, on duty, positioned on a usable road and not excluded. Their cost is the travel time
from the unit to the incident over the road network of the unit's travel mode, access legs
included (:mod:`gridgov.network`). The tiers are tried in order, and a tier accepts when its best
candidate arrives within the matter's maximum travel time:

``own_grid``
    only for grid-level matters and the grid-worker kind: the worker(s) of the incident's grid
    (level ``community``);
``street``
    the units the incident's street commands (level ``community`` for a grid worker of the
    incident's community, else ``street``);
``neighbour``
    the street's units and those of the streets whose polygons touch it (level ``neighbour``);
``district``
    every unit of the kind (level ``district``).

When no tier accepts, a priority-1 matter may preempt the nearest unit busy on a low-priority
incident within the maximum travel time (rule ``preemption``); otherwise the best candidate of
the district is assigned anyway (rule ``best_over_max_travel``, level ``district``), and a kind
with no candidate at all is ``unfilled``. Ties go to the smaller ``unit_id``.

Units that cannot be candidates (off duty, busy, excluded, without a usable position, farther
than ``settings.max_snap_m`` from their mode's roads) are recorded in the explanation with the
reason. An incident farther than ``max_snap_m`` from the roads of a travel mode that units of its
kinds use is refused (:class:`~gridgov.errors.InputError` naming the point and the distance).

Exact minima at low cost: every search is a bounded reverse search from the incident, one per
travel mode, and the widest one so far is reused by every later tier and kind. A tier first asks
for times up to a little more than the smallest typical time of its candidates (their admissible
lower bound times the travel model's typical ratio); while that finds nothing, the limit doubles
up to the maximum travel time. A field with limit ``L`` is exact for every time up to ``L``, so
the minimum found within the limit is the true minimum, and a decision usually costs one small
search per mode (on a large network, a search on a region around the incident: see
:meth:`gridgov.network.RoadNetwork.field_to`).

Batch mode (:func:`dispatch_batch`) assigns many pending incidents at once, minimising the total
priority-weighted travel time by one rectangular assignment problem per force kind
(:func:`scipy.optimize.linear_sum_assignment`), with times searched lazily (see there);
:func:`dispatch_greedy` is the nearest-first baseline in arrival order under the same
eligibility.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from functools import cached_property, lru_cache
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import CRS
from scipy.optimize import linear_sum_assignment

from gridgov.areas import Locator, build_locator, street_adjacency
from gridgov.catalog import Catalog, Matter
from gridgov.dispatch.rules import (
    best_candidate,
    candidate_order,
    effective_positions,
    position_is_stale,
    unit_rank,
)
from gridgov.errors import InputError, OutsideDistrictError
from gridgov.io import to_bool
from gridgov.model import EscalationLevel, ForceKind, HandlingLevel, TravelMode, UnitStatus
from gridgov.network import Route, Snapped, StraightLine, TravelField, TravelModel
from gridgov.settings import get_settings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

#: Batch mode minimises sum(weight[priority] * travel seconds). Priority 1 is the most urgent.
PRIORITY_WEIGHT: dict[int, float] = {1: 8.0, 2: 4.0, 3: 2.0, 4: 1.0}

#: Tiers of single dispatch, in the order they are tried.
TIERS: tuple[str, ...] = ("own_grid", "street", "neighbour", "district")
#: The rule recorded for an assignment accepted at each tier.
TIER_RULES: dict[str, str] = {
    "own_grid": "own_grid_worker",
    "street": "nearest_in_street",
    "neighbour": "nearest_in_neighbours",
    "district": "nearest_in_district",
}
RULE_OVER_MAX = "best_over_max_travel"
RULE_PREEMPTION = "preemption"
RULE_BATCH = "batch_optimal"
RULE_GREEDY = "greedy_nearest"

#: Batch eligibility: a unit is eligible for a slot when it arrives within this many times the
#: matter's maximum travel time (the horizon). Beyond the maximum, so the optimiser has room to
#: trade one incident's time against another's, but bounded, so that no search is unbounded and
#: an open slot has a finite cost (weight × horizon).
BATCH_HORIZON_FACTOR = 2.0

#: Candidates listed per tier in an explanation (the count of all of them is always given);
#: the district tier of grid workers would otherwise list a thousand units.
EXPLAIN_MAX_CANDIDATES = 25

# First search limit of a tier: this factor times the smallest typical time (lower bound ×
# the travel model's typical ratio, about the median time), or the smallest lower bound plus
# the slack when that is larger (near units: one-way detours and access legs weigh more).
# Search cost grows with the square of the limit, a failed search costs a second one: on the
# megacity benchmark 1.15-1.3 beat both smaller factors and the former 3 × lower bound + 120 s
# (single decisions: p99 -30 %; batch: -15 %).
_LIMIT_FACTOR = 1.25
_LIMIT_SLACK_S = 60.0
# While a search finds nothing, its limit grows by this factor, up to this many times the first.
_LIMIT_GROW = 2.0
_MAX_GROWTH = 16.0
# Batch searches: each extension of an incident's search at least multiplies its limit by this
# (1.5 searched ~8 % less than 2 on the megacity benchmark).
_BATCH_GROW = 1.5
# Eligible units listed per slot in a batch explanation (a batch has many slots).
_BATCH_LISTED = 5
# Unit snaps kept by a context; cleared when full (moving AVL positions keep adding keys).
_SNAP_CACHE_MAX = 500_000
# A route's time and the field's time come from different searches; they may differ by float
# rounding only.
_ROUTE_TOL_S = 1e-3

_LEVEL_RANK: dict[EscalationLevel, int] = {lv: i for i, lv in enumerate(EscalationLevel)}
_KIND_ID: dict[ForceKind, int] = {k: i for i, k in enumerate(ForceKind)}
_ROLE_LEAD = "lead"
_ROLE_ASSIST = "assist"


# --------------------------------------------------------------------------------------------
# public records
# --------------------------------------------------------------------------------------------


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
            "lon": _num(self.lon),
            "lat": _num(self.lat),
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
            "time_s": _num(self.time_s),
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
            "time_s": _num(self.time_s),
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
        "time_s": _num(route.time_s),
        "length_m": _num(route.length_m),
        "node_ids": [int(n) for n in route.node_ids],
    }


# --------------------------------------------------------------------------------------------
# context
# --------------------------------------------------------------------------------------------


@dataclass
class DispatchContext:
    """Everything dispatch reads besides the units: built once, reused for many incidents.

    Build it with :func:`build_context`. It caches unit snaps keyed by ``(unit_id, lon, lat,
    mode)``, so repeated dispatches do not snap the same unit again.
    """

    gdf_areas: gpd.GeoDataFrame
    catalog: Catalog
    travel: TravelModel
    locator: Locator
    neighbours: dict[str, list[str]]
    _snaps: dict[tuple[str, float, float, str], tuple[int, float, float, bool]] = field(
        default_factory=dict, init=False, repr=False
    )
    _model: dict[str, Any] | None = field(default=None, init=False, repr=False)

    def describe_travel(self) -> dict[str, Any]:
        """The travel model's summary (computed once)."""
        if self._model is None:
            self._model = jsonable(self.travel.describe())
        return self._model


def build_context(
    gdf_areas: gpd.GeoDataFrame,
    catalog: Catalog,
    travel: TravelModel | None = None,
    *,
    locator: Locator | None = None,
) -> DispatchContext:
    """Build the dispatch context.

    Parameters
    ----------
    gdf_areas
        The area hierarchy (validated; at least the street level).
    catalog
        The matters catalogue.
    travel
        A :class:`~gridgov.network.RoadNetwork`, or None for the straight-line fallback
        (:class:`~gridgov.network.StraightLine`, DESIGN: distance × detour factor / speed).
    locator
        A locator already built over ``gdf_areas`` (built here when None).
    """
    return DispatchContext(
        gdf_areas=gdf_areas,
        catalog=catalog,
        travel=StraightLine() if travel is None else travel,
        locator=build_locator(gdf_areas) if locator is None else locator,
        neighbours=street_adjacency(gdf_areas),
    )


# --------------------------------------------------------------------------------------------
# units: effective positions
# --------------------------------------------------------------------------------------------


def prepare_units(
    gdf_units: gpd.GeoDataFrame,
    gdf_offices: gpd.GeoDataFrame | None = None,
    *,
    now: datetime,
    max_age: timedelta | None = None,
) -> gpd.GeoDataFrame:
    """Resolve each unit's effective position, as a CAD system does before dispatching.

    A position is kept when it is fresh (``position_time`` within ``max_age`` of ``now``) or
    static (no ``position_time``: a home position). A stale or missing position falls back to
    the unit's office; with no office position either, the geometry becomes None and the unit is
    left out of dispatch. Every fallback is written to ``position_note``, which dispatch copies
    into its explanations.

    Parameters
    ----------
    gdf_units
        Units (``UNIT_COLUMNS`` + status, on_duty, Point geometry; optional ``position_time``,
        naive times read as UTC).
    gdf_offices
        Offices with Point geometry, matched on ``office_id``; None means no fallback.
    now
        The dispatch time (naive means UTC).
    max_age
        Oldest usable AVL fix; ``settings.position_max_age_min`` when None.

    Returns
    -------
    A copy of ``gdf_units`` (same index, EPSG:4326) with the effective geometry and a
    ``position_note`` column (None where the position was used as given).
    """
    if max_age is None:
        max_age = timedelta(minutes=get_settings().position_max_age_min)
    out = _to_wgs84(gdf_units).copy()
    if out.crs is None:
        out = out.set_crs("EPSG:4326")
    n = len(out)
    geoms = np.asarray(out.geometry.values, dtype=object)
    has_pos = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    stale = np.zeros(n, dtype=bool)
    stamps: list[str | None] = [None] * n
    if "position_time" in out.columns:
        times = pd.to_datetime(out["position_time"], utc=True)
        known = times.notna().to_numpy()
        age = _utc(now) - times
        stale = known & (age > pd.Timedelta(max_age)).fillna(False).to_numpy(dtype=bool)
        stamps = [
            t.strftime("%Y-%m-%dT%H:%MZ") if s else None for t, s in zip(times, stale, strict=True)
        ]
    office = np.full(n, None, dtype=object)
    if gdf_offices is not None and "office_id" in out.columns and len(gdf_offices):
        offices = _to_wgs84(gdf_offices)
        lookup: dict[str, Any] = {}
        for oid, geom in zip(offices["office_id"].tolist(), offices.geometry.tolist(), strict=True):
            lookup.setdefault(str(oid), geom)
        office = np.array(
            [None if pd.isna(o) else lookup.get(str(o)) for o in out["office_id"].tolist()],
            dtype=object,
        )
    has_office = ~(shapely.is_missing(office) | shapely.is_empty(office))
    keep = has_pos & ~stale
    new_geoms = office.copy()
    new_geoms[~has_office] = None
    new_geoms[keep] = geoms[keep]
    notes = np.full(n, None, dtype=object)
    for i in np.flatnonzero(~keep):
        what = f"stale position ({stamps[i]})" if stale[i] else "no position"
        notes[i] = f"{what}: office position used" if has_office[i] else f"{what}: left out"
    out["position_note"] = pd.Series(notes, index=out.index, dtype=object)
    out[out.geometry.name] = gpd.GeoSeries(new_geoms, index=out.index, crs="EPSG:4326")
    return out


def _utc(when: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@lru_cache(maxsize=32)
def _is_wgs84(srs: str) -> bool:
    return CRS.from_user_input(srs).to_epsg() == 4326


def _to_wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    crs = gdf.crs  # not free: geopandas looks the geometry column up each time
    if crs is None or _is_wgs84(crs.srs):
        return gdf
    return gdf.to_crs("EPSG:4326")


# --------------------------------------------------------------------------------------------
# units: the per-call view
# --------------------------------------------------------------------------------------------

_UNIT_REQUIRED = ("unit_id", "kind", "street_code", "travel_mode", "status", "on_duty")


class UnitPool:
    """The units of the kinds a call needs, as arrays, with their snaps filled in lazily."""

    def __init__(
        self, gdf_units: gpd.GeoDataFrame, kinds: Collection[str], ctx: DispatchContext
    ) -> None:
        missing = [c for c in _UNIT_REQUIRED if c not in gdf_units.columns]
        if missing:
            msg = f"units lack column(s) {', '.join(missing)}"
            raise InputError(msg)
        self.ctx = ctx
        gdf = _to_wgs84(gdf_units)
        kinds_col = _string_column(gdf["kind"])
        take = kinds_col.rows_of(sorted(kinds))
        self._gdf: gpd.GeoDataFrame | None = gdf
        self._take: IntArray = take
        ids_col = _string_column(gdf["unit_id"])
        self.ids: ObjArray = ids_col.values[take]
        if not ids_col.unique and len(set(self.ids.tolist())) != len(self.ids):
            counts = pd.Series(self.ids).value_counts()
            dup = sorted(str(u) for u in counts.index[counts > 1])
            msg = f"unit_id must be unique; repeated: {', '.join(dup[:10])}"
            raise InputError(msg)
        n = len(take)
        self.n = n
        # Ranks over the whole column order the taken rows as their own ranks would.
        self.rank: IntArray = ids_col.rank[take]
        self.kind: ObjArray = kinds_col.values[take]
        self.street: ObjArray = _strings(gdf["street_code"], take)
        self.mode: ObjArray = _strings(gdf["travel_mode"], take)
        self.status: ObjArray = _strings(gdf["status"], take)
        self.on_duty: BoolArray = _bools(gdf["on_duty"], take)
        geoms = np.asarray(gdf.geometry.values, dtype=object)[take]
        self.lon: FloatArray = np.asarray(shapely.get_x(geoms), dtype=float)
        self.lat: FloatArray = np.asarray(shapely.get_y(geoms), dtype=float)
        self._derive()

    @classmethod
    def from_arrays(
        cls,
        ctx: DispatchContext,
        *,
        ids: ObjArray,
        rank: IntArray,
        kind: ObjArray,
        street: ObjArray,
        mode: ObjArray,
        grid: ObjArray,
        status: ObjArray,
        on_duty: BoolArray,
        lon: FloatArray,
        lat: FloatArray,
        note: ObjArray,
        busy_incident: ObjArray,
        busy_priority: FloatArray,
    ) -> UnitPool:
        """A pool of units given as arrays (every row of the wanted kinds, ids unique).

        What :func:`prepare_units` and the frame constructor work out, given directly: the
        store keeps the units' fixed columns per loaded dataset and reads only the changing
        ones for each dispatch (:func:`dispatch_pool`). ``rank`` orders the rows as their
        ids sort; ``lon``/``lat`` are the effective positions (NaN: left out, ``note`` says
        why); ``busy_priority`` is NaN where unknown.
        """
        self = cls.__new__(cls)
        self.ctx = ctx
        self._gdf, self._take = None, np.arange(len(ids))
        self.ids, self.n, self.rank = ids, len(ids), rank
        self.kind, self.street, self.mode = kind, street, mode
        self.status, self.on_duty, self.lon, self.lat = status, on_duty, lon, lat
        # The lazily read columns, given already (cached_property reads the instance dict).
        lazy = {
            "grid": grid,
            "note": note,
            "busy_incident": busy_incident,
            "busy_priority": busy_priority,
        }
        self.__dict__.update(lazy)
        self._derive()
        return self

    def _derive(self) -> None:
        n = self.n
        self.supported: BoolArray = np.zeros(n, dtype=bool)
        for m in self.ctx.travel.modes:
            self.supported |= self.mode == m.value
        self.positioned: BoolArray = np.isfinite(self.lon) & np.isfinite(self.lat)
        self.available: BoolArray = (self.status == UnitStatus.AVAILABLE.value) & self.on_duty
        self._known = np.zeros(n, dtype=bool)
        self.edge: IntArray = np.full(n, -1, dtype=np.int64)
        self.frac: FloatArray = np.zeros(n)
        self.access_m: FloatArray = np.zeros(n)
        self.far: BoolArray = np.zeros(n, dtype=bool)

    # Columns most decisions never read are fetched on first use.
    def _optional(self, column: str) -> ObjArray:
        if self._gdf is not None and column in self._gdf.columns:
            return _strings(self._gdf[column], self._take)
        return np.full(self.n, None, dtype=object)

    @cached_property
    def grid(self) -> ObjArray:
        return self._optional("grid_code")

    @cached_property
    def note(self) -> ObjArray:
        return self._optional("position_note")

    @cached_property
    def busy_incident(self) -> ObjArray:
        return self._optional("busy_incident")

    @cached_property
    def busy_priority(self) -> FloatArray:
        if self._gdf is None or "busy_priority" not in self._gdf.columns:
            return np.full(self.n, np.nan)
        values = pd.to_numeric(self._gdf["busy_priority"], errors="coerce")
        return np.asarray(values.to_numpy(dtype=float, na_value=np.nan)[self._take], dtype=float)

    @cached_property
    def street_codes(self) -> list[str]:
        """Distinct street codes; ``street_id`` indexes them (batch filters are lookups)."""
        return sorted({str(c) for c in self.street.tolist()})

    @cached_property
    def street_id(self) -> IntArray:
        index = {c: i for i, c in enumerate(self.street_codes)}
        return np.array([index[str(c)] for c in self.street.tolist()], dtype=np.int64)

    @cached_property
    def kind_id(self) -> IntArray:
        return np.array([_KIND_ID[ForceKind(k)] for k in self.kind.tolist()], dtype=np.int64)

    def rows_of_kind(self, kind: ForceKind) -> IntArray:
        return np.flatnonzero(self.kind == kind.value)

    def ensure_snaps(self, rows: IntArray) -> None:
        """Fill the snaps of ``rows`` (positioned, supported) from the cache or the model."""
        rows = rows[~self._known[rows] & self.positioned[rows] & self.supported[rows]]
        if len(rows) == 0:
            return
        cache = self.ctx._snaps
        misses: dict[str, list[int]] = {}
        for r in rows.tolist():
            key = (self.ids[r], self.lon[r], self.lat[r], self.mode[r])
            hit = cache.get(key)
            if hit is None:
                misses.setdefault(self.mode[r], []).append(r)
            else:
                self.edge[r], self.frac[r], self.access_m[r], self.far[r] = hit
        if misses and len(cache) > _SNAP_CACHE_MAX:
            cache.clear()
        for mode, todo in sorted(misses.items()):
            idx = np.asarray(todo, dtype=np.int64)
            snap = self.ctx.travel.snap(self.lon[idx], self.lat[idx], mode)
            self.edge[idx], self.frac[idx] = snap.edge, snap.frac
            self.access_m[idx], self.far[idx] = snap.access_m, snap.far
            for j, r in enumerate(todo):
                cache[(self.ids[r], self.lon[r], self.lat[r], self.mode[r])] = (
                    int(snap.edge[j]),
                    float(snap.frac[j]),
                    float(snap.access_m[j]),
                    bool(snap.far[j]),
                )
        self._known[rows] = True

    def snapped(self, rows: IntArray, mode: str) -> Snapped:
        """The snaps of ``rows`` (all of ``mode``, already ensured)."""
        return Snapped(
            mode=TravelMode(mode),
            lon=self.lon[rows],
            lat=self.lat[rows],
            edge=self.edge[rows],
            frac=self.frac[rows],
            access_m=self.access_m[rows],
            far=self.far[rows],
        )

    def reasons(
        self, rows: IntArray, exclude: Collection[str], taken: Collection[str]
    ) -> list[str | None]:
        """Why each of ``rows`` cannot be a candidate (None: it can). Snaps must be ensured."""
        max_snap = get_settings().max_snap_m
        out: list[str | None] = []
        for r in rows.tolist():
            uid = self.ids[r]
            reason: str | None = None
            if uid in exclude:
                reason = "excluded by the caller"
            elif uid in taken:
                reason = "already assigned to this incident"
            elif not self.on_duty[r] or self.status[r] == UnitStatus.OFF_DUTY.value:
                reason = "off duty"
            elif self.status[r] == UnitStatus.BUSY.value:
                reason = "busy" + self.busy_text(r)
            elif self.status[r] != UnitStatus.AVAILABLE.value:
                reason = f"status {self.status[r]}"
            elif not self.positioned[r]:
                reason = self.note[r] or "no position: left out"
            elif not self.supported[r]:
                reason = f"the travel model has no {self.mode[r]} graph: left out"
            elif self.far[r]:
                reason = (
                    f"position {self.access_m[r]:.0f} m from the nearest {self.mode[r]} road "
                    f"(more than {max_snap:.0f} m): left out"
                )
            out.append(reason)
        return out

    def busy_text(self, r: int) -> str:
        inc, prio = self.busy_incident[r], self.busy_priority[r]
        if inc is None and not np.isfinite(prio):
            return ""
        p = f"P{int(prio)} " if np.isfinite(prio) else ""
        return f" on {p}incident {inc if inc is not None else '(unknown)'}"

    def candidate_json(
        self, r: int, tier: str, time_s: float | None, note: str | None
    ) -> dict[str, Any]:
        """``considered(...).to_json()``, without building the record (explanations list many)."""
        out: dict[str, Any] = {
            "unit_id": self.ids[r],
            "kind": self.kind[r],
            "street_code": self.street[r],
            "mode": self.mode[r],
            "tier": tier,
            "time_s": _num(time_s),
            "note": note,
        }
        if time_s is not None and not math.isfinite(time_s):
            out["beyond_search_limit"] = True
        return out

    def considered(self, r: int, tier: str, time_s: float | None, note: str | None) -> Considered:
        return Considered(
            unit_id=self.ids[r],
            kind=ForceKind(self.kind[r]),
            street_code=self.street[r],
            mode=TravelMode(self.mode[r]),
            tier=tier,
            time_s=None if time_s is None else float(time_s),
            note=note,
        )


class _StringColumn:
    """A column's values as str (None where missing), with the lookups a pool needs.

    Shared between calls (see :func:`_string_column`): never modify ``values``.
    """

    def __init__(self, values: ObjArray) -> None:
        self.values = values
        self.values.flags.writeable = False

    @cached_property
    def unique(self) -> bool:
        return len(set(self.values.tolist())) == len(self.values)

    @cached_property
    def rank(self) -> IntArray:
        """Each row's place in the str order of the values (ties by row)."""
        rank = np.empty(len(self.values), dtype=np.int64)
        rank[np.argsort(self.values.astype(str), kind="stable")] = np.arange(len(self.values))
        return rank

    @cached_property
    def _groups(self) -> dict[str | None, IntArray]:
        codes, uniques = pd.factorize(self.values, use_na_sentinel=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        return {
            (None if v is None else str(v)): order[bounds[i] : bounds[i + 1]]
            for i, v in enumerate(uniques.tolist())
        }

    def rows_of(self, wanted: Iterable[str]) -> IntArray:
        """The rows holding any of the ``wanted`` values, in row order."""
        parts = [self._groups[w] for w in wanted if w in self._groups]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


# Columns converted lately, keyed by the identity of their (immutable) Arrow data, which each
# entry keeps alive so that the key cannot be reused. Turning Arrow strings into Python objects
# is most of what building a pool costs, and dispatch reads the same units frame many times;
# a column that is changed gets new Arrow data, hence a new key. Other columns (numpy-backed,
# mutable in place) are converted on every call.
_ARROW_COLUMNS: dict[int, tuple[object, _StringColumn]] = {}
_ARROW_COLUMNS_MAX = 64


def _string_column(col: pd.Series) -> _StringColumn:
    """The column as a :class:`_StringColumn` (cached while its Arrow data lives)."""
    arrow = _arrow_data(col)
    if arrow is not None:
        hit = _ARROW_COLUMNS.get(id(arrow))
        if hit is not None and hit[0] is arrow:
            return hit[1]
    out = _StringColumn(_convert_strings(col, np.arange(len(col))))
    if arrow is not None:
        if len(_ARROW_COLUMNS) >= _ARROW_COLUMNS_MAX:
            _ARROW_COLUMNS.clear()
        _ARROW_COLUMNS[id(arrow)] = (arrow, out)
    return out


def _arrow_data(col: pd.Series) -> object | None:
    """The immutable Arrow array behind an Arrow-backed string column, else None."""
    if isinstance(col.dtype, pd.StringDtype) and col.dtype.storage == "pyarrow":
        data: object = col.array.__arrow_array__()
        return data
    return None


def _strings(col: pd.Series, take: IntArray) -> ObjArray:
    """The column's values at ``take`` as str (None where missing)."""
    if _arrow_data(col) is not None:
        return _string_column(col).values[take]
    return _convert_strings(col, take)


def _convert_strings(col: pd.Series, take: IntArray) -> ObjArray:
    if isinstance(col.dtype, pd.StringDtype):
        # Taking before converting: arrow-backed strings are slow to turn into objects.
        return np.asarray(col.array.take(take).to_numpy(dtype=object, na_value=None), object)
    values = np.array(col.to_numpy(dtype=object)[take], dtype=object)
    values[pd.isna(values)] = None
    for i, v in enumerate(values.tolist()):
        if v is not None and type(v) is not str:
            values[i] = str(v)
    return values


def _bools(col: pd.Series, take: IntArray) -> BoolArray:
    if col.dtype == bool:
        return np.asarray(col.to_numpy(dtype=bool)[take], dtype=bool)
    values = col.to_numpy(dtype=object)[take]
    return np.array([to_bool(v) for v in values.tolist()], dtype=bool)


# --------------------------------------------------------------------------------------------
# the incident side: snaps, search fields and lower bounds
# --------------------------------------------------------------------------------------------


class _Target:
    """One incident's snaps per mode and its travel fields, grown only when a query needs it."""

    def __init__(self, pool: UnitPool, snaps: dict[str, Snapped]) -> None:
        self.pool = pool
        self.travel = pool.ctx.travel
        self.snaps = snaps
        self.fields: dict[str, TravelField] = {}
        self.searches: list[dict[str, Any]] = []
        self._lb = np.full(pool.n, np.nan)
        self._est = np.full(pool.n, np.nan)

    def field(self, mode: str, limit: float) -> TravelField:
        f = self.fields.get(mode)
        if f is None or f.limit_s < limit:
            f = self.travel.field_to(self.snaps[mode], limit)
            self.fields[mode] = f
            self.searches.append({"mode": mode, "limit_s": limit})
        return f

    def lower_bounds(self, rows: IntArray) -> FloatArray:
        self._bound(rows)
        return self._lb[rows]

    def estimates(self, rows: IntArray) -> FloatArray:
        """Typical times of ``rows`` (a guess where searches start, never a bound)."""
        self._bound(rows)
        return self._est[rows]

    def set_bounds(self, rows: IntArray, lb: FloatArray, est: FloatArray) -> None:
        """Lower bounds and typical times of ``rows``, computed elsewhere (batch: all at once)."""
        self._lb[rows] = lb
        self._est[rows] = est

    def _bound(self, rows: IntArray) -> None:
        todo = rows[np.isnan(self._lb[rows])]
        if len(todo):
            modes = self.pool.mode[todo]
            for mode in sorted(set(modes.tolist())):
                r = todo[modes == mode]
                lb = self.travel.lower_bound_s(self.pool.snapped(r, mode), self.snaps[mode])
                self._lb[r] = lb
                self._est[r] = lb * self.travel.typical_ratio(mode)

    def times_within(self, rows: IntArray, limit: float) -> FloatArray:
        """Times of ``rows``: exact for every value <= ``limit``; inf or exact above it."""
        out = np.full(len(rows), np.inf)
        modes = self.pool.mode[rows]
        for mode in sorted(set(modes.tolist())):
            sel = np.flatnonzero(modes == mode)
            r = rows[sel]
            f = self.fields.get(mode)
            if f is None or f.limit_s < limit:
                # A mode whose every unit is provably beyond the limit needs no search at all.
                if float(np.min(self.lower_bounds(r))) > limit:
                    continue
                f = self.field(mode, limit)
            out[sel] = f.times_from(self.pool.snapped(r, mode))
        return out

    def best_times(self, rows: IntArray, cap: float) -> tuple[FloatArray, float]:
        """Times of ``rows``, exact for every value <= the returned bound.

        The minimum is exact whenever it is <= ``cap``. The first search goes only as far as a
        few times the smallest lower bound; while it finds nothing, the limit doubles (capped
        at ``cap``, and at the best time already known from a larger search), so the last
        search is at most about twice as wide as the answer needs.
        """
        if len(rows) == 0:
            return np.zeros(0), cap
        est = float(np.min(self.estimates(rows)))
        first = max(_LIMIT_FACTOR * est, float(np.min(self.lower_bounds(rows))) + _LIMIT_SLACK_S)
        limit = min(cap, first)
        while True:
            times = self.times_within(rows, limit)
            best = float(np.min(times))
            if limit >= cap or best <= limit:
                return times, limit
            # Unbounded (the fallback): after a few doublings, one search settles it.
            grown = _LIMIT_GROW * limit if limit < _MAX_GROWTH * first else math.inf
            limit = min(cap, grown, best)


def _snap_incident(
    travel: TravelModel, incident: Incident, modes: Iterable[str]
) -> dict[str, Snapped]:
    """Snap the incident for each mode; InputError when it is far from that mode's roads."""
    out: dict[str, Snapped] = {}
    for mode in sorted(set(modes)):
        snap = travel.snap([incident.lon], [incident.lat], mode)
        _check_not_far(incident, snap)
        out[mode] = snap
    return out


def _check_not_far(incident: Incident, snap: Snapped) -> None:
    if bool(snap.far[0]):
        max_snap = get_settings().max_snap_m
        msg = (
            f"incident {incident.incident_id} at ({incident.lon:.6f}, {incident.lat:.6f}) "
            f"lies {float(snap.access_m[0]):.0f} m from the nearest road usable by "
            f"{snap.mode.value} units (max_snap_m = {max_snap:.0f} m); it cannot be dispatched "
            "over the road network"
        )
        raise InputError(msg)


def _needed_modes(pool: UnitPool, kinds: Iterable[ForceKind]) -> list[str]:
    """Modes of the positioned, routable units of ``kinds``: the incident must reach them all."""
    want = np.isin(pool.kind, np.array([k.value for k in kinds], dtype=object))
    ok = want & pool.positioned & pool.supported
    return sorted(set(pool.mode[ok].tolist()))


# --------------------------------------------------------------------------------------------
# single dispatch
# --------------------------------------------------------------------------------------------


def locate_incident(incident: Incident, ctx: DispatchContext) -> Placement:
    """Find the incident's street, community, grid and micro-grid.

    Raises
    ------
    OutsideDistrictError
        If the point lies outside every street of the loaded district.
    """
    codes = ctx.locator.locate_one(incident.lon, incident.lat)
    street = codes.get("street")
    if street is None:
        raise OutsideDistrictError(float(incident.lon), float(incident.lat), "wgs84")
    return Placement(
        district_code=codes.get("district"),
        street_code=street,
        community_code=codes.get("community"),
        grid_code=codes.get("grid"),
        microgrid_code=codes.get("microgrid"),
    )


def dispatch_incident(
    incident: Incident,
    gdf_units: gpd.GeoDataFrame,
    ctx: DispatchContext,
    *,
    exclude: Collection[str] = frozenset(),
    routes: bool = True,
    allow_preemption: bool = True,
) -> Decision:
    """Choose the units for one incident (DESIGN.md "Dispatch semantics").

    Parameters
    ----------
    incident
        The incident (WGS84).
    gdf_units
        Units with their current status (best passed through :func:`prepare_units` first);
        optional ``busy_incident`` / ``busy_priority`` columns make busy units preemptable.
    ctx
        The dispatch context.
    exclude
        Unit ids not to use (e.g. units that declined); recorded as left out.
    routes
        Compute the chosen units' routes (geometry for the map).
    allow_preemption
        Let a priority-1 matter take a unit busy on a low-priority incident.

    Raises
    ------
    UnknownMatterError
        If the matter code is not in the catalogue.
    OutsideDistrictError
        If the point lies outside every street.
    InputError
        If the point lies farther than ``max_snap_m`` from the roads of a travel mode that
        units of the matter's kinds use.
    """
    matter = ctx.catalog.get(incident.matter_code)
    placement = locate_incident(incident, ctx)
    pool = UnitPool(gdf_units, {k.value for k in matter.required_kinds}, ctx)
    return dispatch_pool(
        incident,
        pool,
        ctx,
        matter,
        placement,
        exclude=exclude,
        routes=routes,
        allow_preemption=allow_preemption,
    )


def dispatch_pool(
    incident: Incident,
    pool: UnitPool,
    ctx: DispatchContext,
    matter: Matter,
    placement: Placement,
    *,
    exclude: Collection[str] = frozenset(),
    routes: bool = True,
    allow_preemption: bool = True,
) -> Decision:
    """:func:`dispatch_incident` on a pool built already (the store builds it from arrays)."""
    kinds = matter.required_kinds
    target = _Target(pool, _snap_incident(ctx.travel, incident, _needed_modes(pool, kinds)))
    exclude = frozenset(exclude)
    taken: set[str] = set()
    assignments: list[Assignment] = []
    unfilled: list[ForceKind] = []
    kind_notes: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        role = _ROLE_LEAD if i == 0 else _ROLE_ASSIST
        found, note = _dispatch_kind(
            pool, target, matter, placement, kind, role, exclude, taken, allow_preemption
        )
        kind_notes.append(note)
        if found is None:
            unfilled.append(kind)
            continue
        row, assignment = found
        taken.add(assignment.unit_id)
        if routes:
            assignment = _with_route(pool, target, row, assignment)
        assignments.append(assignment)
    return _decision(
        ctx, incident, matter, placement, target, assignments, unfilled, kind_notes, "single"
    )


def _decision(
    ctx: DispatchContext,
    incident: Incident,
    matter: Matter,
    placement: Placement,
    target: _Target,
    assignments: Sequence[Assignment],
    unfilled: Sequence[ForceKind],
    kind_notes: Any,
    method: str,
) -> Decision:
    """The decision and its explanation, the same for single, batch and greedy dispatch."""
    explanation = {
        "method": method,
        "travel_model": ctx.describe_travel(),
        "incident": _incident_note(incident, placement, target.snaps),
        "matter": _matter_note(matter),
        "kinds": kind_notes,
        "searches": target.searches,
    }
    return Decision(
        incident=incident,
        matter_code=matter.code,
        priority=matter.priority,
        placement=placement,
        assignments=tuple(assignments),
        unfilled=tuple(unfilled),
        level=_widest(a.level for a in assignments),
        explanation=explanation,
    )


def _dispatch_kind(
    pool: UnitPool,
    target: _Target,
    matter: Matter,
    placement: Placement,
    kind: ForceKind,
    role: str,
    exclude: frozenset[str],
    taken: set[str],
    allow_preemption: bool,
) -> tuple[tuple[int, Assignment] | None, dict[str, Any]]:
    cap = matter.max_travel_min * 60.0
    rows = pool.rows_of_kind(kind)
    scope = _scopes(pool, rows, matter, placement, kind, target.pool.ctx.neighbours)
    note: dict[str, Any] = {"kind": kind.value, "role": role, "tiers": []}
    checked = np.zeros(pool.n, dtype=bool)
    usable = np.zeros(pool.n, dtype=bool)
    left_out: list[Considered] = []
    cand = np.zeros(0, dtype=np.int64)
    for tier, tier_rows in scope.items():
        # Each unit is checked once, in the narrowest tier that holds it.
        new = tier_rows[~checked[tier_rows]]
        pool.ensure_snaps(new[pool.available[new]])
        reasons = pool.reasons(new, exclude, taken)
        for r, why in zip(new.tolist(), reasons, strict=True):
            if why is None:
                usable[r] = True
            else:
                left_out.append(pool.considered(r, tier, None, why))
        checked[new] = True
        cand = tier_rows[usable[tier_rows]]
        times, bound = target.best_times(cand, cap)
        best = _pick(pool, cand, times)
        accepted = best is not None and times[best] <= cap
        note["tiers"].append(_tier_note(pool, tier, cand, times, bound, accepted))
        if accepted and best is not None:
            r, t = int(cand[best]), float(times[best])
            level = _tier_level(tier, pool, r, kind, placement)
            note.update(accepted_tier=tier, rule=TIER_RULES[tier], unit_id=pool.ids[r], time_s=t)
            note["left_out"] = [c.to_json() for c in _sorted_out(left_out)]
            return (r, _assignment(pool, r, kind, role, level, TIER_RULES[tier], t, cap)), note
    note["accepted_tier"] = None
    note["left_out"] = [c.to_json() for c in _sorted_out(left_out)]
    if allow_preemption and matter.priority == 1:
        pre = _preempt(pool, target, rows, kind, role, cap, exclude, taken)
        note["preemption"] = pre[1]
        if pre[0] is not None:
            r, a = pre[0]
            note.update(rule=RULE_PREEMPTION, unit_id=a.unit_id, time_s=a.time_s)
            return (r, a), note
    else:
        why = "matter is not priority 1" if allow_preemption else "preemption not allowed"
        note["preemption"] = {"considered": False, "reason": why}
    # ``cand`` is the district tier's: the best of them, however far, is the fallback.
    times, _ = target.best_times(cand, math.inf)
    best = _pick(pool, cand, times)
    if best is None:
        note.update(
            rule=None,
            unit_id=None,
            unfilled_reason=(
                "no usable unit of this kind in the district"
                if len(cand) == 0
                else "no usable unit of this kind can reach the incident"
            ),
        )
        return None, note
    r, t = int(cand[best]), float(times[best])
    note.update(rule=RULE_OVER_MAX, unit_id=pool.ids[r], time_s=t)
    note["over_max_travel"] = _list_candidates(pool, "district", cand, times)
    level = EscalationLevel.DISTRICT
    return (r, _assignment(pool, r, kind, role, level, RULE_OVER_MAX, t, cap)), note


def _scopes(
    pool: UnitPool,
    rows: IntArray,
    matter: Matter,
    placement: Placement,
    kind: ForceKind,
    neighbours: dict[str, list[str]],
) -> dict[str, IntArray]:
    """The rows of each tier (every unit of the kind, whatever its state), in tier order."""
    street = placement.street_code
    out: dict[str, IntArray] = {}
    if (
        matter.level is HandlingLevel.GRID
        and kind is ForceKind.GRID_WORKER
        and placement.grid_code is not None
    ):
        out["own_grid"] = rows[pool.grid[rows] == placement.grid_code]
    out["street"] = rows[pool.street[rows] == street]
    near = np.array([street, *neighbours.get(street, [])], dtype=object)
    out["neighbour"] = rows[np.isin(pool.street[rows], near)]
    out["district"] = rows
    return out


def _pick(pool: UnitPool, rows: IntArray, times: FloatArray) -> int | None:
    """Index (into ``rows``) of the fastest finite time; ties go to the smaller unit id."""
    if len(rows) == 0:
        return None
    order = np.lexsort((pool.rank[rows], times))
    first = int(order[0])
    return first if np.isfinite(times[first]) else None


def _tier_level(
    tier: str, pool: UnitPool, row: int, kind: ForceKind, placement: Placement
) -> EscalationLevel:
    if tier == "own_grid":
        return EscalationLevel.COMMUNITY
    if tier == "street":
        return _member_level(pool, row, kind, placement)
    return EscalationLevel(tier)


def _member_level(
    pool: UnitPool, row: int, kind: ForceKind, placement: Placement
) -> EscalationLevel:
    """Community for a grid worker of the incident's community, street for the street's units."""
    if pool.street[row] != placement.street_code:
        return EscalationLevel.NEIGHBOUR
    grid = pool.grid[row]
    community = placement.community_code
    if kind is ForceKind.GRID_WORKER and grid and community and grid[:12] == community:
        return EscalationLevel.COMMUNITY
    return EscalationLevel.STREET


def _assignment(
    pool: UnitPool,
    row: int,
    kind: ForceKind,
    role: str,
    level: EscalationLevel,
    rule: str,
    time_s: float,
    cap: float,
    preempts: str | None = None,
) -> Assignment:
    return Assignment(
        unit_id=pool.ids[row],
        kind=kind,
        role=role,
        level=level,
        rule=rule,
        time_s=time_s,
        over_max_travel=time_s > cap,
        preempts=preempts,
        route=None,
    )


def _preempt(
    pool: UnitPool,
    target: _Target,
    rows: IntArray,
    kind: ForceKind,
    role: str,
    cap: float,
    exclude: frozenset[str],
    taken: set[str],
) -> tuple[tuple[int, Assignment] | None, dict[str, Any]]:
    """The nearest unit busy on a low-priority incident within the maximum travel time."""
    min_priority = get_settings().preempt_min_priority
    busy = rows[
        (pool.status[rows] == UnitStatus.BUSY.value)
        & pool.on_duty[rows]
        & pool.positioned[rows]
        & pool.supported[rows]
    ]
    free = [pool.ids[r] not in exclude and pool.ids[r] not in taken for r in busy.tolist()]
    busy = busy[np.array(free, dtype=bool)]
    pool.ensure_snaps(busy)
    busy = busy[~pool.far[busy]]
    prio = pool.busy_priority[busy]
    has_inc = np.array([pool.busy_incident[r] is not None for r in busy.tolist()], dtype=bool)
    ok = np.isfinite(prio) & (prio >= min_priority) & has_inc
    cand = busy[ok]
    times, _ = target.best_times(cand, cap)
    listed = _list_candidates(
        pool, "district", cand, times, note=lambda r: f"busy{pool.busy_text(r)}: preemptable"
    )
    not_ok = [
        pool.considered(r, "district", None, f"busy{pool.busy_text(r)}: not preemptable").to_json()
        for r in sorted(busy[~ok].tolist(), key=lambda r: pool.rank[r])
    ]
    note: dict[str, Any] = {
        "considered": True,
        "min_priority": min_priority,
        "preemptable": listed,
        "not_preemptable": not_ok,
    }
    best = _pick(pool, cand, times)
    if best is None or times[best] > cap:
        note["result"] = "no unit busy on a low-priority incident within the maximum travel time"
        return None, note
    r, t = int(cand[best]), float(times[best])
    preempts = pool.busy_incident[r]
    note["result"] = f"{pool.ids[r]} preempted from incident {preempts}"
    a = _assignment(
        pool, r, kind, role, EscalationLevel.DISTRICT, RULE_PREEMPTION, t, cap, preempts
    )
    return (r, a), note


def _with_route(pool: UnitPool, target: _Target, row: int, a: Assignment) -> Assignment:
    mode = pool.mode[row]
    source = pool.snapped(np.array([row]), mode)
    # The field's exact time bounds the route's search: one search instead of a growing series.
    route = target.travel.route(source, target.snaps[mode], limit_s=a.time_s)
    # The field and the route come from two searches; they must agree on the time.
    assert abs(route.time_s - a.time_s) <= _ROUTE_TOL_S * max(1.0, a.time_s), (route, a)
    return replace(a, route=route)


def _tier_note(
    pool: UnitPool,
    tier: str,
    rows: IntArray,
    times: FloatArray,
    bound: float,
    accepted: bool,
) -> dict[str, Any]:
    finite = times[np.isfinite(times)]
    return {
        "tier": tier,
        "n_candidates": len(rows),
        "exact_up_to_s": bound,
        "best_s": float(np.min(finite)) if len(finite) else None,
        "accepted": accepted,
        "candidates": _list_candidates(pool, tier, rows, times),
    }


def _list_candidates(
    pool: UnitPool,
    tier: str,
    rows: IntArray,
    times: FloatArray,
    limit: int = EXPLAIN_MAX_CANDIDATES,
    note: Callable[[int], str] | None = None,
) -> list[dict[str, Any]]:
    """The first candidates by (time, unit_id), as JSON; the note defaults to the position's."""
    order = np.lexsort((pool.rank[rows], times))[:limit]
    out = []
    for i in order.tolist():
        r = int(rows[i])
        text = note(r) if note is not None else pool.note[r]
        out.append(pool.candidate_json(r, tier, float(times[i]), text))
    return out


def _sorted_out(items: list[Considered]) -> list[Considered]:
    return sorted(items, key=lambda c: (TIERS.index(c.tier), c.unit_id))


def _incident_note(
    incident: Incident, placement: Placement, snaps: dict[str, Snapped]
) -> dict[str, Any]:
    return {
        "incident_id": incident.incident_id,
        "lon": incident.lon,
        "lat": incident.lat,
        "placement": placement.to_json(),
        "snap": {
            mode: {"access_m": float(s.access_m[0]), "edge": int(s.edge[0])}
            for mode, s in snaps.items()
        },
    }


def _matter_note(matter: Matter) -> dict[str, Any]:
    return {
        "code": matter.code,
        "priority": matter.priority,
        "max_travel_min": matter.max_travel_min,
        "level": matter.level.value,
        "required_kinds": [k.value for k in matter.required_kinds],
    }


def _widest(levels: Iterable[EscalationLevel]) -> EscalationLevel | None:
    return max(levels, key=_LEVEL_RANK.__getitem__, default=None)


# --------------------------------------------------------------------------------------------
# batch
# --------------------------------------------------------------------------------------------


class _Open:
    """One incident of a batch: its eligible units, with times known per mode up to a limit.

    Nothing is searched up front: a unit's time is its straight-line lower bound until the
    assignment wants it, and only then is the incident's search for that unit's mode run (or
    extended). A batch so costs about one small search per incident and mode actually used,
    instead of one per incident and mode up to the horizon.
    """

    def __init__(self, target: _Target, rows: IntArray, horizon: float) -> None:
        self.target = target
        self.rows: IntArray = rows
        self.horizon = horizon
        self.limits: dict[str, float] = {}
        self.version = 0
        self.lb: FloatArray = np.zeros(0)
        self.est: FloatArray = np.zeros(0)
        self.mode: ObjArray = np.zeros(0, dtype=object)
        self.row_limit: FloatArray = np.zeros(0)
        self.times: FloatArray = np.zeros(0)

    def set_bounds(self, lb: FloatArray, est: FloatArray) -> None:
        """The rows' lower bounds and typical times (a batch computes all incidents' at once).

        Rows that a straight line already puts beyond the horizon are dropped.
        """
        self.target.set_bounds(self.rows, lb, est)
        keep = lb <= self.horizon
        self.rows = self.rows[keep]
        self.lb = lb[keep]
        self.est = est[keep]
        self.mode = self.target.pool.mode[self.rows]
        self.row_limit = np.zeros(len(self.rows))
        self.times = np.full(len(self.rows), np.inf)

    def extend(self, mode: str, wanted: float) -> None:
        """Know the times of ``mode`` at least up to ``wanted`` (first search or a larger one)."""
        planned = self.plan(mode, wanted)
        if planned is not None:
            limit, sel = planned
            self.record(mode, limit, sel, self.target.times_within(self.rows[sel], limit))

    def plan(self, mode: str, wanted: float) -> tuple[float, IntArray] | None:
        """The limit :meth:`extend` would search ``mode`` to, and the rows of that mode.

        None when the times are already known that far.
        """
        old = self.limits.get(mode, 0.0)
        grown = _BATCH_GROW * old if old > 0 else 0.0
        limit = min(self.horizon, max(wanted, grown))
        if limit <= old:
            return None
        return limit, np.flatnonzero(self.mode == mode)

    def record(self, mode: str, limit: float, sel: IntArray, times: FloatArray) -> None:
        """The times of ``rows[sel]`` (all of ``mode``), exact up to ``limit``."""
        self.limits[mode] = limit
        self.version += 1
        self.row_limit[sel] = limit
        self.times[sel] = times

    def first_limit(self, sel_index: int, bound: float) -> float:
        """The first search limit for the unit at ``rows[sel_index]``, whose time is >= bound.

        As single dispatch: the unit's typical time with some room (see ``_LIMIT_FACTOR``).
        """
        est = float(self.est[sel_index])
        return max(_LIMIT_FACTOR * est, float(self.lb[sel_index]) + _LIMIT_SLACK_S, bound)

    def bounds(self, sel: IntArray) -> tuple[FloatArray, BoolArray]:
        """Time of ``rows[sel]`` if known (exact), else a lower bound; inf beyond the horizon."""
        t = self.times[sel]
        exact = np.isfinite(t)
        # An unknown time exceeds its mode's limit and its straight-line bound: the larger one
        # relaxes it. Searched up to the horizon and still unknown: not eligible.
        limit = self.row_limit[sel]
        relaxed = np.where(limit >= self.horizon, np.inf, np.maximum(limit, self.lb[sel]))
        out = np.where(exact, t, relaxed)
        out[out > self.horizon] = np.inf
        return out, exact

    def wanted(self, sel_index: int, bound: float) -> tuple[str, float]:
        """The mode and limit to search to resolve ``rows[sel_index]`` (time so far >= bound)."""
        mode = str(self.mode[sel_index])
        if self.limits.get(mode, 0.0) > 0:
            return mode, 1.5 * bound
        return mode, self.first_limit(sel_index, bound)

    def want(self, sel_index: int, bound: float) -> None:
        """Resolve the unit at ``rows[sel_index]``, whose time is so far only ``bound``."""
        self.extend(*self.wanted(sel_index, bound))


@dataclass
class _Slot:
    """One (incident, required kind) to fill; ``sel`` indexes its incident's eligible rows."""

    incident: int
    kind: ForceKind
    role: str
    weight: float
    sel: IntArray


@dataclass
class _Batch:
    incidents: list[Incident]
    matters: list[Matter]
    placements: list[Placement]
    opens: list[_Open]
    slots: list[_Slot]
    pool: UnitPool
    left_out: list[dict[ForceKind, list[dict[str, Any]]]]
    _parts: dict[int, tuple[int, IntArray, FloatArray, BoolArray]] = field(default_factory=dict)

    def part(self, i: int) -> tuple[IntArray, FloatArray, BoolArray]:
        """Slot ``i``'s feasible units with their times (or bounds), cached until a search grows."""
        s = self.slots[i]
        o = self.opens[s.incident]
        hit = self._parts.get(i)
        if hit is None or hit[0] != o.version:
            bound, exact = o.bounds(s.sel)
            ok = np.isfinite(bound)
            hit = (o.version, o.rows[s.sel][ok], bound[ok], exact[ok])
            self._parts[i] = hit
        return hit[1], hit[2], hit[3]


def dispatch_batch(
    incidents: Sequence[Incident], gdf_units: gpd.GeoDataFrame, ctx: DispatchContext
) -> BatchResult:
    """Assign many pending incidents at once, minimising priority-weighted travel time.

    Each (incident, required kind) is a slot, and each unit fills at most one slot. A slot's
    eligible units are the available units of its kind commanded by the incident's street or a
    touching street (the command rule of single dispatch, up to the ``neighbour`` tier) that
    arrive within the horizon, :data:`BATCH_HORIZON_FACTOR` × the matter's maximum travel time.
    The objective is ``sum(PRIORITY_WEIGHT[priority] * time_s)`` over the filled slots plus
    ``PRIORITY_WEIGHT[priority] * horizon`` for every open slot (see :class:`BatchResult`). As a
    unit has one kind, kinds never compete: each kind is one rectangular assignment problem,
    solved exactly by :func:`scipy.optimize.linear_sum_assignment`.

    Times are searched lazily and the result is still exact: the problem is first solved with
    every time beyond an incident's current search limit replaced by a lower bound (the limit,
    or the unit's straight-line bound if larger). A solution that uses only known times is then
    optimal for the true times too, as they are never lower; otherwise the searches of the
    incidents whose slots used a bound are extended and the kind is solved again. The searches
    of one such round are independent; a large round runs half of them in a forked worker
    process when the machine has a second CPU (see :class:`_Searches`), with the same result.

    Slots with no eligible unit left stay open and are reported as ``unfilled``, so single
    dispatch can escalate them later. No routes are computed, and grid-level matters get no
    own-grid preference here: the optimiser sees travel times only.

    Raises
    ------
    UnknownMatterError, OutsideDistrictError, InputError
        As :func:`dispatch_incident`, for the first incident that has the problem.
    """
    batch = _build_batch(incidents, gdf_units, ctx)
    with _Searches(ctx.travel) as searches:
        chosen = _solve_batch(batch, searches)
    return _batch_result(batch, chosen, RULE_BATCH, "optimal")


def _solve_batch(batch: _Batch, searches: _Searches) -> dict[int, tuple[int, float]]:
    """The optimal assignment of every slot (see :func:`dispatch_batch`): ``{slot: (row, t)}``."""
    by_kind: dict[ForceKind, list[int]] = {}
    for i, s in enumerate(batch.slots):
        by_kind.setdefault(s.kind, []).append(i)
    chosen: dict[int, tuple[int, float]] = {}
    todo = sorted(by_kind, key=lambda k: k.value)
    while todo:
        grow: dict[tuple[int, int], float] = {}
        for kind in todo:
            for i in by_kind[kind]:
                chosen.pop(i, None)
            for i, (row, t, exact) in _solve_kind(batch, by_kind[kind]).items():
                chosen[i] = (row, t)
                if not exact:
                    grow[(batch.slots[i].incident, row)] = t
        # One search per incident and mode, as far as its farthest want: two slots of one
        # incident (joint enforcement) often want units of the same mode.
        limits: dict[tuple[int, str], float] = {}
        for (k, row), t in grow.items():
            o = batch.opens[k]
            mode, limit = o.wanted(int(np.flatnonzero(o.rows == row)[0]), t)
            limits[(k, mode)] = max(limit, limits.get((k, mode), 0.0))
        _extend_all(batch, sorted(limits.items()), searches)
        touched = {k for k, _ in grow}
        todo = sorted(
            {s.kind for s in batch.slots if s.incident in touched}, key=lambda kind: kind.value
        )
    return chosen


def _extend_all(
    batch: _Batch, requests: Sequence[tuple[tuple[int, str], float]], searches: _Searches
) -> None:
    """:meth:`_Open.extend` for many ``((incident, mode), wanted)``, the searches run together.

    Same outcome as extending one after the other: each request is a different incident and
    mode, and a batch never reuses a field (every extension searches farther than the last).
    """
    pool = batch.pool
    todo: list[tuple[_Open, str, float, IntArray]] = []
    for (k, mode), wanted in requests:
        o = batch.opens[k]
        planned = o.plan(mode, wanted)
        if planned is None:
            continue
        limit, sel = planned
        rows = o.rows[sel]
        # Every unit of the mode provably beyond the limit: nothing to search.
        if len(rows) == 0 or float(np.min(o.target.lower_bounds(rows))) > limit:
            o.record(mode, limit, sel, np.full(len(rows), np.inf))
        else:
            todo.append((o, mode, limit, sel))
    found = searches.run(
        [
            (o.target.snaps[mode], limit, pool.snapped(o.rows[sel], mode))
            for o, mode, limit, sel in todo
        ]
    )
    for (o, mode, limit, sel), times in zip(todo, found, strict=True):
        o.target.searches.append({"mode": mode, "limit_s": limit})
        o.record(mode, limit, sel, times)


#: A batch round runs its searches in two processes when it has at least this many (a fork
#: costs ~20-40 ms on a megacity-sized process; 200 searches take ~0.2 s).
_PARALLEL_MIN_SEARCHES = 200


class _Searches:
    """Runs a batch round's travel searches, half of them in a forked worker when that pays.

    scipy's Dijkstra holds the GIL, so threads cannot share the work. On Linux, with an idle
    second CPU and no other thread in the process (a fork copies locks that another thread
    might hold; see :func:`_can_fork`), a round with :data:`_PARALLEL_MIN_SEARCHES` searches
    or more forks one worker (once per batch; it inherits the road network and shares its
    memory) and sends it every other search; the caller runs the rest meanwhile. Each search
    is ``travel.field_to(target, limit).times_from(sources)`` wherever it runs, so the times
    are the same bits either way, and any trouble with the worker falls back to running here.
    On the megacity benchmark (1,000 incidents, 2,112 units, idle machine) the first round's
    ~1,150 searches take 0.55-0.6 s instead of 0.85-0.9 s, the batch ~1.6 s instead of ~1.9 s.
    """

    def __init__(self, travel: TravelModel) -> None:
        self.travel = travel
        self._worker: Any = None
        self._conn: Any = None
        self._failed = False

    def __enter__(self) -> _Searches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, tasks: Sequence[tuple[Snapped, float, Snapped]]) -> list[FloatArray]:
        """``times_from`` of each ``(target, limit, sources)``, in order."""
        if len(tasks) < _PARALLEL_MIN_SEARCHES or not self._start():
            return [self._times(t) for t in tasks]
        theirs = list(tasks[1::2])
        try:
            self._conn.send(theirs)
        except (OSError, ValueError):
            self._stop()
            return [self._times(t) for t in tasks]
        mine = [self._times(t) for t in tasks[0::2]]
        try:
            done: list[FloatArray] = self._conn.recv()
        except (EOFError, OSError):
            self._stop()
            done = [self._times(t) for t in theirs]
        out: list[FloatArray] = []
        for i in range(len(tasks)):
            out.append(mine[i // 2] if i % 2 == 0 else done[i // 2])
        return out

    def _times(self, task: tuple[Snapped, float, Snapped]) -> FloatArray:
        target, limit, sources = task
        return self.travel.field_to(target, limit).times_from(sources)

    def _start(self) -> bool:
        if self._worker is not None:
            return True
        if self._failed or not _can_fork():
            return False
        context = multiprocessing.get_context("fork")
        ours, theirs = context.Pipe()
        worker = context.Process(target=_search_worker, args=(theirs, self.travel), daemon=True)
        try:
            worker.start()
        except (OSError, AssertionError):  # AssertionError: a daemonic process has no children
            self._failed = True
            return False
        theirs.close()
        self._worker, self._conn = worker, ours
        return True

    def _stop(self) -> None:
        self._failed = True
        self.close()

    def close(self) -> None:
        """Stop the worker, if any."""
        if self._worker is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(None)
        self._conn.close()
        self._worker.join(timeout=5)
        if self._worker.is_alive():
            self._worker.kill()
            self._worker.join()
        self._worker = self._conn = None


def _can_fork() -> bool:
    """Forking is safe and useful here: Linux, one thread, a second CPU that is idle.

    Idle as far as the one-minute load average tells (this process counts about 1): with the
    other CPU busy, the worker only competes for it, and the fork and the copy-on-write pages
    it leaves behind make the batch slower (measured on the megacity benchmark with another
    process running: 2.4 s against 2.2 s without the worker).
    """
    if not sys.platform.startswith("linux") or threading.active_count() != 1:
        return False
    cpus = len(os.sched_getaffinity(0))
    return cpus >= 2 and os.getloadavg()[0] < cpus - 0.5


def _search_worker(conn: Any, travel: TravelModel) -> None:
    """The forked worker: answer lists of searches until told to stop (None or a closed pipe)."""
    while True:
        try:
            tasks = conn.recv()
        except (EOFError, OSError):
            return
        if tasks is None:
            return
        conn.send([travel.field_to(t, limit).times_from(src) for t, limit, src in tasks])


def dispatch_greedy(
    incidents: Sequence[Incident], gdf_units: gpd.GeoDataFrame, ctx: DispatchContext
) -> BatchResult:
    """The greedy baseline: in arrival order, each slot takes its nearest free eligible unit.

    Incidents are taken by ``reported_at`` (ties by ``incident_id``), their slots lead first;
    eligibility, horizon and exact times are those of :func:`dispatch_batch`, so the comparison
    is fair.
    """
    batch = _build_batch(incidents, gdf_units, ctx)
    order = sorted(
        range(len(batch.slots)),
        key=lambda i: (
            _utc(batch.incidents[batch.slots[i].incident].reported_at),
            batch.incidents[batch.slots[i].incident].incident_id,
            batch.slots[i].incident,
            i,
        ),
    )
    pool = batch.pool
    used = np.zeros(pool.n, dtype=bool)
    chosen: dict[int, tuple[int, float]] = {}
    for i in order:
        slot = batch.slots[i]
        o = batch.opens[slot.incident]
        while True:
            bound, exact = o.bounds(slot.sel)
            rows = o.rows[slot.sel]
            free = ~used[rows] & np.isfinite(bound)
            known = np.flatnonzero(free & exact)
            unknown = np.flatnonzero(free & ~exact)
            best = _pick(pool, rows[known], bound[known])
            # The nearest unknown one: its time is at least its bound, and above its limit.
            u = int(unknown[np.argmin(bound[unknown])]) if len(unknown) else -1
            if best is not None:
                j = int(known[best])
                if u < 0 or bound[j] < bound[u]:
                    used[rows[j]] = True
                    chosen[i] = (int(rows[j]), float(bound[j]))
                    break
                # Is the unknown one nearer? Search its mode at least as far as the known best.
                o.want(int(slot.sel[u]), max(float(bound[u]), float(bound[j]) / 1.5))
            elif u >= 0:
                o.want(int(slot.sel[u]), float(bound[u]))
            else:
                break
    return _batch_result(batch, chosen, RULE_GREEDY, "greedy")


def _build_batch(
    incidents: Sequence[Incident], gdf_units: gpd.GeoDataFrame, ctx: DispatchContext
) -> _Batch:
    incidents = list(incidents)
    matters = [ctx.catalog.get(inc.matter_code) for inc in incidents]
    placements = _locate_many(incidents, ctx)
    kinds = {k.value for m in matters for k in m.required_kinds}
    pool = UnitPool(gdf_units, kinds, ctx)
    usable = pool.available & pool.positioned & pool.supported
    pool.ensure_snaps(np.flatnonzero(usable))
    usable &= ~pool.far
    # All incidents are snapped per mode in one call.
    lon = np.array([inc.lon for inc in incidents], dtype=float)
    lat = np.array([inc.lat for inc in incidents], dtype=float)
    mode_snaps = {
        mode: ctx.travel.snap(lon, lat, mode)
        for mode in _needed_modes(pool, (ForceKind(k) for k in kinds))
    }
    unique = {m.code: m for m in matters}
    needed_of = {c: _needed_modes(pool, m.required_kinds) for c, m in unique.items()}
    for i, (inc, matter) in enumerate(zip(incidents, matters, strict=True)):
        for mode in needed_of[matter.code]:
            if mode_snaps[mode].far[i]:
                _check_not_far(inc, mode_snaps[mode].take(i))
    scopes = _BatchScopes(pool, usable, ctx.neighbours)
    opens: list[_Open] = []
    slots: list[_Slot] = []
    left_out: list[dict[ForceKind, list[dict[str, Any]]]] = []
    pair_inc: list[IntArray] = []
    pair_row: list[IntArray] = []
    for i, (matter, place) in enumerate(zip(matters, placements, strict=True)):
        snaps = {mode: mode_snaps[mode].take(i) for mode in needed_of[matter.code]}
        rows = scopes.usable_rows(place.street_code, matter.required_kinds)
        horizon = BATCH_HORIZON_FACTOR * matter.max_travel_min * 60.0
        opens.append(_Open(_Target(pool, snaps), rows, horizon))
        pair_inc.append(np.full(len(rows), i, dtype=np.int64))
        pair_row.append(rows)
        outs: dict[ForceKind, list[dict[str, Any]]] = {}
        for j, kind in enumerate(matter.required_kinds):
            slots.append(
                _Slot(
                    incident=i,
                    kind=kind,
                    role=_ROLE_LEAD if j == 0 else _ROLE_ASSIST,
                    weight=PRIORITY_WEIGHT[matter.priority],
                    sel=np.zeros(0, dtype=np.int64),
                )
            )
            outs[kind] = [dict(c) for c in scopes.left_out(place.street_code, kind)]
        left_out.append(outs)
    # Lower bounds of every (incident, unit) pair, one call per mode instead of one per incident.
    inc_of = np.concatenate([*pair_inc, np.zeros(0, dtype=np.int64)])
    row_of = np.concatenate([*pair_row, np.zeros(0, dtype=np.int64)])
    lb = np.zeros(len(row_of))
    est = np.zeros(len(row_of))
    modes = pool.mode[row_of]
    for mode in sorted(set(modes.tolist())):
        at = np.flatnonzero(modes == mode)
        sources = pool.snapped(row_of[at], mode)
        lb[at] = ctx.travel.lower_bound_s(sources, mode_snaps[mode].take(inc_of[at]))
        est[at] = lb[at] * ctx.travel.typical_ratio(mode)
    bounds = np.cumsum([0, *(len(r) for r in pair_row)])
    for i, o in enumerate(opens):
        part = slice(bounds[i], bounds[i + 1])
        o.set_bounds(lb[part], est[part])
    for s in slots:
        o = opens[s.incident]
        s.sel = np.flatnonzero(pool.kind[o.rows] == s.kind.value)
    return _Batch(incidents, matters, placements, opens, slots, pool, left_out)


class _BatchScopes:
    """Per street, the usable units it commands with its touching streets (batch eligibility)."""

    def __init__(self, pool: UnitPool, usable: BoolArray, neighbours: dict[str, list[str]]) -> None:
        self.pool = pool
        self.usable = usable
        self.neighbours = neighbours
        self._street_id = {code: i for i, code in enumerate(pool.street_codes)}
        self._masks: dict[str, BoolArray] = {}
        self._out: dict[tuple[str, ForceKind], list[dict[str, Any]]] = {}

    def _in_scope(self, street: str) -> BoolArray:
        mask = self._masks.get(street)
        if mask is None:
            near = [street, *self.neighbours.get(street, [])]
            by_id = np.zeros(len(self.pool.street_codes) + 1, dtype=bool)
            by_id[[self._street_id[c] for c in near if c in self._street_id]] = True
            mask = by_id[self.pool.street_id]
            self._masks[street] = mask
        return mask

    def usable_rows(self, street: str, kinds: Sequence[ForceKind]) -> IntArray:
        want = np.zeros(len(ForceKind), dtype=bool)
        want[[_KIND_ID[k] for k in kinds]] = True
        return np.flatnonzero(self.usable & self._in_scope(street) & want[self.pool.kind_id])

    def left_out(self, street: str, kind: ForceKind) -> list[dict[str, Any]]:
        """The units of ``kind`` in scope that cannot serve, with the reason (shared: copy)."""
        key = (street, kind)
        out = self._out.get(key)
        if out is None:
            pool = self.pool
            scope = np.flatnonzero(
                self._in_scope(street) & (pool.kind == kind.value) & ~self.usable
            )
            reasons = pool.reasons(scope, frozenset(), frozenset())
            out = [
                pool.candidate_json(r, "neighbour", None, why or "unusable")
                for r, why in zip(scope.tolist(), reasons, strict=True)
            ]
            self._out[key] = out
        return out


def _locate_many(incidents: Sequence[Incident], ctx: DispatchContext) -> list[Placement]:
    """:func:`locate_incident` for many incidents in one vectorised lookup."""
    lon = np.array([inc.lon for inc in incidents], dtype=float)
    lat = np.array([inc.lat for inc in incidents], dtype=float)
    codes = ctx.locator.locate(lon, lat)
    outside = np.flatnonzero(codes["street"].isna().to_numpy())
    if len(outside):
        i = int(outside[0])
        raise OutsideDistrictError(float(lon[i]), float(lat[i]), "wgs84")
    columns = {
        level: [None if v is None or pd.isna(v) else str(v) for v in codes[level].tolist()]
        for level in ("district", "street", "community", "grid", "microgrid")
    }
    return [
        Placement(
            district_code=columns["district"][i],
            street_code=str(columns["street"][i]),
            community_code=columns["community"][i],
            grid_code=columns["grid"][i],
            microgrid_code=columns["microgrid"][i],
        )
        for i in range(len(incidents))
    ]


def _solve_kind(batch: _Batch, slot_idx: list[int]) -> dict[int, tuple[int, float, bool]]:
    """Optimal assignment of one kind's slots: min sum over slots of w·t, or w·horizon if open.

    Returns ``{slot: (row, time, exact)}``; ``exact`` is False where the time is a lower bound.
    """
    pool = batch.pool
    # Slots with no feasible unit stay open whatever the others do.
    slot_idx = [i for i in slot_idx if len(batch.part(i)[0])]
    parts = [batch.part(i) for i in slot_idx]
    rows = np.unique(np.concatenate([p[0] for p in parts] + [np.zeros(0, np.int64)]))
    if len(rows) == 0:
        return {}
    # Columns in unit_id order, so the answer does not depend on the frame's row order.
    rows = rows[np.argsort(pool.rank[rows], kind="stable")]
    col = np.full(pool.n, -1, dtype=np.int64)
    col[rows] = np.arange(len(rows))
    times = np.full((len(slot_idx), len(rows)), np.inf)
    known = np.zeros((len(slot_idx), len(rows)), dtype=bool)
    at = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
    flat = col[np.concatenate([p[0] for p in parts])]
    times[at, flat] = np.concatenate([p[1] for p in parts])
    known[at, flat] = np.concatenate([p[2] for p in parts])
    feasible = np.isfinite(times)
    weight = np.array([batch.slots[i].weight for i in slot_idx])
    horizon = np.array([batch.opens[batch.slots[i].incident].horizon for i in slot_idx])
    # Saving of filling a slot against leaving it open (<= 0); an infeasible pair saves nothing,
    # and is dropped below if the solver pairs it anyway.
    saving = np.where(feasible, weight[:, None] * (times - horizon[:, None]), 0.0)
    r_idx, c_idx = linear_sum_assignment(saving)
    out: dict[int, tuple[int, float, bool]] = {}
    for i, j in zip(r_idx.tolist(), c_idx.tolist(), strict=True):
        if feasible[i, j]:
            out[slot_idx[i]] = (int(rows[j]), float(times[i, j]), bool(known[i, j]))
    return out


def _batch_result(
    batch: _Batch, chosen: dict[int, tuple[int, float]], rule: str, method: str
) -> BatchResult:
    pool = batch.pool
    ctx = pool.ctx
    per_incident: list[list[int]] = [[] for _ in batch.incidents]
    for i, s in enumerate(batch.slots):
        per_incident[s.incident].append(i)
    decisions: list[Decision] = []
    cost = open_cost = 0.0
    assigned = unassigned = 0
    for k, inc in enumerate(batch.incidents):
        matter, place, o = batch.matters[k], batch.placements[k], batch.opens[k]
        cap = matter.max_travel_min * 60.0
        assignments: list[Assignment] = []
        unfilled: list[ForceKind] = []
        notes: list[dict[str, Any]] = []
        for i in per_incident[k]:
            s = batch.slots[i]
            bound, exact = o.bounds(s.sel)
            listed = exact & np.isfinite(bound)
            note: dict[str, Any] = {
                "kind": s.kind.value,
                "role": s.role,
                "horizon_s": o.horizon,
                # Per travel mode: times up to this are exact (lower bounds stood in beyond).
                "exact_up_to_s": dict(o.limits),
                # Available units of the kind in the street and touching streets that a straight
                # line does not already put beyond the horizon.
                "n_in_scope": len(s.sel),
                "eligible": _list_candidates(
                    pool, "neighbour", o.rows[s.sel][listed], bound[listed], _BATCH_LISTED
                ),
                "left_out": batch.left_out[k][s.kind],
            }
            if i in chosen:
                r, t = chosen[i]
                level = _member_level(pool, r, s.kind, place)
                assignments.append(_assignment(pool, r, s.kind, s.role, level, rule, t, cap))
                note.update(rule=rule, unit_id=pool.ids[r], time_s=t)
                cost += s.weight * t
                assigned += 1
            else:
                unfilled.append(s.kind)
                note.update(
                    rule=None,
                    unit_id=None,
                    unfilled_reason=(
                        "no eligible unit within the horizon in the street and touching streets"
                        if not np.isfinite(bound).any()
                        else "every eligible unit went to another incident"
                    ),
                )
                open_cost += s.weight * o.horizon
                unassigned += 1
            notes.append(note)
        decisions.append(
            _decision(ctx, inc, matter, place, o.target, assignments, unfilled, notes, method)
        )
    return BatchResult(
        decisions=tuple(decisions),
        weighted_cost_s=cost,
        assigned=assigned,
        unassigned=unassigned,
        unassigned_cost_s=open_cost,
        method=method,
    )


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that json.dumps accepts: inf/nan -> None, enums -> values."""
    # The exact built-in types first: explanations are large and mostly made of them (an
    # Enum, a numpy scalar or a subclass takes the general path below).
    t = type(obj)
    if t is str or t is bool or obj is None:
        return obj
    if t is dict:
        return {str(jsonable(k)): jsonable(v) for k, v in obj.items()}
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is int:
        return obj
    if t is list:
        return [jsonable(v) for v in obj]
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, bool | str) or obj is None:
        return obj
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(float(obj))
    if isinstance(obj, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, np.bool_):
        return bool(obj)
    return str(obj)


__all__ = [
    "BATCH_HORIZON_FACTOR",
    "EXPLAIN_MAX_CANDIDATES",
    "PRIORITY_WEIGHT",
    "TIERS",
    "TIER_RULES",
    "Assignment",
    "BatchResult",
    "Considered",
    "Decision",
    "DispatchContext",
    "Incident",
    "Placement",
    "UnitPool",
    "best_candidate",
    "build_context",
    "candidate_order",
    "dispatch_batch",
    "dispatch_greedy",
    "dispatch_incident",
    "dispatch_pool",
    "effective_positions",
    "jsonable",
    "locate_incident",
    "position_is_stale",
    "prepare_units",
    "route_to_geojson",
    "unit_rank",
]
