"""What dispatch reads: the context (areas, catalogue, travel model) and the unit pool.

:func:`prepare_units` resolves each unit's effective position (:mod:`gridgov.dispatch.rules`);
:class:`UnitPool` holds the units of the kinds a call needs as arrays, with their snaps filled
in lazily and cached by the context.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import CRS

from gridgov.areas import Locator, build_locator, street_adjacency
from gridgov.catalog import Catalog
from gridgov.dispatch import rules
from gridgov.dispatch.records import json_float, jsonable
from gridgov.errors import InputError
from gridgov.io import to_bool
from gridgov.model import ForceKind, TravelMode, UnitStatus
from gridgov.settings import get_settings
from gridgov.straight_line import StraightLine
from gridgov.travel_model import Snapped, TravelModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]

#: Each force kind's index (for lookups by kind in arrays).
KIND_ID: dict[ForceKind, int] = {k: i for i, k in enumerate(ForceKind)}
_NO_ROWS: IntArray = np.zeros(0, dtype=np.int64)
_NO_ROWS.flags.writeable = False


class _RowGroups:
    """A string column's rows grouped by value: one hash pass (``pandas.factorize``) and one
    stable sort, where comparing Python strings row by row would cost a pass per value. A
    value's rows, in row order, are a read-only slice of that sort; no array is made per value
    (a pool of a city has tens of thousands of grids). None (missing) is a value like the others.
    """

    def __init__(self, values: ObjArray) -> None:
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        self._index: dict[str | None, int] = {str(v): k for k, v in enumerate(uniques.tolist())}
        if (codes < 0).any():
            codes = np.where(codes < 0, len(self._index), codes)
            self._index[None] = len(self._index)
        self._order = np.argsort(codes, kind="stable").astype(np.int64, copy=False)
        self._order.flags.writeable = False
        self._bounds = np.searchsorted(codes[self._order], np.arange(len(self._index) + 1)).tolist()

    def rows(self, value: str | None) -> IntArray:
        """The rows holding ``value``, in row order (none when no row does); read-only."""
        k = self._index.get(value)
        return _NO_ROWS if k is None else self._order[self._bounds[k] : self._bounds[k + 1]]


# Unit snaps kept by a context; cleared when full (moving AVL positions keep adding keys).
_SNAP_CACHE_MAX = 500_000
# Incident snaps kept by a context (cleared when full): an intake request snaps its report
# before the dispatch turn, which then finds the snaps here instead of snapping in the turn.
_INCIDENT_SNAPS_MAX = 4096
# A unit's further joined roads: edges, positions and access legs (see Snapped.more_*).
_More = tuple[IntArray, FloatArray, FloatArray]


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
    _snaps: dict[tuple[str, float, float, str], tuple[int, float, float, bool, _More | None]] = (
        field(default_factory=dict, init=False, repr=False)
    )
    _model: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _incident_snaps: dict[tuple[float, float, str], Snapped] = field(
        default_factory=dict, init=False, repr=False
    )
    # The modes the last dispatch of each set of kinds needed (what a report is snapped for
    # ahead of its turn; a mode it turns out to need besides is snapped in the turn).
    _kind_modes: dict[tuple[ForceKind, ...], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False
    )

    def describe_travel(self) -> dict[str, Any]:
        """The travel model's summary (computed once)."""
        if self._model is None:
            self._model = jsonable(self.travel.describe())
        return self._model

    def snap_point(self, lon: float, lat: float, mode: str) -> Snapped:
        """One point snapped for ``mode`` (``travel.snap``), kept for the point's next ask.

        A pure function of the point and the travel model this context holds, so a kept snap
        is the one snapping again would give.
        """
        key = (float(lon), float(lat), str(mode))
        snap = self._incident_snaps.get(key)
        if snap is None:
            snap = self.travel.snap([key[0]], [key[1]], key[2])
            if len(self._incident_snaps) >= _INCIDENT_SNAPS_MAX:
                self._incident_snaps.clear()
            self._incident_snaps[key] = snap
        return snap

    def kept_snaps(self, lon: float, lat: float, kinds: Sequence[ForceKind]) -> dict[str, Snapped]:
        """The point's snaps kept for the modes :meth:`modes_for` gives ``kinds``."""
        out = {}
        for mode in self.modes_for(kinds):
            snap = self._incident_snaps.get((float(lon), float(lat), str(mode)))
            if snap is not None:
                out[mode] = snap
        return out

    def keep_snaps(self, lon: float, lat: float, snaps: dict[str, Snapped]) -> None:
        """Keep snaps of the point made by another context over the same travel model (a
        process's turn process gets them with the report)."""
        for mode, snap in snaps.items():
            if len(self._incident_snaps) >= _INCIDENT_SNAPS_MAX:
                self._incident_snaps.clear()
            self._incident_snaps[(float(lon), float(lat), str(mode))] = snap

    def noted_modes(self) -> dict[tuple[ForceKind, ...], tuple[str, ...]]:
        """Every set of kinds' noted modes (see :meth:`note_modes`), to hand to another context."""
        return dict(self._kind_modes)

    def note_modes(self, kinds: Sequence[ForceKind], modes: Sequence[str]) -> None:
        """Remember the modes a dispatch of ``kinds`` needed (see :meth:`modes_for`)."""
        self._kind_modes[tuple(kinds)] = tuple(modes)

    def modes_for(self, kinds: Sequence[ForceKind]) -> tuple[str, ...]:
        """The modes the last dispatch of ``kinds`` needed (none known: empty)."""
        return self._kind_modes.get(tuple(kinds), ())


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
        (:class:`~gridgov.straight_line.StraightLine`, DESIGN: distance × detour factor / speed).
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
    into its explanations. The rule is :func:`~gridgov.dispatch.rules.effective_positions`.

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
    out = _to_wgs84(gdf_units).copy()
    if out.crs is None:
        out = out.set_crs("EPSG:4326")
    n = len(out)
    geoms = np.asarray(out.geometry.values, dtype=object)
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
    times = out["position_time"] if "position_time" in out.columns else [None] * n
    lon, _, notes = rules.effective_positions(
        shapely.get_x(geoms),
        shapely.get_y(geoms),
        times,
        shapely.get_x(office),
        shapely.get_y(office),
        now,
        max_age,
    )
    # The given or the office geometry itself, not a point rebuilt from its coordinates.
    given = pd.isna(notes)
    at_office = ~given & np.isfinite(lon)
    new_geoms = np.full(n, None, dtype=object)
    new_geoms[given] = geoms[given]
    new_geoms[at_office] = office[at_office]
    out["position_note"] = pd.Series(notes, index=out.index, dtype=object)
    out[out.geometry.name] = gpd.GeoSeries(new_geoms, index=out.index, crs="EPSG:4326")
    return out


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
        ones for each dispatch (:func:`~gridgov.dispatch.dispatch_pool`). ``rank`` is
        :func:`~gridgov.dispatch.rules.unit_rank` of the ids (of these or of a superset);
        ``lon``/``lat``/``note`` are :func:`~gridgov.dispatch.rules.effective_positions`
        (NaN: left out); ``busy_priority`` is NaN where unknown.
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
        # The further roads a unit is joined to (Snapped.more_*), for the few units that have any.
        self.more: dict[int, _More] = {}
        self._more_flat: tuple[IntArray, IntArray, FloatArray, FloatArray] | None = None
        # Row sets of the fixed columns (kind, street, grid), found once per pool: a turn
        # decides a batch on one pool, and comparing a thousand strings per decision and
        # tier cost more than the lookups that use them. Masks are kept for kinds and street
        # sets only (one of each per street at most).
        self._rows_memo: dict[tuple[str, Any], Any] = {}

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
    def kind_id(self) -> IntArray:
        return np.array([KIND_ID[ForceKind(k)] for k in self.kind.tolist()], dtype=np.int64)

    def rows_of_kind(self, kind: ForceKind) -> IntArray:
        """The rows of ``kind`` (whatever their state), in pool order; read-only."""
        key = ("kind", kind)
        rows = self._rows_memo.get(key)
        if rows is None:
            rows = np.flatnonzero(self.kind == kind.value)
            rows.flags.writeable = False
            self._rows_memo[key] = rows
        return rows

    def in_streets(self, streets: Sequence[str]) -> BoolArray:
        """Which rows lie in one of ``streets`` (a mask over the pool); read-only."""
        key = ("streets", tuple(streets))
        mask = self._rows_memo.get(key)
        if mask is None:
            mask = np.isin(self.street, np.array(list(streets), dtype=object))
            mask.flags.writeable = False
            self._rows_memo[key] = mask
        return mask

    def rows_in_grid(self, grid_code: str | None) -> IntArray:
        """The rows of the grid ``grid_code``, in pool order; read-only. Grouped once for every
        grid, not a mask each: a city has tens of thousands of grids and a batch may touch
        thousands of them, each with a handful of units."""
        groups: _RowGroups | None = self._rows_memo.get(("grids", None))
        if groups is None:
            groups = self._rows_memo[("grids", None)] = _RowGroups(self.grid)
        return groups.rows(grid_code)

    def modes_of(self, kinds: Iterable[ForceKind]) -> list[str]:
        """Modes of the positioned, routable units of ``kinds``, sorted."""
        key = ("modes", tuple(kinds))
        modes = self._rows_memo.get(key)
        if modes is None:
            want = np.zeros(self.n, dtype=bool)
            for kind in key[1]:
                want[self.rows_of_kind(kind)] = True
            ok = want & self.positioned & self.supported
            modes = sorted(set(self.mode[ok].tolist()))
            self._rows_memo[key] = modes
        return list(modes)

    def ensure_snaps(self, rows: IntArray) -> None:
        """Fill the snaps of ``rows`` (positioned, supported) from the cache or the model."""
        rows = rows[~self._known[rows] & self.positioned[rows] & self.supported[rows]]
        if len(rows) == 0:
            return
        cache = self.ctx._snaps
        # Keys of plain Python values, and one store of the hits' columns: a numpy scalar read
        # or write for each row and column, and keys compared across numpy and Python types,
        # cost more than the lookups themselves (every turn builds a new pool).
        keys = list(
            zip(
                self.ids[rows].tolist(),
                self.lon[rows].tolist(),
                self.lat[rows].tolist(),
                self.mode[rows].tolist(),
                strict=True,
            )
        )
        misses: dict[str, list[int]] = {}  # mode -> positions in ``rows``
        hit_at: list[int] = []
        hits: list[tuple[int, float, float, bool, _More | None]] = []
        for i, key in enumerate(keys):
            hit = cache.get(key)
            if hit is None:
                misses.setdefault(key[3], []).append(i)
            else:
                hit_at.append(i)
                hits.append(hit)
        if hits:
            at = rows[hit_at]
            self.edge[at] = [h[0] for h in hits]
            self.frac[at] = [h[1] for h in hits]
            self.access_m[at] = [h[2] for h in hits]
            self.far[at] = [h[3] for h in hits]
            for r, h in zip(at.tolist(), hits, strict=True):
                if h[4] is not None:
                    self._set_more(r, h[4])
        if misses and len(cache) > _SNAP_CACHE_MAX:
            cache.clear()
        for mode, todo in sorted(misses.items()):
            idx = rows[todo]
            snap = self.ctx.travel.snap(self.lon[idx], self.lat[idx], mode)
            self.edge[idx], self.frac[idx] = snap.edge, snap.frac
            self.access_m[idx], self.far[idx] = snap.access_m, snap.far
            runs = np.searchsorted(snap.more_point, np.arange(len(todo) + 1))
            for j, (i, r) in enumerate(zip(todo, idx.tolist(), strict=True)):
                a, b = int(runs[j]), int(runs[j + 1])
                more = (
                    (snap.more_edge[a:b], snap.more_frac[a:b], snap.more_access_m[a:b])
                    if b > a
                    else None
                )
                self._set_more(r, more)
                cache[keys[i]] = (
                    int(snap.edge[j]),
                    float(snap.frac[j]),
                    float(snap.access_m[j]),
                    bool(snap.far[j]),
                    more,
                )
        self._known[rows] = True

    def _set_more(self, r: int, more: _More | None) -> None:
        if more is not None:
            self.more[r] = more
            self._more_flat = None

    def _further_joins(self, rows: IntArray) -> dict[str, np.ndarray]:
        """The ``more_*`` arrays of ``Snapped`` for ``rows``."""
        if not self.more:
            return {}
        if self._more_flat is None:
            order = sorted(self.more)
            parts = [self.more[r] for r in order]
            self._more_flat = (
                np.repeat(np.asarray(order, dtype=np.int64), [len(p[0]) for p in parts]),
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
            )
        row, edge, frac, access = self._more_flat
        # Each position of ``rows`` (a row may come more than once) takes its row's run.
        start = np.searchsorted(row, rows, side="left")
        count = np.searchsorted(row, rows, side="right") - start
        total = int(count.sum())
        if total == 0:
            return {}
        first = np.cumsum(count) - count
        at = np.repeat(start - first, count) + np.arange(total)
        return {
            "more_point": np.repeat(np.arange(len(rows), dtype=np.int64), count),
            "more_edge": edge[at],
            "more_frac": frac[at],
            "more_access_m": access[at],
        }

    def snapped(self, rows: IntArray, mode: str) -> Snapped:
        """The snaps of ``rows`` (all of ``mode``, already ensured)."""
        extra = self._further_joins(rows)
        return Snapped(
            mode=TravelMode(mode),
            lon=self.lon[rows],
            lat=self.lat[rows],
            edge=self.edge[rows],
            frac=self.frac[rows],
            access_m=self.access_m[rows],
            far=self.far[rows],
            **extra,
        )

    def usable(self, rows: IntArray, exclude: Collection[str], taken: Collection[str]) -> BoolArray:
        """Which of ``rows`` can be candidates: the one owner of that rule (:meth:`reasons`
        only says why the others cannot). Snaps must be ensured."""
        # ``available`` is on duty and of status available (see _derive).
        ok = self.available[rows] & self.positioned[rows] & self.supported[rows] & ~self.far[rows]
        if exclude or taken:
            ok &= ~self.marked(exclude, taken)[rows]
        return ok

    def marked(self, *id_sets: Collection[str]) -> BoolArray:
        """The rows whose unit is in any of ``id_sets``: a lookup per id named, not a test
        per row (a kind may have a thousand units and a batch names a few)."""
        marked = np.zeros(self.n, dtype=bool)
        for ids in id_sets:
            for uid in ids:
                r = self.row_of.get(uid)
                if r is not None:
                    marked[r] = True
        return marked

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Unit id → row (ids are unique in a pool)."""
        return {uid: r for r, uid in enumerate(self.ids.tolist())}

    def reasons(
        self, rows: IntArray, exclude: Collection[str], taken: Collection[str]
    ) -> list[str | None]:
        """Why each of ``rows`` cannot be a candidate (None: it can). Snaps must be ensured."""
        max_snap = get_settings().max_snap_m
        out: list[str | None] = []
        for r, ok in zip(rows.tolist(), self.usable(rows, exclude, taken).tolist(), strict=True):
            if ok:
                out.append(None)
                continue
            uid = self.ids[r]
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
            else:
                reason = (
                    f"position {self.access_m[r]:.0f} m from the nearest {self.mode[r]} road "
                    f"(more than {max_snap:.0f} m): left out"
                )
            out.append(reason)
        return out

    def busy_text(self, r: int) -> str:
        inc, prio = self.busy_incident[r], float(self.busy_priority[r])
        if inc is None and not math.isfinite(prio):
            return ""
        p = f"P{int(prio)} " if math.isfinite(prio) else ""
        return f" on {p}incident {inc if inc is not None else '(unknown)'}"

    def candidate_json(
        self, r: int, tier: str, time_s: float | None, note: str | None
    ) -> dict[str, Any]:
        """One unit's entry in an explanation: :class:`~gridgov.dispatch.records.Considered`'s
        JSON, written directly (an explanation lists many; the record is not built)."""
        out: dict[str, Any] = {
            "unit_id": self.ids[r],
            "kind": self.kind[r],
            "street_code": self.street[r],
            "mode": self.mode[r],
            "tier": tier,
            "time_s": json_float(time_s),
            "note": note,
        }
        if time_s is not None and not math.isfinite(time_s):
            out["beyond_search_limit"] = True
        return out


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
        """Each row's place in the tie-break order of units (the column holds unit ids)."""
        return rules.unit_rank(self.values)

    @cached_property
    def _groups(self) -> _RowGroups:
        return _RowGroups(self.values)

    def rows_of(self, wanted: Iterable[str]) -> IntArray:
        """The rows holding any of the ``wanted`` values, in row order."""
        parts = [rows for w in wanted if len(rows := self._groups.rows(w))]
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
