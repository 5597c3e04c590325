"""Assessment of stationed offices and their departments from the event log (power 1).

The five-powers reform gives the street a say in how the departments it commands are assessed:
the street's evaluation is at least half of a stationed office's assessment and at least 30 % of
its department's annual performance. This module turns the incident event log into that
evaluation: KPIs per office, department, street and for the whole district, a 0-100 street
score, the weighted combinations with the department's own scores, and rankings.

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

Scores
------
street_score (0-100)
    ``100 ×`` the weighted mean of ``response_rate``, ``resolution_rate``,
    ``on_time_closure_rate``, ``1 - rework_rate`` and ``satisfaction_rate`` with the weights
    :data:`DEFAULT_KPI_WEIGHTS` (0.25, 0.20, 0.20, 0.15, 0.20). A NaN metric is dropped and the
    remaining weights renormalised; all NaN gives NaN.
Office assessment
    ``w × street_score + (1 - w) × department_score`` with ``w = settings.street_weight_office``
    (at least :data:`~gridgov.settings.STREET_WEIGHT_FLOOR_OFFICE`).
Department annual performance
    ``w' × street_part + (1 - w') × department_own`` with ``w' =
    settings.street_weight_department`` (at least
    :data:`~gridgov.settings.STREET_WEIGHT_FLOOR_DEPARTMENT`); ``street_part`` is the
    calls-weighted mean of the street scores of the department's offices.
Department scores
    Given by the caller (:func:`read_department_scores`): per office (``office_id,score``; a
    department's own score is then the plain mean of its offices' scores) or per department
    (``department,score``; each of its offices gets that score). Without them the combined
    columns are NaN.
Rankings
    ``rank`` (1 = best street score; ties by id, so ranks are unique) and ``rank_in_kind``
    (the same within a force kind). A row without a street score has no rank.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from gridgov.catalog import Catalog
from gridgov.errors import (
    AssessmentWeightError,
    DataFileError,
    InputError,
    UnknownMatterError,
)
from gridgov.settings import (
    STREET_WEIGHT_FLOOR_DEPARTMENT,
    STREET_WEIGHT_FLOOR_OFFICE,
    get_settings,
)
from gridgov.workflow import Action, Satisfaction

__all__ = [
    "DEFAULT_KPI_WEIGHTS",
    "GROUPINGS",
    "KPI_COLUMNS",
    "LEVEL_SHARE_COLUMNS",
    "RATE_COLUMNS",
    "Assessment",
    "Period",
    "assess",
    "assess_departments",
    "assess_offices",
    "compute_kpis",
    "department_scores_from_frame",
    "rank_by_score",
    "read_department_scores",
    "street_score",
    "validate_kpi_weights",
    "validate_street_weight",
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
#: The five rates of the street score, in the order the reform's anchors list them.
RATE_COLUMNS = (
    "response_rate",
    "resolution_rate",
    "on_time_closure_rate",
    "rework_rate",
    "satisfaction_rate",
)
#: Default KPI weights of the street score; ``rework_rate`` enters as ``1 - rework_rate``.
DEFAULT_KPI_WEIGHTS: Mapping[str, float] = {
    "response_rate": 0.25,
    "resolution_rate": 0.20,
    "on_time_closure_rate": 0.20,
    "rework_rate": 0.15,
    "satisfaction_rate": 0.20,
}
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
_WEIGHT_TOLERANCE = 1e-9


# ------------------------------------------------------------------------------------------
# periods
# ------------------------------------------------------------------------------------------

_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
_QUARTER = re.compile(r"(\d{4})-[Qq]([1-4])")
_YEAR = re.compile(r"(\d{4})")


@dataclass(frozen=True)
class Period:
    """A reporting period ``[start, end)``: a month, a quarter or a year in the display zone.

    Build it with :meth:`parse`; ``start`` and ``end`` are timezone-aware.
    """

    label: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            msg = f"period {self.label}: start and end must be timezone-aware"
            raise InputError(msg)
        if not self.start < self.end:
            msg = f"period {self.label}: start {self.start} is not before end {self.end}"
            raise InputError(msg)

    @classmethod
    def parse(cls, text: str, tz: str | None = None) -> Period:
        """Parse ``"2026-10"`` (a month), ``"2026-Q4"`` (a quarter) or ``"2026"`` (a year).

        Parameters
        ----------
        text
            The period.
        tz
            The time zone its bounds are midnights of; defaults to ``settings.display_tz``
            (Asia/Shanghai), where the street's month begins.

        Raises
        ------
        InputError
            If ``text`` is none of these forms or names an impossible month.
        """
        zone = _zone(get_settings().display_tz if tz is None else tz)
        raw = str(text).strip()
        if m := _MONTH.fullmatch(raw):
            year, month = int(m.group(1)), int(m.group(2))
            if not 1 <= month <= 12:
                msg = f"period {text!r}: month {month} is not between 1 and 12"
                raise InputError(msg)
            first, months, label = month, 1, f"{year:04d}-{month:02d}"
        elif m := _QUARTER.fullmatch(raw):
            year, quarter = int(m.group(1)), int(m.group(2))
            first, months, label = 3 * quarter - 2, 3, f"{year:04d}-Q{quarter}"
        elif _YEAR.fullmatch(raw):
            year, first, months, label = int(raw), 1, 12, f"{int(raw):04d}"
        else:
            msg = (
                f"cannot read the period {text!r}: expected a month (2026-10), a quarter "
                "(2026-Q4) or a year (2026)"
            )
            raise InputError(msg)
        end_year, end_month = divmod(first - 1 + months, 12)
        start = datetime(year, first, 1, tzinfo=zone)
        end = datetime(year + end_year, end_month + 1, 1, tzinfo=zone)
        return cls(label=label, start=start, end=end)

    def __str__(self) -> str:
        return self.label

    def contains(self, at: datetime) -> bool:
        """Whether ``at`` (aware) lies in ``[start, end)``."""
        return self.start <= at < self.end

    @property
    def start_utc(self) -> pd.Timestamp:
        return pd.Timestamp(self.start).tz_convert("UTC")

    @property
    def end_utc(self) -> pd.Timestamp:
        return pd.Timestamp(self.end).tz_convert("UTC")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {name!r}"
        raise InputError(msg) from None


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


# ------------------------------------------------------------------------------------------
# weights and scores
# ------------------------------------------------------------------------------------------


def validate_kpi_weights(weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Check KPI weights of the street score and return them as a dict.

    Parameters
    ----------
    weights
        A weight for each of :data:`RATE_COLUMNS` (``rework_rate`` is the weight of
        ``1 - rework_rate``); None gives :data:`DEFAULT_KPI_WEIGHTS`.

    Raises
    ------
    AssessmentWeightError
        If a rate is missing or unknown, a weight is negative or not finite, or they do not
        add up to 1; every problem in one message.
    """
    if weights is None:
        return dict(DEFAULT_KPI_WEIGHTS)
    problems: list[str] = []
    missing = [k for k in RATE_COLUMNS if k not in weights]
    unknown = [str(k) for k in weights if k not in RATE_COLUMNS]
    if missing:
        problems.append(f"missing weight(s) for {', '.join(missing)}")
    if unknown:
        problems.append(
            f"unknown KPI(s) {', '.join(unknown)}; the street score weighs "
            f"{', '.join(RATE_COLUMNS)}"
        )
    clean: dict[str, float] = {}
    for name in RATE_COLUMNS:
        if name not in weights:
            continue
        value = weights[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"weight of {name} {value!r} is not a number")
        elif not math.isfinite(value) or value < 0:
            problems.append(f"weight of {name} {value!r} must be a finite number >= 0")
        else:
            clean[name] = float(value)
    if not problems and abs(sum(clean.values()) - 1.0) > _WEIGHT_TOLERANCE:
        problems.append(f"the KPI weights add up to {sum(clean.values()):g}, not 1")
    if problems:
        msg = "invalid KPI weights of the street score: " + "; ".join(problems)
        raise AssessmentWeightError(msg)
    return clean


def validate_street_weight(weight: float, of: Literal["office", "department"]) -> float:
    """Check the street's weight in an office's assessment or a department's performance.

    Parameters
    ----------
    weight
        The weight of the street's evaluation, in ``[floor, 1]``.
    of
        ``"office"`` (floor :data:`~gridgov.settings.STREET_WEIGHT_FLOOR_OFFICE`, 0.5) or
        ``"department"`` (floor :data:`~gridgov.settings.STREET_WEIGHT_FLOOR_DEPARTMENT`, 0.3).

    Raises
    ------
    AssessmentWeightError
        If the weight is below the five-powers floor, above 1 or not a number; the message says
        which floor and why it exists.
    """
    if of == "office":
        floor, what = STREET_WEIGHT_FLOOR_OFFICE, "a stationed office's assessment"
    elif of == "department":
        floor, what = STREET_WEIGHT_FLOOR_DEPARTMENT, "its department's annual performance"
    else:
        msg = f"unknown weight {of!r}; expected 'office' or 'department'"
        raise InputError(msg)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or math.isnan(weight):
        msg = f"the street's weight in {what} must be a number, not {weight!r}"
        raise AssessmentWeightError(msg)
    if weight < floor:
        msg = (
            f"the street's weight {weight:g} in {what} is below the five-powers floor {floor:g}: "
            f"the reform gives the street's evaluation at least {floor:.0%} of {what}. A weight "
            "may be raised above the floor, never lowered below it"
        )
        raise AssessmentWeightError(msg)
    if weight > 1:
        msg = f"the street's weight {weight:g} in {what} is above 1; it must lie in [{floor:g}, 1]"
        raise AssessmentWeightError(msg)
    return float(weight)


def street_score(kpis: pd.DataFrame, weights: Mapping[str, float] | None = None) -> pd.Series:
    """Return the street score (0-100) of each row of a KPI frame.

    ``100 ×`` the weighted mean of ``response_rate``, ``resolution_rate``,
    ``on_time_closure_rate``, ``1 - rework_rate`` and ``satisfaction_rate``; NaN rates are
    dropped and the other weights renormalised; a row with every rate NaN scores NaN.

    Parameters
    ----------
    kpis
        A frame with the five rate columns (e.g. from :func:`compute_kpis`).
    weights
        KPI weights (:func:`validate_kpi_weights`); default :data:`DEFAULT_KPI_WEIGHTS`.

    Returns
    -------
    pandas.Series
        Float, aligned to ``kpis.index``, named ``street_score``.
    """
    w = validate_kpi_weights(weights)
    missing = [c for c in RATE_COLUMNS if c not in kpis.columns]
    if missing:
        msg = f"the KPI frame lacks column(s) {', '.join(missing)}"
        raise InputError(msg)
    numerator = pd.Series(0.0, index=kpis.index)
    denominator = pd.Series(0.0, index=kpis.index)
    for name in RATE_COLUMNS:
        value = kpis[name].astype("float64")
        if name == "rework_rate":
            value = 1.0 - value
        present = value.notna()
        numerator += w[name] * value.fillna(0.0)
        denominator += w[name] * present.astype("float64")
    score = (100.0 * numerator / denominator).where(denominator > 0)
    return score.rename("street_score")


def rank_by_score(
    frame: pd.DataFrame, score: str, key: str, within: str | None = None
) -> pd.Series:
    """Rank rows by ``score``, best (highest) first, ties broken by ``key`` (ascending).

    Parameters
    ----------
    frame
        The rows to rank.
    score
        The score column; a NaN score gets no rank.
    key
        The id column that breaks ties, so ranks are unique (1, 2, 3, ...).
    within
        Rank separately within each value of this column (e.g. ``kind``).

    Returns
    -------
    pandas.Series
        Nullable integers (``Int64``) aligned to ``frame.index``.
    """
    scored = frame[frame[score].notna()]
    order = scored.assign(_neg=-scored[score].astype("float64")).sort_values(
        [*([within] if within else []), "_neg", key], kind="stable"
    )
    if within:
        ranks = order.groupby(within, dropna=False, sort=False).cumcount() + 1
    else:
        ranks = pd.Series(np.arange(1, len(order) + 1), index=order.index)
    return ranks.reindex(frame.index).astype("Int64")


# ------------------------------------------------------------------------------------------
# department scores
# ------------------------------------------------------------------------------------------


def read_department_scores(path: str | Path, offices: pd.DataFrame) -> pd.DataFrame:
    """Read the departments' own scores from a CSV file (``office_id,score`` or
    ``department,score``).

    Parameters
    ----------
    path
        A UTF-8 CSV file (a BOM is accepted) with a header row.
    offices
        The offices (``office_id``, ``department``), to check the ids.

    Returns
    -------
    pandas.DataFrame
        See :func:`department_scores_from_frame`.

    Raises
    ------
    DataFileError
        If the file cannot be read, or it fails validation (every problem in one message).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        msg = f"cannot read the department scores {path}: {exc}"
        raise DataFileError(msg) from exc
    return department_scores_from_frame(df, offices, origin=str(path))


def department_scores_from_frame(
    df: pd.DataFrame, offices: pd.DataFrame, *, origin: str = "<frame>"
) -> pd.DataFrame:
    """Validate department scores given as a frame (the columns of the CSV file).

    Parameters
    ----------
    df
        Columns ``office_id`` and ``score``, or ``department`` and ``score``. Scores are
        numbers from 0 to 100 (text is parsed).
    offices
        The offices (``office_id``, ``department``); every id must be one of them.
    origin
        Where the scores came from, for the message.

    Returns
    -------
    pandas.DataFrame
        Per office: ``office_id``, ``department``, ``score``; per department: ``department``,
        ``score``. Ids are text, scores float.

    Raises
    ------
    DataFileError
        Listing every problem: wrong columns, a missing, non-numeric or out-of-range score,
        an empty, duplicated or unknown id (row numbers are those of the file, header = 1).
    """
    problems: list[str] = []
    columns = [str(c).strip() for c in df.columns]
    df = df.set_axis(columns, axis=1)
    keys = [c for c in ("office_id", "department") if c in columns]
    unknown = [c for c in columns if c not in ("office_id", "department", "score")]
    if len(keys) != 1:
        problems.append(
            "expected the columns office_id,score or department,score"
            + (" (found both office_id and department)" if len(keys) == 2 else "")
        )
    if "score" not in columns:
        problems.append("missing column 'score'")
    if unknown:
        problems.append(f"unknown column(s) {', '.join(unknown)}")
    if problems:
        _raise_scores(problems, origin)
    key = keys[0]
    ids = df[key].astype("string").str.strip()
    raw = df["score"].astype("string").str.strip()
    scores = pd.to_numeric(raw, errors="coerce").astype("float64")
    office_ids = set(_text(offices["office_id"]).dropna())
    departments = set(_text(offices["department"]).dropna())
    known = office_ids if key == "office_id" else departments
    seen: dict[str, int] = {}
    for i in range(len(df)):
        row = i + 2  # the header is line 1
        ident = ids.iloc[i]
        if pd.isna(ident) or ident == "":
            problems.append(f"row {row}: empty {key}")
        else:
            if ident in seen:
                problems.append(f"row {row}: {key} {ident} repeats row {seen[ident]}")
            else:
                seen[ident] = row
            if ident not in known:
                what = "office" if key == "office_id" else "department"
                problems.append(f"row {row}: unknown {what} {ident!r}")
        text, value = raw.iloc[i], scores.iloc[i]
        if pd.isna(text) or text == "":
            problems.append(f"row {row}: missing score")
        elif pd.isna(value) or not math.isfinite(value):
            problems.append(f"row {row}: score {text!r} is not a number")
        elif not 0 <= value <= 100:
            problems.append(f"row {row}: score {value:g} is outside 0-100")
    if problems:
        _raise_scores(problems, origin)
    out = pd.DataFrame({key: ids.astype("string"), "score": scores})
    if key == "office_id":
        department = (
            pd.DataFrame(
                {"office_id": _text(offices["office_id"]), "d": _text(offices["department"])}
            )
            .drop_duplicates("office_id")
            .set_index("office_id")["d"]
        )
        out.insert(1, "department", out["office_id"].map(department).astype("string"))
    return out.reset_index(drop=True)


def _raise_scores(problems: list[str], origin: str) -> None:
    lines = "\n".join(f"  - {p}" for p in problems)
    msg = f"{len(problems)} problem(s) in the department scores {origin}:\n{lines}"
    raise DataFileError(msg)


def _office_department_score(office_kpis: pd.DataFrame, scores: pd.DataFrame | None) -> pd.Series:
    if scores is None:
        return pd.Series(np.nan, index=office_kpis.index, dtype="float64")
    if "office_id" in scores.columns:
        by_office = scores.set_index("office_id")["score"]
        return office_kpis["office_id"].map(by_office).astype("float64")
    by_department = scores.set_index("department")["score"]
    return office_kpis["department"].map(by_department).astype("float64")


def _department_own(scores: pd.DataFrame | None) -> pd.Series:
    if scores is None:
        return pd.Series(dtype="float64")
    if "office_id" in scores.columns:
        return scores.groupby("department")["score"].mean()
    return scores.set_index("department")["score"].astype("float64")


def assess_offices(
    office_kpis: pd.DataFrame,
    department_scores: pd.DataFrame | None = None,
    *,
    weight: float | None = None,
    kpi_weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Add the street score, the office assessment and the rankings to office KPIs.

    Parameters
    ----------
    office_kpis
        :func:`compute_kpis` with ``by="office"``.
    department_scores
        From :func:`read_department_scores` (per office or per department), or None: the
        ``department_score`` and ``assessment`` columns are then NaN.
    weight
        The street's weight ``w`` (at least 0.5); default ``settings.street_weight_office``.
    kpi_weights
        KPI weights of the street score (default :data:`DEFAULT_KPI_WEIGHTS`).

    Returns
    -------
    pandas.DataFrame
        A copy with ``street_score``, ``department_score``, ``assessment`` (``w × street_score
        + (1 - w) × department_score``), ``rank`` and ``rank_in_kind``, sorted by rank (unranked
        rows last, by id).

    Raises
    ------
    AssessmentWeightError
        If ``weight`` breaks the five-powers floor or the KPI weights are invalid.
    """
    w = validate_street_weight(
        get_settings().street_weight_office if weight is None else weight, "office"
    )
    out = office_kpis.copy()
    out["street_score"] = street_score(out, kpi_weights)
    out["department_score"] = _office_department_score(out, department_scores)
    out["assessment"] = w * out["street_score"] + (1.0 - w) * out["department_score"]
    out["rank"] = rank_by_score(out, "street_score", "office_id")
    out["rank_in_kind"] = rank_by_score(out, "street_score", "office_id", within="kind")
    return _sorted_by_rank(out, "office_id")


def assess_departments(
    office_kpis: pd.DataFrame,
    department_kpis: pd.DataFrame | None = None,
    department_scores: pd.DataFrame | None = None,
    *,
    weight: float | None = None,
    kpi_weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Score each department: the street's part, its own score, and the annual performance.

    Parameters
    ----------
    office_kpis
        :func:`compute_kpis` with ``by="office"`` (the street part weighs its offices).
    department_kpis
        :func:`compute_kpis` with ``by="department"`` to carry along, or None (then the rows are
        the departments of ``office_kpis``).
    department_scores
        From :func:`read_department_scores`, or None (``department_own`` and ``performance``
        are then NaN).
    weight
        The street's weight ``w'`` (at least 0.3); default ``settings.street_weight_department``.
    kpi_weights
        KPI weights of the street score.

    Returns
    -------
    pandas.DataFrame
        ``department`` (then the department KPIs if given), ``street_score`` (the department's
        own KPIs scored, when given), ``street_part`` (calls-weighted mean of its offices'
        street scores), ``department_own``, ``performance`` (``w' × street_part + (1 - w') ×
        department_own``) and ``rank`` (by ``street_part``, ties by name), sorted by rank.

    Raises
    ------
    AssessmentWeightError
        If ``weight`` breaks the five-powers floor or the KPI weights are invalid.
    """
    w = validate_street_weight(
        get_settings().street_weight_department if weight is None else weight, "department"
    )
    offices = office_kpis.assign(street_score=street_score(office_kpis, kpi_weights))
    weighted = offices[offices["street_score"].notna() & (offices["calls"] > 0)]
    product = (weighted["street_score"] * weighted["calls"]).groupby(weighted["department"]).sum()
    calls = weighted["calls"].groupby(weighted["department"]).sum()
    street_part = (product / calls.astype("float64")).where(calls > 0)
    if department_kpis is not None:
        out = department_kpis.copy()
        out["street_score"] = street_score(out, kpi_weights)
    else:
        names = offices["department"].drop_duplicates().sort_values(na_position="last")
        out = pd.DataFrame({"department": names.to_numpy()})
    out["street_part"] = out["department"].map(street_part).astype("float64")
    out["department_own"] = out["department"].map(_department_own(department_scores))
    out["department_own"] = out["department_own"].astype("float64")
    out["performance"] = w * out["street_part"] + (1.0 - w) * out["department_own"]
    out["rank"] = rank_by_score(out, "street_part", "department")
    return _sorted_by_rank(out, "department")


def _sorted_by_rank(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    order = frame.assign(_unranked=frame["rank"].isna()).sort_values(
        ["_unranked", "rank", key], kind="stable", na_position="last"
    )
    return order.drop(columns="_unranked").reset_index(drop=True)


# ------------------------------------------------------------------------------------------
# the whole assessment
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Assessment:
    """A period's assessment: KPI tables per grouping, scores, ranks and the weights used."""

    period: Period
    street_code: str | None
    offices: pd.DataFrame
    departments: pd.DataFrame
    streets: pd.DataFrame
    district: pd.DataFrame
    office_weight: float
    department_weight: float
    kpi_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_KPI_WEIGHTS))
    has_department_scores: bool = False


def assess(
    gdf_events: pd.DataFrame,
    df_incidents: pd.DataFrame,
    df_offices: pd.DataFrame,
    catalog: Catalog,
    period: Period,
    *,
    street_code: str | None = None,
    department_scores: pd.DataFrame | None = None,
    office_weight: float | None = None,
    department_weight: float | None = None,
    kpi_weights: Mapping[str, float] | None = None,
) -> Assessment:
    """Compute every table of a period's assessment at once (what the reports show).

    Parameters are those of :func:`compute_kpis`, :func:`assess_offices` and
    :func:`assess_departments`; the event log is read once for all groupings.

    Raises
    ------
    AssessmentWeightError
        If a weight breaks its five-powers floor, or the KPI weights are invalid.
    InputError
        As :func:`compute_kpis`.
    """
    settings = get_settings()
    w_office = validate_street_weight(
        settings.street_weight_office if office_weight is None else office_weight, "office"
    )
    w_department = validate_street_weight(
        settings.street_weight_department if department_weight is None else department_weight,
        "department",
    )
    weights = validate_kpi_weights(kpi_weights)
    facts = _compute_facts(gdf_events, df_incidents, df_offices, catalog, period, street_code)
    office_kpis = _aggregate(facts, "office")
    streets = _aggregate(facts, "street")
    streets["street_score"] = street_score(streets, weights)
    streets["rank"] = rank_by_score(streets, "street_score", "street_code")
    district = _aggregate(facts, "district")
    district["street_score"] = street_score(district, weights)
    return Assessment(
        period=period,
        street_code=street_code,
        offices=assess_offices(
            office_kpis, department_scores, weight=w_office, kpi_weights=weights
        ),
        departments=assess_departments(
            office_kpis,
            _aggregate(facts, "department"),
            department_scores,
            weight=w_department,
            kpi_weights=weights,
        ),
        streets=_sorted_by_rank(streets, "street_code"),
        district=district,
        office_weight=w_office,
        department_weight=w_department,
        kpi_weights=weights,
        has_department_scores=department_scores is not None,
    )
