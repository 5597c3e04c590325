"""Tile a district into the area hierarchy from road blocks, in a metric CRS: partition each
parent polygon, tile the micro-grids exactly, dissolve every level from the faces (see the
package notes, "How it works")."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import geopandas as gpd
import numpy as np
import shapely
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from shapely.geometry import MultiPolygon, Polygon

from gridgov.errors import GenerationError, InputError
from gridgov.model import Level
from gridgov.tessellate.area_plans import HierarchyPlan, grid_name, microgrid_name

#: Grid (metres) to which all boundary linework is snapped before noding.
GRID_SIZE = 0.01
#: Longest edge (metres) of the exact tiling. A straight edge in the metric CRS is not straight in
#: EPSG:4326: near Chengdu a UTM chord of length L bows about 1.3e-8 L² m away from the lon/lat
#: chord (2.6 m over 15 km), enough to flip the centimetre-thin slivers that line a long boundary
#: edge once each vertex is reprojected. At 100 m the bow is 0.13 mm, far below the 1 cm grid.
MAX_EDGE_M = 100.0
#: Points sampled per child when splitting a block by k-means.
_SAMPLES_PER_CHILD = 40
_KMEANS_ITERATIONS = 25
#: A block smaller than this share of a child's target area is merged into a neighbour first.
_SMALL_BLOCK_SHARE = 0.25
#: Blocks larger than this many target areas are pre-split before growing children from blocks.
_LARGE_BLOCK_SHARE = 1.5

#: Called as ``progress(stage, done, total)`` while the hierarchy is built.
ProgressCallback = Callable[[str, int, int], None]


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
