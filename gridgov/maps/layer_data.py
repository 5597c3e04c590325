"""The data a map page draws: compact layer JSON, area statistics and legend HTML.

The JSON builders (:func:`area_layer_json`, :func:`unit_layer_json`,
:func:`incident_layer_json`, :func:`route_layer_json`) also answer the API's viewport hook and
live feed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

# The frame checks are the analysis module's: maps validate their inputs the same way.
from gridgov.coverage import _level_name, _point_xy, _require, _wgs84
from gridgov.labels import label
from gridgov.model import ForceKind, Level, UnitStatus
from gridgov.settings import get_settings

#: Douglas-Peucker tolerance (metres) per level: coarse levels are seen zoomed out.
SIMPLIFY_M: dict[str, float] = {
    "district": 20.0,
    "street": 12.0,
    "community": 6.0,
    "grid": 3.0,
    "microgrid": 1.5,
}
#: Incident statuses that are over: everything else is open.
CLOSED_STATUSES = frozenset({"closed", "evaluated", "cancelled", "rejected"})
#: Colour per priority (1 most urgent); 0 stands for "unknown".
PRIORITY_COLOURS: dict[int, str] = {
    1: "#d7191c",
    2: "#f07c1a",
    3: "#e6c300",
    4: "#2b83ba",
    0: "#7f7f7f",
}
#: Fill per unit status.
STATUS_COLOURS: dict[str, str] = {
    UnitStatus.AVAILABLE.value: "#1a9850",
    UnitStatus.BUSY.value: "#f46d43",
    UnitStatus.OFF_DUTY.value: "#9e9e9e",
}
#: Glyph (Chinese initial) and ring colour per force kind.
KIND_STYLE: dict[str, tuple[str, str]] = {
    ForceKind.JUDICIAL.value: ("司", "#6a3d9a"),
    ForceKind.MARKET.value: ("市", "#b15928"),
    ForceKind.ENFORCEMENT.value: ("执", "#1f78b4"),
    ForceKind.POLICE.value: ("警", "#08306b"),
    ForceKind.FIRE.value: ("消", "#e31a1c"),
    ForceKind.HRSS.value: ("人", "#33a02c"),
    ForceKind.HEALTH.value: ("卫", "#fb9a99"),
    ForceKind.EMERGENCY.value: ("应", "#ff7f00"),
    ForceKind.GRID_WORKER.value: ("网", "#01665e"),
}
#: Sequential fills (light to dark) for counts.
SEQUENTIAL = ("#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#8c2d04")
#: Fill of an area with no value.
NO_DATA = "#d0d0d0"
#: Chinese name per level.
LEVEL_ZH = {lv.value: lv.zh for lv in Level}


# --------------------------------------------------------------------------------------------
# values as page text
# --------------------------------------------------------------------------------------------


def as_text(value: Any) -> str | None:
    """A cell as page text: None for missing, local time for a timestamp, else ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return _local_time(value)
    return str(value)


def _local_time(value: Any) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(UTC)
    return ts.tz_convert(ZoneInfo(get_settings().display_tz)).strftime("%m-%d %H:%M")


def open_incidents(gdf_incidents: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The incidents whose status is not over (:data:`CLOSED_STATUSES`)."""
    _require(gdf_incidents, ("incident_id", "status"), "incidents")
    status = gdf_incidents["status"].astype("string").fillna("")
    return gdf_incidents[~status.isin(sorted(CLOSED_STATUSES))]


# --------------------------------------------------------------------------------------------
# layer data
# --------------------------------------------------------------------------------------------


def _simplified(gdf: gpd.GeoDataFrame, tolerance_m: float) -> np.ndarray:
    """Polygons simplified by ``tolerance_m`` metres, back in WGS84 (never emptied)."""
    metric = gdf.geometry.to_crs(get_settings().metric_crs)
    simple = shapely.simplify(metric.to_numpy(), tolerance_m, preserve_topology=True)
    keep = shapely.is_empty(simple) | shapely.is_missing(simple)
    simple = np.where(keep, metric.to_numpy(), simple)
    out = gpd.GeoSeries(simple, crs=metric.crs).to_crs("EPSG:4326")
    return np.asarray(out.to_numpy())


def _polygon_coords(geom: Any) -> list[list[list[list[float]]]]:
    """MultiPolygon coordinates rounded to 1e-5 degrees (about a metre)."""
    if geom is None or geom.is_empty:
        return []
    polys = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
    out = []
    for poly in polys:
        rings = [poly.exterior, *poly.interiors]
        out.append(
            [np.round(np.asarray(r.coords)[:, :2], 5).tolist() for r in rings if len(r.coords) >= 4]
        )
    return out


def search_index_json(gdf_areas: gpd.GeoDataFrame, level: Level | str) -> dict[str, Any]:
    """The areas of one level the page does not draw, for its search (``GG.searchIndex``).

    Returns
    -------
    dict
        ``{"level", "zh", "rows": [[code, name, west, south, east, north], ...]}``.
    """
    lv = _level_name(level)
    gdf = _wgs84(gdf_areas[gdf_areas["level"].astype(str) == lv])
    # Five decimals (about 1 m) keep 10,000 micro-grids near 900 kB.
    bounds = gdf.geometry.bounds.round(5).to_numpy() if len(gdf) else []
    rows = [
        [code, as_text(name) or code, *(float(v) for v in b)]
        for code, name, b in zip(gdf["code"].astype(str), gdf["name"], bounds, strict=True)
    ]
    return {"level": lv, "zh": LEVEL_ZH[lv], "rows": rows}


def area_layer_json(
    gdf_areas: gpd.GeoDataFrame,
    level: Level | str,
    *,
    values: Mapping[str, float] | None = None,
    colours: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    simplify_m: float | None = None,
) -> dict[str, Any]:
    """One level's polygons as the compact JSON the page runtime draws (``GG.areas``).

    This is also the answer format of the viewport hook (``area_url``): an API route returns
    ``area_layer_json(areas_in_bbox, level)``.

    Parameters
    ----------
    gdf_areas
        Areas (:data:`gridgov.model.AREA_COLUMNS`, EPSG:4326); only ``level`` is used.
    level
        The level to draw.
    values, colours, labels
        Per area code: a value, a fill colour and the tooltip's third line.
    simplify_m
        Tolerance in metres; :data:`SIMPLIFY_M` of the level when None, 0 to keep every vertex.

    Returns
    -------
    dict
        ``{"level", "zh", "features": [[code, name, value, fill, label, coordinates], ...]}``.
    """
    _require(gdf_areas, ("code", "name", "level"), "areas")
    lv = _level_name(level)
    gdf = _wgs84(gdf_areas[gdf_areas["level"].astype(str) == lv])
    tol = SIMPLIFY_M[lv] if simplify_m is None else float(simplify_m)
    geoms = _simplified(gdf, tol) if tol > 0 and len(gdf) else gdf.geometry.to_numpy()
    values = values or {}
    colours = colours or {}
    labels = labels or {}
    features = []
    for code, name, geom in zip(gdf["code"].astype(str), gdf["name"], geoms, strict=True):
        value = values.get(code)
        features.append(
            [
                code,
                as_text(name) or code,
                None if value is None or not math.isfinite(value) else round(float(value), 4),
                colours.get(code, NO_DATA),
                labels.get(code, ""),
                _polygon_coords(geom),
            ]
        )
    return {"level": lv, "zh": LEVEL_ZH[lv], "features": features}


def _breaks(values: Sequence[float], n: int = 6, *, integer: bool = False) -> list[float]:
    """Upper bounds of up to ``n`` quantile classes over the positive values.

    Counts (``integer``) get whole bounds (rounded up, distinct); other values the fewest
    decimals (up to 3) that keep their distinct quantiles apart, rounded up so the largest
    value stays in the last class.
    """
    arr = np.asarray([v for v in values if v > 0 and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return []
    qs = np.unique(np.quantile(arr, np.linspace(0, 1, n + 1)[1:]))
    if integer:
        return [float(q) for q in np.unique(np.ceil(qs - 1e-9))]
    decimals = _decimals_apart(qs, 0, 3)
    scale = 10.0**decimals
    return [float(q) for q in np.unique(np.round(np.ceil(qs * scale - 1e-9) / scale, decimals))]


def _decimals_apart(values: np.ndarray, lowest: int, highest: int) -> int:
    """The fewest decimals from ``lowest`` to ``highest`` that keep distinct values distinct."""
    distinct = len(np.unique(values))
    for d in range(lowest, highest + 1):
        if len(np.unique(np.round(values, d))) == distinct:
            return d
    return highest


def _decimals_of(bounds: Sequence[float]) -> int:
    """Decimals that print every bound exactly (at most 3)."""
    for d in range(4):
        if all(abs(round(b, d) - b) < 1e-9 for b in bounds):
            return d
    return 3


def _classify(value: float, breaks: Sequence[float], palette: Sequence[str]) -> str:
    if not math.isfinite(value):
        return NO_DATA
    if value <= 0 or not breaks:
        return palette[0]
    for i, b in enumerate(breaks):
        if value <= b:
            return palette[min(i + 1, len(palette) - 1)]
    return palette[-1]


def codes_at(gdf_points: gpd.GeoDataFrame, gdf_areas: gpd.GeoDataFrame, level: str) -> pd.Series:
    """The area code of ``level`` for each point: its code column, else a spatial join."""
    column = f"{level}_code"
    if column in gdf_points.columns and gdf_points[column].notna().all():
        return gdf_points[column].astype(str)
    polys = _wgs84(gdf_areas[gdf_areas["level"].astype(str) == level])
    out = pd.Series([None] * len(gdf_points), index=gdf_points.index, dtype=object)
    if column in gdf_points.columns:
        known = gdf_points[column].notna()
        out[known] = gdf_points.loc[known, column].astype(str)
    todo = out.isna()
    if todo.any() and len(polys):
        pts = _wgs84(gdf_points[todo])
        _, _, ok = _point_xy(pts)
        pts = pts[ok]
        tree = shapely.STRtree(polys.geometry.to_numpy())
        which, hit = tree.query(pts.geometry.to_numpy(), predicate="intersects")
        # A point on a shared edge belongs to the smaller code (the project's rule).
        pairs = pd.DataFrame({"i": which, "code": polys["code"].astype(str).to_numpy()[hit]})
        first = pairs.sort_values(["i", "code"]).drop_duplicates("i")
        out.loc[pts.index[first["i"].to_numpy()]] = first["code"].to_numpy()
    return out


def stats_by_area(
    gdf_areas: gpd.GeoDataFrame,
    level: str,
    gdf_open: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    colour_by: str,
) -> tuple[dict[str, float], dict[str, str], dict[str, str], list[float]]:
    """Per area of ``level``: value, fill and tooltip line by ``colour_by``; the class breaks."""
    counts = codes_at(gdf_open, gdf_areas, level).value_counts() if len(gdf_open) else pd.Series()
    codes = gdf_areas.loc[gdf_areas["level"].astype(str) == level, "code"].astype(str)
    n_open = {c: float(counts.get(c, 0)) for c in codes}
    if colour_by == "open_incidents":
        values = n_open
        labels = {c: f"未结事件 open incidents: {int(v)}" for c, v in values.items()}
    else:
        on_duty = gdf_units[gdf_units["on_duty"].fillna(False).astype(bool)]
        unit_counts: dict[str, Any] = (
            dict(codes_at(on_duty, gdf_areas, level).value_counts()) if len(on_duty) else {}
        )
        values = {c: n_open[c] / max(1.0, float(unit_counts.get(c, 0))) for c in codes}
        labels = {
            c: f"负荷 workload: {values[c]:.2f} (未结 open {int(n_open[c])} / "
            f"在岗 on duty {int(unit_counts.get(c, 0))})"
            for c in codes
        }
    breaks = _breaks(list(values.values()), integer=colour_by == "open_incidents")
    colours = {c: _classify(v, breaks, SEQUENTIAL) for c, v in values.items()}
    return values, colours, labels, breaks


def unit_data(gdf_units: gpd.GeoDataFrame) -> dict[str, Any]:
    """Positioned units as the rows of ``GG.units`` (``skipped`` counts the others)."""
    gdf = _wgs84(gdf_units)
    x, y, ok = _point_xy(gdf)
    kinds = list(KIND_STYLE)
    statuses = list(STATUS_COLOURS)
    # Departments and streets repeat across thousands of units: sent once, rows index them.
    departments: dict[str | None, int] = {}
    streets: dict[str | None, int] = {}
    rows = []

    # Columns as lists once: a row read through .iloc costs more than everything else here
    # (the live feed sends units every few hundred milliseconds).
    def column(name: str, default: Any = None) -> list[Any]:
        return gdf[name].tolist() if name in gdf.columns else [default] * len(gdf)

    ids, kind_col, status_col = column("unit_id"), column("kind"), column("status")
    names, depts, street_col = column("name"), column("department"), column("street_code")
    duty = column("on_duty", True)
    for i in np.flatnonzero(ok).tolist():
        kind = str(kind_col[i])
        status = str(status_col[i])
        rows.append(
            [
                round(float(y[i]), 6),
                round(float(x[i]), 6),
                kinds.index(kind) if kind in kinds else 0,
                statuses.index(status) if status in statuses else 2,
                str(ids[i]),
                as_text(names[i]) or str(ids[i]),
                departments.setdefault(as_text(depts[i]), len(departments)),
                streets.setdefault(as_text(street_col[i]), len(streets)),
                1 if bool(duty[i]) else 0,
            ]
        )
    return {
        # Names come from the page's dictionary (GG.label("kind", id)), not from each row set.
        "kinds": [{"id": k, "glyph": g, "colour": c} for k, (g, c) in KIND_STYLE.items()],
        "statuses": [{"id": s, "colour": c} for s, c in STATUS_COLOURS.items()],
        "departments": list(departments),
        "streets": list(streets),
        "rows": rows,
        "skipped": int((~ok).sum()),
    }


def _history(df_events: pd.DataFrame | None) -> dict[str, list[list[Any]]]:
    """Per incident: [time, action, to_state, actor, reason] in order."""
    if df_events is None or len(df_events) == 0:
        return {}
    _require(df_events, ("incident_id", "at", "action"), "events", geometry=False)
    df = df_events.sort_values(["incident_id", *(["seq"] if "seq" in df_events else ["at"])])
    out: dict[str, list[list[Any]]] = {}
    for row in df.itertuples(index=False):
        out.setdefault(str(row.incident_id), []).append(
            [
                _local_time(row.at),
                as_text(row.action),
                as_text(getattr(row, "to_state", None)),
                as_text(getattr(row, "actor", None)),
                as_text(getattr(row, "reason", None)),
            ]
        )
    return out


def _explanation_summary(explanation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Per kind: rule, accepted tier, candidates and the runner-up (from a dispatch explanation)."""
    if not explanation:
        return []
    out = []
    for kind in explanation.get("kinds", []) or []:
        tiers = kind.get("tiers") or []
        accepted = next((t for t in tiers if t.get("accepted")), tiers[-1] if tiers else {})
        cands = [
            c
            for c in accepted.get("candidates", []) or []
            if c.get("time_s") is not None and c.get("unit_id") != kind.get("unit_id")
        ]
        cands.sort(key=lambda c: (c["time_s"], c["unit_id"]))
        out.append(
            {
                "kind": kind.get("kind"),
                "role": kind.get("role"),
                "rule": kind.get("rule"),
                "tier": kind.get("accepted_tier"),
                "candidates": accepted.get("n_candidates", len(accepted.get("candidates", []))),
                "runner_up": cands[0]["unit_id"] if cands else None,
                "runner_up_s": cands[0]["time_s"] if cands else None,
            }
        )
    return out


def as_priority(value: Any) -> int:
    """The priority as a key of :data:`PRIORITY_COLOURS` (0 when unknown)."""
    try:
        p = int(value)
    except (TypeError, ValueError):
        return 0
    return p if p in PRIORITY_COLOURS else 0


def incident_data(
    gdf_open: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None,
    df_events: pd.DataFrame | None,
    explanations: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """Positioned incidents as the rows of ``GG.incidents``, with history, assignments and
    explanation summary."""
    gdf = _wgs84(gdf_open)
    x, y, ok = _point_xy(gdf)
    history = _history(df_events)
    by_incident: dict[str, list[list[Any]]] = {}
    if gdf_assignments is not None and len(gdf_assignments):
        active = _active(gdf_assignments)
        for row in active.itertuples(index=False):
            by_incident.setdefault(str(row.incident_id), []).append(
                [
                    str(row.unit_id),
                    as_text(getattr(row, "role", None)),
                    as_text(getattr(row, "rule", None)),
                    as_text(getattr(row, "level", None)),
                    None if pd.isna(row.time_s) else round(float(row.time_s), 1),
                    bool(getattr(row, "over_max_travel", False)),
                ]
            )
    explanations = explanations or {}
    rows = []
    for i in np.flatnonzero(ok):
        row = gdf.iloc[i]
        iid = str(row["incident_id"])
        rows.append(
            [
                round(float(y[i]), 6),
                round(float(x[i]), 6),
                as_priority(row.get("priority")),
                iid,
                as_text(row.get("matter_code")),
                as_text(row.get("status")),
                _local_time(row.get("reported_at")),
                as_text(row.get("street_code")),
                history.get(iid, []),
                by_incident.get(iid, []),
                _explanation_summary(explanations.get(iid)),
            ]
        )
    return {"priorities": {str(k): v for k, v in PRIORITY_COLOURS.items()}, "rows": rows}


def _active(gdf_assignments: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    _require(gdf_assignments, ("incident_id", "unit_id", "time_s"), "assignments", geometry=False)
    if "active" in gdf_assignments.columns:
        return gdf_assignments[gdf_assignments["active"].fillna(False).astype(bool)]
    return gdf_assignments


def route_data(
    gdf_open: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None,
    gdf_units: gpd.GeoDataFrame,
) -> dict[str, Any]:
    """Route lines of the open incidents' active assignments (straight when none is stored)."""
    rows: list[list[Any]] = []
    if gdf_assignments is None or len(gdf_assignments) == 0 or len(gdf_open) == 0:
        return {"priorities": {str(k): v for k, v in PRIORITY_COLOURS.items()}, "rows": rows}
    active = _active(gdf_assignments)
    open_ = _wgs84(gdf_open)
    ix, iy, iok = _point_xy(open_)
    where = {
        str(i): (float(a), float(b), as_priority(p))
        for i, a, b, p, k in zip(open_["incident_id"], ix, iy, open_["priority"], iok, strict=True)
        if k
    }
    units = _wgs84(gdf_units)
    ux, uy, uok = _point_xy(units)
    unit_at = {
        str(u): (float(a), float(b))
        for u, a, b, k in zip(units["unit_id"], ux, uy, uok, strict=True)
        if k
    }
    geoms = (
        active.geometry.to_numpy()
        if isinstance(active, gpd.GeoDataFrame) and active.geometry.name in active.columns
        else np.full(len(active), None)
    )
    if isinstance(active, gpd.GeoDataFrame) and active.crs is not None and len(active):
        geoms = np.asarray(_wgs84(active).geometry.to_numpy())
    for row, geom in zip(active.itertuples(index=False), geoms, strict=True):
        iid = str(row.incident_id)
        if iid not in where:
            continue
        lon, lat, prio = where[iid]
        if geom is not None and not shapely.is_empty(geom):
            coords = np.round(shapely.get_coordinates(geom), 5).tolist()
            straight = False
        elif str(row.unit_id) in unit_at:
            coords = [list(np.round(unit_at[str(row.unit_id)], 5)), [round(lon, 5), round(lat, 5)]]
            straight = True
        else:
            continue
        rows.append([prio, iid, str(row.unit_id), straight, coords])
    return {"priorities": {str(k): v for k, v in PRIORITY_COLOURS.items()}, "rows": rows}


# --------------------------------------------------------------------------------------------
# legends
# --------------------------------------------------------------------------------------------


def legend_html(sections: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Legend sections (title, items) as HTML."""
    parts = []
    for title, items in sections:
        parts.append(f"<h4>{html.escape(title)}</h4>" + "<br>".join(items))
    return "".join(parts)


def swatch(colour: str, text: str) -> str:
    """One legend item: a colour square and an escaped text."""
    return f"<i style='background:{colour}'></i>{html.escape(text)}"


def class_items(breaks: Sequence[float], *, integer: bool = True) -> list[str]:
    """Legend items of the sequential classes with upper bounds ``breaks`` (see
    :func:`_breaks`): "0", then non-overlapping ranges, whole numbers for counts ("1", "2–3")
    and half-open ranges otherwise ("> 0.5–1.2")."""
    items = [swatch(SEQUENTIAL[0], "0")]
    decimals = 0 if integer else _decimals_of(breaks)
    low = 0.0
    for i, b in enumerate(breaks):
        colour = SEQUENTIAL[min(i + 1, len(SEQUENTIAL) - 1)]
        if integer:
            first = int(low) + 1
            text = str(int(b)) if first == int(b) else f"{first}–{int(b)}"
        else:
            text = f"> {low:.{decimals}f}–{b:.{decimals}f}"
        items.append(swatch(colour, text))
        low = b
    return items


@dataclass(frozen=True)
class ValueClasses:
    """Classes of a choropleth: colours, legend texts and how a value prints.

    ``bounds[i]`` is the (rounded) upper bound of class ``i``; values print with ``decimals``
    (after ``scale``, 100 for percentages) and ``suffix``.
    """

    bounds: tuple[float, ...]
    texts: tuple[str, ...]
    colours: tuple[str, ...]
    scale: float
    decimals: int
    suffix: str

    def text(self, value: float) -> str:
        """``value`` as the legend prints it ("–" when missing)."""
        if not math.isfinite(value):
            return "–"
        return f"{value * self.scale:.{self.decimals}f}{self.suffix}"

    def colour(self, value: float) -> str:
        """The fill of ``value`` (:data:`NO_DATA` when missing)."""
        if not math.isfinite(value) or not self.bounds:
            return NO_DATA
        shown = round(value * self.scale, self.decimals)
        for bound, colour in zip(self.bounds, self.colours, strict=True):
            if shown <= bound + 1e-9:
                return colour
        return self.colours[-1]


def value_classes(
    values: Sequence[float],
    *,
    percent: bool = False,
    integer: bool = False,
    n: int = 6,
    palette: Sequence[str] = SEQUENTIAL[1:],
) -> ValueClasses:
    """Quantile classes of ``values`` (every finite one) for a choropleth legend.

    Bounds are the values' quantiles, printed with the precision they need: whole numbers for
    counts (``integer``), else the fewest decimals (percentages: 1 to 2; others 0 to 3) that
    keep distinct quantiles apart. Classes whose rounded bounds coincide are merged, so a
    legend never shows two classes that read the same. Labels do not overlap: whole ranges
    ("3–5", then "6–9") or half-open ones ("99.70–99.80%", then "> 99.80–99.90%").
    """
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    scale = 100.0 if percent else 1.0
    suffix = "%" if percent else ""
    if arr.size == 0:
        return ValueClasses((), (), (), scale, 1 if percent else 0, suffix)
    edges = np.unique(np.quantile(arr * scale, np.linspace(0, 1, n + 1)))
    if integer:
        decimals = 0
        edges = np.unique(np.concatenate([[np.floor(edges[0])], np.ceil(edges[1:] - 1e-9)]))
    else:
        decimals = _decimals_apart(edges, 1 if percent else 0, 2 if percent else 3)
        edges = np.unique(np.round(edges, decimals))
    texts: list[str] = []
    bounds: list[float] = []

    def fmt(v: float) -> str:
        return f"{v:.{decimals}f}{suffix}"

    if len(edges) == 1:
        bounds.append(float(edges[0]))
        texts.append(fmt(edges[0]))
    for i in range(1, len(edges)):
        low, high = float(edges[i - 1]), float(edges[i])
        if integer:
            first = low if i == 1 else low + 1
            texts.append(fmt(high) if first == high else f"{fmt(first)}–{fmt(high)}")
        else:
            texts.append(f"{fmt(low)}–{fmt(high)}" if i == 1 else f"> {fmt(low)}–{fmt(high)}")
        bounds.append(high)
    picks = np.round(np.linspace(0, len(palette) - 1, len(bounds))).astype(int)
    if len(bounds) == 1:
        picks = np.array([len(palette) // 2])
    colours = tuple(palette[i] for i in picks)
    return ValueClasses(tuple(bounds), tuple(texts), colours, scale, decimals, suffix)


def kind_items(kinds: Iterable[str] | None = None) -> list[str]:
    """Legend items of the force kinds (all, or those in ``kinds``)."""
    wanted = set(kinds) if kinds is not None else set(KIND_STYLE)
    return [
        f"<b class='gg-glyph' style='border-color:{c}'>{g}</b>{html.escape(label('kind', k))}"
        for k, (g, c) in KIND_STYLE.items()
        if k in wanted
    ]


def status_items() -> list[str]:
    """Legend items of the unit statuses."""
    return [swatch(c, label("unit_status", s)) for s, c in STATUS_COLOURS.items()]


def priority_items() -> list[str]:
    """Legend items of the incident priorities."""
    return [swatch(c, f"{p or '?'} {label('priority', p)}") for p, c in PRIORITY_COLOURS.items()]


def unit_layer_json(gdf_units: gpd.GeoDataFrame) -> dict[str, Any]:
    """Units as the compact JSON the page runtime draws (``GG.units``); unpositioned ones
    are left out (``skipped`` counts them)."""
    _require(gdf_units, ("unit_id", "kind", "status", "on_duty"), "units")
    return unit_data(gdf_units)


def incident_layer_json(
    gdf_incidents: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None = None,
    df_events: pd.DataFrame | None = None,
    explanations: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Incidents (every one given, open or not) as the compact JSON of ``GG.incidents``, each
    with its history (``df_events``) and active assignments (``gdf_assignments``)."""
    _require(gdf_incidents, ("incident_id", "status", "priority", "reported_at"), "incidents")
    return incident_data(gdf_incidents, gdf_assignments, df_events, explanations)


def route_layer_json(
    gdf_incidents: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None,
    gdf_units: gpd.GeoDataFrame,
) -> dict[str, Any]:
    """Route lines of the incidents' active assignments as the JSON of ``GG.routes`` (a
    straight line from the unit when no route is stored)."""
    return route_data(gdf_incidents, gdf_assignments, gdf_units)
