"""Reading the stored district back as frames (areas, offices, units, matters, catalogue,
roads), and a summary of what the store holds.

Every function takes an :class:`~sqlalchemy.Engine` from
:func:`gridgov.store.engine.create_engine_from_url`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select

from gridgov.catalog import Catalog, Deadlines, Domain, EventClass, EventMajor, Matter, load_catalog
from gridgov.errors import DataFileError
from gridgov.model import (
    AREA_COLUMNS,
    LEVELS,
    OFFICE_COLUMNS,
    ROAD_LINK_COLUMNS,
    ROAD_NODE_COLUMNS,
    UNIT_COLUMNS,
    ForceKind,
    HandlingLevel,
    Level,
    UnitStatus,
)
from gridgov.store.engine import detect_backend, translate_errors
from gridgov.store.models import (
    AREAS,
    CATALOGS,
    DATASETS,
    MATTERS,
    OFFICES,
    ROAD_LINKS,
    ROAD_NODES,
    SRID,
    UNITS,
)

WGS84 = f"EPSG:{SRID}"
LEVEL_NAMES = [str(level) for level in LEVELS]
UNIT_OUT_COLUMNS = [*UNIT_COLUMNS, "position_time", "position_source", "busy_incident_id"]
#: Columns of the road frames :func:`read_roads` returns (besides geometry).
SPEED_COLUMNS = ("speed_drive_kmh", "speed_bike_kmh", "speed_walk_kmh")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _frame(rows: Sequence[Any], columns: list[str], geometry_column: str) -> gpd.GeoDataFrame:
    df = pd.DataFrame([tuple(r) for r in rows], columns=[*columns, geometry_column])
    geoms = df.pop(geometry_column).tolist()
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=WGS84), crs=WGS84)


def read_stored_areas(engine: Engine, level: Level | str | None = None) -> gpd.GeoDataFrame:
    """Read the stored areas, outermost level first and by code within a level.

    Parameters
    ----------
    engine
        The store.
    level
        Only this level; all levels when None.

    Returns
    -------
    geopandas.GeoDataFrame
        An areas GeoDataFrame (MultiPolygon geometry, EPSG:4326).
    """
    table = AREAS
    stmt = select(*[table.c[c] for c in AREA_COLUMNS], table.c.geometry)
    if level is not None:
        stmt = stmt.where(table.c.level == str(Level(level)))
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    gdf = _frame(rows, list(AREA_COLUMNS), "geometry")
    rank = gdf["level"].map({name: i for i, name in enumerate(LEVEL_NAMES)})
    order = np.lexsort((gdf["code"].to_numpy(), rank.to_numpy()))
    gdf = gdf.iloc[order].reset_index(drop=True)
    gdf["generated"] = gdf["generated"].astype(bool)
    return gdf


def read_offices(engine: Engine) -> gpd.GeoDataFrame:
    """Read the stored offices (``OFFICE_COLUMNS`` + Point geometry), by office id."""
    table = OFFICES
    stmt = select(*[table.c[c] for c in OFFICE_COLUMNS], table.c.position).order_by(
        table.c.office_id
    )
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    gdf = _frame(rows, list(OFFICE_COLUMNS), "geometry")
    gdf["generated"] = gdf["generated"].astype(bool)
    return gdf


def unit_select(
    kind: str | None,
    street_code: str | None,
    available_only: bool,
    with_position: bool,
    unit_id: str | None = None,
) -> Any:
    table = UNITS
    stmt = select(*[table.c[c] for c in UNIT_OUT_COLUMNS], table.c.position)
    if unit_id is not None:
        stmt = stmt.where(table.c.unit_id == str(unit_id))
    if kind is not None:
        stmt = stmt.where(table.c.kind == str(kind))
    if street_code is not None:
        stmt = stmt.where(table.c.street_code == str(street_code))
    if available_only:
        stmt = stmt.where(table.c.status == str(UnitStatus.AVAILABLE), table.c.on_duty.is_(True))
    if with_position:
        stmt = stmt.where(table.c.position.is_not(None))
    return stmt.order_by(table.c.unit_id)


def unit_frame(rows: Sequence[Any], extra: Sequence[str] = ()) -> gpd.GeoDataFrame:
    gdf = _frame(rows, [*UNIT_OUT_COLUMNS, *extra], "geometry")
    for column in ("on_duty", "generated"):
        gdf[column] = gdf[column].astype(bool)
    gdf["position_time"] = pd.to_datetime(gdf["position_time"], utc=True)
    if "distance_m" in gdf.columns:
        gdf["distance_m"] = gdf["distance_m"].astype(float)
    return gdf


def read_units(
    engine: Engine,
    kind: str | None = None,
    street_code: str | None = None,
    *,
    available_only: bool = False,
    unit_id: str | None = None,
) -> gpd.GeoDataFrame:
    """Read stored units by unit id, optionally of one kind and/or commanded by one street,
    or only one unit (``unit_id``).

    Returns
    -------
    geopandas.GeoDataFrame
        ``UNIT_COLUMNS`` + ``position_time`` (UTC) + Point geometry (None when unknown).
    """
    stmt = unit_select(kind, street_code, available_only, with_position=False, unit_id=unit_id)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return unit_frame(rows)


def read_matters(engine: Engine) -> pd.DataFrame:
    """Read the stored matters catalogue, one row per matter, ordered by code."""
    table = MATTERS
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(select(table).order_by(table.c.code)).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])


def read_catalog(engine: Engine) -> Catalog:
    """The matters catalogue the store holds: the one source of truth once one is loaded.

    Dispatch, Open311, reports and simulation read the catalogue here, so a matter loaded with
    ``gridgov load --catalog`` is known with no environment variable set. Only a store holding
    no matters yet (before a load) falls back to the configured file
    (:func:`gridgov.catalog.load_catalog`).

    Returns
    -------
    gridgov.catalog.Catalog
        The stored matters in their file order. Matters stored without their catalogue (bare
        :class:`~gridgov.catalog.Matter` objects, or before revision 0005) come by code, and a
        domain or event class is then named by its code.
    """
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(select(MATTERS)).mappings().all()
        head = connection.execute(select(CATALOGS)).mappings().first()
    if not rows:
        return load_catalog()
    catalog, _ = catalog_from_rows([dict(r) for r in rows], None if head is None else dict(head))
    return catalog


def catalog_from_rows(
    matter_rows: Sequence[Mapping[Any, Any]], head: Mapping[Any, Any] | None
) -> tuple[Catalog, bool]:
    """Rebuild a catalogue from stored (or exported) matter rows and its ``catalogs`` row;
    the flag says whether that row describes these matters (and so was used)."""
    matters = sorted((_matter_from_row(r) for r in matter_rows), key=lambda m: m.code)
    codes = list(head.get("matter_codes") or []) if head else []
    described = head is not None and sorted(codes) == [m.code for m in matters]
    if described:
        by_code = {m.code: m for m in matters}
        matters = [by_code[c] for c in codes]  # the file's order
    # A row stored with other matters does not name these, nor order them.
    head = head if described and head is not None else {}
    domain_names = {str(d["code"]): d for d in head.get("domains") or []}
    major_names = {str(m["code"]): m for m in head.get("event_majors") or []}
    domain_codes = list(dict.fromkeys([*domain_names, *(m.domain for m in matters)]))
    major_codes = list(dict.fromkeys([*major_names, *(m.event_class.major for m in matters)]))
    domains = tuple(Domain(c, *_names(domain_names.get(c), c)) for c in domain_codes)
    majors = tuple(EventMajor(c, *_names(major_names.get(c), c)) for c in major_codes)
    catalog = Catalog(
        version=str(head.get("version", "")),
        source=str(head.get("source", "")),
        event_majors=majors,
        domains=domains,
        matters=tuple(matters),
    )
    return catalog, described


def _names(entry: Mapping[Any, Any] | None, code: str) -> tuple[str, str]:
    """The Chinese and English names of a stored domain or event class (its code if none)."""
    entry = entry or {}
    return str(entry.get("zh", code)), str(entry.get("en", code))


def _matter_from_row(row: Mapping[Any, Any]) -> Matter:
    """Rebuild a catalogue matter from a stored (or exported) row."""
    try:
        event = str(row["event_class"])
        return Matter(
            code=str(row["code"]),
            domain=str(row["domain"]),
            name_zh=str(row["name_zh"]),
            name_en=str(row["name_en"]),
            description=str(row["description"]),
            keywords=tuple(row["keywords"]),
            lead=ForceKind(row["lead_kind"]),
            assist=tuple(ForceKind(k) for k in row["assist_kinds"]),
            priority=int(row["priority"]),
            deadlines=Deadlines(
                acknowledge_min=float(row["acknowledge_min"]),
                arrive_min=float(row["arrive_min"]),
                resolve_h=float(row["resolve_h"]),
            ),
            max_travel_min=float(row["max_travel_min"]),
            level=HandlingLevel(row["handling_level"]),
            event_class=EventClass(event[:2], event[2:], str(row["event_class_name"])),
        )
    except (KeyError, ValueError, TypeError) as exc:
        msg = f"a stored matter row cannot be read back ({exc!r}): {dict(row)}"
        raise DataFileError(msg) from exc


def read_roads(engine: Engine) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Read the stored road network, by node id and link id.

    Returns
    -------
    tuple
        ``(gdf_nodes, gdf_links)`` in EPSG:4326: nodes with ``node_id``, links with
        :data:`ROAD_LINK_COLUMNS` (speeds NaN where the class decides), both empty when no
        roads are loaded. They feed :func:`gridgov.network.build_network` directly.
    """
    nodes, links = ROAD_NODES, ROAD_LINKS
    with translate_errors(engine), engine.connect() as connection:
        node_rows = connection.execute(
            select(nodes.c.node_id, nodes.c.geometry).order_by(nodes.c.node_id)
        ).all()
        link_rows = connection.execute(
            select(*[links.c[c] for c in ROAD_LINK_COLUMNS], links.c.geometry).order_by(
                links.c.link_id
            )
        ).all()
    gdf_nodes = _frame(node_rows, list(ROAD_NODE_COLUMNS), "geometry")
    gdf_links = _frame(link_rows, list(ROAD_LINK_COLUMNS), "geometry")
    gdf_nodes["node_id"] = gdf_nodes["node_id"].astype(np.int64)
    for column in ("link_id", "u", "v"):
        gdf_links[column] = gdf_links[column].astype(np.int64)
    gdf_links["oneway"] = gdf_links["oneway"].astype(bool)
    for column in ("length_m", *SPEED_COLUMNS):
        gdf_links[column] = gdf_links[column].astype(float)
    return gdf_nodes, gdf_links


# --------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------


def summarize(engine: Engine) -> dict[str, Any]:
    """What the store holds, for ``gridgov info``.

    Returns
    -------
    dict
        ``backend``, ``url`` (password hidden), ``areas`` (count per level),
        ``generated_polygons`` and ``official_names`` (per level), ``offices``,
        ``units`` (total), ``units_by_kind``, ``units_by_street``, ``matters``, and
        ``datasets``: the latest load of each kind (name, source, loaded_at ISO UTC, counts).
    """
    areas, units, datasets = AREAS, UNITS, DATASETS
    with translate_errors(engine), engine.connect() as connection:
        per_level: dict[str, int] = dict(
            connection.execute(select(areas.c.level, func.count()).group_by(areas.c.level)).all()
        )
        generated_per_level: dict[str, int] = dict(
            connection.execute(
                select(areas.c.level, func.count())
                .where(areas.c.generated.is_(True))
                .group_by(areas.c.level)
            ).all()
        )
        official_names: dict[str, int] = dict(
            connection.execute(
                select(areas.c.level, func.count())
                .where(areas.c.name_source == "official")
                .group_by(areas.c.level)
            ).all()
        )
        per_kind: dict[str, int] = dict(
            connection.execute(select(units.c.kind, func.count()).group_by(units.c.kind)).all()
        )
        per_street: dict[str, int] = dict(
            connection.execute(
                select(units.c.street_code, func.count()).group_by(units.c.street_code)
            ).all()
        )
        offices = connection.execute(select(func.count()).select_from(OFFICES)).scalar()
        matters = connection.execute(select(func.count()).select_from(MATTERS)).scalar()
        latest = (
            connection.execute(select(datasets).order_by(datasets.c.id.desc())).mappings().all()
        )
    seen: dict[str, dict[str, Any]] = {}
    for row in latest:
        if row["kind"] not in seen:
            seen[row["kind"]] = {
                "name": row["name"],
                "source": row["source"],
                "loaded_at": row["loaded_at"].isoformat(),
                "counts": row["counts"],
            }
    return {
        "backend": detect_backend(engine),
        "url": engine.url.render_as_string(hide_password=True),
        "areas": {level: int(per_level.get(level, 0)) for level in LEVEL_NAMES},
        # Real vs generated, as data/README.md explains: polygons, and names with codes.
        "generated_polygons": {
            level: int(generated_per_level.get(level, 0)) for level in LEVEL_NAMES
        },
        "official_names": {level: int(official_names.get(level, 0)) for level in LEVEL_NAMES},
        "offices": int(offices or 0),
        "units": int(sum(per_kind.values())),
        "units_by_kind": {str(k): int(v) for k, v in sorted(per_kind.items())},
        "units_by_street": {str(k): int(v) for k, v in sorted(per_street.items())},
        "matters": int(matters or 0),
        "datasets": seen,
    }
