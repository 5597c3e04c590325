"""Maps from the store: :func:`build_map` reads what one map needs (``gridgov map KIND``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import folium
import pandas as pd

from gridgov.errors import InputError
from gridgov.labels import KPI_KINDS
from gridgov.maps.builders import (
    assessment_map,
    check_base,
    command_centre_map,
    coverage_map,
    name_matters_from,
    street_map,
)
from gridgov.maps.layer_data import open_incidents
from gridgov.maps.road_layer import add_road_layer
from gridgov.model import ForceKind, Level
from gridgov.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

#: Map kinds :func:`build_map` knows.
MAP_KINDS = ("command-centre", "street", "coverage", "assessment", "consultation")


def build_map(
    kind: str,
    engine: Engine,
    *,
    street: str | None = None,
    force_kind: ForceKind | str = ForceKind.POLICE,
    level: Level | str = "grid",
    colour_by: str = "open_incidents",
    kpi: pd.DataFrame | None = None,
    kpi_value: str = "value",
    period: str | None = None,
    base: str = "roads",
    tile_key: str | None = None,
    road_url: str | None = None,
    now: datetime | None = None,
    consultation: int | None = None,
) -> folium.Map:
    """Read the store and build one map (what ``gridgov map KIND`` calls).

    Parameters
    ----------
    kind
        One of :data:`MAP_KINDS`.
    engine
        The store.
    street
        The street code (required for ``street``; optional filter for ``coverage``).
    force_kind
        The force kind of ``coverage``.
    level
        The area level shown first (command centre) or of the coverage bands.
    colour_by
        Command centre: ``open_incidents`` or ``workload``.
    kpi, kpi_value
        ``assessment``: a table with ``street_code`` and the column ``kpi_value``. Without one,
        the stored event log is assessed by street (:func:`gridgov.assessment.assess`) over
        ``period`` and ``kpi_value`` names one of its columns (``resolution_rate``,
        ``street_score``...).
    period
        ``assessment`` without a table: the period (``2026-10``, ``2026-Q4``, ``2026``);
        default: the last complete month in the display time zone
        (:func:`last_complete_month`).
    base, tile_key
        The base layer (see the :mod:`gridgov.maps` docstring). Unless it is ``none``, the
        stored roads are inlined (:func:`gridgov.maps.add_road_layer`): shown with ``roads``,
        an overlay to switch on over tiles.
    road_url
        Instead of inlining the roads, the page fetches them per viewport from this URL
        template (a page served by gridgov: ``/api/v1/roads?bbox=...``).
    now
        The command centre's "now" (heat map window).
    consultation
        ``consultation``: the consultation of powers 2 and 4 to map.
    """
    from gridgov import store

    check_map_options(
        kind,
        street=street,
        force_kind=force_kind,
        level=level,
        colour_by=colour_by,
        kpi=kpi,
        kpi_value=kpi_value,
        period=period,
        base=base,
        tile_key=tile_key,
        consultation=consultation,
    )
    if kind == "consultation":
        return _with_roads(
            _consultation_from_store(engine, int(consultation or 0), base, tile_key),
            engine,
            base,
            road_url,
        )
    gdf_areas = store.read_stored_areas(engine)
    if kind == "assessment":
        table = kpi if kpi is not None else _store_kpis(engine, period, now)
        m = assessment_map(gdf_areas, table, value=kpi_value, base=base, tile_key=tile_key)
        return _with_roads(m, engine, base, road_url)
    gdf_units = store.read_units(engine)
    if kind == "coverage":
        travel = store.travel_from_store(engine)
        m = coverage_map(
            gdf_areas,
            gdf_units,
            travel,
            force_kind,
            level=level,
            street_code=street,
            base=base,
            tile_key=tile_key,
        )
        return _with_roads(m, engine, base, road_url)
    gdf_incidents = store.read_incidents(engine)
    gdf_assignments = store.read_assignments(engine, active=True)
    df_events = store.read_events(engine)
    explanations: dict[str, Mapping[str, Any]] = {}
    active_ids = set(gdf_assignments["incident_id"].astype(str))
    for iid in sorted(active_ids & set(open_incidents(gdf_incidents)["incident_id"].astype(str))):
        explanations[iid] = store.read_dispatch(engine, iid).get("explanation") or {}
    if kind == "street":
        m = street_map(
            str(street),
            gdf_areas,
            gdf_units,
            gdf_incidents,
            gdf_assignments,
            df_events,
            explanations=explanations,
            base=base,
            tile_key=tile_key,
        )
        return _with_roads(m, engine, base, road_url)
    m = command_centre_map(
        gdf_areas,
        gdf_units,
        gdf_incidents,
        gdf_assignments,
        df_events,
        level=level,
        colour_by=colour_by,
        explanations=explanations,
        now=now,
        base=base,
        tile_key=tile_key,
    )
    return _with_roads(m, engine, base, road_url)


def _consultation_from_store(
    engine: Engine, consultation_id: int, base: str, tile_key: str | None
) -> folium.Map:
    from gridgov import store
    from gridgov.errors import NotFoundError
    from gridgov.maps.consultation_map import consultation_map

    found = store.read_footprint_consultations(engine, consultation_id=consultation_id)
    if found.empty:
        msg = f"no consultation {consultation_id} with a footprint in the store"
        raise NotFoundError(msg)
    areas = pd.concat(
        [store.read_stored_areas(engine, "street"), store.read_stored_areas(engine, "community")],
        ignore_index=True,
    )
    return consultation_map(
        found.iloc[0].to_dict(),
        store.read_consultation_requests(engine, consultation_id=consultation_id),
        store.read_consultation_events(engine, consultation_id, action="suggest"),
        areas,
        base=base,
        tile_key=tile_key,
    )


def _with_roads(m: folium.Map, engine: Engine, base: str, road_url: str | None) -> folium.Map:
    """The map with the stored roads (inlined, or fetched per viewport from ``road_url``), its
    matters named from the stored catalogue."""
    from gridgov import store

    name_matters_from(m, store.read_catalog(engine))
    if road_url is not None:
        return add_road_layer(m, base, url=road_url)
    if base == "none":
        return m  # no roads drawn: skip reading them
    return add_road_layer(m, base, gdf_roads=store.read_road_lines(engine))


def check_map_options(
    kind: str,
    *,
    street: str | None = None,
    force_kind: ForceKind | str = ForceKind.POLICE,
    level: Level | str = "grid",
    colour_by: str = "open_incidents",
    kpi: pd.DataFrame | None = None,
    kpi_value: str = "value",
    period: str | None = None,
    base: str = "none",
    tile_key: str | None = None,
    consultation: int | None = None,
) -> None:
    """Check the options of :func:`build_map` before anything is read (a missing ``--street``
    is reported at once, not after the store is loaded); every problem in one error.

    Raises
    ------
    InputError
        An unknown kind, level, force kind, colour, column, period or base layer, or a missing
        street (street map) or tile key (Tianditu).
    """
    from gridgov.periods import Period

    if kind not in MAP_KINDS:
        msg = f"unknown map kind {kind!r}; expected one of {', '.join(MAP_KINDS)}"
        raise InputError(msg)
    problems: list[str] = []
    if kind == "street" and not street:
        problems.append("the street map needs a street code (--street)")
    if kind == "consultation" and consultation is None:
        problems.append("the consultation map needs a consultation id (--consultation)")
    if kind in ("command-centre", "coverage") and str(level) not in {lv.value for lv in Level}:
        problems.append(
            f"unknown level {str(level)!r} (--level); expected one of "
            + ", ".join(lv.value for lv in Level)
        )
    if kind == "coverage" and str(force_kind) not in {k.value for k in ForceKind}:
        problems.append(
            f"unknown force kind {str(force_kind)!r} (--kind); expected one of "
            + ", ".join(k.value for k in ForceKind)
        )
    if kind == "command-centre" and colour_by not in ("open_incidents", "workload"):
        problems.append(f"--colour-by must be open_incidents or workload, not {colour_by!r}")
    if kind == "assessment":
        if kpi is not None:
            missing = [c for c in ("street_code", kpi_value) if c not in kpi.columns]
            if missing:
                problems.append(f"the KPI table has no column {', '.join(missing)} (--kpi-value)")
        else:
            if kpi_value not in KPI_KINDS:
                problems.append(
                    f"unknown assessment column {kpi_value!r} (--kpi-value); expected one of "
                    + ", ".join(KPI_KINDS)
                )
            if period is not None:
                try:
                    Period.parse(period)
                except InputError as exc:
                    problems.append(f"--period: {exc}")
    try:
        check_base(base, tile_key)
    except InputError as exc:
        problems.append(f"--base: {exc}")
    if problems:
        raise InputError("; ".join(problems))


def last_complete_month(now: datetime | None = None) -> str:
    """The month before the one ``now`` falls in, in the display time zone (``2026-11``).

    The assessment map shows it by default: the current month is still almost empty.
    """
    when = (now or datetime.now(UTC)).astimezone(ZoneInfo(get_settings().display_tz))
    previous = when.replace(day=1) - timedelta(days=1)
    return f"{previous:%Y-%m}"


def _store_kpis(engine: Engine, period: str | None, now: datetime | None) -> pd.DataFrame:
    """The stored event log assessed by street over ``period`` (default: the last complete
    month)."""
    from gridgov import store
    from gridgov.assessment import assess
    from gridgov.periods import Period

    span = Period.parse(period or last_complete_month(now))
    result = assess(
        store.read_events(engine, until=span.end),
        store.read_incidents(engine),
        store.read_offices(engine),
        store.read_catalog(engine),
        span,
    )
    return result.streets
