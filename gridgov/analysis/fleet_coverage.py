"""Coverage of every area for every force kind in one call (pure).

:func:`gridgov.coverage.coverage_times` answers one kind at a time with one exact reverse
search per area, the way dispatch measures (ties to the smaller unit id). An analyst's map of
10,000 micro-grids × every kind needs something else: here each kind and travel mode takes
**one** forward Dijkstra from all its units at once (scipy's ``min_only`` search, which also
tells which source reached each node first), seeded with one virtual node per distinct unit
position; every area then reads its time and nearest unit off its road's two end nodes, plus
the direct way along a road it shares with a unit (:func:`forward_search.direct_ways`).

The times are those of the exact reverse searches up to rounding. Units standing at one place
are one source named by their smallest id; between two places reached at exactly the same
time the search keeps whichever it settled first (dispatch would take the smaller id).
"""

from __future__ import annotations

from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse.csgraph import dijkstra

from gridgov.analysis import forward_search
from gridgov.errors import InputError
from gridgov.model import ForceKind, Level, TravelMode
from gridgov.network import RoadNetwork
from gridgov.travel_model import Snapped, TravelModel

#: Default search bound (seconds).
DEFAULT_LIMIT_S = 1800.0


def _nearest(
    arrays: forward_search.ModeArrays,
    sources: Snapped,
    labels: np.ndarray,
    targets: Snapped,
    limit_s: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per target: the nearest source's time and its index in ``labels`` (-1: none)."""
    k = len(sources)
    graph = forward_search.seeded_graph(arrays, sources, np.arange(k))
    bound = forward_search.search_bound(limit_s)
    dist, _, origin = dijkstra(
        graph,
        directed=True,
        indices=arrays.n + np.arange(k),
        limit=bound,
        min_only=True,
        return_predecessors=True,
    )
    origin = np.where(origin >= arrays.n, origin - arrays.n, -1)
    point, et, f, access_t = targets.joins()
    et = np.asarray(et, dtype=np.int64)
    access_t = np.asarray(access_t, dtype=float) / arrays.access_ms
    a_node, b_node = arrays.src[et], arrays.dst[et]
    at_a = dist[a_node] + f * arrays.time_s[et]
    leg_b = np.where(f >= 1.0, 0.0, np.inf)
    twin = arrays.rev[et] >= 0
    leg_b[twin] = (1.0 - f[twin]) * arrays.rev_time[et[twin]]
    at_b = dist[b_node] + leg_b
    via_a = at_a <= at_b
    join_time = np.where(via_a, at_a, at_b) + access_t
    join_source = np.where(via_a, origin[a_node], origin[b_node])
    rows = pd.DataFrame({"target": point, "time_s": join_time, "source": join_source})
    direct = forward_search.direct_ways(arrays, sources, targets)
    rows = pd.concat([rows, direct], ignore_index=True)
    rows = rows[np.isfinite(rows["time_s"]) & (rows["source"] >= 0)]
    rows = rows.assign(label=labels[rows["source"].to_numpy(dtype=np.int64)])
    best = rows.sort_values(["target", "time_s", "label"]).drop_duplicates("target")
    times = np.full(len(targets), np.inf)
    who = np.full(len(targets), -1, dtype=np.int64)
    keep = best["time_s"].to_numpy() <= bound
    times[best["target"].to_numpy()[keep]] = best["time_s"].to_numpy()[keep]
    who[best["target"].to_numpy()[keep]] = best["source"].to_numpy(dtype=np.int64)[keep]
    return times, who


def fleet_coverage(
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    travel: TravelModel,
    *,
    kinds: Sequence[ForceKind | str] | None = None,
    level: Level | str = Level.MICROGRID,
    limit_s: float = DEFAULT_LIMIT_S,
) -> pd.DataFrame:
    """Nearest on-duty unit time of every kind to every area of a level, in one call.

    Parameters
    ----------
    gdf_areas, gdf_units
        Areas and units (EPSG:4326); never changed.
    travel
        The road network.
    kinds
        Force kinds (default: every kind with an on-duty unit).
    level
        The areas' level (default micro-grids).
    limit_s
        Search bound: beyond it an area's time is inf and its unit None.

    Returns
    -------
    pandas.DataFrame
        One row per area and kind: ``code``, ``kind``, ``time_s``, ``unit_id``.
    """
    if not isinstance(travel, RoadNetwork):
        msg = "fleet coverage needs a road network (no roads are stored)"
        raise InputError(msg)
    lv = Level(level).value
    areas = gdf_areas[gdf_areas["level"].astype(str) == lv].to_crs("EPSG:4326")
    units = gdf_units[gdf_units["on_duty"].fillna(False).astype(bool)].to_crs("EPSG:4326")
    units = units[units.geometry.notna() & ~units.geometry.is_empty]
    wanted = (
        sorted(set(units["kind"].astype(str)))
        if kinds is None
        else [ForceKind(k).value for k in kinds]
    )
    points = shapely.point_on_surface(areas.geometry.to_numpy())
    px, py = shapely.get_x(points), shapely.get_y(points)
    codes = areas["code"].astype(str).to_numpy()
    frames = []
    targets_by_mode: dict[TravelMode, Snapped] = {}
    for kind in wanted:
        found = []
        of_kind = units[units["kind"].astype(str) == kind]
        for mode, group in of_kind.groupby(of_kind["travel_mode"].astype(str), sort=True):
            m = TravelMode(mode)
            if m not in travel.modes:
                continue
            # One source per distinct position, named by its smallest unit id.
            spots = (
                pd.DataFrame(
                    {
                        "x": group.geometry.x.to_numpy(),
                        "y": group.geometry.y.to_numpy(),
                        "unit_id": group["unit_id"].astype(str).to_numpy(),
                    }
                )
                .sort_values("unit_id")
                .drop_duplicates(["x", "y"])
                .reset_index(drop=True)
            )
            sources = travel.snap(spots["x"].to_numpy(), spots["y"].to_numpy(), m)
            usable = np.flatnonzero(~np.asarray(sources.far))
            if not len(usable):
                continue
            sources = sources.take(usable)
            labels = spots["unit_id"].to_numpy()[usable]
            if m not in targets_by_mode:
                targets_by_mode[m] = travel.snap(px, py, m)
            targets = targets_by_mode[m]
            times, source = _nearest(
                forward_search.mode_arrays(travel, m), sources, labels, targets, limit_s
            )
            reached = np.flatnonzero(np.isfinite(times) & ~np.asarray(targets.far))
            found.append(
                pd.DataFrame(
                    {"i": reached, "time_s": times[reached], "unit_id": labels[source[reached]]}
                )
            )
        time_s = np.full(len(codes), np.inf)
        unit_id = np.full(len(codes), None, dtype=object)
        if found:
            # The fastest of the modes; equal times go to the smaller unit id, as in dispatch.
            best = pd.concat(found).sort_values(["i", "time_s", "unit_id"]).drop_duplicates("i")
            rows = best["i"].to_numpy()
            time_s[rows] = best["time_s"].to_numpy()
            unit_id[rows] = best["unit_id"].to_numpy()
        table = pd.DataFrame({"code": codes, "kind": kind, "time_s": time_s, "unit_id": unit_id})
        frames.append(table)
    if not frames:
        return pd.DataFrame({"code": [], "kind": [], "time_s": [], "unit_id": []})
    return pd.concat(frames, ignore_index=True)


__all__ = ["DEFAULT_LIMIT_S", "fleet_coverage"]
