"""Request and answer pieces shared by several routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import Query

from gridgov.crs import to_wgs84
from gridgov.errors import CRSError, InputError

CrsName = Literal["wgs84", "gcj02", "bd09"]
Crs = Annotated[
    CrsName,
    Query(
        description="CRS of the coordinates: wgs84 (GPS), gcj02 (Chinese map SDKs: AMap, "
        "Tencent, Apple in China) or bd09 (Baidu)."
    ),
]


def to_wgs84_point(lon: float, lat: float, crs: str) -> tuple[float, float]:
    """One point to WGS84 (CRSError names the problem)."""
    x, y = to_wgs84(lon, lat, crs)
    return float(x[0]), float(y[0])


def parse_bbox(text: str, crs: str) -> tuple[float, float, float, float]:
    """``west,south,east,north`` in ``crs`` → a WGS84 box."""
    try:
        west, south, east, north = (float(v) for v in text.split(","))
    except ValueError:
        msg = f"bbox must be four numbers west,south,east,north; got {text!r}"
        raise InputError(msg) from None
    if not (west < east and south < north):
        msg = f"bbox must have west < east and south < north; got {text!r}"
        raise InputError(msg)
    try:
        xs, ys = to_wgs84([west, east], [south, north], crs)
    except CRSError as exc:
        msg = f"bbox {text!r}: {exc}"
        raise InputError(msg) from None
    return float(xs[0]), float(ys[0]), float(xs[1]), float(ys[1])


def plain(value: Any) -> Any:
    """A value of a frame row as JSON wants it: missing (None, NA, NaT, NaN) as None and
    timestamps as datetimes."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value
