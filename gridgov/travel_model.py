"""What dispatch asks of travel: the :class:`TravelModel` protocol, snapped points and routes.

Two models follow the protocol: :class:`gridgov.network.RoadNetwork` (the roads) and
:class:`gridgov.straight_line.StraightLine` (the fallback without roads). Dispatch, coverage
and the analyses speak only this protocol, so they work on either. The checks every model
applies to its arguments (one point, one mode) are here too, written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike
from shapely.geometry import LineString

from gridgov.errors import InputError
from gridgov.model import TravelMode

__all__ = [
    "MODES",
    "Route",
    "Snapped",
    "TravelField",
    "TravelModel",
    "as_mode",
    "check_field_mode",
    "check_same_mode",
    "check_single",
    "check_targets",
]

#: The travel modes, in the order models list them.
MODES: tuple[TravelMode, ...] = (TravelMode.DRIVE, TravelMode.BIKE, TravelMode.WALK)


def as_mode(mode: TravelMode | str) -> TravelMode:
    """The travel mode ``mode`` names (an :class:`InputError` listing the modes if none)."""
    try:
        return TravelMode(mode)
    except ValueError as exc:
        msg = f"unknown travel mode {mode!r}; expected one of {', '.join(m.value for m in MODES)}"
        raise InputError(msg) from exc


def _no_ints() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _no_floats() -> np.ndarray:
    return np.zeros(0)


@dataclass(frozen=True)
class Snapped:
    """Points snapped to one travel mode's road graph (vectorised; arrays of equal length).

    A point joins the nearest position on a usable edge of the mode's largest strongly
    connected part (never onto a dropped component). ``edge`` indexes the model's edge arrays,
    ``frac`` is the position along that edge's geometry from its ``u`` end (0..1), and
    ``access_m`` the straight distance (metres) from the point to that position, travelled at the
    mode's access speed. ``far`` marks points more than ``settings.max_snap_m`` from any usable
    road. The straight-line model leaves ``edge`` at -1 and ``frac``/``access_m`` at 0.

    A point also joins every other road whose distance is within ``settings.snap_tolerance_m``
    of the nearest (DESIGN "Dispatch semantics" 4: the two directions of a road are often drawn
    as two ways that are not exact reverses). Those further joins are the ``more_*`` arrays, one
    entry each, grouped by point in increasing ``more_point`` (the point's index) and ``edge``;
    each has its own access leg. An edge stands for itself and its exact reverse twin, as the
    nearest one does. Times use every join of a point and keep the fastest. A ``far`` point
    (never dispatched) keeps only its nearest join.
    """

    mode: TravelMode
    lon: np.ndarray
    lat: np.ndarray
    edge: np.ndarray
    frac: np.ndarray
    access_m: np.ndarray
    far: np.ndarray
    more_point: np.ndarray = field(default_factory=_no_ints)
    more_edge: np.ndarray = field(default_factory=_no_ints)
    more_frac: np.ndarray = field(default_factory=_no_floats)
    more_access_m: np.ndarray = field(default_factory=_no_floats)

    def __len__(self) -> int:
        return len(self.lon)

    def take(self, index: np.ndarray | list[int] | int) -> Snapped:
        """Return the points at ``index`` (an int gives a length-1 ``Snapped``)."""
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        more: dict[str, np.ndarray] = {}
        if len(self.more_point):
            # Each taken point brings its own run of further joins, renumbered to its new place.
            start = np.searchsorted(self.more_point, idx, side="left")
            count = np.searchsorted(self.more_point, idx, side="right") - start
            first = np.cumsum(count) - count
            rows = np.repeat(start - first, count) + np.arange(int(count.sum()))
            more = {
                "more_point": np.repeat(np.arange(len(idx), dtype=np.int64), count),
                "more_edge": self.more_edge[rows],
                "more_frac": self.more_frac[rows],
                "more_access_m": self.more_access_m[rows],
            }
        return Snapped(
            mode=self.mode,
            lon=self.lon[idx],
            lat=self.lat[idx],
            edge=self.edge[idx],
            frac=self.frac[idx],
            access_m=self.access_m[idx],
            far=self.far[idx],
            **more,
        )

    def joins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every join as flat arrays ``(point, edge, frac, access_m)``: the nearest ones first."""
        n = len(self.lon)
        if not len(self.more_point):
            return np.arange(n, dtype=np.int64), self.edge, self.frac, self.access_m
        return (
            np.concatenate([np.arange(n, dtype=np.int64), self.more_point]),
            np.concatenate([self.edge, self.more_edge]),
            np.concatenate([self.frac, self.more_frac]),
            np.concatenate([self.access_m, self.more_access_m]),
        )

    def widest_access_m(self) -> np.ndarray:
        """Per point, the longest access leg among its joins (``access_m`` when it has one)."""
        if not len(self.more_point):
            return self.access_m
        out = self.access_m.copy()
        np.maximum.at(out, self.more_point, self.more_access_m)
        return out


@dataclass(frozen=True)
class Route:
    """A unit's way to an incident: time, length and the line drawn on the map (WGS84)."""

    mode: TravelMode
    time_s: float
    length_m: float
    #: From the source point, over its access leg and the roads, to the target point.
    geometry: LineString
    #: Road nodes passed, in order (empty for the straight-line model); the ids of the roads given.
    node_ids: tuple[Any, ...]


class TravelField(Protocol):
    """Travel times *to* one target from anywhere, known exactly up to ``limit_s``."""

    mode: TravelMode
    limit_s: float

    def times_from(self, sources: Snapped) -> np.ndarray:
        """Seconds from each source (same mode) to the target, access legs included.

        Exact for every value <= ``limit_s``; a source whose time exceeds ``limit_s``, or which
        cannot reach the target, gets inf. Never a finite value above ``limit_s``.
        """
        ...

    def route_from(self, source: Snapped) -> Route:
        """The fastest route from the single ``source`` to the target, as the model's ``route``
        gives it, when its time is within ``limit_s`` (NotFoundError otherwise)."""
        ...


class TravelModel(Protocol):
    """What dispatch needs from a road network (or the straight-line fallback)."""

    kind: str
    modes: tuple[TravelMode, ...]

    def snap(self, lon: ArrayLike, lat: ArrayLike, mode: TravelMode | str) -> Snapped:
        """Snap WGS84 points to the mode's graph."""
        ...

    def field_to(self, target: Snapped, limit_s: float = math.inf) -> TravelField:
        """Travel times to the single ``target`` from anywhere, exact up to ``limit_s``."""
        ...

    def route(self, source: Snapped, target: Snapped, *, limit_s: float | None = None) -> Route:
        """The fastest route from the single ``source`` to the single ``target``.

        ``limit_s``, when known, is a time the route does not exceed (say from a field): the
        search then goes that far at once.
        """
        ...

    def lower_bound_s(self, source: Snapped, target: Snapped) -> np.ndarray:
        """An admissible lower bound of the time from each source to the target.

        ``target`` holds one point, or one per source (then each source goes to its own).
        """
        ...

    def joined_links(self, point: Snapped) -> list[dict[str, Any]]:
        """The road links the single ``point`` is joined to, for explanations."""
        ...

    def typical_ratio(self, mode: TravelMode | str) -> float:
        """The usual ratio (>= 1) of a travel time to its lower bound: a guess, never a bound.

        Searches start from it; results never depend on it.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for explanations."""
        ...


def check_single(points: Snapped, what: str) -> None:
    """``points`` must hold exactly one point (``what`` names it in the message)."""
    if len(points) != 1:
        msg = f"{what} must hold exactly one point, got {len(points)}"
        raise InputError(msg)


def check_targets(source: Snapped, target: Snapped) -> None:
    """One target for every source, or one each; same mode."""
    if len(target) != 1 and len(target) != len(source):
        msg = f"target must hold one point or one per source ({len(source)}), got {len(target)}"
        raise InputError(msg)
    check_same_mode(source, target)


def check_same_mode(a: Snapped, b: Snapped) -> None:
    """Points snapped for two modes cannot be combined."""
    if a.mode != b.mode:
        msg = f"points snapped for {a.mode.value} and {b.mode.value} cannot be combined"
        raise InputError(msg)


def check_field_mode(sources: Snapped, mode: TravelMode) -> None:
    """Times only make sense for points snapped to the field's own mode graph."""
    if sources.mode != mode:
        msg = f"sources snapped for {sources.mode.value}, field is for {mode.value}"
        raise InputError(msg)
