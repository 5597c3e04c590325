"""Assessment of stationed offices and their departments from the event log (power 1).

The five-powers reform gives the street a say in how the departments it commands are assessed:
the street's evaluation is at least half of a stationed office's assessment and at least 30 % of
its department's annual performance. This module turns the KPIs of the event log
(:mod:`gridgov.kpis`, where the inputs and the KPI definitions are) into that evaluation: a
0-100 street score, the weighted combinations with the department's own scores, and rankings.

Everything here is pure: frames in, new frames out, nothing is mutated or stored.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gridgov.catalog import Catalog
from gridgov.errors import AssessmentWeightError, DataFileError, InputError
from gridgov.kpis import GROUPINGS, kpi_tables
from gridgov.periods import Period
from gridgov.settings import (
    STREET_WEIGHT_FLOOR_DEPARTMENT,
    STREET_WEIGHT_FLOOR_OFFICE,
    get_settings,
)

__all__ = [
    "DEFAULT_KPI_WEIGHTS",
    "RATE_COLUMNS",
    "Assessment",
    "assess",
    "assess_departments",
    "assess_offices",
    "department_scores_from_frame",
    "rank_by_score",
    "read_department_scores",
    "street_score",
    "validate_kpi_weights",
    "validate_street_weight",
]

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
_WEIGHT_TOLERANCE = 1e-9


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
        A frame with the five rate columns (e.g. from :func:`gridgov.kpis.compute_kpis`).
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
    office_ids = set(offices["office_id"].astype("string").dropna())
    departments = set(offices["department"].astype("string").dropna())
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
                {
                    "office_id": offices["office_id"].astype("string"),
                    "d": offices["department"].astype("string"),
                }
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
        :func:`gridgov.kpis.compute_kpis` with ``by="office"``.
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
        :func:`gridgov.kpis.compute_kpis` with ``by="office"`` (the street part weighs its
        offices).
    department_kpis
        :func:`gridgov.kpis.compute_kpis` with ``by="department"`` to carry along, or None
        (then the rows are the departments of ``office_kpis``).
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

    Parameters are those of :func:`gridgov.kpis.compute_kpis`, :func:`assess_offices` and
    :func:`assess_departments`; the event log is read once for all groupings.

    Raises
    ------
    AssessmentWeightError
        If a weight breaks its five-powers floor, or the KPI weights are invalid.
    InputError
        As :func:`gridgov.kpis.compute_kpis`.
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
    tables = kpi_tables(
        gdf_events, df_incidents, df_offices, catalog, period, GROUPINGS, street_code
    )
    office_kpis = tables["office"]
    streets = tables["street"]
    streets["street_score"] = street_score(streets, weights)
    streets["rank"] = rank_by_score(streets, "street_score", "street_code")
    district = tables["district"]
    district["street_score"] = street_score(district, weights)
    return Assessment(
        period=period,
        street_code=street_code,
        offices=assess_offices(
            office_kpis, department_scores, weight=w_office, kpi_weights=weights
        ),
        departments=assess_departments(
            office_kpis,
            tables["department"],
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
