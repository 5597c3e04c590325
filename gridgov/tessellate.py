"""Generate an area hierarchy (district → street → community → grid → micro-grid) from road blocks.

Everything here works in a projected metric CRS on plain shapely geometries, so it runs on any
boundary and road lines a user brings.

How it works
------------
1. **Approximate partition, top down.** A parent polygon is cut into road blocks (the faces of its
   boundary plus the road lines inside it). With at least twice as many blocks as children, blocks
   are grown into children from seeds (anchors, or k-means centres), the smallest child growing
   first, so children are connected unions of whole blocks. With fewer blocks, small blocks are
   merged into neighbours, each block gets a share of the children by area, and a block with
   several children is split by the Voronoi cells of k-means centres of a uniform point sample (a
   centroidal Voronoi partition, so the pieces have similar areas).
2. **Exact tiling.** The boundaries of all approximate micro-grids are snapped to a 1 cm grid,
   noded once, split into edges of at most :data:`MAX_EDGE_M` (so the tiling stays exact when
   each vertex is reprojected to EPSG:4326 on its own) and polygonized once into atomic faces.
   Each face takes the micro-grid containing its representative point; faces left in a gap take
   their neighbour's label. Where a label ended up
   in pieces, the smaller pieces join the neighbour (within the same parent) sharing the longest
   edge, level by level from the street down.
3. **Dissolve bottom-up.** Every area of every level is the union of its faces, so neighbours
   share identical vertices and every child lies exactly within its parent.

Running it on your own district
-------------------------------
:func:`read_boundary` and :func:`read_roads` read files (or a Chengdu-style link-table folder) in
a declared CRS; :func:`plan_from_counts` or :func:`plan_from_admin_table` says what to generate;
:func:`generate_areas` checks the inputs, works in a metric CRS and returns EPSG:4326 areas::

    plan = plan_from_counts("510199000000", "某区", n_streets=3, communities_per_street=3,
                            n_grids=60, n_microgrids=400)
    gdf_areas = generate_areas(read_boundary("district.geojson", "gcj02"),
                               read_roads("roads.gpkg", "gcj02"), plan, seed=1)
    gdf_areas.attrs["warnings"]   # fallbacks and shortfalls, also logged

When no road line reaches the boundary, the areas are k-means Voronoi cells; that is a warning,
not an error, because a district without mapped roads still needs grids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS, Transformer
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from shapely.geometry import MultiPolygon, Point, Polygon

from gridgov.crs import to_wgs84
from gridgov.errors import CRSError, DataFileError, GenerationError, InputError
from gridgov.io import frame_to_wgs84, read_vector_wgs84, reject_geometry_errors
from gridgov.model import Level
from gridgov.roads import read_link_table
from gridgov.settings import get_settings

logger = logging.getLogger(__name__)

#: Grid (metres) to which all boundary linework is snapped before noding.
GRID_SIZE = 0.01
#: Longest edge (metres) of the exact tiling. A straight edge in the metric CRS is not straight in
#: EPSG:4326: near Chengdu a UTM chord of length L bows about 1.3e-8 L² m away from the lon/lat
#: chord (2.6 m over 15 km), enough to flip the centimetre-thin slivers that line a long boundary
#: edge once each vertex is reprojected. At 100 m the bow is 0.13 mm, far below the 1 cm grid.
MAX_EDGE_M = 100.0
#: Boundary edges are split to this length (degrees, about 100 m) in EPSG:4326 before they are
#: projected, so the generated district follows the user's straight lon/lat edges, not the
#: projected chords between their corners (which bow metres away on a long edge).
BOUNDARY_SEGMENT_DEG = 1e-3
#: Points sampled per child when splitting a block by k-means.
_SAMPLES_PER_CHILD = 40
_KMEANS_ITERATIONS = 25
#: A block smaller than this share of a child's target area is merged into a neighbour first.
_SMALL_BLOCK_SHARE = 0.25
#: Blocks larger than this many target areas are pre-split before growing children from blocks.
_LARGE_BLOCK_SHARE = 1.5

#: Communities generated for a street an admin table lists none for.
DEFAULT_GENERATED_COMMUNITIES = 6
#: Generated community numbers start above this, clear of a real table's numbering.
_GENERATED_COMMUNITY_BASE = 900
#: Grids per community, micro-grids per grid and streets per district: 3-digit numbers.
_MAX_SERIAL = 999
#: Smallest mean micro-grid area (m²) :func:`generate_areas` accepts; a micro-grid is 30-100
#: households, so anything smaller is a wrong count or a boundary in the wrong CRS.
MIN_MICROGRID_AREA_M2 = 1000.0
#: Inputs of :func:`generate_areas` are snapped to this WGS84 grid (about 1 cm, the generator's
#: own precision): the generator is chaotic (k-means, rejection sampling), so without it the
#: 1e-14 degree noise of a GCJ-02 round trip could change which piece goes where.
INPUT_PRECISION_DEG = 1e-7
#: Columns an admin-unit table must have (``lon``/``lat`` are optional).
ADMIN_COLUMNS = ("level", "code", "name", "parent_code")
#: Files of a Chengdu-style link table, in a folder given as roads.
LINK_TABLE_FILES = ("roads_nodes.csv", "roads_links.csv")

#: Called as ``progress(stage, done, total)`` while the hierarchy is built.
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CommunitySpec:
    """A community to place: its code and name, and whether they are official or generated."""

    code: str
    name: str
    official: bool = True


@dataclass(frozen=True)
class StreetSpec:
    """A street to place, its communities, and an optional anchor point (same CRS as the roads)."""

    code: str
    name: str
    communities: tuple[CommunitySpec, ...]
    anchor: tuple[float, float] | None = None
    official: bool = True


@dataclass(frozen=True)
class HierarchyPlan:
    """What to generate: the district, its streets and communities, and grid/micro-grid totals."""

    district_code: str
    district_name: str
    streets: tuple[StreetSpec, ...]
    n_grids: int = 1000
    n_microgrids: int = 10000


def grid_name(community_name: str, number: int) -> str:
    """Name of a generated grid, e.g. ``青羊北路社区第3网格``."""
    return f"{community_name}第{number}网格"


def microgrid_name(grid_name_: str, number: int) -> str:
    """Name of a generated micro-grid, e.g. ``青羊北路社区第3网格-2微网格``."""
    return f"{grid_name_}-{number}微网格"


# --------------------------------------------------------------------------------------------
# small geometric helpers


def _largest_polygon(geom: shapely.Geometry) -> Polygon:
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and not p.is_empty]
    if not parts:
        msg = "geometry holds no polygon"
        raise InputError(msg)
    return max(parts, key=lambda p: p.area)


def _polygons_of(geom: shapely.Geometry) -> list[Polygon]:
    return [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > 0]


def sample_points(polygon: Polygon, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw points uniformly at random inside a polygon.

    Parameters
    ----------
    polygon
        The polygon (any planar CRS; metric for uniformity on the ground).
    n
        Number of points.
    rng
        Random generator (the only source of randomness).

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` coordinates. Rejection sampling in the bounding box; a polygon too thin to hit
        gets its representative point repeated for the missing rows.
    """
    minx, miny, maxx, maxy = polygon.bounds
    fill = max(polygon.area / max((maxx - minx) * (maxy - miny), 1e-12), 0.02)
    shapely.prepare(polygon)
    found: list[np.ndarray] = []
    count = 0
    for _ in range(200):
        batch = int(min(max(2 * (n - count) / fill, 64), 200_000))
        xy = np.column_stack([rng.uniform(minx, maxx, batch), rng.uniform(miny, maxy, batch)])
        xy = xy[shapely.contains_xy(polygon, xy[:, 0], xy[:, 1])]
        found.append(xy)
        count += len(xy)
        if count >= n:
            break
    points = np.concatenate(found)[:n] if found else np.empty((0, 2))
    if len(points) < n:
        # A polygon too thin to hit: fall back on points along its interior.
        extra = shapely.get_coordinates(polygon.representative_point())
        points = np.concatenate([points, np.repeat(extra, n - len(points), axis=0)])
    return points


def kmeans_centres(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster centres of points by Lloyd's k-means with k-means++ seeding.

    Parameters
    ----------
    points
        ``(m, 2)`` coordinates, ``m >= 1``.
    k
        Number of centres.
    rng
        Random generator (the only source of randomness).

    Returns
    -------
    numpy.ndarray
        ``(k, 2)`` centres. An empty cluster restarts at the worst-served point, so no centre is
        left without points while there are at least ``k`` distinct points.
    """
    centres = np.empty((k, 2))
    centres[0] = points[rng.integers(len(points))]
    d2 = ((points - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        total = d2.sum()
        idx = rng.choice(len(points), p=d2 / total) if total > 0 else rng.integers(len(points))
        centres[i] = points[idx]
        d2 = np.minimum(d2, ((points - centres[i]) ** 2).sum(axis=1))
    for _ in range(_KMEANS_ITERATIONS):
        dist, label = cKDTree(centres).query(points)
        moved = centres.copy()
        for i in range(k):
            members = points[label == i]
            if len(members):
                moved[i] = members.mean(axis=0)
            else:
                worst = int(np.argmax(dist))
                moved[i] = points[worst]
                dist[worst] = 0.0
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


def _shared_lengths(
    polygons: Sequence[Polygon], tolerance: float = 0.05
) -> dict[tuple[int, int], float]:
    """Length of boundary shared by each pair of neighbouring polygons (i < j).

    Approximate pieces come from separate overlays, so their common edges can differ in the last
    bits; a small tolerance band keeps such neighbours adjacent.
    """
    geoms = np.asarray(polygons, dtype=object)
    if len(geoms) < 2:
        return {}
    tree = shapely.STRtree(geoms)
    left, right = tree.query(shapely.buffer(geoms, tolerance), predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if len(left) == 0:
        return {}
    band = shapely.buffer(shapely.boundary(geoms[right]), tolerance, quad_segs=2)
    lengths = shapely.length(shapely.intersection(shapely.boundary(geoms[left]), band))
    return {
        (int(a), int(b)): float(length)
        for a, b, length in zip(left, right, lengths, strict=True)
        if length > 2 * tolerance
    }


def _allocate(total: int, weights: np.ndarray, minimum: int = 1) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights``, each at least ``minimum``."""
    weights = np.asarray(weights, dtype=float)
    if total < minimum * len(weights):
        msg = f"cannot give {len(weights)} parts at least {minimum} each out of {total}"
        raise InputError(msg)
    quota = total * weights / weights.sum()
    counts = np.maximum(np.floor(quota).astype(int), minimum)
    while counts.sum() < total:
        counts[int(np.argmax(quota - counts))] += 1
    while counts.sum() > total:
        slack = np.where(counts > minimum, quota - counts, np.inf)
        counts[int(np.argmin(slack))] -= 1
    return counts


# --------------------------------------------------------------------------------------------
# partitioning one polygon


def road_blocks(polygon: Polygon, lines: np.ndarray | None) -> list[Polygon]:
    """Faces of ``polygon`` cut by the road ``lines`` that cross its interior.

    Parameters
    ----------
    polygon
        The area to cut (metric CRS).
    lines
        LineStrings (metric CRS), or None.

    Returns
    -------
    list of shapely.Polygon
        The blocks; their union is ``polygon`` (up to the 1 cm snapping grid).
    """
    if lines is None or len(lines) == 0:
        return [polygon]
    lines = np.asarray(lines, dtype=object)
    crossing = lines[shapely.relate_pattern(lines, polygon, "T********")]
    if len(crossing) == 0:
        return [polygon]
    clipped = shapely.intersection(crossing, polygon)
    linework = shapely.union_all(np.concatenate([clipped, [polygon.boundary]]), grid_size=GRID_SIZE)
    faces = _polygons_of(shapely.polygonize(shapely.get_parts(linework)))
    if not faces:
        return [polygon]
    reps = shapely.point_on_surface(np.asarray(faces, dtype=object))
    inside = shapely.covers(polygon, reps)
    blocks = [f for f, ok in zip(faces, inside, strict=True) if ok]
    return blocks or [polygon]


def _merge_small(
    blocks: list[Polygon], min_area: float, max_count: int | None = None
) -> list[Polygon]:
    """Merge blocks smaller than ``min_area`` into the neighbour sharing the longest edge.

    With ``max_count``, keep merging the smallest blocks until at most that many are left.
    """
    blocks = list(blocks)
    while len(blocks) > 1:
        areas = np.array([b.area for b in blocks])
        order = np.argsort(areas, kind="stable")
        if max_count is not None and len(blocks) > max_count:
            min_area = max(min_area, float(areas[order[0]]) * (1 + 1e-9) + 1e-9)
        if areas[order[0]] >= min_area:
            break
        merged = False
        shared = _shared_lengths(blocks)
        for small in order:
            if areas[small] >= min_area:
                break
            best, best_len = -1, 0.0
            for (a, b), length in shared.items():
                other = b if a == small else a if b == small else -1
                if other >= 0 and length > best_len:
                    best, best_len = other, length
            if best < 0:
                continue
            union = shapely.union(blocks[best], blocks[small], grid_size=GRID_SIZE)
            blocks[best] = _largest_polygon(union) if not isinstance(union, Polygon) else union
            del blocks[int(small)]
            merged = True
            break
        if not merged:
            break
    return blocks


def split_polygon(polygon: Polygon, n: int, rng: np.random.Generator) -> list[Polygon]:
    """Split ``polygon`` into ``n`` connected pieces of similar area (k-means Voronoi cells).

    Parameters
    ----------
    polygon
        The polygon (metric CRS).
    n
        Number of pieces, at least 1.
    rng
        Random generator (the only source of randomness).

    Returns
    -------
    list of shapely.Polygon
        ``n`` pieces tiling ``polygon`` (up to the snapping grid).
    """
    if n <= 1:
        return [polygon]
    points = sample_points(polygon, _SAMPLES_PER_CHILD * n, rng)
    centres = kmeans_centres(points, n, rng)
    minx, miny, maxx, maxy = polygon.bounds
    pad = max(maxx - minx, maxy - miny) + 10.0
    frame = shapely.box(minx - pad, miny - pad, maxx + pad, maxy + pad)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(centres), extend_to=frame, ordered=True)
    )
    clipped = shapely.intersection(cells, polygon, grid_size=GRID_SIZE)
    parts: list[Polygon] = []
    owner: list[int] = []
    for i, geom in enumerate(clipped):
        for part in _polygons_of(geom):
            parts.append(part)
            owner.append(i)
    main: dict[int, int] = {}
    for j, (part, i) in enumerate(zip(parts, owner, strict=True)):
        if i not in main or part.area > parts[main[i]].area:
            main[i] = j
    stray = [j for j in range(len(parts)) if main.get(owner[j]) != j]
    if stray:
        shared = _shared_lengths(parts)
        for j in stray:
            best, best_len = -1, 0.0
            for (a, b), length in shared.items():
                other = b if a == j else a if b == j else -1
                if other >= 0 and main.get(owner[other]) == other and length > best_len:
                    best, best_len = other, length
            if best >= 0:
                owner[j] = owner[best]
    pieces: list[Polygon] = []
    for i in sorted(set(owner)):
        members = [parts[j] for j in range(len(parts)) if owner[j] == i]
        union = shapely.union_all(members, grid_size=GRID_SIZE)
        pieces.append(union if isinstance(union, Polygon) else _largest_polygon(union))
    while len(pieces) < n:
        # Rare: a centre whose cell missed the polygon. Halve the largest piece instead.
        big = int(np.argmax([p.area for p in pieces]))
        pieces[big : big + 1] = split_polygon(pieces[big], 2, rng)
    return pieces


def _grow(
    blocks: list[Polygon],
    n: int,
    seeds: np.ndarray,
) -> np.ndarray:
    """Grow ``n`` connected groups of blocks from seed points, smallest group first."""
    geoms = np.asarray(blocks, dtype=object)
    areas = shapely.area(geoms)
    cxy = shapely.get_coordinates(shapely.centroid(geoms))
    neighbours: list[list[int]] = [[] for _ in blocks]
    for a, b in _shared_lengths(blocks):
        neighbours[a].append(b)
        neighbours[b].append(a)
    labels = np.full(len(blocks), -1)
    seed_points = shapely.points(seeds)
    for g in range(n):
        dist = shapely.distance(geoms, seed_points[g])
        dist[labels >= 0] = np.inf
        labels[int(np.argmin(dist))] = g
    group_area = np.array([areas[labels == g].sum() for g in range(n)])
    while (labels < 0).any():
        progressed = False
        for g in np.argsort(group_area, kind="stable"):
            members = np.flatnonzero(labels == g)
            frontier = sorted({nb for m in members for nb in neighbours[m] if labels[nb] < 0})
            if not frontier:
                continue
            d = np.hypot(*(cxy[frontier] - seeds[g]).T)
            pick = frontier[int(np.argmin(d))]
            labels[pick] = g
            group_area[g] += areas[pick]
            progressed = True
            break
        if not progressed:
            # Blocks unreachable through shared edges: give each to the nearest group seed.
            rest = np.flatnonzero(labels < 0)
            _, nearest = cKDTree(seeds).query(cxy[rest])
            labels[rest] = nearest
    return labels


def _connected_children(
    pieces: list[Polygon], labels: np.ndarray, n: int
) -> list[shapely.Geometry]:
    """Union each label's pieces into one polygon; a detached group joins its longest neighbour.

    Growing hands blocks that no shared edge reaches to the nearest seed, which can leave a child
    in several parts. A detached part would later move to a neighbour as a whole, taking every
    area planned inside it along (a street could lose whole communities), so it moves now, while
    the pieces are still free.
    """
    labels = labels.copy()
    shared = _shared_lengths(pieces)
    left = np.array([a for a, _ in shared], dtype=int)
    right = np.array([b for _, b in shared], dtype=int)
    lengths = np.array(list(shared.values()), dtype=float)
    areas = shapely.area(np.asarray(pieces, dtype=object))
    for _ in range(len(pieces)):
        comp = _components(len(pieces), left, right, labels)
        comp_area = np.bincount(comp, weights=areas)
        main: dict[int, int] = {}
        for c in np.argsort(-comp_area, kind="stable"):
            main.setdefault(int(labels[np.flatnonzero(comp == c)[0]]), int(c))
        moved = False
        for c in sorted(set(comp.tolist()) - set(main.values())):
            inside = comp == c
            best: dict[int, float] = {}
            for a, b in ((left, right), (right, left)):
                ok = inside[a] & ~inside[b]
                for g, length in zip(labels[b[ok]], lengths[ok], strict=True):
                    best[int(g)] = best.get(int(g), 0.0) + float(length)
            if best:
                labels[inside] = max(sorted(best), key=lambda g: best[g])
                moved = True
        if not moved:
            break
    children = []
    for g in range(n):
        # Every label keeps its largest component, so no child is left without pieces. A part
        # that shares no edge with anything stays (dropping it would leave a hole for one
        # neighbouring micro-grid to fill).
        children.append(shapely.union_all([pieces[i] for i in np.flatnonzero(labels == g)]))
    return children


def _spatial_order(polygons: list[Polygon]) -> list[int]:
    """North-to-south, west-to-east reading order of polygons (by representative point)."""
    xy = shapely.get_coordinates(shapely.point_on_surface(np.asarray(polygons, dtype=object)))
    return sorted(range(len(polygons)), key=lambda i: (-xy[i, 1], xy[i, 0]))


def partition_polygon(
    polygon: Polygon,
    n: int,
    lines: np.ndarray | None = None,
    seed: int | np.random.Generator = 0,
    anchors: Sequence[tuple[float, float] | None] | None = None,
    grow: bool = True,
) -> list[Polygon]:
    """Partition a polygon into ``n`` connected children that follow the road blocks.

    Parameters
    ----------
    polygon
        The parent polygon (metric CRS).
    n
        Number of children.
    lines
        Road LineStrings (metric CRS) or None. Children are unions of whole blocks when there are
        at least ``2 n`` blocks; otherwise blocks are split.
    seed
        Seed or generator; the result is deterministic for a given seed.
    anchors
        Optional point per child; child ``i`` is grown from (or matched to) ``anchors[i]``.
    grow
        Allow growing children from whole blocks. Off, blocks are merged down to at most ``n``
        and split by area share, which balances sizes better (used for grids and micro-grids).

    Returns
    -------
    list of shapely.Polygon
        ``n`` polygons covering ``polygon`` without overlaps, approximately: their edges come from
        separate overlays. :func:`generate_hierarchy` makes them exact.
    """
    if n < 1:
        msg = f"n must be >= 1, got {n}"
        raise InputError(msg)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if n == 1:
        return [polygon]
    target = polygon.area / n
    blocks = road_blocks(polygon, lines)
    if grow and len(blocks) >= 2 * n:
        pieces: list[Polygon] = []
        for block in blocks:
            k = round(block.area / target) if block.area > _LARGE_BLOCK_SHARE * target else 1
            pieces.extend(split_polygon(block, k, rng))
        pieces = _merge_small(pieces, 1e-4 * target)
        if anchors is not None and all(a is not None for a in anchors):
            seeds = np.asarray(anchors, dtype=float)
        else:
            seeds = kmeans_centres(sample_points(polygon, _SAMPLES_PER_CHILD * n, rng), n, rng)
            seeds = seeds[_order_points(seeds)]
        labels = _grow(pieces, n, seeds)
        children = _connected_children(pieces, labels, n)
        if anchors is None:
            return [children[i] for i in _spatial_order(children)]
        return children
    blocks = _merge_small(blocks, _SMALL_BLOCK_SHARE * target, max_count=n)
    counts = _allocate(n, np.array([b.area for b in blocks]))
    children = []
    for block, k in zip(blocks, counts, strict=True):
        children.extend(split_polygon(block, int(k), rng))
    if anchors is not None and all(a is not None for a in anchors):
        reps = shapely.get_coordinates(shapely.point_on_surface(np.asarray(children, dtype=object)))
        anchor_xy = np.asarray(anchors, dtype=float)
        cost = np.hypot(
            anchor_xy[:, None, 0] - reps[None, :, 0], anchor_xy[:, None, 1] - reps[None, :, 1]
        )
        rows, cols = linear_sum_assignment(cost)
        return [children[c] for _, c in sorted(zip(rows, cols, strict=True))]
    return [children[i] for i in _spatial_order(children)]


def _order_points(xy: np.ndarray) -> list[int]:
    return sorted(range(len(xy)), key=lambda i: (-xy[i, 1], xy[i, 0]))


# --------------------------------------------------------------------------------------------
# exact tiling


def _face_adjacency(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge and the shared length (faces come from one polygonize)."""
    tree = shapely.STRtree(faces)
    left, right = tree.query(faces, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    lengths = shapely.length(
        shapely.intersection(shapely.boundary(faces[left]), shapely.boundary(faces[right]))
    )
    edge = lengths > 0
    return left[edge], right[edge], lengths[edge]


def _components(n: int, left: np.ndarray, right: np.ndarray, labels: np.ndarray) -> np.ndarray:
    same = labels[left] == labels[right]
    graph = coo_matrix((np.ones(int(same.sum())), (left[same], right[same])), shape=(n, n)).tocsr()
    _, comp = connected_components(graph, directed=False)
    return np.asarray(comp)


def _exact_faces(
    district: Polygon, micro_polys: list[Polygon]
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Node all micro-grid boundaries once; label the faces by the micro-grid holding them."""
    approx = np.asarray(micro_polys, dtype=object)
    # The district outline joins the linework so that slivers the approximate pieces missed
    # along it become faces too, and the result covers exactly the (snapped) district.
    outline = np.asarray([district.boundary], dtype=object)
    linework = shapely.union_all(
        np.concatenate([outline, shapely.boundary(approx)]), grid_size=GRID_SIZE
    )
    # Densified after noding, so both sides of every edge get the same extra vertices and the
    # tiling stays exact when each vertex is reprojected on its own (see MAX_EDGE_M).
    edges = shapely.segmentize(shapely.get_parts(linework), MAX_EDGE_M)
    faces = np.asarray(_polygons_of(shapely.polygonize(edges)), dtype=object)
    reps = shapely.point_on_surface(faces)
    inside = shapely.covers(shapely.set_precision(district, GRID_SIZE), reps)
    faces, reps = faces[inside], reps[inside]
    tree = shapely.STRtree(approx)
    face_idx, micro_idx = tree.query(reps, predicate="within")
    label = np.full(len(faces), -1)
    # Where approximate micro-grids overlap slightly, the smaller index wins (deterministic).
    for f, m in sorted(zip(face_idx.tolist(), micro_idx.tolist(), strict=True), reverse=True):
        label[f] = m
    adjacency = _face_adjacency(faces)
    left, right, lengths = adjacency
    for _ in range(len(faces)):
        missing = label < 0
        if not missing.any():
            break
        best_len = np.zeros(len(faces))
        best_label = np.full(len(faces), -1)
        for a, b in ((left, right), (right, left)):
            ok = missing[a] & ~missing[b]
            for f, g, length in zip(a[ok], b[ok], lengths[ok], strict=True):
                if length > best_len[f]:
                    best_len[f], best_label[f] = length, label[g]
        if not (best_label >= 0).any():
            break
        label = np.where(missing & (best_label >= 0), best_label, label)
    if (label < 0).any():
        msg = f"{int((label < 0).sum())} face(s) could not be given an area"
        raise GenerationError(msg)
    return faces, label, adjacency


def _make_connected(
    faces: np.ndarray,
    face_micro: np.ndarray,
    ancestry: np.ndarray,
    adjacency: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Move stray pieces of any area to the neighbour sharing the longest edge, top level first.

    ``ancestry[m, d]`` is the index of micro-grid ``m``'s ancestor at depth ``d`` (0 = street,
    3 = the micro-grid itself). A stray piece of a depth-``d`` area joins a neighbouring face whose
    depth-``d-1`` ancestor is the same, so the hierarchy stays nested.
    """
    left, right, lengths = adjacency
    areas = shapely.area(faces)
    face_micro = face_micro.copy()
    for depth in range(ancestry.shape[1]):
        for _ in range(20):
            labels = ancestry[face_micro, depth]
            comp = _components(len(faces), left, right, labels)
            comp_area = np.bincount(comp, weights=areas)
            _, first = np.unique(comp, return_index=True)
            comp_label = labels[first]
            # The largest component of each label stays; every other one moves.
            main: dict[int, int] = {}
            for c in np.argsort(-comp_area, kind="stable"):
                main.setdefault(int(comp_label[c]), int(c))
            strays = sorted(set(range(len(comp_area))) - set(main.values()))
            if not strays:
                break
            parent = ancestry[face_micro, depth - 1] if depth > 0 else np.zeros(len(faces), int)
            for c in strays:
                members = np.flatnonzero(comp == c)
                inside = np.zeros(len(faces), bool)
                inside[members] = True
                best: dict[int, float] = {}
                for a, b in ((left, right), (right, left)):
                    ok = inside[a] & ~inside[b] & (parent[b] == parent[members[0]])
                    for g, length in zip(b[ok], lengths[ok], strict=True):
                        best[int(g)] = best.get(int(g), 0.0) + float(length)
                if not best:
                    continue
                target = max(sorted(best), key=lambda g: best[g])
                if depth == ancestry.shape[1] - 1:
                    face_micro[members] = face_micro[target]
                    continue
                # A coarser piece keeps its micro-grids: each becomes a new micro-grid under the
                # neighbour's ancestors, so moving it does not create one oversized micro-grid.
                for m in sorted(set(face_micro[members].tolist())):
                    row = ancestry[face_micro[target]].copy()
                    row[-1] = len(ancestry)
                    ancestry = np.vstack([ancestry, row])
                    face_micro[members[face_micro[members] == m]] = row[-1]
    return face_micro, ancestry


# --------------------------------------------------------------------------------------------
# the whole hierarchy


def generate_hierarchy(
    boundary: Polygon | MultiPolygon,
    road_lines: gpd.GeoSeries | Sequence[shapely.Geometry] | None,
    plan: HierarchyPlan,
    seed: int = 0,
    crs: str | None = None,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Generate a district's areas, every level tiling its parent exactly.

    Parameters
    ----------
    boundary
        The district boundary in a metric CRS (the largest part is used; holes are filled).
    road_lines
        Road lines in the same CRS, or None (then areas are k-means Voronoi cells).
    plan
        District code and name, the streets (optional anchors) with their communities, and the
        total numbers of grids and micro-grids to aim for.
    seed
        Seed of the random generator; the same seed gives the same areas.
    crs
        CRS to attach to the result (that of ``boundary``).
    progress
        Optional callback ``progress(stage, done, total)``.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``code``, ``name``, ``level``, ``parent_code``, ``generated`` (True: every polygon
        is generated), ``name_source`` (``official`` or ``generated`` for the code and name),
        ``geometry`` (Polygon). Grid codes append ``001``.. to the community code, micro-grid
        codes ``001``.. to the grid code. Totals may fall a little short of the plan when a piece
        is absorbed while making areas connected.
    """
    report = progress or (lambda stage, done, total: None)
    if not plan.streets or any(not s.communities for s in plan.streets):
        msg = "the plan needs at least one street, and every street at least one community"
        raise InputError(msg)
    n_comm = sum(len(s.communities) for s in plan.streets)
    if plan.n_grids < n_comm or plan.n_microgrids < plan.n_grids:
        msg = "need n_microgrids >= n_grids >= number of communities"
        raise InputError(msg)
    rng = np.random.default_rng(seed)
    district = Polygon(_largest_polygon(shapely.make_valid(boundary)).exterior)
    lines: np.ndarray | None = None
    if road_lines is not None:
        geoms = np.asarray(list(road_lines), dtype=object)
        geoms = geoms[~shapely.is_empty(geoms) & shapely.intersects(geoms, district)]
        lines = shapely.set_precision(geoms, GRID_SIZE)
    line_tree = shapely.STRtree(lines) if lines is not None and len(lines) else None

    def local_lines(poly: Polygon) -> np.ndarray | None:
        if line_tree is None or lines is None:
            return None
        return lines[line_tree.query(poly, predicate="intersects")]

    report("streets", 0, 1)
    anchors = [s.anchor for s in plan.streets]
    streets = partition_polygon(
        district,
        len(plan.streets),
        local_lines(district),
        rng,
        anchors=anchors if all(a is not None for a in anchors) else None,
    )
    report("streets", 1, 1)
    communities: list[tuple[int, Polygon]] = []
    for si, (spec, poly) in enumerate(zip(plan.streets, streets, strict=True)):
        for child in partition_polygon(poly, len(spec.communities), local_lines(poly), rng):
            communities.append((si, child))
        report("communities", si + 1, len(plan.streets))
    # Communities are matched to specs in reading order within their street.
    grid_counts = _allocate(plan.n_grids, np.array([c.area for _, c in communities]))
    grids: list[tuple[int, Polygon]] = []
    for ci, ((_, poly), k) in enumerate(zip(communities, grid_counts, strict=True)):
        for child in partition_polygon(poly, int(k), local_lines(poly), rng, grow=False):
            grids.append((ci, child))
        report("grids", ci + 1, len(communities))
    micro_counts = _allocate(plan.n_microgrids, np.array([g.area for _, g in grids]))
    micros: list[tuple[int, Polygon]] = []
    for gi, ((_, poly), k) in enumerate(zip(grids, micro_counts, strict=True)):
        for child in partition_polygon(poly, int(k), local_lines(poly), rng, grow=False):
            micros.append((gi, child))
        if (gi + 1) % 50 == 0 or gi + 1 == len(grids):
            report("micro-grids", gi + 1, len(grids))

    report("exact tiling", 0, 1)
    micro_grid = np.array([g for g, _ in micros])
    grid_comm = np.array([c for c, _ in grids])
    comm_street = np.array([s for s, _ in communities])
    ancestry = np.column_stack(
        [
            comm_street[grid_comm[micro_grid]],
            grid_comm[micro_grid],
            micro_grid,
            np.arange(len(micros)),
        ]
    )
    faces, face_micro, adjacency = _exact_faces(district, [p for _, p in micros])
    face_micro, ancestry = _make_connected(faces, face_micro, ancestry, adjacency)
    report("exact tiling", 1, 1)
    frame = _dissolve(plan, faces, ancestry[face_micro], crs)
    report("done", 1, 1)
    return frame


def _dissolve(
    plan: HierarchyPlan, faces: np.ndarray, face_path: np.ndarray, crs: str | None
) -> gpd.GeoDataFrame:
    """Union faces level by level and give every area its code and name."""
    rows: list[dict[str, object]] = []

    def union(members: np.ndarray) -> Polygon:
        geom = shapely.union_all(faces[members])
        if isinstance(geom, Polygon):
            return geom
        parts = _polygons_of(geom)
        if len(parts) != 1:
            msg = f"an area dissolved into {len(parts)} polygons ({geom.geom_type})"
            raise GenerationError(msg)
        return parts[0]

    all_faces = np.arange(len(faces))
    rows.append(
        {
            "code": plan.district_code,
            "name": plan.district_name,
            "level": Level.DISTRICT.value,
            "parent_code": None,
            "name_source": "official",
            "geometry": union(all_faces),
        }
    )
    street_of, comm_of, grid_of, micro_of = face_path.T
    for si, spec in enumerate(plan.streets):
        in_street = all_faces[street_of == si]
        rows.append(
            {
                "code": spec.code,
                "name": spec.name,
                "level": Level.STREET.value,
                "parent_code": plan.district_code,
                "name_source": "official" if spec.official else "generated",
                "geometry": union(in_street),
            }
        )
        comm_ids = sorted(set(comm_of[in_street].tolist()))
        comm_polys = [union(in_street[comm_of[in_street] == c]) for c in comm_ids]
        order = _spatial_order(comm_polys)
        for cspec, oi in zip(spec.communities, order, strict=False):
            cpoly, cid = comm_polys[oi], comm_ids[oi]
            rows.append(
                {
                    "code": cspec.code,
                    "name": cspec.name,
                    "level": Level.COMMUNITY.value,
                    "parent_code": spec.code,
                    "name_source": "official" if cspec.official else "generated",
                    "geometry": cpoly,
                }
            )
            in_comm = all_faces[comm_of == cid]
            grid_ids = sorted(set(grid_of[in_comm].tolist()))
            grid_polys = [union(in_comm[grid_of[in_comm] == g]) for g in grid_ids]
            for gn, gi in enumerate(_spatial_order(grid_polys), start=1):
                gcode = f"{cspec.code}{gn:03d}"
                gname = grid_name(cspec.name, gn)
                rows.append(
                    {
                        "code": gcode,
                        "name": gname,
                        "level": Level.GRID.value,
                        "parent_code": cspec.code,
                        "name_source": "generated",
                        "geometry": grid_polys[gi],
                    }
                )
                in_grid = all_faces[grid_of == grid_ids[gi]]
                micro_ids = sorted(set(micro_of[in_grid].tolist()))
                micro_polys = [union(in_grid[micro_of[in_grid] == m]) for m in micro_ids]
                for mn, mi in enumerate(_spatial_order(micro_polys), start=1):
                    rows.append(
                        {
                            "code": f"{gcode}{mn:03d}",
                            "name": microgrid_name(gname, mn),
                            "level": Level.MICROGRID.value,
                            "parent_code": gcode,
                            "name_source": "generated",
                            "geometry": micro_polys[mi],
                        }
                    )
        if len(comm_ids) != len(spec.communities):
            msg = (
                f"street {spec.code}: {len(spec.communities)} communities planned, but only "
                f"{len(comm_ids)} could be formed from its connected road blocks; plan fewer "
                "communities for it, give the streets anchor points, or use another seed"
            )
            raise GenerationError(msg)
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
    frame["generated"] = True
    return frame[["code", "name", "level", "parent_code", "generated", "name_source", "geometry"]]


# --------------------------------------------------------------------------------------------
# plans: what to generate


def _is_count(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_digits(code: object, length: int) -> bool:
    return isinstance(code, str) and len(code) == length and code.isascii() and code.isdigit()


def _count_problems(communities: Sequence[int], n_grids: object, n_microgrids: object) -> list[str]:
    """Problems with the grid and micro-grid totals for streets holding ``communities`` each."""
    problems: list[str] = []
    n_comm = int(sum(communities))
    if not _is_count(n_grids):
        problems.append(f"n_grids must be an integer, got {n_grids!r}")
    elif int(n_grids) < max(n_comm, 1):  # type: ignore[call-overload]
        problems.append(
            f"n_grids ({n_grids}) must be at least the number of communities ({n_comm}): "
            "every community needs a grid"
        )
    elif int(n_grids) > _MAX_SERIAL * max(n_comm, 1):  # type: ignore[call-overload]
        problems.append(
            f"n_grids ({n_grids}) exceeds {_MAX_SERIAL} per community ({n_comm} communities): "
            "grid numbers have 3 digits"
        )
    if not _is_count(n_microgrids):
        problems.append(f"n_microgrids must be an integer, got {n_microgrids!r}")
    elif _is_count(n_grids):
        grids, micros = int(n_grids), int(n_microgrids)  # type: ignore[call-overload]
        if micros < grids:
            problems.append(
                f"n_microgrids ({micros}) must be at least n_grids ({grids}): "
                "every grid needs a micro-grid"
            )
        elif micros > _MAX_SERIAL * grids:
            problems.append(
                f"n_microgrids ({micros}) exceeds {_MAX_SERIAL} per grid ({grids} grids): "
                "micro-grid numbers have 3 digits"
            )
    return problems


def _raise_problems(problems: list[str], what: str, error: type[InputError] = InputError) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        msg = f"{len(problems)} problem(s) in the {what}:\n{lines}"
        raise error(msg)


def plan_from_counts(
    district_code: str,
    district_name: str,
    n_streets: int,
    communities_per_street: int | Sequence[int],
    n_grids: int,
    n_microgrids: int,
) -> HierarchyPlan:
    """A plan with generated streets and communities: codes numbered from 001, plain names.

    Parameters
    ----------
    district_code
        The district's 12-digit code, ending in ``000000`` (e.g. ``510106000000``).
    district_name
        The district's name.
    n_streets
        Number of streets, 1 to 999. Street ``i`` gets code ``district[:6] + f"{i:03d}" + "000"``
        and the name ``第{i}街道``.
    communities_per_street
        One number for every street, or one per street. Community ``j`` of street ``i`` gets code
        ``street[:9] + f"{j:03d}"`` and the name ``第{i}街道第{j}社区``.
    n_grids, n_microgrids
        Totals to aim for; ``communities <= n_grids <= n_microgrids``.

    Returns
    -------
    HierarchyPlan
        Every street and community has ``official=False`` (``name_source`` is ``generated``) and
        no anchor.

    Raises
    ------
    InputError
        Listing every problem with the arguments.
    """
    problems: list[str] = []
    code = district_code.strip() if isinstance(district_code, str) else district_code
    if not _is_digits(code, 12):
        problems.append(f"district code {district_code!r} is not 12 digits")
    elif not str(code).endswith("000000"):
        problems.append(
            f"district code {code} must end in 000000 (6 digits name the district, "
            "the street and community digits are zero)"
        )
    if not isinstance(district_name, str) or not district_name.strip():
        problems.append("the district name is empty")
    counts: list[int] = []
    if not _is_count(n_streets) or n_streets < 1:
        problems.append(f"n_streets must be an integer >= 1, got {n_streets!r}")
    elif n_streets > _MAX_SERIAL:
        problems.append(
            f"n_streets ({n_streets}) exceeds {_MAX_SERIAL}: street numbers have 3 digits"
        )
    else:
        per_street: list[object] = (
            [communities_per_street] * int(n_streets)
            if isinstance(communities_per_street, int | np.integer)
            else list(communities_per_street)
        )
        if len(per_street) != n_streets:
            problems.append(
                f"communities_per_street has {len(per_street)} numbers for {n_streets} streets"
            )
        for i, k in enumerate(per_street, start=1):
            if not _is_count(k) or not 1 <= int(k) <= _MAX_SERIAL:  # type: ignore[call-overload]
                problems.append(
                    f"street {i}: communities must be an integer from 1 to {_MAX_SERIAL}, got {k!r}"
                )
        if not problems:
            counts = [int(k) for k in per_street]  # type: ignore[call-overload]
    if counts:
        problems.extend(_count_problems(counts, n_grids, n_microgrids))
    _raise_problems(problems, "plan")
    streets = []
    for i, k in enumerate(counts, start=1):
        street_code = f"{str(code)[:6]}{i:03d}000"
        street_name = f"第{i}街道"
        comms = tuple(
            CommunitySpec(f"{street_code[:9]}{j:03d}", f"{street_name}第{j}社区", official=False)
            for j in range(1, k + 1)
        )
        streets.append(StreetSpec(street_code, street_name, comms, official=False))
    return HierarchyPlan(
        str(code), district_name.strip(), tuple(streets), int(n_grids), int(n_microgrids)
    )


def _code_text(value: object) -> str:
    """A code cell as text: integers and integral floats (from a spreadsheet) become digits."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def read_admin_table(path: str | Path) -> pd.DataFrame:
    """Read an admin-unit table (CSV, every column as text) like ``jinniu_admin_units.csv``.

    Raises
    ------
    DataFileError
        The file is missing or unreadable, or lacks one of ``level,code,name,parent_code``.
    """
    path = Path(path)
    try:
        admin = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise DataFileError(msg) from exc
    missing = set(ADMIN_COLUMNS) - set(admin.columns)
    if missing:
        msg = f"{path}: missing column(s) {sorted(missing)}"
        raise DataFileError(msg)
    return admin


def plan_from_admin_table(
    df: pd.DataFrame,
    n_grids: int,
    n_microgrids: int,
    *,
    generated_communities: int = DEFAULT_GENERATED_COMMUNITIES,
    crs: str | int = "wgs84",
    source: str = "admin table",
) -> HierarchyPlan:
    """A plan from a table of real districts, streets and communities.

    Parameters
    ----------
    df
        Columns ``level`` (``district``, ``street`` or ``community``), ``code`` (12 digits),
        ``name``, ``parent_code``; optional ``lon`` and ``lat`` give a street an anchor (where it
        is grown from). One district row; its ``parent_code`` is not checked. Streets and
        communities are placed in table order.
    n_grids, n_microgrids
        Totals to aim for.
    generated_communities
        Communities generated for a street the table lists none for: codes
        ``street[:9] + "901"``.. (the 9xx range stays clear of real numbering), names
        ``{street without 街道}第{i}社区（生成）``. 0 makes such a street an error.
    crs
        What ``lon``/``lat`` are (``wgs84``, ``gcj02``, ``bd09`` or an EPSG code).
    source
        Names the table in error messages (e.g. its path).

    Returns
    -------
    HierarchyPlan
        Official names and codes from the table; anchors in WGS84 (lon, lat).

    Raises
    ------
    DataFileError
        Listing every problem: missing columns, unknown levels, malformed or duplicate codes,
        no (or several) district rows, unknown parent codes, codes not under their parent's
        prefix, bad coordinates, impossible totals.
    """
    missing = [c for c in ADMIN_COLUMNS if c not in df.columns]
    if missing:
        found = ", ".join(str(c) for c in df.columns)
        msg = f"{source}: missing column(s) {', '.join(missing)} (found: {found})"
        raise DataFileError(msg)
    problems: list[str] = []
    has_lon, has_lat = "lon" in df.columns, "lat" in df.columns
    if has_lon != has_lat:
        problems.append("give both lon and lat columns, or neither")
    levels = [str(v).strip().lower() if not pd.isna(v) else "" for v in df["level"]]
    codes = [_code_text(v) for v in df["code"]]
    names = [str(v).strip() if not pd.isna(v) else "" for v in df["name"]]
    parents = [_code_text(v) for v in df["parent_code"]]
    known_levels = (Level.DISTRICT.value, Level.STREET.value, Level.COMMUNITY.value)
    for row, (level, code, name) in enumerate(zip(levels, codes, names, strict=True), start=1):
        if level not in known_levels:
            problems.append(
                f"row {row}: unknown level {level!r} (expected {', '.join(known_levels)})"
            )
        if not _is_digits(code, 12):
            problems.append(f"row {row}: code {code!r} is not 12 digits")
        if not name:
            problems.append(f"row {row}: empty name")
    rows_of: dict[str, list[int]] = {}
    for row, code in enumerate(codes, start=1):
        rows_of.setdefault(code, []).append(row)
    for code, rows in rows_of.items():
        if len(rows) > 1 and code:
            problems.append(f"duplicate code {code} in rows {rows}")
    district_rows = [i for i, level in enumerate(levels) if level == Level.DISTRICT.value]
    if not district_rows:
        problems.append("no district row")
    elif len(district_rows) > 1:
        problems.append(f"several district rows: {[i + 1 for i in district_rows]}")
    district = district_rows[0] if district_rows else None
    district_code = codes[district] if district is not None else ""
    street_rows = [i for i, level in enumerate(levels) if level == Level.STREET.value]
    street_codes = {codes[i] for i in street_rows}
    for i in street_rows:
        if district is not None and parents[i] != district_code:
            problems.append(
                f"row {i + 1}: street {codes[i]} has parent {parents[i]!r}, "
                f"not the district {district_code}"
            )
        elif district is not None and not (
            codes[i].startswith(district_code[:6]) and codes[i].endswith("000")
        ):
            problems.append(
                f"row {i + 1}: street code {codes[i]} must be {district_code[:6]}nnn000 "
                "(the district's 6 digits, a street number, 000)"
            )
    children: dict[str, list[int]] = {code: [] for code in street_codes}
    for i, level in enumerate(levels):
        if level != Level.COMMUNITY.value:
            continue
        if parents[i] not in street_codes:
            problems.append(
                f"row {i + 1}: community {codes[i]} has unknown parent street {parents[i]!r}"
            )
            continue
        children[parents[i]].append(i)
        if not codes[i].startswith(parents[i][:9]) or codes[i] == parents[i]:
            problems.append(
                f"row {i + 1}: community code {codes[i]} must start with its street's "
                f"9 digits {parents[i][:9]} and not end in 000"
            )
    if not street_rows:
        problems.append("no street rows")
    if not _is_count(generated_communities) or not 0 <= generated_communities <= 99:
        problems.append(
            f"generated_communities must be an integer from 0 to 99, got {generated_communities!r}"
        )
    elif generated_communities == 0:
        for i in street_rows:
            if not children[codes[i]]:
                problems.append(f"row {i + 1}: street {codes[i]} has no community")
    lon = lat = None
    if has_lon and has_lat:
        lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(float)
        lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(float)
        for i in street_rows:
            given = (not pd.isna(df["lon"].iloc[i]), not pd.isna(df["lat"].iloc[i]))
            if given[0] != given[1]:
                problems.append(f"row {i + 1}: give both lon and lat, or neither")
            elif given[0] and not (np.isfinite(lon[i]) and np.isfinite(lat[i])):
                problems.append(
                    f"row {i + 1}: lon/lat {df['lon'].iloc[i]!r}, {df['lat'].iloc[i]!r} "
                    "are not numbers"
                )
    per_street = [
        len(children[codes[i]]) or int(generated_communities)
        for i in street_rows
        if codes[i] in children
    ]
    problems.extend(_count_problems(per_street, n_grids, n_microgrids))
    _raise_problems(problems, source, DataFileError)

    anchors: dict[int, tuple[float, float]] = {}
    if lon is not None and lat is not None:
        placed = [i for i in street_rows if np.isfinite(lon[i]) and np.isfinite(lat[i])]
        if placed:
            try:
                wlon, wlat = to_wgs84(lon[placed], lat[placed], crs)
            except CRSError as exc:
                msg = f"{source}: street lon/lat: {exc}"
                raise DataFileError(msg) from exc
            anchors = {i: (float(x), float(y)) for i, x, y in zip(placed, wlon, wlat, strict=True)}
    streets = []
    for i in street_rows:
        comms = tuple(CommunitySpec(codes[c], names[c]) for c in children[codes[i]])
        if not comms:
            short = names[i].removesuffix("街道")
            comms = tuple(
                CommunitySpec(
                    f"{codes[i][:9]}{_GENERATED_COMMUNITY_BASE + k}",
                    f"{short}第{k}社区（生成）",
                    official=False,
                )
                for k in range(1, int(generated_communities) + 1)
            )
        streets.append(StreetSpec(codes[i], names[i], comms, anchors.get(i)))
    assert district is not None  # checked above; helps the type checker
    return HierarchyPlan(
        district_code, names[district], tuple(streets), int(n_grids), int(n_microgrids)
    )


def transform_anchors(
    plan: HierarchyPlan, transform: Callable[[float, float], tuple[float, float]]
) -> HierarchyPlan:
    """A copy of ``plan`` whose street anchors went through ``transform(x, y) -> (x, y)``.

    For example ``Transformer.from_crs("EPSG:4326", "EPSG:32648", always_xy=True).transform``
    turns WGS84 anchors into the metric ones :func:`generate_hierarchy` expects.
    """
    streets = []
    for street in plan.streets:
        anchor = street.anchor
        if anchor is not None:
            x, y = transform(*anchor)
            anchor = (float(x), float(y))
        streets.append(replace(street, anchor=anchor))
    return replace(plan, streets=tuple(streets))


def plan_problems(plan: HierarchyPlan) -> list[str]:
    """Everything wrong with a plan's codes, names and totals (empty when it can be generated).

    Checks: the district code is 12 digits ending in ``000000``; every street code is the
    district's 6 digits + 3 + ``000``; every community code starts with its street's 9 digits
    and does not end in ``000``; codes are unique; names are not empty; every street has a
    community; ``communities <= n_grids <= n_microgrids`` within the 3-digit numbering.
    """
    problems: list[str] = []
    dcode = plan.district_code
    if not _is_digits(dcode, 12) or not dcode.endswith("000000"):
        problems.append(f"district code {dcode!r} is not 12 digits ending in 000000")
    if not plan.district_name.strip():
        problems.append("the district name is empty")
    if not plan.streets:
        problems.append("the plan has no street")
    elif len(plan.streets) > _MAX_SERIAL:
        problems.append(f"{len(plan.streets)} streets: at most {_MAX_SERIAL}")
    seen: set[str] = {dcode}
    for street in plan.streets:
        scode = street.code
        if not (_is_digits(scode, 12) and scode.startswith(dcode[:6]) and scode.endswith("000")):
            problems.append(f"street code {scode!r} is not {dcode[:6]}nnn000")
        if scode in seen:
            problems.append(f"duplicate code {scode}")
        seen.add(scode)
        if not street.name.strip():
            problems.append(f"street {scode}: empty name")
        if not street.communities:
            problems.append(f"street {scode} has no community")
        for comm in street.communities:
            ccode = comm.code
            if not (_is_digits(ccode, 12) and ccode.startswith(scode[:9])) or ccode.endswith("000"):
                problems.append(f"community code {ccode!r} does not fit street {scode}")
            if ccode in seen:
                problems.append(f"duplicate code {ccode}")
            seen.add(ccode)
            if not comm.name.strip():
                problems.append(f"community {ccode}: empty name")
    problems.extend(
        _count_problems([len(s.communities) for s in plan.streets], plan.n_grids, plan.n_microgrids)
    )
    return problems


# --------------------------------------------------------------------------------------------
# the user-level entry: boundary and roads files in any declared CRS


def _read_layers(
    path: Path, what: str, crs: str | int | None, layer: str | int | None, kind: str
) -> gpd.GeoDataFrame:
    gdf = read_vector_wgs84(path, crs, layer=layer, geometry_kind=kind, what=what)
    # The generator would silently work on the repaired shape; the user should fix the file.
    reject_geometry_errors(gdf, f"{what} file {path}")
    return gdf


def read_boundary(
    path: str | Path, crs: str | int | None = None, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read a boundary file (GeoJSON, GeoPackage, GeoParquet, Shapefile, ...) into EPSG:4326.

    Parameters
    ----------
    path
        The file.
    crs
        What its coordinates really are (``wgs84``, ``gcj02``, ``bd09`` or an EPSG code); it
        overrides the file's own CRS label, because GCJ-02 data is routinely labelled EPSG:4326.
        ``None`` trusts the label (an error asks for one when the file has none).
    layer
        Layer of a multi-layer file. By default every polygon layer is read (a single-layer file
        is read whatever its type, so :func:`generate_areas` can say what is wrong with it).

    Returns
    -------
    geopandas.GeoDataFrame
        The features as read, geometry in EPSG:4326; :func:`generate_areas` checks them.
        ``attrs["layers"]`` names the layer(s) read (a ``layer`` column tells several apart).

    Raises
    ------
    DataFileError
        The file is missing or unreadable, holds a geometry that cannot be parsed (an unclosed
        ring), or has several layers and none of polygons (the message names the file and lists
        its layers).
    CRSError
        The declared CRS is unknown, missing, or gives impossible coordinates (the message names
        the file and the CRS its coordinates were read in).
    """
    return _read_layers(Path(path), "boundary", crs, layer, "Polygon")


def read_roads(
    path: str | Path, crs: str | int | None = None, *, layer: str | int | None = None
) -> gpd.GeoDataFrame:
    """Read road lines from a vector file, or from a folder holding a Chengdu-style link table.

    Parameters
    ----------
    path
        A vector file of LineStrings/MultiLineStrings (e.g. the ``links`` layer of
        ``jinniu_roads.gpkg``), or a folder with ``roads_nodes.csv`` and ``roads_links.csv``
        (read by :func:`gridgov.roads.read_link_table`; a two-way road is kept once).
    crs
        What the coordinates really are; it overrides the file's own CRS label. ``None`` trusts
        the label (an error asks for one when the file has none); a link table is WGS84.
    layer
        Layer of a multi-layer file. By default every line layer is read (a single-layer file is
        read whatever its type, so :func:`generate_areas` can say what is wrong with it).

    Returns
    -------
    geopandas.GeoDataFrame
        Geometry in EPSG:4326 (link tables keep their link columns). ``attrs["layers"]`` names
        the layer(s) read (a ``layer`` column tells several apart); the choice is also logged.

    Raises
    ------
    DataFileError
        The file or folder is missing or unreadable, holds a geometry that cannot be parsed,
        or has several layers and none of lines (the message names the file and lists its
        layers).
    CRSError
        The declared CRS is unknown, missing, or gives impossible coordinates (the message names
        the file and the CRS its coordinates were read in).
    """
    path = Path(path)
    if path.is_dir():
        nodes, links = path / LINK_TABLE_FILES[0], path / LINK_TABLE_FILES[1]
        absent = [p.name for p in (nodes, links) if not p.is_file()]
        if absent:
            msg = (
                f"road folder {path} lacks {', '.join(absent)}; give a vector file of road "
                f"lines, or a folder with {' and '.join(LINK_TABLE_FILES)}"
            )
            raise DataFileError(msg)
        _, gdf_links = read_link_table(nodes, links)
        pair = np.sort(gdf_links[["u", "v"]].to_numpy(), axis=1)
        gdf_links = gdf_links[~pd.DataFrame(pair).duplicated().to_numpy()]
        return frame_to_wgs84(gdf_links.reset_index(drop=True), crs or "wgs84", str(path))
    return _read_layers(path, "roads", crs, layer, "LineString")


def _as_frame(data: gpd.GeoDataFrame | gpd.GeoSeries, what: str) -> gpd.GeoDataFrame:
    if isinstance(data, gpd.GeoSeries):
        return gpd.GeoDataFrame(geometry=data)
    if isinstance(data, gpd.GeoDataFrame):
        return data
    msg = f"the {what} must be a GeoDataFrame or GeoSeries, got {type(data).__name__}"
    raise InputError(msg)


def _rows(mask: np.ndarray, limit: int = 10) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return f"{shown}, ..." if len(rows) > limit else shown


def _boundary_problems(geoms: np.ndarray) -> list[str]:
    problems: list[str] = []
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        problems.append(f"feature(s) {_rows(missing)} have no geometry")
    types = shapely.get_type_id(geoms)
    polygonal = np.isin(types, (3, 6))  # Polygon, MultiPolygon
    wrong = ~missing & ~polygonal
    kinds = np.array([g.geom_type if w else "" for g, w in zip(geoms, wrong, strict=True)])
    for name in sorted(set(kinds[wrong].tolist())):
        of_type = kinds == name
        problems.append(
            f"feature(s) {_rows(of_type)} are {name}s; a boundary must be Polygons or MultiPolygons"
        )
    check = ~missing & polygonal
    invalid = check.copy()
    invalid[check] = ~shapely.is_valid(geoms[check])
    for row in np.flatnonzero(invalid)[:10]:
        reason = shapely.is_valid_reason(geoms[row])
        problems.append(
            f"feature {int(row)} is not a valid polygon ({reason}); repair it first, e.g. "
            "with shapely.make_valid or QGIS 'Fix geometries'"
        )
    if invalid.sum() > 10:
        problems.append(f"... and {int(invalid.sum()) - 10} more invalid feature(s)")
    return problems


def _snapped(gdf: gpd.GeoDataFrame, max_segment_deg: float | None = None) -> gpd.GeoDataFrame:
    out = gdf.copy()
    geoms = gdf.geometry.to_numpy()
    if max_segment_deg is not None:
        geoms = shapely.segmentize(geoms, max_segment_deg)
    geoms = shapely.set_precision(geoms, INPUT_PRECISION_DEG)
    out[gdf.geometry.name] = gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs)
    return out


def _metric_crs(metric_crs: str) -> CRS:
    try:
        metric = CRS.from_user_input(metric_crs)
    except Exception as exc:  # pyproj raises its own CRSError, and TypeError for odd input
        msg = f"unknown metric CRS {metric_crs!r}: {exc}"
        raise CRSError(msg) from exc
    units = {axis.unit_name for axis in metric.axis_info}
    if not metric.is_projected or not units <= {"metre", "meter"}:
        msg = f"metric CRS {metric_crs!r} must be projected in metres (e.g. a UTM zone)"
        raise CRSError(msg)
    return metric


def _district_polygon(gdf_boundary: gpd.GeoDataFrame, metric: CRS, notes: list[str]) -> Polygon:
    geoms = gdf_boundary.to_crs(metric).geometry.to_numpy()
    union = shapely.union_all(geoms)
    parts = _polygons_of(union)
    if not parts:
        msg = "the boundary has zero area"
        raise InputError(msg)
    if len(parts) > 1:
        sizes = sorted((p.area / 1e6 for p in parts), reverse=True)
        listed = ", ".join(f"{s:.4g}" for s in sizes[:5])
        msg = (
            f"the boundary is {len(parts)} separate pieces (km²: {listed}"
            f"{', ...' if len(parts) > 5 else ''}); give one connected area, or generate each "
            "piece on its own"
        )
        raise InputError(msg)
    polygon = parts[0]
    if polygon.interiors:
        holes = sum(Polygon(ring).area for ring in polygon.interiors)
        notes.append(
            f"the boundary has {len(polygon.interiors)} hole(s) ({holes / 1e6:.4g} km²); they were "
            "filled, so the areas cover them"
        )
        polygon = Polygon(polygon.exterior)
    return polygon


def _road_lines(
    gdf_roads: gpd.GeoDataFrame | gpd.GeoSeries | None,
    crs: str | int | None,
    district: Polygon,
    metric: CRS,
    notes: list[str],
) -> np.ndarray | None:
    if gdf_roads is None:
        notes.append("no roads given: areas are k-means Voronoi cells, not road blocks")
        return None
    frame = _as_frame(gdf_roads, "roads")
    geoms = frame.geometry.to_numpy()
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    lines = np.isin(shapely.get_type_id(geoms), (1, 2, 5))  # LineString, LinearRing, Multi
    wrong = ~missing & ~lines
    if wrong.any():
        kinds = sorted({g.geom_type for g in geoms[wrong]})
        msg = (
            f"the roads hold {int(wrong.sum())} feature(s) that are not lines "
            f"({', '.join(kinds)}; rows {_rows(wrong)}); give LineStrings or MultiLineStrings"
        )
        raise InputError(msg)
    frame = frame[~missing]
    if len(frame) == 0:
        notes.append("the roads hold no geometry: areas are k-means Voronoi cells")
        return None
    frame = _snapped(frame_to_wgs84(frame, crs, "the roads frame"))
    projected = frame.to_crs(metric).geometry.to_numpy()
    touching = shapely.intersects(projected, district)
    if not touching.any():
        notes.append(
            f"none of the {len(projected)} road line(s) reaches the boundary (check that both "
            "are in the declared CRS): areas are k-means Voronoi cells, not road blocks"
        )
        return None
    return np.asarray(projected[touching], dtype=object)


def generate_areas(
    gdf_boundary: gpd.GeoDataFrame | gpd.GeoSeries,
    gdf_roads: gpd.GeoDataFrame | gpd.GeoSeries | None,
    plan: HierarchyPlan,
    *,
    seed: int = 0,
    crs: str | int | None = None,
    metric_crs: str | None = None,
    progress: ProgressCallback | None = None,
) -> gpd.GeoDataFrame:
    """Generate the area hierarchy of a boundary from its roads, as a user would run it.

    Parameters
    ----------
    gdf_boundary
        The district: one polygon, or several that are dissolved into one connected area. Holes
        are filled (noted in the warnings).
    gdf_roads
        Road lines (LineString/MultiLineString); they may reach beyond the boundary. ``None``,
        or roads that miss the boundary, give k-means Voronoi cells instead of road blocks (noted
        in the warnings, never silently).
    plan
        What to generate (:func:`plan_from_counts`, :func:`plan_from_admin_table`). Street anchors
        are WGS84 (lon, lat); they are used only when every street has one.
    seed
        Seed of the random generator; the same inputs and seed give the same areas.
    crs
        What the coordinates of both frames really are: ``wgs84``, ``gcj02``, ``bd09`` or an EPSG
        code, converted by :func:`gridgov.io.frame_to_wgs84`. ``None`` trusts each frame's CRS.
    metric_crs
        Projected CRS (metres) the generator works in; default: the settings' ``metric_crs``
        (UTM 48N, which suits Chengdu). Pick the UTM zone
        of your area elsewhere (a warning says when the boundary lies outside its area of use).
    progress
        Optional ``progress(stage, done, total)`` callback (stages as in
        :func:`generate_hierarchy`).

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326; columns ``code``, ``name``, ``level``, ``parent_code``, ``generated`` (True),
        ``name_source`` (``official``/``generated``) and Polygon ``geometry``; every level tiles
        its parent exactly. ``attrs["warnings"]`` lists what the caller should know (fallbacks,
        filled holes, totals that fell short of the plan); each is also logged.

    Raises
    ------
    InputError
        An invalid plan (every problem listed), an empty, invalid, non-polygonal or disconnected
        boundary (saying what is wrong and where), non-line roads, or more micro-grids than the
        area allows (below :data:`MIN_MICROGRID_AREA_M2` each on average).
    CRSError
        An unknown CRS, a frame without one when ``crs`` is None, or impossible coordinates.
    """
    _raise_problems(plan_problems(plan), "plan")
    if metric_crs is None:
        metric_crs = get_settings().metric_crs
    metric = _metric_crs(metric_crs)
    notes: list[str] = []
    frame = _as_frame(gdf_boundary, "boundary")
    if len(frame) == 0:
        msg = "the boundary has no features"
        raise InputError(msg)
    _raise_problems(_boundary_problems(frame.geometry.to_numpy()), "boundary")
    boundary = _snapped(frame_to_wgs84(frame, crs, "the boundary frame"), BOUNDARY_SEGMENT_DEG)
    area_of_use = metric.area_of_use
    if area_of_use is not None:
        west, south, east, north = boundary.total_bounds
        inside = (
            area_of_use.west - 1 <= west
            and east <= area_of_use.east + 1
            and area_of_use.south - 1 <= south
            and north <= area_of_use.north + 1
        )
        if not inside:
            notes.append(
                f"the boundary lies outside the area of use of {metric_crs} "
                f"({area_of_use.name}); areas are generated in a distorted projection, pass "
                "the metric_crs of your region"
            )
    district = _district_polygon(boundary, metric, notes)
    mean_micro = district.area / plan.n_microgrids
    if mean_micro < MIN_MICROGRID_AREA_M2:
        most = int(district.area // MIN_MICROGRID_AREA_M2)
        msg = (
            f"the boundary covers {district.area / 1e6:.4g} km²: {plan.n_microgrids} micro-grids "
            f"would average {mean_micro:.0f} m², below {MIN_MICROGRID_AREA_M2:.0f} m²; ask for at "
            f"most {most} micro-grids (or check the boundary's CRS)"
        )
        raise InputError(msg)
    lines = _road_lines(gdf_roads, crs, district, metric, notes)

    to_metric = Transformer.from_crs("EPSG:4326", metric, always_xy=True)
    metric_plan = transform_anchors(plan, to_metric.transform)
    anchors = [s.anchor for s in metric_plan.streets]
    given = [a for a in anchors if a is not None]
    if given and len(given) < len(anchors):
        notes.append(
            f"{len(given)} of {len(anchors)} streets have an anchor; anchors are used only when "
            "every street has one, so streets grow from k-means centres"
        )
    elif given:
        far = [
            s.code
            for s, a in zip(metric_plan.streets, anchors, strict=True)
            if a is not None and district.distance(Point(a)) > 0
        ]
        if far:
            notes.append(f"anchor(s) of street(s) {', '.join(far)} lie outside the boundary")
    for note in notes:
        logger.warning(note)

    areas = generate_hierarchy(
        district, lines, metric_plan, seed=seed, crs=metric.to_string(), progress=progress
    )
    over = []
    for level in (Level.GRID, Level.MICROGRID):
        rows = areas["level"] == level.value
        too_long = rows & (areas["code"].str.len() != level.code_length)
        for parent, count in areas.loc[rows, "parent_code"].value_counts().items():
            if count > _MAX_SERIAL:
                over.append(f"{parent} received {count} {level.value}s")
        if too_long.any() and not over:
            over.append(f"{int(too_long.sum())} {level.value} code(s) have the wrong length")
    if over:
        msg = (
            f"{'; '.join(over)}, more than the {_MAX_SERIAL} a 3-digit number allows; "
            "ask for fewer grids/micro-grids or more communities"
        )
        raise InputError(msg)
    made = areas["level"].value_counts()
    for level, planned in ((Level.GRID, plan.n_grids), (Level.MICROGRID, plan.n_microgrids)):
        got = int(made.get(level.value, 0))
        if got < planned:
            note = (
                f"{got} {level.value}s made of {planned} planned: pieces were absorbed while "
                "making every area one connected polygon"
            )
            logger.warning(note)
            notes.append(note)
    out = areas.to_crs("EPSG:4326")
    # The contract says None (not NaN) for the district's parent.
    out["parent_code"] = pd.Series(
        [code if isinstance(code, str) else None for code in out["parent_code"]],
        index=out.index,
        dtype=object,
    )
    out.attrs["warnings"] = notes
    return out
