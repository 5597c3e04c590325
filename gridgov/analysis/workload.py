"""Workload and balance of units, offices and streets over a period, from the event log (pure).

A **call** is a dispatch event; it sends the units its ``data["units"]`` names. Each unit of a
call is **busy** from the dispatch to the first later event of the incident that frees it:
``resolve`` (the work on scene is done), ``return`` (the department declined), ``requeue``
(preempted), ``cancel``, or the next ``dispatch`` (sent again); a call still open at the
period's end is busy to the end. Only the part of a busy interval inside the period counts.
**Utilisation** is busy time over the period's length (per unit) or over units × length (per
office, street). The **response time** of a call is dispatch → the cycle's first ``arrive``,
counted for every unit it sent.

**Balance**: the Gini coefficient (0 = equal, 1 = all the work on one) of the units' utilisation
within each street, and of the streets' calls per unit over the district: how unevenly the
work falls, on units and on streets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gridgov.errors import InputError
from gridgov.periods import Period
from gridgov.workflow import Action

#: Events after a dispatch that free its units.
_FREEING = frozenset(
    str(a) for a in (Action.RESOLVE, Action.RETURN, Action.REQUEUE, Action.CANCEL, Action.DISPATCH)
)
_EVENT_NEEDED = ("incident_id", "seq", "at", "action", "data")
_UNIT_NEEDED = ("unit_id", "kind", "office_id", "street_code")


def gini(values: np.ndarray | pd.Series) -> float:
    """Gini coefficient of non-negative values (0 when all are equal or all zero; NaN if none)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        return float("nan")
    total = x.sum()
    if total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * (ranks * x).sum()) / (n * total) - (n + 1.0) / n)


@dataclass(frozen=True)
class Workload:
    """Per unit, office and street tables, and the balance figures (see the module notes)."""

    period: Period
    units: pd.DataFrame
    offices: pd.DataFrame
    streets: pd.DataFrame
    summary: dict[str, float]


def _unit_calls(events: pd.DataFrame, period: Period) -> pd.DataFrame:
    """One row per (call, unit): incident, unit, dispatch time, freed time, arrival time."""
    missing = [c for c in _EVENT_NEEDED if c not in events.columns]
    if missing:
        msg = f"events: missing column(s) {', '.join(missing)}"
        raise InputError(msg)
    ev = events.loc[:, list(_EVENT_NEEDED)].copy()
    ev["at"] = pd.to_datetime(ev["at"], utc=True)
    ev["action"] = ev["action"].astype(str)
    ev = ev[ev["at"] < pd.Timestamp(period.end)]
    ev = ev.sort_values(["incident_id", "seq"], kind="stable").reset_index(drop=True)
    calls = ev[ev["action"] == str(Action.DISPATCH)]
    rows = []
    groups: dict[Any, pd.DataFrame] = dict(tuple(ev.groupby("incident_id", sort=False)))
    for call in calls.itertuples(index=False):
        later = groups[call.incident_id]
        later = later[later["seq"] > call.seq]
        freed = later[later["action"].isin(_FREEING)]
        end = freed["at"].iloc[0] if len(freed) else pd.NaT
        within = later if not len(freed) else later[later["seq"] < freed["seq"].iloc[0]]
        arrive = within.loc[within["action"] == str(Action.ARRIVE), "at"]
        data: dict[str, Any] = call.data if isinstance(call.data, dict) else {}
        for unit in data.get("units") or []:
            rows.append(
                {
                    "incident_id": call.incident_id,
                    "unit_id": str(unit),
                    "dispatched_at": call.at,
                    "freed_at": end,
                    "arrived_at": arrive.iloc[0] if len(arrive) else pd.NaT,
                }
            )
    cols = ["incident_id", "unit_id", "dispatched_at", "freed_at", "arrived_at"]
    out = pd.DataFrame(rows, columns=cols)
    for column in cols[2:]:  # typed even when empty: a period without calls is no error
        out[column] = pd.to_datetime(out[column], utc=True)
    return out


def _describe(group: pd.DataFrame, hours: float, n_units: int) -> pd.Series:
    in_period = group[group["call_in_period"]]
    response = in_period["response_min"].dropna()
    return pd.Series(
        {
            "units": n_units,
            "calls": len(in_period),
            "incidents": in_period["incident_id"].nunique(),
            "busy_h": float(group["busy_h"].sum()),
            "utilisation": float(group["busy_h"].sum()) / (hours * n_units) if n_units else 0.0,
            "response_p50_min": float(response.quantile(0.5)) if len(response) else np.nan,
            "response_p90_min": float(response.quantile(0.9)) if len(response) else np.nan,
        }
    )


def workload(events: pd.DataFrame, gdf_units: pd.DataFrame, period: Period | str) -> Workload:
    """Incidents, busy time, utilisation, response-time percentiles and balance for a period.

    Parameters
    ----------
    events
        The event log (``gridgov.store.read_events``): ``incident_id``, ``seq``, ``at``,
        ``action``, ``data``; never changed.
    gdf_units
        The units: ``unit_id``, ``kind``, ``office_id``, ``street_code`` (the commanding street).
    period
        A :class:`~gridgov.periods.Period` or its text (``2026-10``, ``2026-Q4``).

    Returns
    -------
    Workload
        ``units``: one row per unit (those without calls too); ``offices`` and ``streets``: the
        same figures summed over their units, with ``gini_utilisation`` per street; ``summary``:
        calls, incidents, mean utilisation, the units' utilisation Gini and the streets'
        calls-per-unit Gini.
    """
    span = period if isinstance(period, Period) else Period.parse(period)
    missing = [c for c in _UNIT_NEEDED if c not in gdf_units.columns]
    if missing:
        msg = f"units: missing column(s) {', '.join(missing)}"
        raise InputError(msg)
    start, end = (
        pd.Timestamp(span.start).tz_convert("UTC"),
        pd.Timestamp(span.end).tz_convert("UTC"),
    )
    hours = (end - start).total_seconds() / 3600.0
    calls = _unit_calls(events, span)
    freed = calls["freed_at"].fillna(end)
    freed = freed.where(freed < end, end)
    began = calls["dispatched_at"].where(calls["dispatched_at"] > start, start)
    calls["busy_h"] = ((freed - began).dt.total_seconds() / 3600.0).clip(lower=0.0)
    calls["response_min"] = (calls["arrived_at"] - calls["dispatched_at"]).dt.total_seconds() / 60
    calls["call_in_period"] = calls["dispatched_at"] >= start
    # Calls of earlier periods count only for the busy time they spill into this one.
    calls = calls[calls["call_in_period"] | (calls["busy_h"] > 0)]

    units = pd.DataFrame({c: gdf_units[c].astype("string") for c in _UNIT_NEEDED})
    units = units.drop_duplicates("unit_id").reset_index(drop=True)
    unknown = sorted(set(calls["unit_id"]) - set(units["unit_id"].dropna()))
    calls = calls[~calls["unit_id"].isin(unknown)]
    by_unit = dict(tuple(calls.groupby("unit_id")))
    empty = calls.iloc[0:0]
    per_unit = pd.DataFrame(
        [_describe(by_unit.get(u, empty), hours, 1) for u in units["unit_id"].astype(str)],
        columns=_describe(empty, hours, 1).index,
    )
    unit_table = pd.concat([units, per_unit.drop(columns="units")], axis=1)

    merged = calls.merge(units, on="unit_id", how="left")

    def table(key: str) -> pd.DataFrame:
        counts = units.groupby(key, dropna=True).size()
        out = pd.DataFrame(
            [_describe(merged[merged[key] == k], hours, int(n)) for k, n in counts.items()],
            index=pd.Index(counts.index.astype(str), name=key),
        )
        return out.reset_index()

    offices = table("office_id")
    streets = table("street_code")
    streets["calls_per_unit"] = streets["calls"] / streets["units"]
    streets["gini_utilisation"] = [
        gini(unit_table.loc[unit_table["street_code"] == s, "utilisation"])
        for s in streets["street_code"]
    ]
    in_period = calls[calls["call_in_period"]]
    summary = {
        "hours": hours,
        "calls": float(in_period[["incident_id", "dispatched_at"]].drop_duplicates().shape[0]),
        "incidents": float(in_period["incident_id"].nunique()),
        "unit_calls": float(len(in_period)),
        "mean_utilisation": float(unit_table["utilisation"].mean()) if len(unit_table) else 0.0,
        "gini_units": gini(unit_table["utilisation"]),
        "gini_streets": gini(streets["calls_per_unit"]),
        "unknown_units": float(len(unknown)),
    }
    return Workload(span, unit_table, offices, streets, summary)


__all__ = ["Workload", "gini", "workload"]
