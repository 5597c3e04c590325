"""How good are the reference district's travel times? Main roads against the full street network.

The reference roads are central Chengdu's main roads only (straight lines between intersections):
a unit reaches a place inside a block over an access leg at the mode's access speed. A real
OpenStreetMap extract holds every street. In the area the extract covers, this compares the
nearest-unit travel time to each area on both networks, for the same units, with the same
speeds on the road classes that can be matched (:data:`MATCHED_CLASSES`; the minor OSM classes
have no counterpart among the main roads and keep :data:`gridgov.roads.OSM_SPEEDS_KMH`).

The result says how far the times and the unit chosen can be trusted: the distribution of
``osm − reference`` (positive: the main-road model is optimistic) and the share of areas whose
nearest unit changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridgov.analysis.fleet_coverage import fleet_coverage
from gridgov.errors import InputError
from gridgov.model import ForceKind, Level, TravelMode
from gridgov.network import RoadNetwork
from gridgov.roads import OSM_SPEEDS_KMH, SPEEDS_KMH
from gridgov.travel_model import TravelModel

#: The reference network's road classes and the OSM ``highway`` values that stand for them.
MATCHED_CLASSES: dict[str, tuple[str, ...]] = {
    "expressway": ("motorway", "motorway_link"),
    "urban_expressway": ("trunk", "trunk_link"),
    "arterial": (
        "primary",
        "primary_link",
        "secondary",
        "secondary_link",
        "tertiary",
        "tertiary_link",
    ),
}
#: Default force kinds compared: the three that drive to most calls.
DEFAULT_KINDS: tuple[str, ...] = ("fire", "police", "enforcement")
#: Default width (metres) of the strip around the extract's roads counted as covered.
DEFAULT_MARGIN_M = 150.0


def matched_speeds(
    reference: Mapping[str, Mapping[str, float]] = SPEEDS_KMH,
) -> dict[str, dict[str, float]]:
    """OSM class speeds with every matched class at its reference class's speeds."""
    speeds = {c: dict(v) for c, v in OSM_SPEEDS_KMH.items()}
    for ref_class, osm_classes in MATCHED_CLASSES.items():
        for osm_class in osm_classes:
            speeds[osm_class] = dict(reference[ref_class])
    return speeds


def served(
    network: RoadNetwork,
    lon: np.ndarray,
    lat: np.ndarray,
    *,
    mode: TravelMode | str = TravelMode.DRIVE,
    margin_m: float = DEFAULT_MARGIN_M,
) -> np.ndarray:
    """Which points lie within ``margin_m`` of a road the network keeps for ``mode``.

    This is what "inside the area the extract covers" means here: a point farther from every
    kept road (beyond the extract's edge, or next to a road cut off there) is left out.
    """
    snapped = network.snap(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float), mode)
    return ~np.asarray(snapped.far) & (np.asarray(snapped.access_m) <= margin_m)


@dataclass(frozen=True)
class TravelTimeComparison:
    """Per area and kind the two times (``areas``), and the figures per kind (``summary``).

    ``areas``: ``code``, ``kind``, ``time_reference_s``, ``time_osm_s``, ``diff_s`` (osm −
    reference), ``unit_reference``, ``unit_osm``, ``changed`` (the nearest unit differs).
    ``summary``: one row per kind and one for ``all``: ``areas`` (reached on both),
    ``median_diff_s``, ``p10_diff_s``, ``p90_diff_s``, ``median_abs_diff_s``,
    ``median_ratio`` (osm / reference), ``changed_share``, ``unreached_either``.
    """

    areas: pd.DataFrame
    summary: pd.DataFrame
    units_used: int


def _figures(table: pd.DataFrame) -> dict[str, float]:
    both = table[np.isfinite(table["time_reference_s"]) & np.isfinite(table["time_osm_s"])]
    d = both["diff_s"]
    ratio = both["time_osm_s"] / both["time_reference_s"].where(both["time_reference_s"] > 0)
    return {
        "areas": float(len(both)),
        "median_diff_s": float(d.median()) if len(d) else np.nan,
        "p10_diff_s": float(d.quantile(0.1)) if len(d) else np.nan,
        "p90_diff_s": float(d.quantile(0.9)) if len(d) else np.nan,
        "median_abs_diff_s": float(d.abs().median()) if len(d) else np.nan,
        "median_ratio": float(ratio.median()) if len(d) else np.nan,
        "changed_share": float(both["changed"].mean()) if len(both) else np.nan,
        "unreached_either": float(len(table) - len(both)),
    }


def compare_networks(
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    reference: TravelModel,
    full: RoadNetwork,
    *,
    margin_m: float = DEFAULT_MARGIN_M,
    within: shapely.Geometry | None = None,
    kinds: Sequence[ForceKind | str] = DEFAULT_KINDS,
    level: Level | str = Level.MICROGRID,
    limit_s: float = 3600.0,
) -> TravelTimeComparison:
    """Nearest-unit times on two networks, for the areas and units the full network covers.

    Parameters
    ----------
    gdf_areas, gdf_units
        The district (EPSG:4326); never changed.
    reference, full
        The two road networks (the main roads; the full street network).
    margin_m
        An area (its representative point) or a unit counts when it lies within this distance
        of a road of ``full`` (:func:`served`); only those units count, on both networks.
    within
        Optionally, a polygon (WGS84) the areas and units must also lie in.
    kinds, level, limit_s
        The force kinds, the areas' level and the search bound.
    """
    lv = Level(level).value
    areas = gdf_areas[gdf_areas["level"].astype(str) == lv].to_crs("EPSG:4326")
    xy = shapely.get_coordinates(shapely.point_on_surface(areas.geometry.to_numpy()))
    keep = served(full, xy[:, 0], xy[:, 1], margin_m=margin_m)
    units = gdf_units.to_crs("EPSG:4326")
    units = units[units.geometry.notna() & ~units.geometry.is_empty]
    ux, uy = units.geometry.x.to_numpy(), units.geometry.y.to_numpy()
    keep_units = served(full, ux, uy, margin_m=margin_m)
    if within is not None:
        keep &= shapely.contains_xy(within, xy[:, 0], xy[:, 1])
        keep_units &= shapely.contains_xy(within, ux, uy)
    areas, units = areas[keep], units[keep_units]
    if len(areas) == 0 or len(units) == 0:
        msg = "no area or no unit lies inside the area both networks cover"
        raise InputError(msg)
    wanted = [ForceKind(k).value for k in kinds]
    a = fleet_coverage(areas, units, reference, kinds=wanted, level=lv, limit_s=limit_s)
    b = fleet_coverage(areas, units, full, kinds=wanted, level=lv, limit_s=limit_s)
    table = pd.DataFrame(
        {
            "code": a["code"],
            "kind": a["kind"],
            "time_reference_s": a["time_s"],
            "time_osm_s": b["time_s"].to_numpy(),
            "unit_reference": a["unit_id"],
            "unit_osm": b["unit_id"].to_numpy(),
        }
    )
    with np.errstate(invalid="ignore"):
        table["diff_s"] = table["time_osm_s"] - table["time_reference_s"]
    table["changed"] = table["unit_reference"] != table["unit_osm"]
    rows = {kind: _figures(table[table["kind"] == kind]) for kind in wanted}
    rows["all"] = _figures(table)
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "kind"
    return TravelTimeComparison(table, summary, len(units))


__all__ = [
    "DEFAULT_KINDS",
    "DEFAULT_MARGIN_M",
    "MATCHED_CLASSES",
    "TravelTimeComparison",
    "compare_networks",
    "matched_speeds",
    "served",
]
