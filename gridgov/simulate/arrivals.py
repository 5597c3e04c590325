"""The demand model of a simulated shift: Poisson arrivals by grid over a time-of-day profile,
the matter mix, on-scene service times, and points drawn again near a road (see the package
notes, "Arrivals", "Where", "What", "Service")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone

import geopandas as gpd
import numpy as np
import pandas as pd

from gridgov.catalog import Catalog
from gridgov.errors import InputError
from gridgov.model import Level, TravelMode
from gridgov.tessellate import sample_points
from gridgov.travel_model import TravelModel

#: China Standard Time (no daylight saving): the clock of the default profile.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")
#: Default start of a simulated shift: a Monday at midnight, local time.
DEFAULT_START = datetime(2026, 11, 30, tzinfo=CHINA_STANDARD_TIME)
#: Default district-wide mean arrival rate (incidents per hour).
DEFAULT_RATE_PER_HOUR = 40.0
#: Default relative arrival rate per local clock hour 0..23 (normalised to mean 1 when used).
URBAN_DAY_PROFILE: tuple[float, ...] = (
    0.45, 0.35, 0.30, 0.25, 0.25, 0.30,  # 00-05: night
    0.50, 0.80, 1.10, 1.35, 1.50, 1.50,  # 06-11: morning rise, late-morning peak
    1.30, 1.20, 1.30, 1.35, 1.40, 1.45,  # 12-17: lunch dip, afternoon
    1.50, 1.55, 1.40, 1.10, 0.80, 0.60,  # 18-23: evening peak, then quieter
)  # fmt: skip
#: Default matter weight by priority (1 most urgent): minor matters are most frequent.
PRIORITY_MIX: dict[int, float] = {1: 0.5, 2: 1.0, 3: 2.0, 4: 3.0}
#: Default median on-scene service time (minutes) by priority.
SERVICE_MEDIAN_MIN: dict[int, float] = {1: 60.0, 2: 45.0, 3: 30.0, 4: 20.0}
#: Default log-standard deviation of the lognormal service time.
SERVICE_SIGMA = 0.5

#: Rounds of drawing again the points that fall too far from every road.
REDRAW_ROUNDS = 20

#: Default start of a simulated incident's id.
ID_PREFIX = "SIM-"


def draw_arrivals(
    gdf_areas: gpd.GeoDataFrame,
    catalog: Catalog,
    *,
    hours: float,
    seed: int,
    start: datetime = DEFAULT_START,
    rate_per_hour: float = DEFAULT_RATE_PER_HOUR,
    grid_weights: Mapping[str, float] | None = None,
    profile: Sequence[float] | None = None,
    matter_weights: Mapping[str, float] | None = None,
    service_median_min: Mapping[int, float] | None = None,
    service_sigma: float = SERVICE_SIGMA,
    travel: TravelModel | None = None,
    modes: Sequence[TravelMode | str] = (),
    id_prefix: str = ID_PREFIX,
) -> pd.DataFrame:
    """Draw a shift's incidents: when, where, which matter and how long they take on scene.

    Parameters
    ----------
    gdf_areas
        The area hierarchy (WGS84). Arrivals fall in its grids (or communities, or streets).
    catalog
        The matters catalogue.
    hours
        Length of the shift.
    seed
        Seed of the random generator; the same seed gives the same arrivals.
    start
        Start of the shift, timezone-aware: the profile reads its local clock hours.
    rate_per_hour
        Mean incidents per hour over the whole district, over a day.
    grid_weights
        Weight per area code (default: micro-grid count, see the package notes). Areas not named
        get weight 0.
    profile
        24 relative rates, one per local clock hour (default :data:`URBAN_DAY_PROFILE`), or
        168, one per hour of the week from Monday 00:00 local time (e.g. a measured profile,
        :mod:`gridgov.analysis.demand_profile`).
    matter_weights
        Weight per matter code (default by priority, :data:`PRIORITY_MIX`). Matters not named get
        weight 0.
    service_median_min, service_sigma
        Lognormal on-scene service time: median minutes by priority, and log-sd.
    travel, modes
        With a travel model, a point farther than ``settings.max_snap_m`` from the roads of any
        of ``modes`` is drawn again in the same area (up to :data:`REDRAW_ROUNDS` rounds), since
        the dispatcher would refuse it (see the package notes).
    id_prefix
        Incident ids are this prefix and a zero-padded number (``SIM-000001``...); give each run
        its own prefix to store several runs side by side.

    Returns
    -------
    pandas.DataFrame
        One row per incident in time order: ``incident_id``, ``t_s`` (seconds from start),
        ``reported_at`` (UTC), ``matter_code``, ``priority``, ``area_code``, ``lon``, ``lat``,
        ``service_s``, ``redrawn`` (times the point was drawn again).
    """
    _check_shift(hours, start, rate_per_hour)
    weights = _profile_weights(profile)
    medians = _service_medians(service_median_min)
    if not (math.isfinite(service_sigma) and service_sigma >= 0):
        msg = f"service_sigma must be a finite number >= 0, not {service_sigma}"
        raise InputError(msg)
    gdf_spots, spot_p = _arrival_areas(gdf_areas, grid_weights)
    codes, matter_p = _matter_mix(catalog, matter_weights)
    rng = np.random.default_rng(seed)

    times = []
    for t0, t1, hour in _clock_segments(start, hours):
        n = rng.poisson(rate_per_hour * weights[hour % len(weights)] * (t1 - t0) / 3600.0)
        times.append(rng.uniform(t0, t1, n))
    t_s = np.sort(np.concatenate(times)) if times else np.empty(0)
    n = len(t_s)
    spot = rng.choice(len(gdf_spots), size=n, p=spot_p)
    matter = rng.choice(len(codes), size=n, p=matter_p)
    priority = np.array([catalog.get(codes[m]).priority for m in matter], dtype=np.int64)
    median_s = np.array([medians[p] * 60.0 for p in priority], dtype=float)
    service_s = median_s * np.exp(service_sigma * rng.standard_normal(n))

    lon, lat = np.empty(n), np.empty(n)
    redrawn = np.zeros(n, dtype=np.int64)
    geoms = gdf_spots.geometry.to_numpy()
    for s in np.unique(spot):  # sorted, so the draws do not depend on hashing or dict order
        rows = np.flatnonzero(spot == s)
        xy = sample_points(geoms[s], len(rows), rng)
        lon[rows], lat[rows] = xy[:, 0], xy[:, 1]
    if travel is not None and modes:
        far = _far_from_roads(travel, modes, lon, lat)
        for _ in range(REDRAW_ROUNDS):
            if not far.any():
                break
            rows = np.flatnonzero(far)
            for s in np.unique(spot[rows]):
                these = rows[spot[rows] == s]
                xy = sample_points(geoms[s], len(these), rng)
                lon[these], lat[these] = xy[:, 0], xy[:, 1]
            redrawn[rows] += 1
            far[rows] = _far_from_roads(travel, modes, lon[rows], lat[rows])

    start_utc = start.astimezone(UTC)
    width = max(6, len(str(n)))
    return pd.DataFrame(
        {
            "incident_id": [f"{id_prefix}{i + 1:0{width}d}" for i in range(n)],
            "t_s": t_s,
            "reported_at": [start_utc + timedelta(seconds=float(t)) for t in t_s],
            "matter_code": [codes[m] for m in matter],
            "priority": priority,
            "area_code": gdf_spots["code"].to_numpy()[spot].astype(str),
            "lon": lon,
            "lat": lat,
            "service_s": service_s,
            "redrawn": redrawn,
        }
    )


def _far_from_roads(
    travel: TravelModel, modes: Sequence[TravelMode | str], lon: np.ndarray, lat: np.ndarray
) -> np.ndarray:
    """Points farther than ``max_snap_m`` from the roads of any of ``modes``."""
    far = np.zeros(len(lon), dtype=bool)
    for mode in sorted({TravelMode(m).value for m in modes}):
        far |= np.asarray(travel.snap(lon, lat, mode).far, dtype=bool)
    return far


def _check_shift(hours: float, start: datetime, rate_per_hour: float) -> None:
    if not (math.isfinite(hours) and hours > 0):
        msg = f"hours must be a positive number, not {hours}"
        raise InputError(msg)
    if start.tzinfo is None or start.utcoffset() is None:
        msg = f"start must be timezone-aware (the profile reads local clock hours), not {start}"
        raise InputError(msg)
    if not (math.isfinite(rate_per_hour) and rate_per_hour >= 0):
        msg = f"rate_per_hour must be a finite number >= 0, not {rate_per_hour}"
        raise InputError(msg)


def _profile_weights(profile: Sequence[float] | None) -> np.ndarray:
    """The hourly multipliers (24 for a day, or 168 for a week from Monday 00:00), mean 1."""
    values = np.asarray(URBAN_DAY_PROFILE if profile is None else profile, dtype=float)
    if values.shape not in ((24,), (168,)) or not np.all(np.isfinite(values)) or np.any(values < 0):
        msg = (
            "profile must be 24 (local hours 0..23) or 168 (Monday 00:00 to Sunday 23:00) "
            "finite, non-negative hourly multipliers"
        )
        raise InputError(msg)
    if values.sum() <= 0:
        msg = "profile must have at least one positive hour"
        raise InputError(msg)
    return values / values.mean()


def _service_medians(service_median_min: Mapping[int, float] | None) -> dict[int, float]:
    medians = dict(SERVICE_MEDIAN_MIN)
    if service_median_min is not None:
        medians.update({int(k): float(v) for k, v in service_median_min.items()})
    bad = {p: v for p, v in medians.items() if not (math.isfinite(v) and v > 0)}
    if bad:
        msg = f"service medians must be positive minutes; got {bad}"
        raise InputError(msg)
    return medians


def _clock_segments(start: datetime, hours: float) -> list[tuple[float, float, int]]:
    """Split ``[0, hours)`` (seconds from start) at local clock hours: (t0, t1, hour of the
    week), the hour counted from Monday 00:00 local time (its remainder by 24 is the clock
    hour)."""
    end_s = hours * 3600.0
    start_utc = start.astimezone(UTC)
    segments = []
    t = 0.0
    while t < end_s:
        # Through UTC, so a zone with daylight saving still gets the right local hour.
        now = (start_utc + timedelta(seconds=t)).astimezone(start.tzinfo)
        to_next = 3600.0 - (now.minute * 60 + now.second + now.microsecond / 1e6)
        t1 = min(end_s, t + to_next)
        segments.append((t, t1, now.weekday() * 24 + now.hour))
        t = t1
    return segments


def _arrival_areas(
    gdf_areas: gpd.GeoDataFrame, weights: Mapping[str, float] | None
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """The areas arrivals fall in (grids, else communities, else streets) and their probability."""
    levels = gdf_areas["level"].astype(str)
    for level in (Level.GRID, Level.COMMUNITY, Level.STREET):
        gdf = gdf_areas[levels == level.value]
        if len(gdf):
            break
    else:
        msg = "the district has no grids, communities or streets to place incidents in"
        raise InputError(msg)
    gdf = gdf.sort_values("code").reset_index(drop=True)
    codes = gdf["code"].astype(str)
    if weights is not None:
        unknown = sorted(set(map(str, weights)) - set(codes))
        if unknown:
            msg = (
                f"grid_weights names {len(unknown)} code(s) that are not {level.value}s of the "
                f"district: {', '.join(unknown[:5])}"
            )
            raise InputError(msg)
        w = codes.map({str(k): float(v) for k, v in weights.items()}).fillna(0.0).to_numpy()
    else:
        micro = gdf_areas.loc[levels == Level.MICROGRID.value, "code"].astype(str)
        if len(micro):
            prefix = micro.str[: level.prefix_length].value_counts()
            w = codes.str[: level.prefix_length].map(prefix).fillna(0.0).to_numpy(dtype=float)
        else:
            w = np.zeros(len(gdf))
        if w.sum() <= 0:
            w = gdf.to_crs(_metric_crs()).area.to_numpy()
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        msg = "grid weights must be finite, non-negative and not all zero"
        raise InputError(msg)
    return gdf, w / w.sum()


def _metric_crs() -> str:
    from gridgov.settings import get_settings

    return get_settings().metric_crs


def _matter_mix(
    catalog: Catalog, weights: Mapping[str, float] | None
) -> tuple[list[str], np.ndarray]:
    codes = list(catalog.codes)
    if weights is None:
        w = np.array([PRIORITY_MIX.get(catalog.get(c).priority, 1.0) for c in codes])
    else:
        for code in weights:
            catalog.get(code)  # UnknownMatterError with suggestions
        w = np.array([float(weights.get(c, 0.0)) for c in codes])
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        msg = "matter weights must be finite, non-negative and not all zero"
        raise InputError(msg)
    return codes, w / w.sum()
