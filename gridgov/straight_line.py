"""The straight-line travel model: geodesic metres × a detour factor / the mode's speed.

DESIGN's fallback when no road network is loaded. It follows
:class:`gridgov.travel_model.TravelModel`, so dispatch uses it as it uses the roads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from pyproj import Geod
from shapely.geometry import LineString

from gridgov.errors import InputError, NotFoundError
from gridgov.model import TravelMode
from gridgov.roads import SPEEDS_KMH
from gridgov.settings import get_settings
from gridgov.travel_model import (
    MODES,
    Route,
    Snapped,
    TravelField,
    as_mode,
    check_field_mode,
    check_same_mode,
    check_single,
    check_targets,
)

__all__ = ["STRAIGHT_LINE_CLASS", "StraightLine"]

#: Road class whose speeds the straight-line fallback uses (DESIGN: distance × detour / speed).
STRAIGHT_LINE_CLASS = "arterial"
_GEOD = Geod(ellps="WGS84")


def _geodesic_m(lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike) -> np.ndarray:
    a, b, c, d = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (lon1, lat1, lon2, lat2))
    )
    if a.size == 0:
        return np.zeros(a.shape)
    _, _, dist = _GEOD.inv(a, b, c, d)
    return np.asarray(dist, dtype=float)


@dataclass
class _StraightField:
    mode: TravelMode
    limit_s: float
    lon: float
    lat: float
    speed_ms: float
    detour: float

    def times_from(self, sources: Snapped) -> np.ndarray:
        check_field_mode(sources, self.mode)
        metres = _geodesic_m(sources.lon, sources.lat, self.lon, self.lat)
        times = metres * self.detour / self.speed_ms
        return np.where(times <= self.limit_s, times, np.inf)

    def route_from(self, source: Snapped) -> Route:
        """The straight segment from ``source``; NotFoundError beyond ``limit_s``."""
        check_single(source, "source")
        check_field_mode(source, self.mode)
        route = _straight_route(source, self.lon, self.lat, self.detour, self.speed_ms)
        if not route.time_s <= self.limit_s:
            msg = f"the straight line from the source takes longer than {self.limit_s:.0f} s"
            raise NotFoundError(msg)
        return route


def _straight_route(
    source: Snapped, lon: float, lat: float, detour: float, speed_ms: float
) -> Route:
    """The straight segment from the single ``source`` to (lon, lat); its length is the
    estimated road length (straight × detour)."""
    metres = float(_geodesic_m(source.lon, source.lat, lon, lat)[0])
    length = metres * detour
    return Route(
        mode=source.mode,
        time_s=length / speed_ms,
        length_m=length,
        geometry=LineString([(source.lon[0], source.lat[0]), (lon, lat)]),
        node_ids=(),
    )


class StraightLine:
    """DESIGN fallback: straight-line metres × ``detour_factor`` / mode speed.

    The speed of a mode is its speed on an ``arterial`` road in :data:`SPEEDS_KMH` (the common
    class of the reference roads). Distances are geodesic (WGS84 ellipsoid), so the model works
    anywhere. Every point is usable: nothing is snapped, no point is ``far``.

    Parameters
    ----------
    detour_factor
        Road distance / straight distance; ``settings.detour_factor`` when None.
    speeds_kmh
        Speed per mode; the arterial speeds of :data:`SPEEDS_KMH` when None.
    """

    kind = "straight_line"

    def __init__(
        self,
        detour_factor: float | None = None,
        speeds_kmh: Mapping[str, float] | None = None,
    ) -> None:
        self.detour_factor = float(
            get_settings().detour_factor if detour_factor is None else detour_factor
        )
        table = (
            dict(speeds_kmh) if speeds_kmh is not None else dict(SPEEDS_KMH[STRAIGHT_LINE_CLASS])
        )
        self.speeds_kmh: dict[str, float] = {
            m.value: float(table[m.value]) for m in MODES if table.get(m.value, 0) > 0
        }
        self.modes: tuple[TravelMode, ...] = tuple(TravelMode(m) for m in self.speeds_kmh)

    def _speed_ms(self, mode: TravelMode) -> float:
        if mode.value not in self.speeds_kmh:
            msg = f"the straight-line model has no speed for {mode.value}"
            raise InputError(msg)
        return self.speeds_kmh[mode.value] / 3.6

    def snap(self, lon: ArrayLike, lat: ArrayLike, mode: TravelMode | str) -> Snapped:
        """Wrap WGS84 points (nothing to snap to); ``edge`` -1, ``access_m`` 0, never ``far``."""
        m = as_mode(mode)
        self._speed_ms(m)
        x, y = np.broadcast_arrays(
            np.atleast_1d(np.asarray(lon, dtype=float)), np.atleast_1d(np.asarray(lat, dtype=float))
        )
        bad = ~(np.isfinite(x) & np.isfinite(y))
        if bad.any():
            msg = f"non-finite coordinates at position(s) {np.flatnonzero(bad)[:20].tolist()}"
            raise InputError(msg)
        n = len(x)
        return Snapped(
            mode=m,
            lon=x.copy(),
            lat=y.copy(),
            edge=np.full(n, -1, dtype=np.int64),
            frac=np.zeros(n),
            access_m=np.zeros(n),
            far=np.zeros(n, dtype=bool),
        )

    def field_to(self, target: Snapped, limit_s: float = math.inf) -> TravelField:
        """Straight-line times to ``target``; inf above ``limit_s``."""
        check_single(target, "target")
        return _StraightField(
            mode=target.mode,
            limit_s=float(limit_s),
            lon=float(target.lon[0]),
            lat=float(target.lat[0]),
            speed_ms=self._speed_ms(target.mode),
            detour=self.detour_factor,
        )

    def route(self, source: Snapped, target: Snapped, *, limit_s: float | None = None) -> Route:
        """The straight segment; ``length_m`` is the estimated road length (straight × detour).

        ``limit_s`` is accepted for the protocol and not needed.
        """
        check_single(source, "source")
        check_single(target, "target")
        check_same_mode(source, target)
        return _straight_route(
            source,
            float(target.lon[0]),
            float(target.lat[0]),
            self.detour_factor,
            self._speed_ms(source.mode),
        )

    def lower_bound_s(self, source: Snapped, target: Snapped) -> np.ndarray:
        """The straight-line time itself (the model is exact about its own estimate).

        ``target`` holds one point, or one per source.
        """
        check_targets(source, target)
        metres = _geodesic_m(source.lon, source.lat, target.lon, target.lat)
        return metres * self.detour_factor / self._speed_ms(source.mode)

    def joined_links(self, point: Snapped) -> list[dict[str, Any]]:
        """None: nothing is snapped."""
        check_single(point, "point")
        return []

    def typical_ratio(self, mode: TravelMode | str) -> float:
        """1: the lower bound is the time itself."""
        self._speed_ms(as_mode(mode))
        return 1.0

    def describe(self) -> dict[str, Any]:
        """Kind, detour factor and speeds."""
        return {
            "kind": self.kind,
            "detour_factor": self.detour_factor,
            "speeds_kmh": dict(self.speeds_kmh),
        }
