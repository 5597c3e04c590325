"""Locate points in the area hierarchy (the hot path, see the package notes): exact STRtree
answers first, then a raster of area labels once it pays for itself."""

from __future__ import annotations

import math
import threading
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from gridgov import forking
from gridgov.crs import normalize_crs, to_wgs84
from gridgov.errors import (
    DataFileError,
    OutsideDistrictError,
)
from gridgov.io import (
    is_missing,
)
from gridgov.model import LEVELS, Level

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_OUT = -1
_MIXED = -2
_METRES_PER_DEGREE = 111_320.0
#: Cells per level raster at most. 16M int32 labels are 64 MB; the build's temporaries are
#: bounded by the chunk sizes below, so a level of any size builds in a few hundred MB.
_MAX_CELLS = 16_000_000
# Crossings, cells or edge samples per numpy pass: arrays this small are recycled by the
# allocator instead of being mapped and page-faulted afresh, which dominated the build time.
_CHUNK = 1 << 20
#: Points one level answers exactly before its raster pays for itself. A raster build costs
#: about what the exact test costs for this many points (measured: see bench/README.md), so
#: building once this many points have been seen in total never costs more than twice the
#: cheaper choice in hindsight, whether a locator answers one point or millions.
RASTER_AFTER_POINTS = 250_000


class _Raster:
    """A uniform raster over one level's bounding box, labelling each cell.

    A cell holds the index of the one polygon containing it whole, ``_OUT`` when no polygon
    touches it, or ``_MIXED`` when a polygon edge touches its closure. Points in pure cells are
    answered by one array read; the others need the exact test.
    """

    def __init__(self, geoms: npt.NDArray[np.object_], cell_m: float | None) -> None:
        self.dtype: type[np.signedinteger[Any]] = np.int16 if len(geoms) < 32_000 else np.int32
        xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
        lat0 = math.radians((ymin + ymax) / 2)
        if cell_m is None:
            cell_m = _auto_cell_m(geoms, lat0, xmax - xmin, ymax - ymin)
        self.cell_m = cell_m
        self.h = cell_m / _METRES_PER_DEGREE
        self.w = cell_m / (_METRES_PER_DEGREE * max(math.cos(lat0), 0.01))
        # A margin of one cell keeps every vertex strictly inside the raster.
        self.x0, self.y0 = xmin - self.w, ymin - self.h
        self.ncols = math.ceil((xmax - self.x0) / self.w) + 2
        self.nrows = math.ceil((ymax - self.y0) / self.h) + 2
        ax, ay, bx, by, owner = _edges(geoms)
        self.labels = self._fill(ax, ay, bx, by, owner)
        self._mark_edges(ax, ay, bx, by)

    # The one formula mapping coordinates to cells, shared by building and querying, so a
    # point and a boundary sample at the same coordinates always land in the same cell.
    def _cells(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        return np.floor((x - self.x0) / self.w), np.floor((y - self.y0) / self.h)

    def _fill(
        self, ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray, owner: IntArray
    ) -> npt.NDArray[np.signedinteger[Any]]:
        """Label every cell by its centre with an even-odd scanline fill of all polygons."""

        # Row r's centre is y0 + (r + 0.5) h; an edge spans the rows whose centre lies in
        # [ylow, yhigh). Computing the bound from each vertex alone keeps the two edges meeting
        # at a vertex consistent, so every polygon row has an even number of crossings.
        def first_row(y: FloatArray) -> IntArray:
            r = np.ceil((y - self.y0) / self.h - 0.5)
            return np.clip(r, 0, self.nrows).astype(np.int64)

        ra, rb = first_row(ay), first_row(by)
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        count = hi - lo
        sentinel = np.iinfo(self.dtype).max
        labels = np.full(self.nrows * self.ncols, sentinel, dtype=self.dtype)
        # Whole polygons per chunk (edges come grouped by owner), so that each polygon's
        # crossings can be paired within the chunk while the temporaries stay bounded.
        crossings = np.cumsum(count)
        cuts = np.searchsorted(crossings, np.arange(_CHUNK, crossings[-1], _CHUNK))
        ends = np.unique(np.r_[np.searchsorted(owner, owner[cuts], side="right"), len(owner)])
        start = 0
        for end in ends:
            part = slice(start, int(end))
            start = int(end)
            self._paint(
                labels, ax[part], ay[part], bx[part], by[part], owner[part], lo[part], count[part]
            )
        labels[labels == sentinel] = _OUT
        return labels.reshape(self.nrows, self.ncols)

    def _paint(
        self,
        labels: npt.NDArray[np.signedinteger[Any]],
        ax: FloatArray,
        ay: FloatArray,
        bx: FloatArray,
        by: FloatArray,
        owner: IntArray,
        lo: IntArray,
        count: IntArray,
    ) -> None:
        keep = count > 0
        ax, ay, bx, by, owner, lo, count = (
            ax[keep],
            ay[keep],
            bx[keep],
            by[keep],
            owner[keep],
            lo[keep],
            count[keep],
        )
        if len(count) == 0:
            return
        edge = np.repeat(np.arange(len(count)), count)
        starts = np.cumsum(count) - count
        row = lo[edge] + (np.arange(len(edge)) - starts[edge])
        yc = self.y0 + (row + 0.5) * self.h
        x = ax[edge] + (yc - ay[edge]) * (bx[edge] - ax[edge]) / (by[edge] - ay[edge])
        who = owner[edge]
        del edge, yc
        order = self._pair_order(x, row, who)
        x, row, who = x[order], row[order], who[order]
        xa, xb, row, who = x[0::2], x[1::2], row[0::2], who[0::2]
        ca = np.ceil((xa - self.x0) / self.w - 0.5).astype(np.int64)
        cb = np.floor((xb - self.x0) / self.w - 0.5).astype(np.int64)
        ca, cb = np.clip(ca, 0, self.ncols - 1), np.clip(cb, 0, self.ncols - 1)
        ok = cb >= ca
        ca, cb, row, who = ca[ok], cb[ok], row[ok], who[ok]
        lengths = cb - ca + 1
        # Fill in chunks of spans to bound the temporary index arrays.
        bounds = np.searchsorted(np.cumsum(lengths), np.arange(0, lengths.sum(), _CHUNK))
        bounds = np.unique(np.append(bounds, len(lengths)))
        for s, e in zip(np.r_[0, bounds[:-1]], bounds, strict=True):
            if e <= s:
                continue
            ln = lengths[s:e]
            base = row[s:e] * self.ncols + ca[s:e]
            offs = np.arange(ln.sum()) - np.repeat(np.cumsum(ln) - ln, ln)
            flat = np.repeat(base, ln) + offs
            vals = np.repeat(who[s:e], ln).astype(self.dtype)
            # Where polygons overlap, the smallest index (code) must win, as in the exact path.
            np.minimum.at(labels, flat, vals)

    def _pair_order(self, x: FloatArray, row: IntArray, who: IntArray) -> IntArray:
        """Order crossings by polygon, then row, then x, so that they pair up even-odd.

        One integer sort key (polygon, row, x in fixed point) sorts several times faster than
        ``np.lexsort`` on three keys. Quantizing x can only swap crossings less than 2**-bits
        of a cell apart; the cells whose centre lies between such crossings are crossed by an
        edge, hence marked mixed and answered exactly, so their painted label never matters.
        """
        who = who - who.min()
        key = who * self.nrows + row
        used = int(key.max()).bit_length()
        span = max(self.ncols, 1).bit_length()
        bits = 62 - used - span  # sub-cell bits of x that still fit in int64
        if bits < 8:
            return np.lexsort((x, row, who))
        xq = np.clip((x - self.x0) / self.w * (1 << bits), 0, (1 << (bits + span)) - 1)
        return np.argsort((key << (bits + span)) | xq.astype(np.int64))

    def _mark_edges(self, ax: FloatArray, ay: FloatArray, bx: FloatArray, by: FloatArray) -> None:
        """Mark as mixed every cell whose closure any polygon edge touches."""
        # Each undirected edge once: neighbouring polygons share theirs.
        seg = np.column_stack([ax, ay, bx, by])
        swap = (ax > bx) | ((ax == bx) & (ay > by))
        seg[swap] = seg[swap][:, [2, 3, 0, 1]]
        seg = seg[~pd.DataFrame(seg).duplicated().to_numpy()]  # hashing beats np.unique here
        # Samples at most a quarter cell apart; the square of half that step around each sample
        # covers the segment between samples, and its four corners hit every cell the square
        # touches (the square is smaller than a cell).
        step = 0.25
        du = np.abs(seg[:, 2] - seg[:, 0]) / self.w
        dv = np.abs(seg[:, 3] - seg[:, 1]) / self.h
        n = np.ceil(np.maximum(du, dv) / step).astype(np.int64) + 1
        total = np.cumsum(n)
        cuts = np.searchsorted(total, np.arange(_CHUNK, total[-1], _CHUNK))
        for part in np.split(np.arange(len(n)), np.unique(cuts)):
            if len(part):
                self._mark_samples(seg[part], n[part], step)

    def _mark_samples(self, seg: FloatArray, n: IntArray, step: float) -> None:
        ax, ay, bx, by = seg.T
        rep = np.repeat(np.arange(len(n)), n)
        t = (np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(n[rep] - 1, 1)
        sx = ax[rep] + t * (bx[rep] - ax[rep])
        sy = ay[rep] + t * (by[rep] - ay[rep])
        del rep, t
        rx, ry = 0.51 * step * self.w, 0.51 * step * self.h
        flat = self.labels.reshape(-1)
        for ox in (-rx, rx):
            for oy in (-ry, ry):
                col, row = self._cells(sx + ox, sy + oy)
                col = np.clip(col, 0, self.ncols - 1).astype(np.int64)
                row = np.clip(row, 0, self.nrows - 1).astype(np.int64)
                flat[row * self.ncols + col] = _MIXED

    def lookup(self, x: FloatArray, y: FloatArray) -> IntArray:
        """The cell label of each point (``_OUT`` off the raster, ``_MIXED`` to test exactly)."""
        col, row = self._cells(x, y)
        inside = (col >= 0) & (col < self.ncols) & (row >= 0) & (row < self.nrows)
        out = np.full(len(x), _OUT, dtype=np.int64)
        ii = np.flatnonzero(inside)
        out[ii] = self.labels[row[ii].astype(np.int64), col[ii].astype(np.int64)]
        return out


def _edges(
    geoms: npt.NDArray[np.object_],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, IntArray]:
    """Every ring edge of every polygon, grouped by owner (the polygon's index) in order."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    poly = shapely.get_type_id(parts) == 3
    parts, part_of = parts[poly], part_of[poly]
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same = coord_ring[1:] == coord_ring[:-1]
    a, b = coords[:-1][same], coords[1:][same]
    owner = part_of[ring_of[coord_ring[:-1][same]]]
    return a[:, 0], a[:, 1], b[:, 0], b[:, 1], owner.astype(np.int64)


def _auto_cell_m(geoms: npt.NDArray[np.object_], lat0: float, dx: float, dy: float) -> float:
    # Cells about 1/40 of a typical area's side keep the boundary cells (the slow path) to a
    # few per cent of the points; the cap on the cell count bounds memory and build time for
    # large extents, at the price of more boundary cells.
    kx = _METRES_PER_DEGREE * math.cos(lat0)
    sides = np.sqrt(shapely.area(geoms) * kx * _METRES_PER_DEGREE)
    cell = float(np.clip(np.median(sides) / 40.0, 2.0, 2000.0))
    area_m2 = dx * kx * dy * _METRES_PER_DEGREE
    return max(cell, math.sqrt(area_m2 / _MAX_CELLS))


class _LevelIndex:
    """Exact point-in-polygon lookup for the areas of one level.

    Polygons are numbered in code order, so taking the minimum index of the containing
    polygons applies the smallest-code rule. Small batches go straight to the exact test (an
    STRtree for candidates, then a closed-polygon test on the candidates, prepared on first
    use). Once enough points have been seen, a :class:`_Raster` is built and answers most points
    by one array read, sending only those in boundary cells to the exact test. Both paths give
    the same answers.
    """

    def __init__(
        self,
        geoms: npt.NDArray[np.object_],
        cell_m: float | None = None,
        raster_after: int = RASTER_AFTER_POINTS,
    ) -> None:
        self.geoms = geoms
        self.cell_m = cell_m
        self.raster_after = raster_after
        self.seen = 0
        self._tree: shapely.STRtree | None = None
        self._raster: _Raster | None = None
        self._lock = threading.Lock()
        forking.renew_in_child(self, "_lock")
        self._few_vertices: bool | None = None

    @property
    def tree(self) -> shapely.STRtree:
        """The STRtree over the level's polygons (built on first use)."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.geoms)
        return self._tree

    @property
    def raster(self) -> _Raster:
        """The raster of cell labels (built on first use; building costs seconds)."""
        with self._lock:  # one build even when threads share a cached locator
            if self._raster is None:
                self._raster = _Raster(self.geoms, self.cell_m)
        return self._raster

    @property
    def has_raster(self) -> bool:
        """Whether the raster has been built."""
        return self._raster is not None

    def locate(self, x: FloatArray, y: FloatArray) -> IntArray:
        """Index of the containing polygon with the smallest code for each point, or -1."""
        self.seen += len(x)
        if self._raster is None and self.seen < self.raster_after:
            return self.exact(x, y)
        out = self.raster.lookup(x, y)
        mixed = np.flatnonzero(out == _MIXED)
        if len(mixed):
            out[mixed] = self.exact(x[mixed], y[mixed])
        return out

    def exact(self, x: FloatArray, y: FloatArray) -> IntArray:
        """The exact answer for any points: bounding-box candidates, then a closed-polygon test."""
        points = shapely.points(x, y)
        if self._few_vertices is None:
            self._few_vertices = bool(np.median(shapely.get_num_coordinates(self.geoms)) < 64)
        if self._few_vertices:
            # Testing a point against a polygon of a few dozen vertices is a short scan;
            # GEOS does it inside the tree query, faster than preparing every candidate.
            pt, poly = self.tree.query(points, predicate="intersects")
        else:
            pt, poly = self.tree.query(points)
            # Prepared polygons answer point-in-polygon from an edge index instead of a full
            # scan, which matters for big polygons (a district has thousands of vertices).
            # Preparing only the candidates keeps a single point's first query cheap.
            candidates = self.geoms[poly]
            shapely.prepare(candidates)
            hit = shapely.intersects_xy(candidates, x[pt], y[pt])
            pt, poly = pt[hit], poly[hit]
        best = np.full(len(x), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, pt, poly)
        best[best == np.iinfo(np.int64).max] = _OUT
        return best


class Locator:
    """Find the areas containing points, at every level, in one vectorised call.

    Build it with :func:`build_locator`. Points are matched against the finest level loaded
    (micro-grids when present); the coarser levels are derived through ``parent_code``. Points
    that miss every area of the finest level fall back to the next coarser level, and so on.
    """

    def __init__(
        self,
        gdf_areas: gpd.GeoDataFrame,
        cell_m: float | None = None,
        raster_after: int = RASTER_AFTER_POINTS,
    ) -> None:
        gdf = gdf_areas
        if gdf.crs is not None and gdf.crs.to_epsg() != 4326:
            gdf = gdf.to_crs("EPSG:4326")
        geoms = np.asarray(gdf.geometry.values, dtype=object)
        known = {lv.value for lv in LEVELS}
        levels = gdf["level"].to_numpy(dtype=object)
        keep = np.isin(levels, list(known)) & ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        codes = gdf["code"].astype(str).to_numpy(dtype=object)[keep]
        order = np.argsort(codes, kind="stable")
        self._codes = codes[order]
        names = gdf["name"].astype(str).to_numpy(dtype=object)[keep]
        self._names: dict[str, str] = dict(zip(codes, names, strict=True))
        levels = levels[keep][order]
        self._level_name: dict[str, str] = dict(zip(self._codes, levels, strict=True))
        parents = gdf["parent_code"].to_numpy(dtype=object)[keep][order]
        geoms = geoms[keep][order]
        self.levels: tuple[Level, ...] = tuple(lv for lv in LEVELS if (levels == lv.value).any())
        if not self.levels:
            msg = "no areas with a known level to locate in"
            raise DataFileError(msg)
        self._rows: dict[Level, IntArray] = {
            lv: np.flatnonzero(levels == lv.value) for lv in self.levels
        }
        # Nothing spatial is built here: each level's STRtree and raster come on first use, so
        # a locator that answers one point costs milliseconds, whatever the district's size.
        self._index: dict[Level, _LevelIndex] = {
            lv: _LevelIndex(geoms[rows], cell_m, raster_after) for lv, rows in self._rows.items()
        }
        self._ancestors = _ancestor_rows(self._codes, levels, parents)
        self.finest: Level = self.levels[-1]

    def index(self, level: Level) -> _LevelIndex:
        """The spatial index of one level (its STRtree and raster are built on first use)."""
        return self._index[level]

    def locate_rows(self, lon: FloatArray, lat: FloatArray) -> IntArray:
        """Row (in code order) of the finest area containing each WGS84 point, or -1."""
        found = np.full(len(lon), -1, dtype=np.int64)
        todo = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
        for level in reversed(self.levels):
            if len(todo) == 0:
                break
            hit = self.index(level).locate(lon[todo], lat[todo])
            ok = hit >= 0
            found[todo[ok]] = self._rows[level][hit[ok]]
            todo = todo[~ok]
        return found

    def locate(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, crs: str | int = "wgs84"
    ) -> pd.DataFrame:
        """Codes of the containing areas at every level, one row per point, in input order.

        Parameters
        ----------
        lon, lat
            Coordinates (scalars or arrays) in ``crs``.
        crs
            ``wgs84`` (default), ``gcj02``, ``bd09`` or an EPSG code.

        Returns
        -------
        A DataFrame with columns ``district, street, community, grid, microgrid`` (object
        dtype: a code, or None where the point is outside every area of that level or that
        level is not loaded). The index is ``pandas.RangeIndex`` over the input, or the input's
        own index when ``lon`` is a pandas Series.
        """
        index = lon.index if isinstance(lon, pd.Series) else None
        x, y = _as_wgs84(lon, lat, crs)
        rows = self.locate_rows(x, y)
        columns: dict[str, npt.NDArray[np.object_]] = {}
        lookup = np.append(self._codes, np.array([None], dtype=object))  # -1 reads None
        for level in LEVELS:
            anc = np.where(rows >= 0, self._ancestors[np.maximum(rows, 0), level.rank], -1)
            columns[level.value] = lookup[anc]
        return pd.DataFrame(
            {k: pd.Series(v, dtype=object, copy=False) for k, v in columns.items()}
        ).set_axis(index if index is not None else pd.RangeIndex(len(x)))

    def locate_one(self, lon: float, lat: float, crs: str | int = "wgs84") -> dict[str, str | None]:
        """Codes at every level for one point.

        Raises
        ------
        OutsideDistrictError
            If the point lies outside every loaded area.
        """
        x, y = _as_wgs84(lon, lat, crs)
        row = int(self.locate_rows(x, y)[0])
        if row < 0:
            raise OutsideDistrictError(float(lon), float(lat), str(crs))
        out: dict[str, str | None] = {}
        for level in LEVELS:
            j = int(self._ancestors[row, level.rank])
            out[level.value] = str(self._codes[j]) if j >= 0 else None
        return out

    def name_of(self, code: str) -> str:
        """The name of a loaded area (KeyError for an unknown code)."""
        return self._names[code]

    def level_of(self, code: str) -> Level:
        """The level of a loaded area (KeyError for an unknown code)."""
        return Level(self._level_name[code])


def _ancestor_rows(
    codes: npt.NDArray[np.object_],
    levels: npt.NDArray[np.object_],
    parents: npt.NDArray[np.object_],
) -> IntArray:
    """``out[i, k]``: row of the level-``k`` ancestor of row ``i`` (or -1), via parent codes.

    A parent link counts only when it points to a coarser level, so the walk always ends.
    """
    n = len(codes)
    rank = np.array([Level(v).rank for v in levels], dtype=np.int64) if n else np.zeros(0, int)
    keys = [None if is_missing(p) else str(p) for p in parents]
    parent = pd.Index(codes).get_indexer(pd.Index(keys, dtype=object)).astype(np.int64)
    ok = parent >= 0
    ok[ok] = rank[parent[ok]] < rank[ok]
    parent[~ok] = -1
    out = np.full((n, len(LEVELS)), -1, dtype=np.int64)
    rows = np.arange(n)
    cur = rows.copy()
    for _ in LEVELS:
        live = np.flatnonzero(cur >= 0)
        if len(live) == 0:
            break
        slot = out[live, rank[cur[live]]]
        free = slot == -1
        out[live[free], rank[cur[live[free]]]] = cur[live[free]]
        cur[live] = parent[cur[live]]
    return out


def _as_wgs84(
    lon: npt.ArrayLike, lat: npt.ArrayLike, crs: str | int
) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(lon, dtype=float).reshape(-1)
    y = np.asarray(lat, dtype=float).reshape(-1)
    if normalize_crs(crs) == "wgs84":
        return x, y
    finite = np.isfinite(x) & np.isfinite(y)
    ox, oy = np.full_like(x, np.nan), np.full_like(y, np.nan)
    ox[finite], oy[finite] = to_wgs84(x[finite], y[finite], crs)
    return ox, oy


def build_locator(
    gdf_areas: gpd.GeoDataFrame,
    *,
    cell_m: float | None = None,
    raster_after: int = RASTER_AFTER_POINTS,
) -> Locator:
    """Build a :class:`Locator` over an areas GeoDataFrame.

    Building is cheap (no spatial index yet): each level gets an STRtree on its first query and
    a raster index once it has answered ``raster_after`` points in total, so one-off lookups
    stay fast and large or repeated batches get the raster. The answers are the same either way.

    Parameters
    ----------
    gdf_areas
        Areas of one or more levels (validate them first; the locator trusts the hierarchy).
    cell_m
        Raster cell size in metres; by default about 1/40 of a typical area's side (~2.5 m for
        10,000 m² micro-grids), coarser where a level would need more than 16 million cells.
        Smaller cells send fewer points to the exact test but cost memory and build time.
    raster_after
        Points a level answers exactly before it builds its raster: 0 builds it on the first
        query, a huge number never builds it.
    """
    return Locator(gdf_areas, cell_m=cell_m, raster_after=raster_after)
