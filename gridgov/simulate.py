"""Simulate a district's shift: random incidents run through the real dispatcher and workflow.

The simulation is a discrete-event loop over one district held in memory (the store is never
touched). Incidents arrive as a Poisson process per grid; each goes through
:func:`gridgov.dispatch.dispatch_incident` exactly as a live incident would (without drawing
routes), units stay busy for their travel plus an on-scene service time, and incidents that find no
free unit of a kind wait in a queue until one frees. Each incident also goes through the workflow
(:mod:`gridgov.workflow`): every step is built by :func:`gridgov.workflow.next_event`, so the
state machine checks it and every incident's log replays cleanly.

Assumptions (ours, not the catalogue's; each number is a parameter or a module constant)
----------------------------------------------------------------------------------------
Arrivals
    A non-homogeneous Poisson process, piecewise constant per clock hour: in the hour starting at
    local hour ``h`` the district-wide rate is ``rate_per_hour × profile[h]``. The default rate,
    :data:`DEFAULT_RATE_PER_HOUR` = 40 incidents per hour (960 a day), is our estimate of the
    dispatched events (not every report) of an urban district of about a million people; a
    small share of them is turned into duplicate reports (see "Workflow").
    The profile is normalised to a mean of 1, so ``rate_per_hour`` stays the daily mean rate. The
    default :data:`URBAN_DAY_PROFILE` is an urban day curve: quiet at night (≈ 0.25 of the mean
    at 03:00-05:00), rising from 07:00, a late-morning peak (≈ 1.5 at 10:00-11:00), a dip at
    lunch (≈ 1.2) and the day's peak in the early evening (≈ 1.55 at 19:00). Clock hours are
    those of ``start``'s time zone (default :data:`DEFAULT_START`, Monday 2026-11-30 00:00 China
    Standard Time, UTC+8).
Where
    Each arrival picks a grid with probability proportional to its weight, then a point uniformly
    inside the grid polygon (rejection sampling in lon/lat, which is uniform on the ground to
    within 0.01 % over a grid of a few hundred metres). The default weight of a grid is the number
    of micro-grids in it: a real micro-grid is 30-100 households, so the count follows
    population (in the generated reference district micro-grids were shared out by area, so
    there the weight is in effect the grid's area). Without micro-grids the grid's area is used;
    without grids, the communities (or the streets) take their place. Incidents are reported
    where people are, next to a road: a point farther than ``settings.max_snap_m`` from the
    roads of any travel mode the units use, which the dispatcher would refuse, is drawn again in
    the same grid (:data:`REDRAW_ROUNDS` = 20 rounds at most); the summary counts the points
    drawn again (``points_redrawn``). A point still too far after that is refused by the
    dispatcher (status ``refused``, with its reason) and reported, not hidden. With the default
    2.5 km no point of the reference district is that far from its main roads; with 1 km about
    6 % of raw points are, and about 3 % of arrivals end refused.
What
    The matter is drawn from the catalogue with a weight per matter; the default weight depends on
    the priority only, :data:`PRIORITY_MIX` = {1: 0.5, 2: 1, 3: 2, 4: 3}: minor matters are the
    bulk of a day's work. On the 34-matter catalogue this gives about 6 % priority-1, 19 % P2,
    48 % P3 and 28 % P4 incidents.
Service
    Once on scene, every unit of an incident stays for the incident's service time, a lognormal
    draw with median :data:`SERVICE_MEDIAN_MIN` by priority ({1: 60, 2: 45, 3: 30, 4: 20}
    minutes) and log-sd :data:`SERVICE_SIGMA` = 0.5 (mean ≈ 1.13 × median, p90 ≈ 1.9 × median).
    A unit is busy from its assignment for travel + service.
After service
    Station units (every kind but grid workers) return to their home position (their position at
    the start, or their office's) and are available at once: the drive back is not modelled, as
    a returning unit is available by radio. Grid workers stay where they finished when that is in
    their own grid (they patrol it), and otherwise return to their home position.
Start of the shift
    Every on-duty unit starts available at its home position, whatever its status in the store;
    off-duty units stay off. A unit with no position and no office is left out (counted).
Queue
    A required kind with no available unit anywhere is left unfilled by the dispatcher; the
    incident then waits for that kind in a queue ordered by priority, then report time, then
    id, and is dispatched again (for the missing kinds only) whenever a unit of that kind frees.
    The units it already has are not held back: they go and serve.
Preemption
    The dispatcher's rule: a priority-1 matter with no available unit of a kind within its
    maximum travel time may take a unit busy on a low-priority incident. The simulation then
    re-queues the preempted incident for that kind and counts it; it is dispatched again at once
    if a unit of that kind is available (possibly beyond its maximum travel time). A preempted
    unit leaves from where it is: the old incident's place if it had arrived there, else where it
    set off from.
Workflow
    The workflow's own draws come from a second random generator seeded from the same seed, so
    they leave the arrivals as they were drawn. At its report an incident is reported (by its
    reporter) and registered by the dispatcher, or rejected as invalid when the dispatcher
    refuses its point. Duplicates: with probability ``duplicate_rate`` (default
    :data:`DUPLICATE_RATE` = 0.03) an arrival becomes a second report of a registered, not yet
    closed incident reported within ``settings.duplicate_window_h``, picked uniformly: it takes
    that incident's matter and a point uniform in a disc of 0.9 × ``settings.duplicate_radius_m``
    around it, is rejected as a duplicate (``duplicate_of``) and never dispatched. With no such
    incident open the arrival stays genuine.
    The workflow follows the lead unit (the matter's lead kind): the incident is dispatched when
    its lead is assigned (the event's office is the lead unit's office, its level the
    dispatcher's escalation level); assisting units are booked as before, without events of their
    own. The lead's office acknowledges after a lognormal delay (median ``ack_median_min``,
    default :data:`ACK_MEDIAN_MIN` = 3 min, log-sd :data:`ACK_SIGMA` = 0.9, so that some miss
    the 1-2 minute deadlines of priority-1 matters); that is paperwork that may lag the unit's
    own response, so the unit's travel and service are not delayed by it, but the arrival is
    recorded when the lead unit gets there or at the acknowledgement, whichever is later, and an
    acknowledgement never comes after the unit has finished. The incident is resolved when the
    lead unit finishes its service.
    With probability ``return_rate`` (default :data:`RETURN_RATE` = 0.02) a department returns
    the call at the moment it would have acknowledged it (one of :data:`RETURN_REASONS`): its
    unit, which never set off, is free again, and the incident goes back to the dispatcher,
    which passes over every unit of the returning office unless no other unit can lead it now.
    Grid workers are the street's own staff and do not return work.
    A grid worker (of the incident's grid) verifies on site after a lognormal delay (median
    :data:`VERIFY_MEDIAN_MIN` = 45 min, log-sd :data:`VERIFY_SIGMA` = 0.6). With probability
    ``verify_fail_rate`` (default :data:`VERIFY_FAIL_RATE` = 0.05) the check fails and the
    incident is reopened (rework): a new round of dispatch for every required kind, with a new
    service time drawn; otherwise it is verified and closed at once. With probability
    ``evaluate_rate`` (default :data:`EVALUATE_RATE` = 0.6) the reporter evaluates a closed
    incident after a lognormal delay (median :data:`EVALUATE_MEDIAN_MIN` = 240 min, log-sd
    :data:`EVALUATE_SIGMA` = 0.8): satisfied / basically satisfied / dissatisfied with shares
    :data:`SATISFACTION_ON_TIME` (0.75, 0.18, 0.07) when it closed within the matter's resolve
    deadline (counted from its first dispatch) and :data:`SATISFACTION_LATE` (0.35, 0.35, 0.30)
    otherwise. A return or a reopen sends the incident back to the dispatcher: dispatched again
    at once if a unit is free, else queued as above. Preempting a lead unit records a requeue
    (back to registered); an assisting unit taken away is re-queued without an event, and one
    taken after its lead resolved is not replaced. An assisting kind still missing when the lead
    resolves is no longer waited for. No supervision is recorded (that is
    ``gridgov supervise``'s work on a live store).
Horizon
    Arrivals are drawn in ``[start, start + hours)`` and the loop stops there: nothing is
    recorded after it, and incidents still waiting then are "unassigned at the end". Every
    arrival ends in exactly one dispatch status: ``assigned`` (at once), ``queued_then_assigned``,
    ``unassigned`` (a required kind missing in its latest round), ``refused`` (by the dispatcher:
    too far from the roads) or ``duplicate``; and in one workflow state (its ``status``).

Response time of an assignment = wait (start of its round → assignment) + travel time; a round
starts at the report, or at a reopen. The summary gives its percentiles per force kind, the share
of fully assigned incidents resolved at each escalation level, the counts of queued, preempted and
unassigned incidents, and the workflow's figures: calls and those acknowledged in time, resolved,
closed (on time), reworked, returned, requeued, evaluated (satisfied) and duplicates, the events
per action and the final states.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from gridgov.catalog import Catalog
from gridgov.dispatch import (
    Decision,
    DispatchContext,
    Incident,
    Placement,
    dispatch_incident,
    locate_incident,
    prepare_units,
)
from gridgov.errors import InputError
from gridgov.model import EscalationLevel, ForceKind, Level, TravelMode, UnitStatus
from gridgov.network import TravelModel
from gridgov.tessellate import sample_points
from gridgov.workflow import Action, Event, Role, Satisfaction, State, frame_from_events, next_event

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

#: Default probability that the grid worker's verification fails (reopen: rework).
VERIFY_FAIL_RATE = 0.05
#: Default probability that a department returns a call instead of acknowledging it.
RETURN_RATE = 0.02
#: Default probability that the reporter of a closed incident evaluates it.
EVALUATE_RATE = 0.6
#: Default probability that an arrival is a second report of an open incident nearby.
DUPLICATE_RATE = 0.03
#: Default median minutes from a dispatch to the department's acknowledgement.
ACK_MEDIAN_MIN = 3.0
#: Log-sd of the lognormal acknowledgement delay.
ACK_SIGMA = 0.9
#: Median minutes (and log-sd) from the resolution to the grid worker's verification on site.
VERIFY_MEDIAN_MIN, VERIFY_SIGMA = 45.0, 0.6
#: Median minutes (and log-sd) from the closure to the reporter's evaluation.
EVALUATE_MEDIAN_MIN, EVALUATE_SIGMA = 240.0, 0.8
#: Shares of satisfied, basically satisfied and dissatisfied evaluations when the incident closed
#: within its resolve deadline, and when it closed late.
SATISFACTION_ON_TIME: tuple[float, float, float] = (0.75, 0.18, 0.07)
SATISFACTION_LATE: tuple[float, float, float] = (0.35, 0.35, 0.30)
#: Why a department returns a call (one is drawn at random).
RETURN_REASONS = (
    "not within this office's remit",
    "needs another department's enforcement powers",
    "the location given is not in this office's area",
)
#: Tries to place a duplicate report inside the district before reusing the original's point.
DUPLICATE_TRIES = 10
#: ``incidents.source`` of a simulated incident.
SOURCE = "simulation"
#: Default start of a simulated incident's id.
ID_PREFIX = "SIM-"
# Metres per degree on the sphere, for the duplicate's small offset (exact to well under 1 %).
_M_PER_DEG = 111_195.0

#: Percentiles reported per force kind.
PERCENTILES = (50, 90, 99)

_LEVEL_ORDER = tuple(EscalationLevel)
_STATUSES = ("assigned", "queued_then_assigned", "unassigned", "refused", "duplicate")
# Event kinds; the number orders events at the same instant: an acknowledgement due when its unit
# finishes comes first, and a unit freed at t is available to an incident reported at t.
_ACK, _RETURN, _VERIFY, _FREE, _ARRIVE, _INCIDENT = 0, 1, 2, 3, 4, 5


# ------------------------------------------------------------------------------------------------
# arrivals
# ------------------------------------------------------------------------------------------------


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
        Weight per area code (default: micro-grid count, see the module notes). Areas not named
        get weight 0.
    profile
        24 relative rates, one per local clock hour (default :data:`URBAN_DAY_PROFILE`).
    matter_weights
        Weight per matter code (default by priority, :data:`PRIORITY_MIX`). Matters not named get
        weight 0.
    service_median_min, service_sigma
        Lognormal on-scene service time: median minutes by priority, and log-sd.
    travel, modes
        With a travel model, a point farther than ``settings.max_snap_m`` from the roads of any
        of ``modes`` is drawn again in the same area (up to :data:`REDRAW_ROUNDS` rounds), since
        the dispatcher would refuse it (see the module notes).
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
        n = rng.poisson(rate_per_hour * weights[hour] * (t1 - t0) / 3600.0)
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
    """The 24 hourly multipliers, normalised to mean 1."""
    values = np.asarray(URBAN_DAY_PROFILE if profile is None else profile, dtype=float)
    if values.shape != (24,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        msg = "profile must be 24 finite, non-negative hourly multipliers (local hours 0..23)"
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
    """Split ``[0, hours)`` (seconds from start) at local clock hours: (t0, t1, local hour)."""
    end_s = hours * 3600.0
    start_utc = start.astimezone(UTC)
    segments = []
    t = 0.0
    while t < end_s:
        # Through UTC, so a zone with daylight saving still gets the right local hour.
        now = (start_utc + timedelta(seconds=t)).astimezone(start.tzinfo)
        to_next = 3600.0 - (now.minute * 60 + now.second + now.microsecond / 1e6)
        t1 = min(end_s, t + to_next)
        segments.append((t, t1, now.hour))
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


# ------------------------------------------------------------------------------------------------
# the event loop
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Flow:
    """The workflow's parameters for one run (see the module notes, "Workflow")."""

    verify_fail_rate: float
    return_rate: float
    evaluate_rate: float
    duplicate_rate: float
    ack_median_min: float
    radius_m: float
    window_s: float


@dataclass(eq=False)
class _Slot:
    """One assignment of a unit to an incident (a row of the assignments table)."""

    incident_id: str
    kind: str
    role: str
    unit_id: str
    assigned_s: float
    reported_s: float  # when this round of dispatch began: the report, or the reopen
    travel_s: float
    service_s: float
    level: str
    rule: str
    over_max_travel: bool
    preempts: str | None
    end_s: float  # when the unit frees (or was taken away, or returned the incident)
    round: int = 1
    preempted: bool = False
    returned: bool = False
    arrived: bool = False  # the unit is physically on scene

    @property
    def wait_s(self) -> float:
        return self.assigned_s - self.reported_s

    @property
    def response_s(self) -> float:
        return self.wait_s + self.travel_s


@dataclass(eq=False)  # compared by identity: the queue holds the very objects
class _Case:
    """An incident's state during the run."""

    row: int
    incident: Incident
    priority: int
    kinds: tuple[str, ...]
    reported_s: float
    service_s: float
    missing: list[str]
    slots: dict[str, _Slot] = field(default_factory=dict)
    queued: bool = False
    preempted: int = 0
    dispatches: int = 0
    placement: Placement | None = None
    refused: str | None = None
    assigned_s: float | None = None
    # workflow
    events: list[Event] = field(default_factory=list)
    duplicate_of: str | None = None
    round: int = 1
    round_start_s: float = 0.0
    cycle: int = 0  # bumped whenever a dispatch cycle starts or ends: stale timers are skipped
    cycle_start_s: float = 0.0
    first_dispatch_s: float | None = None
    excluded_offices: set[str] = field(default_factory=set)
    exclusion_lifted: int = 0
    calls: int = 0
    acknowledged_on_time: int = 0
    returns: int = 0
    requeues: int = 0
    reopens: int = 0
    closed_on_time: bool | None = None

    @property
    def lead(self) -> str:
        return self.kinds[0]

    @property
    def state(self) -> State | None:
        return self.events[-1].to_state if self.events else None

    @property
    def street_code(self) -> str | None:
        return None if self.placement is None else self.placement.street_code

    @property
    def grid_code(self) -> str | None:
        return None if self.placement is None else self.placement.grid_code


_WORKING = (State.DISPATCHED, State.ACKNOWLEDGED, State.ON_SCENE)
_DISPATCHER = "dispatcher"  # the command centre's actor for register, dispatch, close
_REPORTER = "reporter"
_GRID_WORKER = "grid-worker"  # a grid without a grid worker of its own


class _Run:
    """The state of one simulation: units, incidents, the event heap and the queue."""

    def __init__(
        self,
        ctx: DispatchContext,
        gdf_units: gpd.GeoDataFrame,
        arrivals: pd.DataFrame,
        end_s: float,
        progress: Callable[[float, float], None] | None,
        *,
        start: datetime,
        flow: _Flow,
        rng: np.random.Generator,
        service_median_s: Mapping[int, float],
        service_sigma: float,
    ) -> None:
        self.ctx = ctx
        self.end_s = end_s
        self.progress = progress
        self.start_utc = start.astimezone(UTC)
        self.flow = flow
        self.rng = rng
        self.service_median_s = service_median_s
        self.service_sigma = service_sigma
        n = len(gdf_units)
        geoms = gdf_units.geometry
        dynamic = [geoms.name, "busy_incident", "busy_priority", "position_time"]
        data = pd.DataFrame(gdf_units.drop(columns=dynamic, errors="ignore"))
        self.frame = gpd.GeoDataFrame(
            data.reset_index(drop=True),
            geometry=gpd.GeoSeries(geoms.to_numpy(), crs=geoms.crs),
            crs=geoms.crs,
        )
        self.moved = True
        self.unit_ids = gdf_units["unit_id"].astype(str).to_numpy()
        self.kinds = gdf_units["kind"].astype(str).to_numpy()
        self.index = {u: i for i, u in enumerate(self.unit_ids)}
        self.modes = gdf_units["travel_mode"].astype(str).to_numpy()
        grid = gdf_units["grid_code"] if "grid_code" in gdf_units else pd.Series([None] * n)
        self.grid_codes = np.array([g if isinstance(g, str) and g else None for g in grid])
        office = gdf_units["office_id"] if "office_id" in gdf_units else pd.Series([None] * n)
        self.offices = [o if isinstance(o, str) and o else None for o in office]
        self.office_units: dict[str, list[str]] = {}
        for uid, off in zip(self.unit_ids, self.offices, strict=True):
            if off is not None:
                self.office_units.setdefault(off, []).append(str(uid))
        # The grid worker of each grid verifies its incidents (the first by id, if several).
        self.verifier: dict[str, str] = {}
        for i in np.argsort(self.unit_ids, kind="stable"):
            g = self.grid_codes[i]
            if self.kinds[i] == ForceKind.GRID_WORKER.value and g is not None:
                self.verifier.setdefault(g, str(self.unit_ids[i]))
        self.home_lon = geoms.x.to_numpy(dtype=float)
        self.home_lat = geoms.y.to_numpy(dtype=float)
        self.lon = self.home_lon.copy()
        self.lat = self.home_lat.copy()
        on_duty = gdf_units["on_duty"].fillna(False).astype(bool).to_numpy()
        self.status = np.where(on_duty, UnitStatus.AVAILABLE.value, UnitStatus.OFF_DUTY.value)
        self.status = self.status.astype(object)
        self.busy_incident = np.full(n, None, dtype=object)
        self.busy_priority = np.full(n, np.nan)
        self.token = np.zeros(n, dtype=np.int64)
        self.current: list[_Slot | None] = [None] * n
        self.available: dict[str, int] = {}
        for k in np.unique(self.kinds):
            self.available[str(k)] = int(np.sum((self.kinds == k) & on_duty))

        self.cases: list[_Case] = []
        self.by_id: dict[str, _Case] = {}
        self.slots: list[_Slot] = []
        self.queue: list[_Case] = []
        self.open: dict[str, _Case] = {}  # registered, not yet closed: what a duplicate repeats
        self.preemptions = 0
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        records: list[dict[str, Any]] = arrivals.to_dict(orient="records")  # type: ignore[assignment]
        for row, rec in enumerate(records):
            matter = ctx.catalog.get(str(rec["matter_code"]))
            kinds = tuple(k.value for k in matter.required_kinds)
            case = _Case(
                row=row,
                incident=Incident(
                    incident_id=str(rec["incident_id"]),
                    matter_code=matter.code,
                    lon=float(rec["lon"]),
                    lat=float(rec["lat"]),
                    reported_at=rec["reported_at"],
                ),
                priority=int(rec["priority"]),
                kinds=kinds,
                reported_s=float(rec["t_s"]),
                service_s=float(rec["service_s"]),
                missing=list(kinds),
            )
            case.round_start_s = case.reported_s
            self.cases.append(case)
            self.by_id[case.incident.incident_id] = case
            self._push(case.reported_s, _INCIDENT, row, 0)

    # -- events ----------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, who: int, token: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, kind, self.seq, who, token))

    def run(self) -> None:
        last_report = -math.inf
        while self.heap and self.heap[0][0] < self.end_s:
            t, kind, _, who, token = heapq.heappop(self.heap)
            if kind == _INCIDENT:
                self._on_incident(t, self.cases[who])
                if self.progress is not None and t - last_report >= 900:
                    last_report = t
                    self.progress(t / 3600.0, self.end_s / 3600.0)
            elif kind in (_ACK, _RETURN, _VERIFY):
                case = self.cases[who]
                if token != case.cycle:
                    continue  # the cycle it belonged to ended (preempted or returned)
                if kind == _ACK:
                    self._on_ack(t, case)
                elif kind == _RETURN:
                    self._on_return(t, case)
                else:
                    self._on_verify(t, case)
            elif token != self.token[who]:
                continue  # the unit was preempted: this event belongs to its old incident
            elif kind == _ARRIVE:
                self._on_arrive(t, who)
            else:
                self._on_free(t, who)

    def _on_incident(self, t: float, case: _Case) -> None:
        if self._is_duplicate(t, case):
            return
        try:
            decision = self._dispatch(case, None)
        except InputError as exc:  # outside the district, or too far from every road
            case.refused = str(exc)
            case.missing = []
            case.placement = self._locate(case.incident)
            self._emit(case, t, Action.REPORT, _REPORTER, Role.REPORTER, street=case.street_code)
            self._emit(
                case,
                t,
                Action.REJECT,
                _DISPATCHER,
                Role.DISPATCHER,
                reason=f"the dispatcher cannot send a unit: {exc}",
                data={"category": "invalid"},
            )
            return
        case.placement = decision.placement
        self._emit(case, t, Action.REPORT, _REPORTER, Role.REPORTER, street=case.street_code)
        self._emit(case, t, Action.REGISTER, _DISPATCHER, Role.DISPATCHER)
        self.open[case.incident.incident_id] = case
        requeued = self._apply(t, case, decision)
        if case.missing:
            self._enqueue(case)
        elif case.assigned_s is None:
            case.assigned_s = t
        if requeued:
            self._serve_queue(t)

    def _on_arrive(self, t: float, u: int) -> None:
        case = self.by_id[str(self.busy_incident[u])]
        self.lon[u], self.lat[u] = case.incident.lon, case.incident.lat
        self.moved = True
        slot = self.current[u]
        if slot is not None and self._is_lead(case, slot):
            slot.arrived = True
            if case.state is State.ACKNOWLEDGED:
                self._emit_unit(case, t, Action.ARRIVE, slot)

    def _on_free(self, t: float, u: int) -> None:
        case = self.by_id[str(self.busy_incident[u])]
        slot = self.current[u]
        if slot is not None and self._is_lead(case, slot):
            self._resolve(t, case, slot)
        stays = (
            self.kinds[u] == ForceKind.GRID_WORKER.value
            and self.grid_codes[u] is not None
            and case.grid_code == self.grid_codes[u]
        )
        self._release(u, home=not stays)
        if self.queue:
            self._serve_queue(t)

    def _release(self, u: int, *, home: bool) -> None:
        if home:
            self.lon[u], self.lat[u] = self.home_lon[u], self.home_lat[u]
            self.moved = True
        self.status[u] = UnitStatus.AVAILABLE.value
        self.busy_incident[u] = None
        self.busy_priority[u] = np.nan
        self.current[u] = None
        self.token[u] += 1
        self.available[self.kinds[u]] += 1

    # -- the workflow ----------------------------------------------------------------------------

    def _at(self, t: float) -> datetime:
        return self.start_utc + timedelta(seconds=t)

    def _emit(
        self,
        case: _Case,
        t: float,
        action: Action,
        actor: str,
        role: Role,
        *,
        street: str | None = None,
        **kwargs: Any,
    ) -> Event:
        # next_event validates every step, so the log replays by construction.
        event = next_event(
            case.events[-1] if case.events else None,
            action,
            incident_id=case.incident.incident_id,
            at=self._at(t),
            actor=actor,
            role=role,
            street_code=street,
            **kwargs,
        )
        case.events.append(event)
        return event

    def _emit_unit(self, case: _Case, t: float, action: Action, slot: _Slot, **kw: Any) -> None:
        office = self.offices[self.index[slot.unit_id]]
        self._emit(case, t, action, slot.unit_id, Role.UNIT, office_id=office, **kw)

    def _is_lead(self, case: _Case, slot: _Slot) -> bool:
        """Whether ``slot`` is the incident's lead unit of its current round (whose workflow)."""
        return case.slots.get(case.lead) is slot and slot.round == case.round

    def _lognormal(self, median_s: float, sigma: float) -> float:
        return float(median_s * math.exp(sigma * self.rng.standard_normal()))

    def _end_cycle(self, case: _Case) -> None:
        case.cycle += 1

    def _start_cycle(self, t: float, case: _Case, slot: _Slot, decision: Decision) -> None:
        """The lead unit is assigned: the dispatch event, then the acknowledge or return timer."""
        u = self.index[slot.unit_id]
        units = sorted(s.unit_id for s in case.slots.values())
        offices = sorted({o for o in (self.offices[self.index[s]] for s in units) if o})
        case.calls += 1
        level = decision.level if decision.level is not None else slot.level
        self._emit(
            case,
            t,
            Action.DISPATCH,
            _DISPATCHER,
            Role.DISPATCHER,
            office_id=self.offices[u],
            level=str(level),
            data={
                "dispatch_id": f"{case.incident.incident_id}/{case.calls}",
                "units": units,
                "offices": offices,
                "round": case.round,
            },
        )
        self._end_cycle(case)
        case.cycle_start_s = t
        if case.first_dispatch_s is None:
            case.first_dispatch_s = t
        delay = self._lognormal(self.flow.ack_median_min * 60.0, ACK_SIGMA)
        returns = self.rng.random() < self.flow.return_rate
        # Grid workers are the street's own staff, not a department's: they do not return work.
        if returns and self.kinds[u] != ForceKind.GRID_WORKER.value:
            # The department declines instead of acknowledging: its unit never sets off (end_s
            # becomes the moment of the return when it comes).
            self.token[u] += 1  # drops the travel and service timers pushed for it
            self._push(t + delay, _RETURN, case.row, case.cycle)
        else:
            # The office's acknowledgement is paperwork that may lag the unit's own response;
            # it cannot come after the unit has finished.
            self._push(min(t + delay, slot.end_s), _ACK, case.row, case.cycle)

    def _on_ack(self, t: float, case: _Case) -> None:
        slot = case.slots[case.lead]
        self._emit_unit(case, t, Action.ACKNOWLEDGE, slot)
        matter = self.ctx.catalog.get(case.incident.matter_code)
        if t - case.cycle_start_s <= matter.acknowledge_min * 60.0:
            case.acknowledged_on_time += 1
        if slot.arrived:  # on scene already: the arrival is recorded once acknowledged
            self._emit_unit(case, t, Action.ARRIVE, slot)

    def _on_return(self, t: float, case: _Case) -> None:
        """The department returns the incident: its unit is released, the dispatcher tries again."""
        slot = case.slots[case.lead]
        u = self.index[slot.unit_id]
        office = self.offices[u]
        reason = RETURN_REASONS[int(self.rng.integers(len(RETURN_REASONS)))]
        self._emit_unit(case, t, Action.RETURN, slot, reason=reason, data={"unit": slot.unit_id})
        self._end_cycle(case)
        slot.returned = True
        slot.end_s = t
        del case.slots[case.lead]
        case.missing = [k for k in case.kinds if k in case.missing or k == case.lead]
        case.assigned_s = None
        case.returns += 1
        if office is not None:
            case.excluded_offices.add(office)
        self._release(u, home=False)  # it never set off
        self._redispatch(t, case)
        if self.queue:
            self._serve_queue(t)

    def _resolve(self, t: float, case: _Case, slot: _Slot) -> None:
        # The timers are ordered so this never triggers; it keeps the log legal if they tie.
        if case.state is State.DISPATCHED:
            self._emit_unit(case, t, Action.ACKNOWLEDGE, slot)
        if case.state is State.ACKNOWLEDGED:
            self._emit_unit(case, t, Action.ARRIVE, slot)
        self._emit_unit(case, t, Action.RESOLVE, slot)
        if case in self.queue:  # an assisting kind never came: the lead finished without it
            self.queue.remove(case)
        self._push(t + self._lognormal(VERIFY_MEDIAN_MIN * 60.0, VERIFY_SIGMA), _VERIFY, case.row,
                   case.cycle)  # fmt: skip

    def _on_verify(self, t: float, case: _Case) -> None:
        grid = case.grid_code
        checker = self.verifier.get(grid, _GRID_WORKER) if grid is not None else _GRID_WORKER
        if self.rng.random() < self.flow.verify_fail_rate:
            self._emit(
                case,
                t,
                Action.REOPEN,
                checker,
                Role.GRID_WORKER,
                reason="verification failed: the problem is still there",
                data={"round": case.round + 1},
            )
            self._end_cycle(case)
            case.reopens += 1
            case.round += 1
            case.round_start_s = t
            case.slots = {}
            case.missing = list(case.kinds)
            case.assigned_s = None
            case.service_s = self._lognormal(
                self.service_median_s[case.priority], self.service_sigma
            )
            self._redispatch(t, case)
            return
        self._emit(case, t, Action.VERIFY, checker, Role.GRID_WORKER)
        self._emit(case, t, Action.CLOSE, _DISPATCHER, Role.DISPATCHER)
        self.open.pop(case.incident.incident_id, None)
        matter = self.ctx.catalog.get(case.incident.matter_code)
        assert case.first_dispatch_s is not None
        case.closed_on_time = t <= case.first_dispatch_s + matter.resolve_h * 3600.0
        if self.rng.random() < self.flow.evaluate_rate:
            at = t + self._lognormal(EVALUATE_MEDIAN_MIN * 60.0, EVALUATE_SIGMA)
            shares = SATISFACTION_ON_TIME if case.closed_on_time else SATISFACTION_LATE
            draw = self.rng.random() * sum(shares)
            pick = int(np.searchsorted(np.cumsum(shares), draw, side="right"))
            satisfaction = tuple(Satisfaction)[min(pick, len(Satisfaction) - 1)]
            if at < self.end_s:  # nothing else can happen to a closed incident: record it now
                self._emit(
                    case, at, Action.EVALUATE, _REPORTER, Role.REPORTER, satisfaction=satisfaction
                )

    def _is_duplicate(self, t: float, case: _Case) -> bool:
        """Make this arrival, by chance, a second report of an open incident nearby."""
        if self.rng.random() >= self.flow.duplicate_rate:
            return False
        since = t - self.flow.window_s
        recent = [c for c in self.open.values() if c.reported_s >= since]
        if not recent:
            return False
        original = recent[int(self.rng.integers(len(recent)))]
        source = original.incident
        # Failing every try (near the district's edge), it is reported at the very same spot.
        moved = replace(case.incident, matter_code=source.matter_code, lon=source.lon,
                        lat=source.lat)  # fmt: skip
        placement = original.placement
        for _ in range(DUPLICATE_TRIES):
            # Uniform in a disc a little inside the radius (the metric approximation is ~0.1%).
            r = 0.9 * self.flow.radius_m * math.sqrt(self.rng.random())
            angle = 2 * math.pi * self.rng.random()
            lat = source.lat + r * math.sin(angle) / _M_PER_DEG
            lon = source.lon + r * math.cos(angle) / (_M_PER_DEG * math.cos(math.radians(lat)))
            there = replace(case.incident, matter_code=source.matter_code, lon=lon, lat=lat)
            found = self._locate(there)
            if found is not None:
                moved, placement = there, found
                break
        case.incident = moved
        case.placement = placement
        case.priority = original.priority
        case.kinds = original.kinds
        case.missing = []
        case.duplicate_of = source.incident_id
        self._emit(case, t, Action.REPORT, _REPORTER, Role.REPORTER, street=case.street_code)
        self._emit(
            case,
            t,
            Action.REJECT,
            _DISPATCHER,
            Role.DISPATCHER,
            reason=f"duplicate of open incident {source.incident_id}",
            data={"category": "duplicate", "duplicate_of": source.incident_id},
        )
        return True

    def _locate(self, incident: Incident) -> Placement | None:
        try:
            return locate_incident(incident, self.ctx)
        except InputError:
            return None

    # -- dispatch --------------------------------------------------------------------------------

    def _frame(self, rows: np.ndarray | None) -> gpd.GeoDataFrame:
        """The units as the dispatcher sees them now (all, or the given rows)."""
        # One frame updated in place: building a GeoDataFrame per call would cost more than the
        # dispatch itself. The dispatcher reads it and keeps nothing.
        frame = self.frame
        # Object columns: pandas would otherwise infer arrow strings on every assignment.
        frame["status"] = pd.Series(self.status, dtype=object)
        frame["busy_incident"] = pd.Series(self.busy_incident, dtype=object)
        frame["busy_priority"] = self.busy_priority
        if self.moved:
            frame["geometry"] = gpd.points_from_xy(self.lon, self.lat, crs=frame.crs)
            self.moved = False
        return frame if rows is None else frame.iloc[rows]

    def _dispatch(self, case: _Case, kinds: Sequence[str] | None) -> Decision:
        # For a retry the dispatcher sees only units of the kinds still missing, so the kinds the
        # incident already has come back unfilled (and are ignored) instead of taking a second unit.
        rows = None if kinds is None else np.flatnonzero(np.isin(self.kinds, list(kinds)))
        case.dispatches += 1
        if not case.excluded_offices:
            return dispatch_incident(case.incident, self._frame(rows), self.ctx, routes=False)
        # Offices that returned the incident are passed over, unless no other unit can lead now.
        exclude = {u for o in sorted(case.excluded_offices) for u in self.office_units.get(o, ())}
        decision = dispatch_incident(
            case.incident, self._frame(rows), self.ctx, routes=False, exclude=exclude
        )
        wants_lead = kinds is None or case.lead in kinds
        if wants_lead and case.lead in {str(k) for k in decision.unfilled}:
            case.dispatches += 1
            again = dispatch_incident(case.incident, self._frame(rows), self.ctx, routes=False)
            if case.lead not in {str(k) for k in again.unfilled}:
                case.exclusion_lifted += 1
                return again
        return decision

    def _redispatch(self, t: float, case: _Case) -> None:
        """Back to the dispatcher (return, reopen): dispatch now if a unit is free, else queue."""
        decision = self._dispatch(case, list(case.missing))
        requeued = self._apply(t, case, decision)
        if case.missing:
            self._enqueue(case)
        else:
            if case.assigned_s is None:
                case.assigned_s = t
            if case in self.queue:  # it was waiting for an assisting kind, now filled too
                self.queue.remove(case)
        if requeued:
            self._serve_queue(t)

    def _apply(self, t: float, case: _Case, decision: Decision) -> bool:
        """Book the decision's assignments; True when it preempted (and so re-queued) another."""
        requeued = False
        lead: _Slot | None = None
        for a in decision.assignments:
            kind = str(a.kind)
            if kind not in case.missing:
                continue
            u = self.index[a.unit_id]
            if a.preempts is not None:
                self._take_from(t, u, a.preempts, case.incident.incident_id)
                requeued = True
            elif self.status[u] != UnitStatus.AVAILABLE.value:
                msg = f"dispatcher assigned unit {a.unit_id}, which is {self.status[u]}"
                raise RuntimeError(msg)
            else:
                self.available[kind] -= 1
            slot = _Slot(
                incident_id=case.incident.incident_id,
                kind=kind,
                role=a.role,
                unit_id=a.unit_id,
                assigned_s=t,
                reported_s=case.round_start_s,
                travel_s=float(a.time_s),
                service_s=case.service_s,
                level=str(a.level),
                rule=a.rule,
                over_max_travel=bool(a.over_max_travel),
                preempts=a.preempts,
                end_s=t + float(a.time_s) + case.service_s,
                round=case.round,
            )
            self.slots.append(slot)
            case.slots[kind] = slot
            case.missing.remove(kind)
            self.status[u] = UnitStatus.BUSY.value
            self.busy_incident[u] = case.incident.incident_id
            self.busy_priority[u] = case.priority
            self.current[u] = slot
            self.token[u] += 1
            self._push(t + slot.travel_s, _ARRIVE, u, int(self.token[u]))
            self._push(slot.end_s, _FREE, u, int(self.token[u]))
            if kind == case.lead:
                lead = slot
        if lead is not None:
            self._start_cycle(t, case, lead, decision)
        return requeued

    def _take_from(self, t: float, u: int, incident_id: str, by: str) -> None:
        """Preemption: unit ``u`` leaves ``incident_id``, which waits again for its kind."""
        old = self.by_id[incident_id]
        slot = self.current[u]
        if slot is None or str(self.busy_incident[u]) != incident_id:
            msg = f"dispatcher preempted unit {self.unit_ids[u]}, not busy on {incident_id}"
            raise RuntimeError(msg)
        slot.preempted = True
        slot.end_s = t
        old.preempted += 1
        self.preemptions += 1
        live = old.slots.get(slot.kind) is slot and slot.round == old.round
        if not live or old.state not in (State.REGISTERED, *_WORKING):
            # An assisting unit still busy after its lead resolved (or after a reopen started a
            # new round): that work is over, nothing waits for it.
            if live:
                del old.slots[slot.kind]
            return
        if slot.kind == old.lead:
            office = self.offices[u]
            self._emit(
                old,
                t,
                Action.REQUEUE,
                _DISPATCHER,
                Role.SYSTEM,
                reason=f"unit {slot.unit_id} was taken for priority-1 incident {by}",
                office_id=office,
                data={"unit": slot.unit_id, "preempted_by": by},
            )
            self._end_cycle(old)
            old.requeues += 1
        del old.slots[slot.kind]
        old.missing = [k for k in old.kinds if k in old.missing or k == slot.kind]
        old.assigned_s = None
        self._enqueue(old)

    def _enqueue(self, case: _Case) -> None:
        case.queued = True
        if case not in self.queue:
            self.queue.append(case)

    def _serve_queue(self, t: float) -> None:
        """Give units that are free to waiting incidents, most urgent and oldest first."""
        progressed = True
        while progressed and self.queue:
            progressed = False
            self.queue.sort(key=lambda c: (c.priority, c.reported_s, c.incident.incident_id))
            for case in list(self.queue):
                if case not in self.queue:
                    continue
                wanted = [k for k in case.missing if self.available.get(k, 0) > 0]
                if not wanted:
                    continue
                decision = self._dispatch(case, wanted)
                before = len(case.missing)
                self._apply(t, case, decision)
                progressed = progressed or len(case.missing) < before
                if not case.missing:
                    case.assigned_s = t
                    self.queue.remove(case)

    # -- results ---------------------------------------------------------------------------------

    def incident_records(self, arrivals: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for case in self.cases:
            if case.duplicate_of is not None:
                dispatch_status = "duplicate"
            elif case.refused is not None:
                dispatch_status = "refused"
            elif case.missing:
                dispatch_status = "unassigned"
            elif case.queued:
                dispatch_status = "queued_then_assigned"
            else:
                dispatch_status = "assigned"
            final = list(case.slots.values())
            level = _widest([s.level for s in final]) if final else None
            lead = case.slots.get(case.kinds[0]) if case.kinds else None
            p = case.placement
            state = case.state
            evaluated = [e for e in case.events if e.action is Action.EVALUATE]
            rows.append(
                {
                    "matter_code": case.incident.matter_code,
                    "priority": case.priority,
                    "lon": case.incident.lon,
                    "lat": case.incident.lat,
                    "status": None if state is None else str(state),
                    "dispatch_status": dispatch_status,
                    "kinds": "+".join(case.kinds),
                    "street_code": None if p is None else p.street_code,
                    "community_code": None if p is None else p.community_code,
                    "grid_code": None if p is None else p.grid_code,
                    "microgrid_code": None if p is None else p.microgrid_code,
                    "duplicate_of": case.duplicate_of,
                    "source": SOURCE,
                    "level": level,
                    "round_start_s": case.round_start_s,
                    "assigned_s": case.assigned_s if not case.missing else np.nan,
                    "wait_s": max((s.wait_s for s in final), default=np.nan),
                    "lead_response_s": lead.response_s if lead is not None else np.nan,
                    "response_s": (
                        max(s.response_s for s in final) if final and not case.missing else np.nan
                    ),
                    "unfilled": "+".join(case.missing),
                    "queued": case.queued,
                    "preempted": case.preempted,
                    "dispatches": case.dispatches,
                    "over_max_travel": any(s.over_max_travel for s in final),
                    "refused": case.refused,
                    "events": len(case.events),
                    "calls": case.calls,
                    "acknowledged_on_time": case.acknowledged_on_time,
                    "returns": case.returns,
                    "requeues": case.requeues,
                    "reopens": case.reopens,
                    "exclusion_lifted": case.exclusion_lifted,
                    "closed_on_time": case.closed_on_time,
                    "satisfaction": str(evaluated[0].satisfaction) if evaluated else None,
                }
            )
        extra = pd.DataFrame(rows, index=arrivals.index)
        drawn = arrivals.rename(columns={"t_s": "reported_s"}).drop(
            columns=["matter_code", "priority", "lon", "lat"]
        )
        records = drawn.join(extra)
        # A duplicate was moved next to the incident it repeats: its area is where it now lies.
        dup = records["duplicate_of"].notna() & records["grid_code"].notna()
        records.loc[dup, "area_code"] = records.loc[dup, "grid_code"]
        columns = [
            "incident_id", "reported_s", "reported_at", "matter_code", "priority", "area_code",
            "lon", "lat", "service_s", "redrawn",
        ]  # fmt: skip
        return records[columns + [c for c in records.columns if c not in columns]]

    def slot_records(self) -> pd.DataFrame:
        columns = [
            "incident_id", "kind", "role", "unit_id", "round", "reported_s", "assigned_s",
            "wait_s", "travel_s", "response_s", "service_s", "end_s", "level", "rule",
            "over_max_travel", "preempts", "preempted", "returned",
        ]  # fmt: skip
        rows = [
            {
                **{c: getattr(s, c) for c in columns if c not in ("wait_s", "response_s")},
                "wait_s": s.wait_s,
                "response_s": s.response_s,
            }
            for s in self.slots
        ]
        return pd.DataFrame(rows, columns=columns)

    def event_records(self) -> pd.DataFrame:
        return frame_from_events(e for case in self.cases for e in case.events)


def _widest(levels: Sequence[str]) -> str:
    return max(levels, key=lambda lv: _LEVEL_ORDER.index(EscalationLevel(lv)))


# ------------------------------------------------------------------------------------------------
# the result
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationResult:
    """What a simulated shift produced.

    Attributes
    ----------
    incidents
        One row per arrival, ready for the store's ``import_history``: the drawn incident
        (``incident_id``, ``reported_s``, ``reported_at`` (UTC), ``matter_code``, ``priority``,
        ``lon``, ``lat``, ``service_s``, ...), its ``status`` (the final workflow state,
        :class:`gridgov.workflow.State`), where it lies (``street_code``, ``community_code``,
        ``grid_code``, ``microgrid_code``), ``duplicate_of`` and ``source`` ("simulation").
        The dispatcher's view: ``dispatch_status`` (``assigned``, ``queued_then_assigned``,
        ``unassigned`` (a required kind never came in the latest round), ``refused`` by the
        dispatcher with the reason in ``refused``, or ``duplicate`` (never dispatched)),
        ``level`` (widest over the latest round's assignments), ``round_start_s`` (the report,
        or the last reopen), ``assigned_s`` (when the last required unit was assigned),
        ``wait_s``, ``lead_response_s`` and ``response_s`` (until the whole team has arrived),
        ``unfilled`` kinds, ``queued``, ``preempted`` (times), ``dispatches`` (dispatcher
        calls). The workflow's counts: ``events``, ``calls`` (dispatch events),
        ``acknowledged_on_time``, ``returns``, ``requeues``, ``reopens``,
        ``exclusion_lifted`` (re-dispatches that had to go back to an office that returned it),
        ``closed_on_time`` (None unless closed) and ``satisfaction``.
    assignments
        One row per unit assignment, including those later preempted (``preempted`` True, ``end_s``
        the moment the unit was taken) or returned by its department (``returned`` True, ``end_s``
        the moment of the return): ``incident_id``, ``kind``, ``role``, ``unit_id``, ``round``
        (1, then 2 after a reopen...), ``reported_s`` (the round's start), ``assigned_s``,
        ``wait_s``, ``travel_s``, ``response_s`` (= wait + travel), ``service_s``, ``end_s`` (when
        the unit is free again), ``level``, ``rule``, ``over_max_travel``, ``preempts``. Times are
        seconds from the start of the shift.
    events
        Every incident's workflow log (:data:`gridgov.workflow.EVENT_COLUMNS`, ``at`` tz-aware
        UTC), incident by incident in report order, then by ``seq``; each log replays cleanly.
    units_by_kind
        On-duty units per kind that took part.
    params
        The run's parameters (JSON-able).
    """

    incidents: pd.DataFrame
    assignments: pd.DataFrame
    events: pd.DataFrame
    units_by_kind: dict[str, int]
    params: dict[str, Any]

    def final_assignments(self) -> pd.DataFrame:
        """The assignments that stood (not taken away by a preemption nor returned)."""
        a = self.assignments
        return a[~(a["preempted"].astype(bool) | a["returned"].astype(bool))]

    def summary(self) -> dict[str, Any]:
        """Counts, response-time percentiles (minutes) per kind, level shares, and the workflow's
        figures (JSON-able)."""
        inc = self.incidents
        status = inc["dispatch_status"].value_counts()
        hours = float(self.params["hours"])
        final = self.final_assignments()
        kinds: dict[str, dict[str, Any]] = {}
        for kind in sorted(set(self.units_by_kind) | set(final["kind"])):
            part = final[final["kind"] == kind]
            minutes = part["response_s"].to_numpy(dtype=float) / 60.0
            entry: dict[str, Any] = {
                "units": self.units_by_kind.get(kind, 0),
                "assignments": len(part),
            }
            for q in PERCENTILES:
                entry[f"p{q}_min"] = float(np.percentile(minutes, q)) if len(minutes) else None
            entry["over_max_travel"] = int(part["over_max_travel"].sum())
            every = self.assignments[self.assignments["kind"] == kind]
            busy = (np.minimum(every["end_s"], hours * 3600) - every["assigned_s"]).clip(lower=0)
            units = self.units_by_kind.get(kind, 0)
            entry["utilisation"] = float(busy.sum() / (units * hours * 3600)) if units else None
            kinds[kind] = entry
        done = inc[inc["dispatch_status"].isin(("assigned", "queued_then_assigned"))]
        counts = done["level"].value_counts()
        levels = {
            lv.value: (float(counts.get(lv.value, 0)) / len(done) if len(done) else 0.0)
            for lv in _LEVEL_ORDER
        }
        return {
            "params": self.params,
            "arrivals": len(inc),
            **{s: int(status.get(s, 0)) for s in _STATUSES},
            "unassigned_at_end": int(status.get("unassigned", 0)),
            "ever_queued": int(inc["queued"].sum()),
            "preemptions": int(inc["preempted"].sum()),
            "over_max_travel": int(final["over_max_travel"].sum()),
            "levels": levels,
            "kinds": kinds,
            "workflow": self._workflow_summary(),
        }

    def _workflow_summary(self) -> dict[str, Any]:
        inc, ev = self.incidents, self.events
        actions = ev["action"].value_counts()
        states = inc["status"].value_counts()

        def having(action: Action) -> int:
            return int(ev.loc[ev["action"] == action.value, "incident_id"].nunique())

        satisfied = inc["satisfaction"].isin(
            (Satisfaction.SATISFIED.value, Satisfaction.BASIC.value)
        )
        calls = int(actions.get(Action.DISPATCH.value, 0))
        on_time = int(inc["acknowledged_on_time"].sum())
        return {
            "events": len(ev),
            "actions": {a.value: int(actions.get(a.value, 0)) for a in Action},
            "states": {s.value: int(states.get(s.value, 0)) for s in State},
            "duplicates": int(inc["duplicate_of"].notna().sum()),
            "rejected_invalid": int(inc["refused"].notna().sum()),
            "dispatched": having(Action.DISPATCH),
            "calls": calls,
            "acknowledged_on_time": on_time,
            "response_rate": on_time / calls if calls else None,
            "resolved": having(Action.RESOLVE),
            "closed": having(Action.CLOSE),
            "closed_on_time": int(inc["closed_on_time"].map(lambda v: v is True).sum()),
            "reworked": having(Action.REOPEN),
            "returned": having(Action.RETURN),
            "requeued": having(Action.REQUEUE),
            "evaluated": having(Action.EVALUATE),
            "satisfied": int(satisfied.sum()),
        }

    def to_json(self) -> dict[str, Any]:
        """The summary and every record (incidents, assignments, events), JSON-able."""
        incidents = self.incidents.assign(reported_at=self.incidents["reported_at"].astype(str))
        events = self.events.assign(at=self.events["at"].map(lambda t: t.isoformat()))
        return {
            "summary": self.summary(),
            "incidents": _records(incidents),
            "assignments": _records(self.assignments),
            "events": _records(events),
        }


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = df.astype(object).where(df.notna(), None)
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in out.to_dict(orient="records")
    ]


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a plain-text report (what ``gridgov simulate`` prints)."""
    p = summary["params"]
    lines = [
        f"simulated {p['hours']:g} h from {p['start']} (seed {p['seed']}, "
        f"{p['rate_per_hour']:g} incidents/h on average, {p['travel_model']} travel)",
        f"arrivals {summary['arrivals']}: assigned at once {summary['assigned']}, "
        f"queued then assigned {summary['queued_then_assigned']}, "
        f"unassigned at the end {summary['unassigned_at_end']}, refused {summary['refused']}, "
        f"duplicates {summary.get('duplicate', 0)}",
        f"ever queued {summary['ever_queued']}, preemptions {summary['preemptions']}, "
        f"assignments over max travel {summary['over_max_travel']}, "
        f"points drawn again near a road {p.get('points_redrawn', 0)}",
        "",
    ]
    header = ("kind", "units", "assigned", "p50 min", "p90 min", "p99 min", "over max", "busy")
    rows = []
    for kind, e in summary["kinds"].items():
        rows.append(
            (
                kind,
                str(e["units"]),
                str(e["assignments"]),
                *(_fmt(e[f"p{q}_min"]) for q in PERCENTILES),
                str(e["over_max_travel"]),
                "-" if e["utilisation"] is None else f"{100 * e['utilisation']:.0f}%",
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for i, r in enumerate([header, *rows]):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    shares = ", ".join(f"{lv} {100 * s:.1f}%" for lv, s in summary["levels"].items())
    lines.append(f"resolved at: {shares}")
    w = summary.get("workflow")
    if w is not None:
        rate = "-" if w["response_rate"] is None else f"{100 * w['response_rate']:.1f}%"
        lines += [
            "",
            f"workflow: calls {w['calls']} (acknowledged in time {w['acknowledged_on_time']}, "
            f"{rate}), resolved {w['resolved']}, closed {w['closed']} "
            f"(on time {w['closed_on_time']}), reworked {w['reworked']}, "
            f"returned {w['returned']}, requeued {w['requeued']}, evaluated {w['evaluated']} "
            f"(satisfied {w['satisfied']}), duplicates {w['duplicates']}, "
            f"rejected as invalid {w['rejected_invalid']}; {w['events']} events",
            "state at the end: " + ", ".join(f"{s} {n}" for s, n in w["states"].items() if n),
        ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# ------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------


def simulate(
    ctx: DispatchContext,
    gdf_units: gpd.GeoDataFrame,
    *,
    hours: float,
    seed: int,
    gdf_offices: gpd.GeoDataFrame | None = None,
    start: datetime = DEFAULT_START,
    rate_per_hour: float = DEFAULT_RATE_PER_HOUR,
    grid_weights: Mapping[str, float] | None = None,
    profile: Sequence[float] | None = None,
    matter_weights: Mapping[str, float] | None = None,
    service_median_min: Mapping[int, float] | None = None,
    service_sigma: float = SERVICE_SIGMA,
    verify_fail_rate: float = VERIFY_FAIL_RATE,
    return_rate: float = RETURN_RATE,
    evaluate_rate: float = EVALUATE_RATE,
    duplicate_rate: float = DUPLICATE_RATE,
    ack_median_min: float = ACK_MEDIAN_MIN,
    id_prefix: str = ID_PREFIX,
    progress: Callable[[float, float], None] | None = None,
) -> SimulationResult:
    """Run a shift of random incidents through the dispatcher and the workflow (module notes).

    Parameters
    ----------
    ctx
        The dispatch context (areas, catalogue, travel model); it is read, never changed.
    gdf_units
        The district's units (``UNIT_COLUMNS`` and Point geometry); not changed.
    hours, seed, start, rate_per_hour, grid_weights, profile, matter_weights, service_median_min,
    service_sigma, id_prefix
        See :func:`draw_arrivals`. The workflow's own draws come from a second generator seeded
        from ``seed``, so they do not change the arrivals.
    gdf_offices
        Offices, for units without a position of their own.
    verify_fail_rate
        Probability that the grid worker's verification fails (reopen, rework).
    return_rate
        Probability that a department returns a call instead of acknowledging it.
    evaluate_rate
        Probability that the reporter of a closed incident evaluates it.
    duplicate_rate
        Probability that an arrival is a second report of an open incident nearby.
    ack_median_min
        Median minutes from a dispatch to the department's acknowledgement (lognormal, log-sd
        :data:`ACK_SIGMA`).
    progress
        Called now and then with (simulated hours done, hours in total).

    Returns
    -------
    SimulationResult
        The per-incident, per-assignment and per-event records and the summary.
    """
    flow = _flow(
        verify_fail_rate=verify_fail_rate,
        return_rate=return_rate,
        evaluate_rate=evaluate_rate,
        duplicate_rate=duplicate_rate,
        ack_median_min=ack_median_min,
    )
    # Positions are home positions for the shift: an AVL fix's age means nothing in a simulation.
    units = gdf_units.drop(columns=["position_time"], errors="ignore")
    units = prepare_units(units, gdf_offices, now=start.astimezone(UTC))
    usable = ~(units.geometry.isna() | units.geometry.is_empty)
    left_out = int((~usable).sum())
    units = units[usable].reset_index(drop=True)
    on_duty = units[units["on_duty"].fillna(False).astype(bool)]
    modes = sorted(set(on_duty["travel_mode"].astype(str)) & {m.value for m in ctx.travel.modes})
    arrivals = draw_arrivals(
        ctx.gdf_areas,
        ctx.catalog,
        hours=hours,
        seed=seed,
        start=start,
        rate_per_hour=rate_per_hour,
        grid_weights=grid_weights,
        profile=profile,
        matter_weights=matter_weights,
        service_median_min=service_median_min,
        service_sigma=service_sigma,
        travel=ctx.travel,
        modes=modes,
        id_prefix=id_prefix,
    )
    medians = _service_medians(service_median_min)
    run = _Run(
        ctx,
        units,
        arrivals,
        hours * 3600.0,
        progress,
        start=start,
        flow=flow,
        # A child of the arrivals' seed: the same seed, an independent stream.
        rng=np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,))),
        service_median_s={p: m * 60.0 for p, m in medians.items()},
        service_sigma=service_sigma,
    )
    run.run()
    params = {
        "hours": hours,
        "seed": seed,
        "start": start.isoformat(),
        "rate_per_hour": rate_per_hour,
        "profile": [float(x) for x in _profile_weights(profile)],
        "service_median_min": {str(k): v for k, v in medians.items()},
        "service_sigma": service_sigma,
        "grid_weights": "given" if grid_weights is not None else "micro-grid count",
        "matter_weights": "given" if matter_weights is not None else "by priority",
        "travel_model": str(ctx.travel.kind),
        "units_left_out": left_out,
        "points_redrawn": int((arrivals["redrawn"] > 0).sum()),
        "verify_fail_rate": verify_fail_rate,
        "return_rate": return_rate,
        "evaluate_rate": evaluate_rate,
        "duplicate_rate": duplicate_rate,
        "ack_median_min": ack_median_min,
        "duplicate_radius_m": flow.radius_m,
        "duplicate_window_h": flow.window_s / 3600.0,
        "id_prefix": id_prefix,
    }
    return SimulationResult(
        incidents=run.incident_records(arrivals),
        assignments=run.slot_records(),
        events=run.event_records(),
        units_by_kind={str(k): int(v) for k, v in on_duty["kind"].value_counts().items()},
        params=params,
    )


def _flow(
    *,
    verify_fail_rate: float,
    return_rate: float,
    evaluate_rate: float,
    duplicate_rate: float,
    ack_median_min: float,
) -> _Flow:
    from gridgov.settings import get_settings

    rates = {
        "verify_fail_rate": verify_fail_rate,
        "return_rate": return_rate,
        "evaluate_rate": evaluate_rate,
        "duplicate_rate": duplicate_rate,
    }
    bad = [f"{k} = {v}" for k, v in rates.items() if not (math.isfinite(v) and 0 <= v <= 1)]
    if not (math.isfinite(ack_median_min) and ack_median_min > 0):
        bad.append(f"ack_median_min = {ack_median_min} (must be positive minutes)")
    if bad:
        msg = f"bad workflow parameters (rates are probabilities in [0, 1]): {'; '.join(bad)}"
        raise InputError(msg)
    settings = get_settings()
    return _Flow(
        verify_fail_rate=verify_fail_rate,
        return_rate=return_rate,
        evaluate_rate=evaluate_rate,
        duplicate_rate=duplicate_rate,
        ack_median_min=ack_median_min,
        radius_m=float(settings.duplicate_radius_m),
        window_s=float(settings.duplicate_window_h) * 3600.0,
    )
