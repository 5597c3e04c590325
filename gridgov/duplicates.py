"""Duplicates: which open incident a new report repeats (the same matter, close by, recent).

A duplicate is stored, linked to the incident it repeats and rejected as a duplicate; its
reporter is told that incident's outcome. The rule is pure: the store gives the open
incidents near the report (:mod:`gridgov.store.incident_rows`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from gridgov.errors import InputError
from gridgov.workflow import OPEN_STATES

__all__ = ["DUPLICATE_COLUMNS", "find_duplicate"]

#: Columns :func:`find_duplicate` needs in its table of open incidents.
DUPLICATE_COLUMNS = ("incident_id", "matter_code", "x_m", "y_m", "reported_at")


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
    cand = open_incidents
    keep = (cand["matter_code"] == matter_code).to_numpy(dtype=bool, copy=True)
    if "status" in cand.columns:
        keep &= cand["status"].astype(str).isin([str(s) for s in OPEN_STATES]).to_numpy()
    when = pd.to_datetime(cand["reported_at"])
    if getattr(when.dt, "tz", None) is None:
        msg = "open incidents' reported_at holds naive times; give timezone-aware times"
        raise InputError(msg)
    when_us = when.dt.tz_convert(UTC).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    t_us = np.datetime64(reported_at.astimezone(UTC).replace(tzinfo=None), "us")
    keep &= (when_us <= t_us) & (when_us >= t_us - np.timedelta64(window, "us"))
    dist = np.hypot(
        cand["x_m"].to_numpy(dtype=float) - float(x_m),
        cand["y_m"].to_numpy(dtype=float) - float(y_m),
    )
    keep &= dist <= radius_m  # NaN coordinates compare False and drop out
    if not keep.any():
        return None
    ids = cand["incident_id"].astype(str).to_numpy()[keep]
    best = np.lexsort((ids, dist[keep]))[0]
    return str(ids[best])
