"""Benchmark: nearest-unit coverage of every micro-grid for every force kind.

    python bench/coverage.py [--baseline-sample 500] [--limit-s 1800] [--seed 1]

Times ``gridgov.analysis.fleet_coverage.fleet_coverage`` (one call: one forward Dijkstra per
kind and travel mode from all its units at once, over the reference district's 10,000
micro-grids) against the plain way, **one Dijkstra per micro-grid**: for each micro-grid, kind
and mode one ``RoadNetwork.field_to`` reverse search bounded by ``--limit-s`` from the
micro-grid's point, then the nearest unit (``rules.best_candidate``). The baseline is timed on
``--baseline-sample`` random micro-grids and extrapolated linearly to all of them (the output
says so); on that sample both answers are compared (times and units).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import shapely

from gridgov.analysis.fleet_coverage import fleet_coverage
from gridgov.dispatch import rules
from gridgov.network import build_network
from gridgov.reference import read_reference_district


def per_microgrid(ref, net, codes_idx, kinds, limit_s):  # type: ignore[no-untyped-def]
    """One bounded reverse search per micro-grid, kind and mode: {(i, kind): (time, unit)}."""
    micro = ref.gdf_areas[ref.gdf_areas["level"] == "microgrid"]
    points = shapely.point_on_surface(micro.geometry.to_numpy()[codes_idx])
    units = ref.gdf_units[ref.gdf_units["on_duty"]]
    out = {}
    for kind in kinds:
        of_kind = units[units["kind"] == kind]
        best = {i: (np.inf, None) for i in range(len(codes_idx))}
        for mode, group in of_kind.groupby("travel_mode"):
            src = net.snap(group.geometry.x, group.geometry.y, str(mode))
            ok = np.flatnonzero(~src.far)
            src, ids = src.take(ok), group["unit_id"].to_numpy()[ok]
            ranks = rules.unit_rank(ids)
            dst = net.snap(shapely.get_x(points), shapely.get_y(points), str(mode))
            for i in range(len(codes_idx)):
                if dst.far[i]:
                    continue
                times = net.field_to(dst.take(i), limit_s).times_from(src)
                j = rules.best_candidate(times, ranks)
                if j is not None and (times[j], ids[j]) < (best[i][0], best[i][1] or "~"):
                    best[i] = (float(times[j]), str(ids[j]))
        for i, value in best.items():
            out[(i, kind)] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-sample", type=int, default=500)
    parser.add_argument("--limit-s", type=float, default=1800.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    ref = read_reference_district()
    net = build_network(ref.gdf_nodes, ref.gdf_links)
    micro = ref.gdf_areas[ref.gdf_areas["level"] == "microgrid"]
    kinds = sorted(set(ref.gdf_units.loc[ref.gdf_units["on_duty"], "kind"].astype(str)))
    n = len(micro)
    on_duty = int(ref.gdf_units["on_duty"].sum())
    machine = platform.processor() or platform.machine()
    print(f"reference district: {n} micro-grids, {len(kinds)} force kinds, {on_duty} on-duty units")
    print(f"machine: {machine}, Python {platform.python_version()}")

    # Warm-up: the first search builds the network's search regions.
    fleet_coverage(ref.gdf_areas, ref.gdf_units, net, kinds=kinds[:1], limit_s=args.limit_s)
    t = time.perf_counter()
    table = fleet_coverage(ref.gdf_areas, ref.gdf_units, net, kinds=kinds, limit_s=args.limit_s)
    fleet_s = time.perf_counter() - t
    print(f"fleet_coverage, one call:        {fleet_s:8.2f} s  ({len(table)} area-kind rows)")

    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(n, size=min(args.baseline_sample, n), replace=False))
    t = time.perf_counter()
    base = per_microgrid(ref, net, sample, kinds, args.limit_s)
    base_s = time.perf_counter() - t
    scaled = base_s * n / len(sample)
    print(f"one Dijkstra per micro-grid:     {scaled:8.2f} s  "
          f"(timed on {len(sample)} micro-grids: {base_s:.2f} s, extrapolated to {n})")  # fmt: skip
    print(f"ratio (baseline / one call):     {scaled / fleet_s:8.1f}x")

    codes = micro["code"].astype(str).to_numpy()
    indexed = table.set_index(["code", "kind"])
    worst, unit_diff, inf_diff = 0.0, 0, 0
    for (i, kind), (t_base, u_base) in base.items():
        row = indexed.loc[(codes[sample[i]], kind)]
        t_fleet = float(row["time_s"])
        if np.isfinite(t_base) != np.isfinite(t_fleet):
            inf_diff += 1
        elif np.isfinite(t_base):
            worst = max(worst, abs(t_fleet - t_base))
            unit_diff += int(row["unit_id"] != u_base)
    print(f"agreement on the sample: max |Δt| {worst:.2e} s, reach differs {inf_diff}, "
          f"nearest unit differs {unit_diff} of {len(base)}")  # fmt: skip


if __name__ == "__main__":
    main()
