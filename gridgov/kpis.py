"""KPIs of stationed offices, departments, streets and the district from the event log (power 1).

The street's evaluation of the forces it commands starts from these figures: per office,
department, street and for the whole district, the calls and how fast they were answered, the
cases and how they were closed, reworked and judged by the reporters. The weighted scores and
rankings built on them are :mod:`gridgov.assessment`'s.

Everything here is pure: frames in, new frames out, nothing is mutated or stored.

Inputs
------
events
    One row per workflow event, columns :data:`gridgov.workflow.EVENT_COLUMNS` (``incident_id``,
    ``seq``, ``at`` (timezone-aware, any zone; compared in UTC), ``action``, ``office_id``,
    ``street_code``, ``level``, ``satisfaction``, ... ; ``data`` is not used).
incidents
    ``incident_id`` and ``matter_code`` (the catalogue gives the deadlines).
offices
    ``office_id``, ``name``, ``kind``, ``department``, ``street_code``.
period
    A :class:`Period`: ``[start, end)`` in the display time zone (Asia/Shanghai).

KPI definitions (exact; an independent SQL recomputation must give the same numbers)
-------------------------------------------------------------------------------------
Cut-off
    Only events with ``at < period.end`` exist ("as of the end of the period"). Within an
    incident, events are ordered by ``seq``.
Call
    A ``dispatch`` event with ``period.start <= at < period.end``. Its office is the event's
    ``office_id``, its street the event's ``street_code``, its level the event's ``level``.
Cycle of a call
    The events of the same incident after the call (greater ``seq``) and before the incident's
    next ``dispatch``, ``return``, ``requeue`` or ``reopen`` event.
responded_on_time
    The call's cycle has an ``acknowledge`` event with ``at - call.at <= acknowledge_min``
    minutes (the matter's deadline; exactly at the deadline is on time).
    ``response_rate = responded_on_time / calls``.
Response and arrival times
    Minutes from the call to the first ``acknowledge`` (resp. ``arrive``) event of its cycle.
    ``*_mean_min`` is the mean and ``*_p90_min`` the 90th percentile (``numpy.percentile(x, 90)``,
    linear interpolation) over the calls that have one.
Level shares
    ``share_<level>`` = calls whose ``level`` is ``community``, ``street``, ``neighbour`` or
    ``district`` / calls.
Case
    An incident whose first ``dispatch`` event (lowest ``seq``) lies in the period. Its office
    and its street are the ``office_id`` and ``street_code`` of its latest ``dispatch`` event
    (with ``at < period.end``); every event of an incident carries the incident's street.
closed, resolution_rate (结案率)
    A case is closed if it has a ``close`` event. ``resolution_rate = closed / cases``.
due, on_time, on_time_closure_rate (按期结案率)
    ``deadline = first dispatch at + resolve_h`` hours. A case is due if it is closed or
    ``deadline <= period.end``; on time if it is closed with ``close.at <= deadline``.
    ``on_time_closure_rate = on_time / due``.
resolved, reworked, rework_rate (返工率)
    A case is resolved if it has a ``resolve`` event and reworked if it has a ``reopen`` event
    (a failed verification). ``rework_rate = reworked / resolved``.
evaluated, satisfied, satisfaction_rate (满意率)
    A case is evaluated if it has an ``evaluate`` event, satisfied if (the first such) event's
    ``satisfaction`` is ``satisfied`` or ``basically_satisfied``.
    ``satisfaction_rate = satisfied / evaluated``.
Zero denominators
    A rate (or mean, p90, share) with nothing to divide by is NaN (shown as "–"), never 0 or 1.
Groupings
    ``by="office"``: the call's / case's office (columns ``office_id, name, kind, department``);
    ``by="department"``: ``offices.department`` of that office; ``by="street"``: the call's /
    case's street (``street_code``); ``by="district"``: one row (``district = "all"``). A group
    is listed when it has at least one call or case; an office missing from ``offices`` keeps
    its id with empty name, kind and department. ``street_code=`` keeps only the calls and
    cases of that street (neighbour and district aid given to it by other streets' offices is
    counted; aid it gives to other streets is not).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from gridgov.catalog import Catalog
from gridgov.errors import InputError, UnknownMatterError
from gridgov.periods import Period
from gridgov.workflow import Action, Satisfaction

__all__ = [
    "GROUPINGS",
    "KPI_COLUMNS",
    "LEVEL_SHARE_COLUMNS",
    "compute_kpis",
    "kpi_tables",
]

Grouping = Literal["office", "department", "street", "district"]
#: The groupings :func:`compute_kpis` knows, and their key columns.
GROUPINGS: dict[str, tuple[str, ...]] = {
    "office": ("office_id", "name", "kind", "department"),
    "department": ("department",),
    "street": ("street_code",),
    "district": ("district",),
}
#: The escalation levels whose share of calls is reported (gridgov.model.EscalationLevel).
LEVELS = ("community", "street", "neighbour", "district")
LEVEL_SHARE_COLUMNS = tuple(f"share_{level}" for level in LEVELS)
#: KPI columns of :func:`compute_kpis`, after the group keys, in this order.
KPI_COLUMNS = (
    "calls",
    "responded_on_time",
    "response_rate",
    "response_mean_min",
    "response_p90_min",
    "arrival_mean_min",
    "arrival_p90_min",
    *LEVEL_SHARE_COLUMNS,
    "cases",
    "closed",
    "resolution_rate",
    "due",
    "on_time",
    "on_time_closure_rate",
    "resolved",
    "reworked",
    "rework_rate",
    "evaluated",
    "satisfied",
    "satisfaction_rate",
)
_COUNT_COLUMNS = (
    "calls",
    "responded_on_time",
    "cases",
    "closed",
    "due",
    "on_time",
    "resolved",
    "reworked",
    "evaluated",
    "satisfied",
)
# A call's response/arrival cycle ends at any of these (spec: the clock stops, not met).
_CYCLE_BREAKERS = tuple(
    str(a) for a in (Action.DISPATCH, Action.RETURN, Action.REQUEUE, Action.REOPEN)
)
_SATISFIED = (str(Satisfaction.SATISFIED), str(Satisfaction.BASIC))
_DISPATCH, _ACKNOWLEDGE, _ARRIVE = str(Action.DISPATCH), str(Action.ACKNOWLEDGE), str(Action.ARRIVE)
_CLOSE, _RESOLVE, _REOPEN = str(Action.CLOSE), str(Action.RESOLVE), str(Action.REOPEN)
_EVALUATE = str(Action.EVALUATE)
_EVENT_NEEDED = ("incident_id", "seq", "at", "action", "office_id", "street_code", "level")
_INCIDENT_NEEDED = ("incident_id", "matter_code")
_OFFICE_NEEDED = ("office_id", "name", "kind", "department")
_DISTRICT_KEY = "all"


# ------------------------------------------------------------------------------------------
# KPIs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Facts:
    """One row per call and one per case, with everything the groupings need."""

    calls: pd.DataFrame
    cases: pd.DataFrame
    offices: pd.DataFrame


def compute_kpis(
    gdf_events: pd.DataFrame,
    df_incidents: pd.DataFrame,
    df_offices: pd.DataFrame,
    catalog: Catalog,
    period: Period,
    by: Grouping | str = "office",
    street_code: str | None = None,
) -> pd.DataFrame:
    """Compute the KPIs of the period per office, department, street or for the district.

    The definitions are in the module docstring and are exact.

    Parameters
    ----------
    gdf_events
        The event log (:data:`gridgov.workflow.EVENT_COLUMNS`; ``at`` timezone-aware), a plain
        DataFrame. Events at or after ``period.end`` are ignored.
    df_incidents
        ``incident_id`` and ``matter_code`` of every dispatched incident.
    df_offices
        ``office_id``, ``name``, ``kind``, ``department`` (and ``street_code``).
    catalog
        The matters catalogue, for the deadlines.
    period
        The period assessed.
    by
        ``"office"``, ``"department"``, ``"street"`` or ``"district"``.
    street_code
        Keep only the calls and cases of this street.

    Returns
    -------
    pandas.DataFrame
        One row per group with at least one call or case (the district always has its row),
        sorted by the group key; columns: the group keys (:data:`GROUPINGS`) then
        :data:`KPI_COLUMNS`.

    Raises
    ------
    InputError
        If a frame lacks columns, ``at`` is not timezone-aware, ``by`` is unknown, or a
        dispatched incident has no matter (or an unknown one); every problem in one message.
    """
    grouping = _grouping(by)
    facts = _compute_facts(gdf_events, df_incidents, df_offices, catalog, period, street_code)
    return _aggregate(facts, grouping)


def kpi_tables(
    gdf_events: pd.DataFrame,
    df_incidents: pd.DataFrame,
    df_offices: pd.DataFrame,
    catalog: Catalog,
    period: Period,
    by: Iterable[Grouping | str],
    street_code: str | None = None,
) -> dict[str, pd.DataFrame]:
    """The KPIs of several groupings from one pass over the event log (an assessment's tables).

    Parameters and errors are those of :func:`compute_kpis`; ``by`` names the groupings.

    Returns
    -------
    dict of str to pandas.DataFrame
        Per grouping, the table :func:`compute_kpis` gives for it.
    """
    groupings = [_grouping(b) for b in by]
    facts = _compute_facts(gdf_events, df_incidents, df_offices, catalog, period, street_code)
    return {grouping: _aggregate(facts, grouping) for grouping in groupings}


def _grouping(by: str) -> str:
    if by not in GROUPINGS:
        msg = f"unknown grouping {by!r}; expected one of {', '.join(GROUPINGS)}"
        raise InputError(msg)
    return by


def _missing_columns(frame: pd.DataFrame, needed: tuple[str, ...], what: str) -> list[str]:
    missing = [c for c in needed if c not in frame.columns]
    return [f"{what} lack column(s) {', '.join(missing)}"] if missing else []


def _utc_times(values: pd.Series, problems: list[str]) -> pd.Series:
    """``values`` as datetime64 UTC; naive times are a problem (their zone is unknown)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        problems.append("events: 'at' must be timezone-aware (UTC stored), not naive")
        return values
    sample = values.dropna()
    if not sample.empty:
        first = sample.iloc[0]
        if isinstance(first, datetime) and first.tzinfo is None:
            problems.append("events: 'at' must be timezone-aware (UTC stored), not naive")
            return values
    try:
        return pd.to_datetime(values, utc=True)
    except (TypeError, ValueError) as exc:
        problems.append(f"events: 'at' is not a time: {exc}")
        return values


def _text(values: pd.Series) -> pd.Series:
    # Enum members and plain strings compare alike once they are text; missing stays missing.
    return values.astype("string")


def _compute_facts(
    events: pd.DataFrame,
    incidents: pd.DataFrame,
    offices: pd.DataFrame,
    catalog: Catalog,
    period: Period,
    street_code: str | None,
) -> _Facts:
    problems = (
        _missing_columns(events, _EVENT_NEEDED, "events")
        + _missing_columns(incidents, _INCIDENT_NEEDED, "incidents")
        + _missing_columns(offices, _OFFICE_NEEDED, "offices")
    )
    if problems:
        _raise_input(problems)
    at = _utc_times(events["at"], problems)
    if problems:
        _raise_input(problems)

    start, end = period.start_utc, period.end_utc
    ev = pd.DataFrame(
        {
            "incident_id": _text(events["incident_id"]),
            "seq": pd.to_numeric(events["seq"]),
            "at": at,
            "action": _text(events["action"]),
            "office_id": _text(events["office_id"]),
            "street_code": _text(events["street_code"]),
            "level": _text(events["level"]),
            "satisfaction": (
                _text(events["satisfaction"])
                if "satisfaction" in events.columns
                else pd.Series(pd.NA, index=events.index, dtype="string")
            ),
        }
    )
    ev = ev[ev["at"] < end].sort_values(["incident_id", "seq"], kind="stable")
    ev = ev.reset_index(drop=True)
    action = ev["action"]
    # Numbering the cycles: every breaker starts a new one, so a dispatch and the events after
    # it up to the next breaker share a number.
    breaker = action.isin(_CYCLE_BREAKERS).fillna(False).astype("int64")
    ev["cycle"] = breaker.groupby(ev["incident_id"]).cumsum()

    dispatches = ev[action == _DISPATCH]
    deadlines = _deadlines(dispatches["incident_id"], incidents, catalog)

    # --- calls -----------------------------------------------------------------------------
    calls = dispatches[dispatches["at"] >= start][
        ["incident_id", "cycle", "at", "office_id", "street_code", "level"]
    ]
    ack = _first_in_cycle(ev, _ACKNOWLEDGE, "ack_at")
    arrive = _first_in_cycle(ev, _ARRIVE, "arrive_at")
    calls = calls.merge(ack, on=["incident_id", "cycle"], how="left")
    calls = calls.merge(arrive, on=["incident_id", "cycle"], how="left")
    ack_limit = pd.to_timedelta(
        calls["incident_id"].map(deadlines["acknowledge_min"]).astype("float64"), unit="min"
    )
    to_ack = calls["ack_at"] - calls["at"]
    calls["on_time"] = (to_ack <= ack_limit).fillna(False).astype(bool)
    calls["response_min"] = _minutes(to_ack)
    calls["arrival_min"] = _minutes(calls["arrive_at"] - calls["at"])

    # --- cases -----------------------------------------------------------------------------
    first = dispatches.drop_duplicates("incident_id", keep="first").set_index("incident_id")
    latest = dispatches.drop_duplicates("incident_id", keep="last").set_index("incident_id")
    first = first[first["at"] >= start]
    cases = pd.DataFrame(
        {
            "first_at": first["at"],
            "office_id": latest["office_id"].reindex(first.index),
            "street_code": latest["street_code"].reindex(first.index),
        }
    )
    close_at = _first_at(ev, _CLOSE).reindex(cases.index)
    resolve_h = cases.index.to_series().map(deadlines["resolve_h"]).astype("float64")
    deadline = cases["first_at"] + pd.to_timedelta(resolve_h, unit="h")
    cases["closed"] = close_at.notna()
    cases["due"] = cases["closed"] | (deadline <= end)
    cases["on_time"] = cases["closed"] & (close_at <= deadline).fillna(False).astype(bool)
    cases["resolved"] = cases.index.isin(_incidents_with(ev, _RESOLVE))
    cases["reworked"] = cases.index.isin(_incidents_with(ev, _REOPEN))
    evaluations = ev[action == _EVALUATE].drop_duplicates("incident_id", keep="first")
    satisfaction = evaluations.set_index("incident_id")["satisfaction"].reindex(cases.index)
    cases["evaluated"] = cases.index.isin(evaluations["incident_id"])
    cases["satisfied"] = satisfaction.isin(_SATISFIED).fillna(False).astype(bool).to_numpy()
    cases = cases.reset_index(names="incident_id")

    if street_code is not None:
        calls = calls[calls["street_code"] == str(street_code)]
        cases = cases[cases["street_code"] == str(street_code)]

    office_table = pd.DataFrame({c: _text(offices[c]) for c in _OFFICE_NEEDED}).drop_duplicates(
        "office_id"
    )
    department = office_table.set_index("office_id")["department"]
    calls = calls.assign(department=calls["office_id"].map(department).astype("string"))
    cases = cases.assign(department=cases["office_id"].map(department).astype("string"))
    return _Facts(calls=calls, cases=cases, offices=office_table)


def _raise_input(problems: list[str]) -> None:
    lines = "\n".join(f"  - {p}" for p in problems)
    msg = f"{len(problems)} problem(s) in the assessment input:\n{lines}"
    raise InputError(msg)


def _deadlines(incident_ids: pd.Series, incidents: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """Deadlines (acknowledge_min, resolve_h) per dispatched incident id."""
    needed = pd.Index(incident_ids.unique())
    table = pd.DataFrame(
        {
            "incident_id": _text(incidents["incident_id"]),
            "matter_code": _text(incidents["matter_code"]),
        }
    ).drop_duplicates("incident_id")
    matter = table.set_index("incident_id")["matter_code"].reindex(needed)
    problems: list[str] = []
    without = matter.index[matter.isna()]
    if len(without):
        shown = ", ".join(map(str, without[:10])) + (" ..." if len(without) > 10 else "")
        problems.append(f"{len(without)} dispatched incident(s) have no matter code: {shown}")
    rows: dict[str, tuple[float, float]] = {}
    for code in matter.dropna().unique():
        try:
            m = catalog.get(str(code))
        except UnknownMatterError as exc:
            problems.append(str(exc))
            continue
        rows[str(code)] = (m.acknowledge_min, m.resolve_h)
    if problems:
        _raise_input(problems)
    by_code = pd.DataFrame.from_dict(rows, orient="index", columns=["acknowledge_min", "resolve_h"])
    return by_code.reindex(matter.to_numpy()).set_axis(needed, axis=0)


def _minutes(delta: pd.Series) -> pd.Series:
    # Float minutes for means and percentiles; on-time tests compare the Timedeltas exactly.
    return pd.Series(pd.to_timedelta(delta), index=delta.index).dt.total_seconds() / 60.0


def _first_in_cycle(ev: pd.DataFrame, action: str, name: str) -> pd.DataFrame:
    rows = ev[ev["action"] == action].drop_duplicates(["incident_id", "cycle"], keep="first")
    return rows[["incident_id", "cycle", "at"]].rename(columns={"at": name})


def _first_at(ev: pd.DataFrame, action: str) -> pd.Series:
    rows = ev[ev["action"] == action].drop_duplicates("incident_id", keep="first")
    return rows.set_index("incident_id")["at"]


def _incidents_with(ev: pd.DataFrame, action: str) -> pd.Index:
    return pd.Index(ev.loc[ev["action"] == action, "incident_id"].unique())


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    num = numerator.astype("float64")
    den = denominator.astype("float64")
    return (num / den).where(den > 0)


def _aggregate(facts: _Facts, by: str) -> pd.DataFrame:
    calls, cases = facts.calls, facts.cases
    if by == "office":
        key = "office_id"
    elif by == "department":
        key = "department"
    elif by == "street":
        key = "street_code"
    else:
        key = "district"
        calls = calls.assign(district=_DISTRICT_KEY)
        cases = cases.assign(district=_DISTRICT_KEY)

    call_groups = calls.groupby(key, dropna=False, sort=False)
    call_part = pd.DataFrame(
        {
            "calls": call_groups.size(),
            "responded_on_time": call_groups["on_time"].sum(),
            "response_mean_min": call_groups["response_min"].mean(),
            "response_p90_min": call_groups["response_min"].quantile(0.9),
            "arrival_mean_min": call_groups["arrival_min"].mean(),
            "arrival_p90_min": call_groups["arrival_min"].quantile(0.9),
        }
    )
    for level, column in zip(LEVELS, LEVEL_SHARE_COLUMNS, strict=True):
        hit = (calls["level"] == level).fillna(False).astype("int64")
        call_part[column] = hit.groupby(calls[key], dropna=False, sort=False).sum()
    case_groups = cases.groupby(key, dropna=False, sort=False)
    case_part = pd.DataFrame(
        {
            "cases": case_groups.size(),
            **{
                c: case_groups[c].sum()
                for c in ("closed", "due", "on_time", "resolved", "reworked")
            },
            "evaluated": case_groups["evaluated"].sum(),
            "satisfied": case_groups["satisfied"].sum(),
        }
    )
    out = call_part.join(case_part, how="outer")
    if by == "district" and out.empty:
        # The district always has its row, even in a period without a single call.
        out = out.reindex(pd.Index([_DISTRICT_KEY], name="district"))
    for column in _COUNT_COLUMNS:
        if column not in out.columns:
            out[column] = 0
        out[column] = out[column].fillna(0).astype("int64")
    for column in LEVEL_SHARE_COLUMNS:
        out[column] = _ratio(out[column].fillna(0), out["calls"])
    out["response_rate"] = _ratio(out["responded_on_time"], out["calls"])
    out["resolution_rate"] = _ratio(out["closed"], out["cases"])
    out["on_time_closure_rate"] = _ratio(out["on_time"], out["due"])
    out["rework_rate"] = _ratio(out["reworked"], out["resolved"])
    out["satisfaction_rate"] = _ratio(out["satisfied"], out["evaluated"])
    for column in KPI_COLUMNS:
        if column not in out.columns:
            out[column] = np.nan
        if column not in _COUNT_COLUMNS:
            out[column] = out[column].astype("float64")
    out.index.name = key
    out = out.reset_index()
    out[key] = out[key].astype("string")
    # Groups sort by key; a missing key (an office without a department...) goes last.
    out = out.sort_values(key, na_position="last", kind="stable").reset_index(drop=True)

    if by == "office":
        meta = facts.offices.set_index("office_id")
        for column in ("name", "kind", "department"):
            out[column] = out["office_id"].map(meta[column]).astype("string")
    return out[[*GROUPINGS[by], *KPI_COLUMNS]]
