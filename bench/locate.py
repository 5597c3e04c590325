"""Benchmark: locate random points in the reference district's micro-grids.

    python bench/locate.py [--points 1000000] [--postgis-url URL] [--no-postgis]
                           [--synthetic N]

Compares gridgov's Locator with (a) a per-point shapely loop, timed on a sample and
extrapolated, (b) one vectorised ``STRtree.query`` and (c) a PostGIS join with a GIST index, on
points uniform in the micro-grids' bounding box; then times a batch of points all inside the
micro-grids, and the latency of single ``locate_one`` calls on a fresh locator. ``--synthetic N``
runs on a Voronoi tiling of N micro-grids in a 40 km square instead of the reference district.
All methods apply the same rule (a point on a shared edge goes to the smallest code) and the
answers are compared point by point. See bench/README.md for measured figures.
"""

from __future__ import annotations

import argparse
import io
import math
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from gridgov.areas import build_locator, read_areas
from gridgov.settings import get_settings

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/gridgov_bench"
NONE = -1


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` runs, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def synthetic_microgrids(
    n: int, seed: int = 1, side_m: float = 40_000.0, centre: tuple[float, float] = (104.05, 30.70)
) -> gpd.GeoDataFrame:
    """A micro-grid level of ``n`` Voronoi cells tiling a square of ``side_m`` metres."""
    rng = np.random.default_rng(seed)
    cx, cy = centre
    h = side_m / 111_320.0
    w = h / math.cos(math.radians(cy))
    frame = shapely.box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    seeds = np.column_stack(
        [rng.uniform(cx - w / 2, cx + w / 2, n), rng.uniform(cy - h / 2, cy + h / 2, n)]
    )
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=frame))
    cells = shapely.intersection(cells, frame)
    cells = cells[shapely.get_type_id(cells) == 3]
    codes = [f"510106{i:012d}" for i in range(len(cells))]
    return gpd.GeoDataFrame(
        {"code": codes, "name": codes, "level": "microgrid", "parent_code": None},
        geometry=cells,
        crs="EPSG:4326",
    ).assign(generated=True)


def points_inside(
    rng: np.random.Generator, geoms: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform over the union of ``geoms`` (a polygon by area, then rejection)."""
    area = shapely.area(geoms)
    pick = rng.choice(len(geoms), size=n, p=area / area.sum())
    bounds = shapely.bounds(geoms[pick])
    x, y = np.empty(n), np.empty(n)
    todo = np.arange(n)
    while len(todo):
        b = bounds[todo]
        tx, ty = rng.uniform(b[:, 0], b[:, 2]), rng.uniform(b[:, 1], b[:, 3])
        ok = shapely.contains_xy(geoms[pick[todo]], tx, ty)
        x[todo[ok]], y[todo[ok]] = tx[ok], ty[ok]
        todo = todo[~ok]
    return x, y


def smallest_hit(n: int, pt: np.ndarray, poly: np.ndarray) -> np.ndarray:
    # Polygons are numbered in code order, so the minimum index is the smallest code.
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, pt, poly)
    best[best == np.iinfo(np.int64).max] = NONE
    return best


def per_point_loop(tree: shapely.STRtree, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.full(len(x), NONE, dtype=np.int64)
    for i in range(len(x)):
        hits = tree.query(shapely.Point(x[i], y[i]), predicate="intersects")
        if len(hits):
            out[i] = hits.min()
    return out


def run_postgis(
    url: str, codes: np.ndarray, geoms: np.ndarray, x: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    base, _, dbname = dsn.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{dbname}"')
    result: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        version = conn.execute("SELECT postgis_lib_version(), version()").fetchone()
        assert version is not None
        result["version"] = f"PostGIS {version[0]} on {version[1].split(',')[0]}"
        t = time.perf_counter()
        conn.execute("DROP TABLE IF EXISTS bench_microgrids")
        conn.execute(
            "CREATE TABLE bench_microgrids (id integer PRIMARY KEY, code text NOT NULL, "
            "geom geometry(Polygon, 4326) NOT NULL)"
        )
        with (
            conn.cursor() as cur,
            cur.copy("COPY bench_microgrids (id, code, geom) FROM STDIN") as cp,
        ):
            # hex EWKB keeps every coordinate bit; WKT would round them
            ewkb = shapely.to_wkb(shapely.set_srid(geoms, 4326), hex=True, include_srid=True)
            for i, (code, hexwkb) in enumerate(zip(codes, ewkb, strict=True)):
                cp.write_row((i, code, hexwkb))
        conn.execute("CREATE INDEX ON bench_microgrids USING gist (geom)")
        conn.execute("ANALYZE bench_microgrids")
        conn.execute("DROP TABLE IF EXISTS bench_points")
        conn.execute("CREATE UNLOGGED TABLE bench_points (id integer, x float8, y float8)")
        buf = io.StringIO()
        np.savetxt(buf, np.column_stack([np.arange(len(x)), x, y]), fmt=["%d", "%.17g", "%.17g"])
        with conn.cursor() as cur, cur.copy("COPY bench_points (id, x, y) FROM STDIN") as cp:
            cp.write(buf.getvalue().replace(" ", "\t"))
        conn.execute("DROP TABLE IF EXISTS bench_pts")
        conn.execute(
            "CREATE UNLOGGED TABLE bench_pts AS SELECT id, "
            "ST_SetSRID(ST_MakePoint(x, y), 4326)::geometry(Point, 4326) AS geom FROM bench_points"
        )
        conn.execute("ANALYZE bench_pts")
        result["load_s"] = time.perf_counter() - t
        conn.execute("SET jit = off")  # compiling the plan costs more than it saves here
        conn.execute("SET max_parallel_workers_per_gather = 2")
        conn.execute("SET parallel_setup_cost = 0")
        conn.execute("SET parallel_tuple_cost = 0")
        conn.execute("SET min_parallel_table_scan_size = 0")
        # min(id) applies the smallest-code rule (ids follow code order).
        query = (
            "SELECT p.id, min(m.id) AS mid FROM bench_pts p JOIN bench_microgrids m "
            "ON ST_Intersects(m.geom, p.geom) GROUP BY p.id"
        )

        def join() -> float:
            conn.execute("DROP TABLE IF EXISTS bench_answer")
            t = time.perf_counter()
            conn.execute(f"CREATE UNLOGGED TABLE bench_answer AS {query}")
            return time.perf_counter() - t

        # Plan 1: only the polygons indexed; a nested loop probes it once per point.
        result["poly_index_s"] = join()
        # Plan 2 (the fast one): index the points too. The planner then loops over the
        # polygons and probes the point index, and PostGIS reuses each prepared polygon for
        # all the points it tests against it.
        t = time.perf_counter()
        conn.execute("CREATE INDEX ON bench_pts USING gist (geom)")
        conn.execute("ANALYZE bench_pts")
        result["point_index_s"] = time.perf_counter() - t
        result["plan"] = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {query}").fetchall())
        result["join_s"] = join()
        t = time.perf_counter()
        rows = conn.execute("SELECT id, mid FROM bench_answer").fetchall()
        result["fetch_s"] = time.perf_counter() - t
        answer = np.full(len(x), NONE, dtype=np.int64)
        if rows:
            arr = np.array(rows, dtype=np.int64)
            answer[arr[:, 0]] = arr[:, 1]
        result["answer"] = answer
        for table in ("bench_answer", "bench_pts", "bench_points", "bench_microgrids"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return result


def single_point_latency(
    micro: gpd.GeoDataFrame, geoms: np.ndarray, rng: np.random.Generator, calls: int
) -> dict[str, Any]:
    """What a one-off lookup costs: a fresh locator, then ``calls`` single points inside."""
    x, y = points_inside(rng, geoms, calls + 1)
    t = time.perf_counter()
    locator = build_locator(micro)
    build_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    locator.locate_one(float(x[0]), float(y[0]))
    first_ms = (time.perf_counter() - t) * 1e3
    times = []
    for i in range(1, calls + 1):
        t = time.perf_counter()
        locator.locate_one(float(x[i]), float(y[i]))
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {
        "build_ms": build_ms,
        "first_ms": first_ms,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "raster": locator.index(locator.finest).has_raster,
    }


def raster_cost(micro: gpd.GeoDataFrame) -> tuple[float, float]:
    """Seconds and traced peak MB (numpy reports its buffers) of one raster build."""
    locator = build_locator(micro)
    index = locator.index(locator.finest)
    tracemalloc.start()
    t = time.perf_counter()
    index.raster  # noqa: B018 - the build is the point
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak


def inside_batch(
    micro: gpd.GeoDataFrame,
    geoms: np.ndarray,
    tree: shapely.STRtree,
    rng: np.random.Generator,
    n: int,
    repeat: int,
) -> dict[str, Any]:
    """A batch with every point inside a micro-grid (the realistic case: incidents, units)."""
    x, y = points_inside(rng, geoms, n)
    t = time.perf_counter()
    locator = build_locator(micro)
    locator.locate(x, y)
    cold_s = time.perf_counter() - t
    rows_s, rows = timed(lambda: locator.locate_rows(x, y), repeat)
    frame_s, _ = timed(lambda: locator.locate(x, y), repeat)

    def strtree_vectorised() -> np.ndarray:
        pt, poly = tree.query(shapely.points(x, y), predicate="intersects")
        return smallest_hit(n, pt, poly)

    tree_s, want = timed(strtree_vectorised, 1)
    return {
        "cold_s": cold_s,
        "rows_s": rows_s,
        "frame_s": frame_s,
        "tree_s": tree_s,
        "mismatches": int((rows != want).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--naive-sample", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per in-memory method")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--singles", type=int, default=1000, help="locate_one calls timed")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N", help="N Voronoi cells")
    parser.add_argument("--postgis-url", default=DEFAULT_URL)
    parser.add_argument("--no-postgis", action="store_true")
    args = parser.parse_args(argv)

    if args.synthetic:
        source = f"a synthetic Voronoi tiling (40 km square, seed {args.seed})"
        gdf = synthetic_microgrids(args.synthetic, seed=args.seed)
    else:
        path = get_settings().data_dir / "jinniu_areas.parquet"
        source = path.name
        gdf = read_areas(path)
    micro = gdf[gdf["level"] == "microgrid"].sort_values("code").reset_index(drop=True)
    codes = micro["code"].to_numpy(dtype=object)
    geoms = np.asarray(micro.geometry.values, dtype=object)
    n = args.points
    rng = np.random.default_rng(args.seed)
    x0, y0, x1, y1 = micro.total_bounds
    x, y = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
    print(f"gridgov locate benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores")
    print(f"python {sys.version.split()[0]}, shapely {shapely.__version__}, numpy {np.__version__}")
    print(f"{len(micro):,} micro-grids from {source}; {n:,} uniform points in their bbox\n")

    singles = single_point_latency(micro, geoms, rng, args.singles)

    # Cold start: a fresh locator, then one batch (big enough to build the raster on the way).
    build_s, locator = timed(lambda: build_locator(micro), 1)
    first_s, _ = timed(lambda: locator.locate(x, y), 1)
    index = locator.index(locator.finest)
    on_the_way = "raster built on the way" if index.has_raster else "exact path (no raster)"
    raster = index.raster
    rows_s, rows = timed(lambda: locator.locate_rows(x, y), args.repeat)
    frame_s, frame = timed(lambda: locator.locate(x, y), args.repeat)
    exact_s, exact_rows = timed(lambda: index.exact(x, y), 1)
    raster_s, raster_peak = raster_cost(micro)
    full_build_s, full = timed(lambda: build_locator(gdf), 1)
    full_cold_s, _ = timed(lambda: full.locate(x, y), 1)
    full_s, full_frame = timed(lambda: full.locate(x, y), args.repeat)
    mixed = float((raster.labels == -2).mean())

    tree_build_s, tree = timed(lambda: shapely.STRtree(geoms), 1)

    def strtree_vectorised() -> np.ndarray:
        pt, poly = tree.query(shapely.points(x, y), predicate="intersects")
        return smallest_hit(n, pt, poly)

    tree_s, tree_answer = timed(strtree_vectorised, args.repeat)
    m = min(args.naive_sample, n)
    loop_sample_s, loop_answer = timed(lambda: per_point_loop(tree, x[:m], y[:m]), 1)
    loop_s = loop_sample_s * n / m

    inside = inside_batch(micro, geoms, tree, rng, n, args.repeat)

    pg: dict[str, Any] | None = None
    pg_error = None
    if not args.no_postgis:
        try:
            pg = run_postgis(args.postgis_url, codes, geoms, x, y)
        except Exception as exc:  # report and carry on: the in-memory figures still stand
            pg_error = f"{type(exc).__name__}: {exc}"

    print(
        f"build_locator: {build_s * 1e3:.0f} ms (nothing spatial yet). Raster build alone: "
        f"{raster_s:.2f} s, traced peak {raster_peak:.0f} MB (cell {raster.cell_m:.2f} m, "
        f"{raster.labels.shape[1]}x{raster.labels.shape[0]}, {raster.labels.nbytes / 1e6:.0f} MB, "
        f"{mixed:.1%} of cells on a boundary); STRtree build: {tree_build_s:.3f} s"
    )
    print(
        f"single points on a fresh locator: first locate_one {singles['first_ms']:.1f} ms "
        f"(build_locator {singles['build_ms']:.1f} ms before it), then p50 "
        f"{singles['p50_ms']:.3f} ms, p99 {singles['p99_ms']:.3f} ms over {args.singles:,} "
        f"calls; raster built: {singles['raster']}\n"
    )
    table = [
        ("gridgov Locator.locate_rows (indices)", rows_s, ""),
        ("gridgov Locator.locate (DataFrame of micro-grid codes)", frame_s, ""),
        # The budget (< 2 s) is for a cold start: index build and the query together.
        (
            "gridgov build + locate (cold start, micro-grid codes)",
            build_s + first_s,
            f"target < 2 s; {on_the_way}",
        ),
        (
            "gridgov exact path alone (STRtree + closed-polygon test)",
            exact_s,
            "batches < threshold",
        ),
        (
            "gridgov Locator.locate, whole hierarchy (codes at 5 levels)",
            full_s,
            f"cold (build + locate) {full_build_s + full_cold_s:.2f} s",
        ),
        ("shapely STRtree.query, vectorised", tree_s, ""),
        (
            "per-point shapely loop (STRtree.query per Point)",
            loop_s,
            f"extrapolated from {m:,} points ({loop_sample_s:.2f} s)",
        ),
    ]
    if pg is not None:
        table += [
            ("PostGIS join, GIST on polygons only, 2 workers", pg["poly_index_s"], ""),
            ("PostGIS join, GIST on polygons and points, 2 workers", pg["join_s"], "best plan"),
            (
                "  the same + building the point index",
                pg["join_s"] + pg["point_index_s"],
                f"index {pg['point_index_s']:.2f} s",
            ),
            ("  the same + fetching the answers to Python", pg["join_s"] + pg["fetch_s"], ""),
        ]
    width = max(len(r[0]) for r in table)
    print(f"{'method':<{width}}  {'seconds':>8}  {'vs locator':>10}  note")
    for name, secs, note in table:
        print(f"{name:<{width}}  {secs:8.3f}  {secs / rows_s:9.1f}x  {note}")
    print()
    cold_s = build_s + first_s
    verdict = "meets" if cold_s < 2.0 else "MISSES"
    print(f"cold start (build + locate {n:,} points): {cold_s:.2f} s, {verdict} the 2 s target")
    print(f"locator is {tree_s / rows_s:.1f}x faster than the vectorised STRtree")
    print(f"locator is {loop_s / rows_s:.0f}x faster than the per-point loop (extrapolated)")
    if pg is not None:
        print(f"locator is {pg['join_s'] / rows_s:.1f}x faster than PostGIS's best join")
        pg_cold_s = pg["join_s"] + pg["point_index_s"]
        print(
            f"cold locator (build + locate) is {pg_cold_s / cold_s:.1f}x faster than PostGIS's "
            "best join with its point index built (table loads excluded)"
        )
        print(
            f"Locator.locate (codes at 5 levels) is {pg['join_s'] / full_s:.1f}x faster "
            "than PostGIS's best join (micro-grid ids only)"
        )

    print("\nagreement (smallest-code rule everywhere):")
    print(f"  locator vs STRtree:      {int((rows != tree_answer).sum()):,} mismatches of {n:,}")
    print(f"  exact path vs raster:    {int((rows != exact_rows).sum()):,} mismatches of {n:,}")
    print(f"  inside batch vs STRtree: {inside['mismatches']:,} mismatches of {n:,}")
    print(
        f"  locator vs per-point:    {int((rows[:m] != loop_answer).sum()):,} mismatches of {m:,}"
    )
    located = frame["microgrid"].to_numpy(dtype=object)
    want = np.where(rows >= 0, codes[np.maximum(rows, 0)], None)
    print(f"  DataFrame vs indices:    {int((located != want).sum()):,} mismatches of {n:,}")
    deep = full_frame["microgrid"].to_numpy(dtype=object)
    print(f"  whole hierarchy vs indices: {int((deep != want).sum()):,} mismatches of {n:,}")
    if pg is not None:
        print(
            f"  locator vs PostGIS:      {int((rows != pg['answer']).sum()):,} mismatches of {n:,}"
        )
        print(f"\n{pg['version']}; load (COPY, index, ANALYZE) {pg['load_s']:.1f} s; plan:")
        print("  " + pg["plan"].replace("\n", "\n  "))
    elif pg_error:
        print(f"\nPostGIS skipped: {pg_error}")
    print(
        f"\nall {n:,} points inside micro-grids: cold (build + locate) {inside['cold_s']:.3f} s, "
        f"warm Locator.locate_rows {inside['rows_s']:.3f} s, Locator.locate "
        f"{inside['frame_s']:.3f} s, vectorised STRtree {inside['tree_s']:.3f} s"
    )
    located = int((rows >= 0).sum())
    print(f"\n{located:,} of {n:,} uniform points inside a micro-grid")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
