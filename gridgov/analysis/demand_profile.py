"""Real demand timing: measured arrival and resolution profiles for the simulation (pure, plus
one reader at the edge).

:func:`derive_profile` turns a table of real service requests (open, SLA-target and close
times, a kind of case) into a compact profile: relative arrival rates for each of the 168
hours of the week (Monday 00:00 first, mean 1), by hour of day and by day of week; resolution
times (open → close) per kind of case; and the share closed on time. ``data/profiles/*.json``
hold such profiles (``scripts/derive_boston311_profile.py`` writes the Boston one from 121,145
real 311 requests of 2015) and :func:`load_profile` reads one by name for ``gridgov simulate
--profile NAME``. Only the timing travels: where incidents happen stays the district's own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gridgov.errors import DataFileError, InputError
from gridgov.settings import get_settings

#: Kinds of case listed one by one; the rest are pooled as "other".
TOP_KINDS = 12
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NEEDED = ("open_dt", "closed_dt", "target_dt", "reason")


@dataclass(frozen=True)
class DemandProfile:
    """A measured demand profile (see the module notes).

    ``hour_of_week`` has 168 relative rates (mean 1) from Monday 00:00 local time; ``source``
    names the data and its licence, for every output that uses it.
    """

    name: str
    source: str
    hour_of_week: tuple[float, ...]
    hour_of_day: tuple[float, ...]
    day_of_week: dict[str, float]
    resolution: pd.DataFrame
    figures: dict[str, float]

    def peak_to_trough(self) -> float:
        """The busiest hour of the week over the quietest (inf when one hour has none)."""
        values = np.asarray(self.hour_of_week)
        low = values.min()
        return float(values.max() / low) if low > 0 else float("inf")


def _relative(counts: np.ndarray) -> list[float]:
    mean = counts.mean()
    return [round(float(c / mean), 4) for c in counts] if mean > 0 else [0.0] * len(counts)


def derive_profile(requests: pd.DataFrame, *, name: str, source: str) -> dict[str, Any]:
    """A profile (JSON-ready) from service requests.

    Parameters
    ----------
    requests
        ``open_dt``, ``closed_dt``, ``target_dt`` (local times, parsed or text; close and target
        may be missing) and ``reason`` (the kind of case); never changed.
    name, source
        The profile's name and the data's source and licence, carried into every output.

    Returns
    -------
    dict
        ``name``, ``source``, ``requests``, ``weeks`` (whole weeks spanned), ``hour_of_week``
        (168), ``hour_of_day`` (24), ``day_of_week`` (7), ``resolution`` (per kind of case:
        ``requests``, ``closed_share``, ``p50_h``, ``p90_h`` (open → close, closed cases),
        ``with_target`` (cases with an SLA target), ``on_time_share`` (of those, closed by the
        target; an open case is not)) and ``figures`` (the same over all cases, the
        peak-to-trough ratio of the hours of the week and, with an ``ontime_status`` column,
        the publisher's own on-time share).

    Raises
    ------
    InputError
        Missing columns, or no request with an open time.
    """
    missing = [c for c in _NEEDED if c not in requests.columns]
    if missing:
        msg = f"requests: missing column(s) {', '.join(missing)}"
        raise InputError(msg)
    opened = pd.to_datetime(requests["open_dt"], format="mixed", errors="coerce")
    closed = pd.to_datetime(requests["closed_dt"], format="mixed", errors="coerce")
    target = pd.to_datetime(requests["target_dt"], format="mixed", errors="coerce")
    ok = opened.notna()
    if not ok.any():
        msg = "requests: no request has an open time"
        raise InputError(msg)
    opened, closed, target = opened[ok], closed[ok], target[ok]
    reason = requests.loc[ok, "reason"].fillna("(none)").astype(str)

    how = (opened.dt.day_of_week * 24 + opened.dt.hour).to_numpy()
    week_counts = np.bincount(how, minlength=168).astype(float)
    day_counts = week_counts.reshape(7, 24)
    hours_h = (closed - opened).dt.total_seconds() / 3600.0
    hours_h = hours_h.where(hours_h >= 0)  # a close before the open is a data error, not a time
    on_time = (closed <= target) & closed.notna() & target.notna()

    def figures(sel: pd.Series) -> dict[str, float]:
        h = hours_h[sel].dropna()
        with_target = sel & target.notna()
        due = with_target.sum()
        return {
            "requests": float(sel.sum()),
            "closed_share": round(float(closed[sel].notna().mean()), 4),
            "p50_h": round(float(h.quantile(0.5)), 2) if len(h) else float("nan"),
            "p90_h": round(float(h.quantile(0.9)), 2) if len(h) else float("nan"),
            "with_target": float(due),
            "on_time_share": round(float(on_time[with_target].mean()), 4) if due else float("nan"),
        }

    top = reason.value_counts().head(TOP_KINDS).index
    kinds = reason.where(reason.isin(top), "other")
    resolution = {k: figures(kinds == k) for k in [*top, "other"] if (kinds == k).any()}
    overall = figures(pd.Series(True, index=reason.index))
    if "ontime_status" in requests.columns:
        # The publisher's own flag, over every request (open ones are judged at extraction).
        flag = requests.loc[ok, "ontime_status"].astype(str).str.upper()
        overall["ontime_flag_share"] = round(float((flag == "ONTIME").mean()), 4)
    relative = _relative(week_counts)
    overall["peak_to_trough"] = round(max(relative) / min(relative), 2) if min(relative) else 0.0
    span_days = (opened.max() - opened.min()).total_seconds() / 86400.0
    return {
        "name": name,
        "source": source,
        "requests": int(ok.sum()),
        "weeks": round(span_days / 7.0, 1),
        "hour_of_week": relative,
        "hour_of_day": _relative(day_counts.sum(axis=0)),
        "day_of_week": dict(zip(_DAYS, _relative(day_counts.sum(axis=1)), strict=True)),
        "resolution": resolution,
        "figures": overall,
    }


def profile_path(name: str, data_dir: Path | None = None) -> Path:
    """Where the profile named ``name`` is stored: ``data/profiles/<name>.json``."""
    if not name.replace("_", "").replace("-", "").isalnum():
        msg = f"a profile name is letters, digits, - and _, not {name!r}"
        raise InputError(msg)
    return (data_dir or get_settings().data_dir) / "profiles" / f"{name}.json"


def available_profiles(data_dir: Path | None = None) -> list[str]:
    """The names of the stored profiles."""
    folder = (data_dir or get_settings().data_dir) / "profiles"
    return sorted(p.stem for p in folder.glob("*.json"))


def load_profile(name: str, data_dir: Path | None = None) -> DemandProfile:
    """Read a stored profile by name.

    Raises
    ------
    InputError
        No profile of that name (the known ones are listed).
    DataFileError
        The file is not a profile.
    """
    path = profile_path(name, data_dir)
    if not path.is_file():
        known = ", ".join(available_profiles(data_dir)) or "none"
        msg = f"no demand profile {name!r}; known: {known}"
        raise InputError(msg)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        week = tuple(float(v) for v in data["hour_of_week"])
        if len(week) != 168 or min(week) < 0:
            msg = f"{path}: hour_of_week must hold 168 rates >= 0"
            raise DataFileError(msg)
        resolution = pd.DataFrame.from_dict(data["resolution"], orient="index")
        resolution.index.name = "kind"
        return DemandProfile(
            name=str(data["name"]),
            source=str(data["source"]),
            hour_of_week=week,
            hour_of_day=tuple(float(v) for v in data["hour_of_day"]),
            day_of_week={str(k): float(v) for k, v in data["day_of_week"].items()},
            resolution=resolution,
            figures={str(k): float(v) for k, v in data["figures"].items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{path}: not a demand profile ({exc})"
        raise DataFileError(msg) from exc


__all__ = [
    "TOP_KINDS",
    "DemandProfile",
    "available_profiles",
    "derive_profile",
    "load_profile",
    "profile_path",
]
