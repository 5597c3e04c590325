"""Duplicates: which open incident a new report repeats (the same matter, close by, recent).

A duplicate is stored, linked to the incident it repeats and rejected as a duplicate; its
reporter is told that incident's outcome. The rule is pure: the store gives the open
incidents near the report (:mod:`gridgov.store.incident_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pandas as pd

from gridgov.errors import InputError
from gridgov.workflow import OPEN_STATES

__all__ = ["DUPLICATE_COLUMNS", "find_duplicate", "nearest_duplicate"]

#: Columns :func:`find_duplicate` needs in its table of open incidents.
DUPLICATE_COLUMNS = ("incident_id", "matter_code", "x_m", "y_m", "reported_at")
_OPEN = frozenset(str(s) for s in OPEN_STATES)

#: One candidate for :func:`nearest_duplicate`: (incident_id, x_m, y_m, reported_at, status);
#: a status of None counts as open.
Candidate = tuple[str, float, float, datetime, str | None]


def nearest_duplicate(
    x_m: float,
    y_m: float,
    reported_at: datetime,
    candidates: Iterable[Candidate],
    *,
    radius_m: float,
    window: timedelta,
) -> tuple[str, float] | None:
    """The duplicate rule on plain rows: of ``candidates`` (incidents of the report's matter,
    points in the same metric CRS, times timezone-aware), the nearest open one within
    ``radius_m`` (inclusive) reported within ``window`` before the report or at the same
    instant, ties to the smaller id; returned with its distance in metres, or None.

    The store calls this once per report with the few incidents near it, so it builds no
    frame; :func:`find_duplicate` applies it to a table.
    """
    since = reported_at - window
    best: tuple[float, str] | None = None
    for incident_id, x, y, when, status in candidates:
        distance = math.hypot(x - x_m, y - y_m)
        # ``not <=`` so that a NaN coordinate drops out.
        if not distance <= radius_m or not since <= when <= reported_at:
            continue
        if status is not None and status not in _OPEN:
            continue
        key = (distance, str(incident_id))
        if best is None or key < best:
            best = key
    return None if best is None else (best[1], best[0])


def find_duplicate(
    matter_code: str,
    x_m: float,
    y_m: float,
    reported_at: datetime,
    open_incidents: pd.DataFrame,
    *,
    radius_m: float,
    window: timedelta,
) -> str | None:
    """Return the open incident a new report duplicates, or None.

    A duplicate is an open incident of the same matter within ``radius_m`` (inclusive) of the
    report, reported within ``window`` before it (or at the same instant). The nearest one wins;
    ties go to the smaller incident id, so the answer is deterministic.

    Parameters
    ----------
    matter_code
        The new report's matter.
    x_m, y_m
        The new report's position in a metric CRS (UTM 48N), computed by the caller.
    reported_at
        When it was reported (timezone-aware).
    open_incidents
        Candidates with columns :data:`DUPLICATE_COLUMNS` (``x_m``/``y_m`` in the same CRS,
        ``reported_at`` timezone-aware). If it has a ``status`` column, rows whose status is not
        in :data:`~gridgov.workflow.OPEN_STATES` are ignored.
    radius_m
        The distance limit in metres (``settings.duplicate_radius_m``).
    window
        How far back a candidate may have been reported, as a timedelta
        (``timedelta(hours=settings.duplicate_window_h)``).

    Raises
    ------
    InputError
        If a column is missing, a time is naive, or ``radius_m``/``window`` is negative.
    """
    missing = [c for c in DUPLICATE_COLUMNS if c not in open_incidents.columns]
    if missing:
        msg = f"open incidents lack column(s) {', '.join(missing)}"
        raise InputError(msg)
    if reported_at.tzinfo is None or reported_at.utcoffset() is None:
        msg = f"reported_at {reported_at.isoformat()} must be timezone-aware"
        raise InputError(msg)
    if radius_m < 0 or window < timedelta(0):
        msg = f"radius_m ({radius_m}) and window ({window}) must not be negative"
        raise InputError(msg)
    if open_incidents.empty:
        return None
    when = pd.to_datetime(open_incidents["reported_at"])
    if getattr(when.dt, "tz", None) is None:
        msg = "open incidents' reported_at holds naive times; give timezone-aware times"
        raise InputError(msg)
    same = (open_incidents["matter_code"] == matter_code).to_numpy(dtype=bool)
    cand, when = open_incidents[same], when[same]
    statuses = cand["status"].astype(str) if "status" in cand.columns else [None] * len(cand)
    rows = zip(
        cand["incident_id"].astype(str),
        cand["x_m"].to_numpy(dtype=float).tolist(),
        cand["y_m"].to_numpy(dtype=float).tolist(),
        # Timestamps are datetimes; whole microseconds, as the store keeps them.
        list(when.dt.tz_convert(UTC).dt.floor("us")),
        statuses,
        strict=True,
    )
    found = nearest_duplicate(
        float(x_m), float(y_m), reported_at, rows, radius_m=radius_m, window=window
    )
    return None if found is None else found[0]
