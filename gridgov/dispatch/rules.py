"""The dispatch rules that several paths share, each written once.

Every path that places units or ranks candidates calls these: single dispatch, the optimal
batch, the greedy baseline, coverage, and the store's dispatch. Changing one of them here
changes it everywhere.

- **Effective position** (DESIGN.md "Dispatch semantics", CAD practice): an AVL fix older than
  ``settings.position_max_age_min`` is stale; a position without a time is a static post
  (never stale). A stale or missing position falls back to the unit's office, and with no
  office position the unit is left out.
- **Unit rank**: the tie-break order of units, the str order of their ids.
- **Candidate order**: travel time, then unit rank (so equal times go to the smaller id).
- **Preemption**: only a priority-1 matter may take a unit busy on a lower-priority incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from gridgov.settings import get_settings

#: Position fix times: a sequence of datetimes (None for a static post) or a column of them.
Times = Sequence[datetime | None] | pd.Series | pd.DatetimeIndex

# The moment of a stale fix, as the explanation writes it.
_STAMP = "%Y-%m-%dT%H:%MZ"


def position_is_stale(
    times: Times,
    now: datetime,
    max_age: timedelta | None = None,
) -> npt.NDArray[np.bool_]:
    """Which position fixes are too old for dispatch to use.

    Parameters
    ----------
    times
        The time of each unit's position fix (naive means UTC); None (or NaT) is a static
        post, never stale.
    now
        The dispatch time (naive means UTC).
    max_age
        Oldest usable fix; ``settings.position_max_age_min`` when None.

    Returns
    -------
    numpy.ndarray
        bool, True where ``now - time > max_age``.
    """
    return _stale(_times(times), now, max_age)


def stale_before(now: datetime, max_age: timedelta | None = None) -> datetime:
    """The oldest fix time that is not stale at ``now``: a fix taken before it is stale.

    The threshold of :func:`position_is_stale`, for queries that compare times in SQL (the
    AVL path checks its fixes in the statement that stores them).
    """
    if max_age is None:
        max_age = timedelta(minutes=get_settings().position_max_age_min)
    oldest: datetime = (_utc(now) - pd.Timedelta(max_age)).to_pydatetime()
    return oldest


def effective_positions(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    times: Times,
    office_lon: npt.ArrayLike,
    office_lat: npt.ArrayLike,
    now: datetime,
    max_age: timedelta | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.object_]]:
    """The position dispatch uses for each unit, and why when it is not the one given.

    A fresh or static position is kept (see :func:`position_is_stale`); a stale or missing one
    (NaN) falls back to the unit's office position; with no office position either (NaN) the
    unit is left out.

    Parameters
    ----------
    lon, lat
        The units' positions (WGS84; NaN where unknown).
    times
        The time of each position fix, as for :func:`position_is_stale`.
    office_lon, office_lat
        Each unit's office position (NaN where the unit has none).
    now, max_age
        As for :func:`position_is_stale`.

    Returns
    -------
    tuple
        ``(lon, lat, note)``: the effective positions (NaN: left out) and the note an
        explanation records (None where the position was used as given).
    """
    x = np.asarray(lon, dtype=float).reshape(-1)
    y = np.asarray(lat, dtype=float).reshape(-1)
    ox = np.asarray(office_lon, dtype=float).reshape(-1)
    oy = np.asarray(office_lat, dtype=float).reshape(-1)
    stamps = _times(times)
    if not len(x) == len(y) == len(ox) == len(oy) == len(stamps):
        msg = "positions, times and office positions must have one entry per unit"
        raise ValueError(msg)
    stale = _stale(stamps, now, max_age)
    keep = np.isfinite(x) & np.isfinite(y) & ~stale
    has_office = np.isfinite(ox) & np.isfinite(oy)
    out_x = np.where(keep, x, np.where(has_office, ox, np.nan))
    out_y = np.where(keep, y, np.where(has_office, oy, np.nan))
    note = np.full(len(x), None, dtype=object)
    for i in np.flatnonzero(~keep).tolist():
        what = f"stale position ({_stamp(stamps[i])})" if stale[i] else "no position"
        note[i] = f"{what}: office position used" if has_office[i] else f"{what}: left out"
    return out_x, out_y, note


def unit_rank(ids: Sequence[str] | npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
    """Each unit's place in the tie-break order: the str order of the ids (ties by position).

    Ranks taken from a larger set order any subset as the subset's own ranks would.
    """
    values = np.asarray(ids, dtype=object).reshape(-1).astype(str)
    rank = np.empty(len(values), dtype=np.int64)
    rank[np.argsort(values, kind="stable")] = np.arange(len(values))
    return rank


def candidate_order(times: npt.ArrayLike, ranks: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Indices of the candidates, best first: by travel time, then by unit rank.

    Infinite times (unreachable, or beyond a search limit) come after every finite one.
    Give equal times (e.g. zeros) to order units by the tie-break alone.
    """
    order = np.lexsort((np.asarray(ranks), np.asarray(times, dtype=float)))
    return np.asarray(order, dtype=np.int64)


def best_candidate(times: npt.ArrayLike, ranks: npt.ArrayLike) -> int | None:
    """Index of the first candidate of :func:`candidate_order`; None when no time is finite."""
    t = np.asarray(times, dtype=float)
    if len(t) == 0:
        return None
    first = int(candidate_order(t, ranks)[0])
    return first if np.isfinite(t[first]) else None


def _times(times: Times) -> Times:
    """Columns as a UTC DatetimeIndex (naive read as UTC, NaT where missing); lists as given."""
    if isinstance(times, pd.Series | pd.Index | np.ndarray):
        return pd.DatetimeIndex(pd.to_datetime(times, utc=True))
    return times


def _utc(when: datetime) -> pd.Timestamp:
    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _stamp(when: Any) -> str:
    """A fix's time as an explanation writes it (UTC, to the minute)."""
    t = when if isinstance(when, datetime) else pd.Timestamp(when)
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime(_STAMP)


def _stale(times: Times, now: datetime, max_age: timedelta | None) -> npt.NDArray[np.bool_]:
    oldest = stale_before(now, max_age)
    if isinstance(times, pd.DatetimeIndex):
        # NaT (a static post) compares False.
        return np.asarray(times < pd.Timestamp(oldest), dtype=bool)
    try:
        # A list of aware datetimes (what the store reads) compares faster than it converts.
        return np.fromiter(
            (t is not None and t < oldest for t in times), dtype=bool, count=len(times)
        )
    except TypeError:  # naive times (read as UTC), NaN for missing, numpy datetimes
        return _stale(pd.DatetimeIndex(list(times), tz="UTC"), now, max_age)


def may_preempt(priority: int) -> bool:
    """Whether a matter of ``priority`` may take a unit busy on a lower-priority incident (the
    pool it is decided on then holds the busy units too)."""
    return priority == 1


__all__ = [
    "best_candidate",
    "candidate_order",
    "effective_positions",
    "may_preempt",
    "position_is_stale",
    "stale_before",
    "unit_rank",
]
