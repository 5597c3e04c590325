"""Repository functions: GeoDataFrames in and out of either store.

Every function takes an :class:`~sqlalchemy.Engine` from
:func:`gridgov.store.engine.create_engine_from_url`. Loads run in one transaction each (all or
nothing) and replace what was there. Spatial questions are answered in SQL on PostGIS and in
process on SQLite, with the same results.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import Geod
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import Connection, Engine, delete, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from gridgov.areas import build_locator, check_areas, read_areas
from gridgov.catalog import Catalog, Deadlines, Domain, EventClass, EventMajor, Matter, load_catalog
from gridgov.errors import DataFileError, InputError, OutsideDistrictError, StoreError
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
from gridgov.roads import same_id_type
from gridgov.store.engine import begin_write, detect_backend, translate_errors
from gridgov.store.journal import append_event
from gridgov.store.models import (
    AREAS,
    ASSIGNMENTS,
    CATALOGS,
    DATASETS,
    INCIDENTS,
    MATTERS,
    OFFICES,
    ROAD_LINKS,
    ROAD_NODES,
    SRID,
    UNITS,
)
from gridgov.units import check_units
from gridgov.units import read_offices as read_offices_file
from gridgov.units import read_units as read_units_file
from gridgov.workflow import Action, State

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_WGS84 = f"EPSG:{SRID}"
_GEOD = Geod(ellps="WGS84")
_LEVEL_NAMES = [str(level) for level in LEVELS]
_UNIT_OUT_COLUMNS = [*UNIT_COLUMNS, "position_time", "position_source", "busy_incident_id"]
#: Columns of the road frames :func:`read_roads` returns (besides geometry).
_SPEED_COLUMNS = ("speed_drive_kmh", "speed_bike_kmh", "speed_walk_kmh")
_ROAD_TEXT_COLUMNS = ("road_class", "road_name", "class_source")
# Export layer names of the roads; "nodes"/"links" (the reference roads file) are read too.
_ROAD_LAYERS = ("road_nodes", "road_links")
# How far (degrees, about 10 cm) a link's geometry may end from its nodes.
_ROAD_END_TOLERANCE = 1e-6
# At most this many problems are listed in one error message.
_MAX_LISTED = 20
# List-valued matter columns, kept as JSON text where a file format has no list type.
_MATTER_JSON_COLUMNS = ("keywords", "assist_kinds")
_CATALOG_JSON_COLUMNS = ("event_majors", "domains", "matter_codes")
# --------------------------------------------------------------------------------------------
# input preparation
# --------------------------------------------------------------------------------------------


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        msg = f"{what} lack the column(s) {', '.join(missing)}"
        raise InputError(msg)


def _as_wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if gdf.crs is None or gdf.crs.equals(_WGS84):
        return gdf
    return gdf.to_crs(_WGS84)


def _optional_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text_value = str(value)
    return text_value or None


def _area_records(gdf_areas: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    # name_source is optional: a user's own file rarely says where its names came from.
    _require_columns(gdf_areas, [c for c in AREA_COLUMNS if c != "name_source"], "areas")
    _require_columns(gdf_areas, ["geometry"], "areas")
    if "name_source" not in gdf_areas.columns:
        gdf_areas = gdf_areas.assign(name_source=None)
    gdf = _as_wgs84(gdf_areas)
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    problems = []
    records = []
    for row, geom in zip(gdf.itertuples(index=False), geoms, strict=True):
        code = str(row.code)
        if isinstance(geom, Polygon):
            geom = MultiPolygon([geom])
        if not isinstance(geom, MultiPolygon) or geom.is_empty:
            problems.append(f"{code}: geometry must be a non-empty (Multi)Polygon")
            continue
        minx, miny, maxx, maxy = geom.bounds
        records.append(
            {
                "code": code,
                "name": str(row.name),
                "level": str(row.level),
                "parent_code": _optional_str(row.parent_code),
                "generated": bool(row.generated),
                "name_source": _optional_str(row.name_source),
                "minx": minx,
                "miny": miny,
                "maxx": maxx,
                "maxy": maxy,
                "geometry": geom,
            }
        )
    if problems:
        msg = f"{len(problems)} area(s) cannot be stored:\n  " + "\n  ".join(problems)
        raise InputError(msg)
    return records


def _point_or_none(geom: Any) -> Any:
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type != "Point":
        msg = f"positions must be Points, got {geom.geom_type}"
        raise InputError(msg)
    return geom


def _utc_or_none(value: Any) -> datetime | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is None:
        msg = f"position_time {stamp.isoformat()} has no timezone"
        raise InputError(msg)
    return stamp.to_pydatetime().astimezone(UTC)


def _office_records(gdf_offices: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    _require_columns(gdf_offices, [*OFFICE_COLUMNS, "geometry"], "offices")
    gdf = _as_wgs84(gdf_offices)
    return [
        {
            "office_id": str(row.office_id),
            "name": str(row.name),
            "kind": str(row.kind),
            "department": str(row.department),
            "street_code": str(row.street_code),
            "generated": bool(row.generated),
            "position": _point_or_none(geom),
        }
        for row, geom in zip(
            gdf.itertuples(index=False), np.asarray(gdf.geometry.values), strict=True
        )
    ]


def _unit_records(gdf_units: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    _require_columns(gdf_units, [*UNIT_COLUMNS, "geometry"], "units")
    gdf = _as_wgs84(gdf_units)
    times = gdf["position_time"] if "position_time" in gdf.columns else [None] * len(gdf)
    sources = gdf["position_source"] if "position_source" in gdf.columns else [None] * len(gdf)
    return [
        {
            "unit_id": str(row.unit_id),
            "name": str(row.name),
            "kind": str(row.kind),
            "office_id": _optional_str(row.office_id),
            "department": str(row.department),
            "street_code": str(row.street_code),
            "travel_mode": str(row.travel_mode),
            "status": str(row.status),
            "on_duty": bool(row.on_duty),
            "grid_code": _optional_str(row.grid_code),
            "generated": bool(row.generated),
            "position": _point_or_none(geom),
            "position_time": _utc_or_none(when),
            "position_source": _optional_str(source),
            # A loaded unit is on no incident of this store, whatever its status says.
            "busy_incident_id": None,
        }
        for row, geom, when, source in zip(
            gdf.itertuples(index=False),
            np.asarray(gdf.geometry.values),
            times,
            sources,
            strict=True,
        )
    ]


def _matter_steps(matters: Catalog | Iterable[Matter]) -> _Steps:
    """The load steps that replace the stored matters and, for a whole
    :class:`~gridgov.catalog.Catalog`, what it says beside them (its ``catalogs`` row)."""
    steps: _Steps = [(MATTERS, [_matter_record(m) for m in matters], True)]
    if isinstance(matters, Catalog):
        head = {
            "id": 1,
            "version": matters.version,
            "source": matters.source,
            "event_majors": [_coded(m) for m in matters.event_majors],
            "domains": [_coded(d) for d in matters.domains],
            "matter_codes": list(matters.codes),
        }
        steps.append((CATALOGS, [head], True))
    # Bare matters leave the row alone; it lists its matters, so read_catalog can tell that it
    # no longer describes them.
    return steps


def _coded(item: Domain | EventMajor) -> dict[str, str]:
    return {"code": item.code, "zh": item.zh, "en": item.en}


def _matter_record(matter: Matter) -> dict[str, Any]:
    if not isinstance(matter, Matter):
        msg = f"a matter must be a gridgov.catalog.Matter, got {type(matter).__name__}"
        raise InputError(msg)
    return {
        "code": matter.code,
        "domain": matter.domain,
        "name_zh": matter.name_zh,
        "name_en": matter.name_en,
        "description": matter.description,
        "keywords": list(matter.keywords),
        "lead_kind": str(matter.lead),
        "assist_kinds": [str(kind) for kind in matter.assist],
        "priority": matter.priority,
        "acknowledge_min": matter.deadlines.acknowledge_min,
        "arrive_min": matter.deadlines.arrive_min,
        "resolve_h": matter.deadlines.resolve_h,
        "max_travel_min": matter.max_travel_min,
        "handling_level": str(matter.level),
        "event_class": matter.event_class.code,
        "event_class_name": matter.event_class.name_zh,
    }


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _listed(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "\n  ".join([*shown, *([f"... and {more} more"] if more else [])])


def _integer_ids(values: pd.Series, what: str, problems: list[str]) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    whole = numbers.notna() & np.isfinite(numbers) & (numbers == np.round(numbers))
    if not whole.all():
        bad = values[~whole].head(5).tolist()
        problems.append(f"{what} must be whole numbers; {int((~whole).sum())} are not: {bad}")
        numbers = numbers.where(whole, -1)
    return numbers.to_numpy(dtype=np.int64)


def _road_node_numbers(
    node_ids: pd.Series, u: pd.Series, v: pd.Series, problems: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Node ids as the store keeps them (whole numbers), and the links' ends in the same terms.

    Whole-number ids are kept. Text ids (SUMO's ``J75``, ``cluster_12_34``, prefixed OSM ids)
    have no column to live in: they are numbered 1..n in their sorted order, and link ends
    naming no node get -1 (reported as unknown).
    """
    for what, values in (("node ids", node_ids), ("link ends (u)", u), ("link ends (v)", v)):
        missing = int(values.isna().sum())
        if missing:
            problems.append(f"{what}: {missing} missing")
    ids, starts, ends = same_id_type(node_ids, u, v)
    if ids.dtype != object:
        return ids, starts, ends
    number = {name: i + 1 for i, name in enumerate(sorted({x for x in ids.tolist() if x}))}
    for end, col in (("u", starts), ("v", ends)):
        unknown = sorted({x for x in col.tolist() if x is not None and x not in number})
        if unknown:
            problems.append(f"links name {len(unknown)} unknown {end} node(s): {unknown[:10]}")
    ids, starts, ends = (
        np.array([number.get(x, -1) for x in col.tolist()], dtype=np.int64)
        for col in (ids, starts, ends)
    )
    return ids, starts, ends


def _road_records(
    gdf_nodes: gpd.GeoDataFrame, gdf_links: gpd.GeoDataFrame
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Check a road network (every problem listed at once) and turn it into rows."""
    _require_columns(gdf_nodes, ["node_id", "geometry"], "road nodes")
    _require_columns(gdf_links, ["u", "v", "length_m", "geometry"], "road links")
    has_speeds = all(c in gdf_links.columns for c in _SPEED_COLUMNS)
    if "road_class" not in gdf_links.columns and not has_speeds:
        msg = (
            "road links need a road_class column or all of "
            f"{', '.join(_SPEED_COLUMNS)} to give each mode a speed"
        )
        raise InputError(msg)
    nodes, links = _as_wgs84(gdf_nodes), _as_wgs84(gdf_links)
    problems: list[str] = []

    node_ids, u, v = _road_node_numbers(nodes["node_id"], links["u"], links["v"], problems)
    duplicated = pd.Series(node_ids)[pd.Series(node_ids).duplicated()].unique().tolist()
    if duplicated:
        problems.append(f"duplicate node id(s): {duplicated[:10]}")
    node_geoms = np.asarray(nodes.geometry.values, dtype=object)
    not_points = [
        int(i)
        for i, g in zip(node_ids, node_geoms, strict=True)
        if g is None or g.is_empty or g.geom_type != "Point"
    ]
    if not_points:
        problems.append(f"node(s) without a Point geometry: {not_points[:10]}")

    link_ids = (
        _integer_ids(links["link_id"], "link ids", problems)
        if "link_id" in links.columns
        else np.arange(len(links), dtype=np.int64)
    )
    duplicated = pd.Series(link_ids)[pd.Series(link_ids).duplicated()].unique().tolist()
    if duplicated:
        problems.append(f"duplicate link id(s): {duplicated[:10]}")
    known = set(node_ids.tolist())
    for end, ids in (("u", u), ("v", v)):
        unknown = sorted(set(ids.tolist()) - known - {-1})
        if unknown:
            problems.append(f"links name {len(unknown)} unknown {end} node(s): {unknown[:10]}")
    lengths = pd.to_numeric(links["length_m"], errors="coerce").to_numpy(dtype=float)
    bad_length = ~(np.isfinite(lengths) & (lengths > 0))
    if bad_length.any():
        problems.append(
            f"{int(bad_length.sum())} link(s) without a positive length_m: "
            f"{link_ids[bad_length][:10].tolist()}"
        )
    link_geoms = np.asarray(links.geometry.values, dtype=object)
    is_line = np.array(
        [g is not None and not g.is_empty and g.geom_type == "LineString" for g in link_geoms],
        dtype=bool,
    )
    if not is_line.all():
        problems.append(
            f"{int((~is_line).sum())} link(s) without a LineString geometry: "
            f"{link_ids[~is_line][:10].tolist()}"
        )
    speeds: dict[str, np.ndarray] = {}
    for column in _SPEED_COLUMNS:
        if column not in links.columns:
            continue
        values = pd.to_numeric(links[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isnan(values) & ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            problems.append(f"{column} must be >= 0 km/h; bad on links {link_ids[bad][:10]}")
        speeds[column] = values
    if not problems and is_line.all():
        # The routing layer draws routes along these lines from u to v: they must meet.
        xy = pd.DataFrame(
            {"x": shapely.get_x(node_geoms), "y": shapely.get_y(node_geoms)}, index=node_ids
        )
        coords = [np.asarray(g.coords) for g in link_geoms]
        first = np.array([c[0][:2] for c in coords])
        last = np.array([c[-1][:2] for c in coords])
        off = (np.abs(first - xy.loc[u].to_numpy()).max(axis=1) > _ROAD_END_TOLERANCE) | (
            np.abs(last - xy.loc[v].to_numpy()).max(axis=1) > _ROAD_END_TOLERANCE
        )
        if off.any():
            problems.append(
                f"{int(off.sum())} link geometries do not run from node u to node v: "
                f"links {link_ids[off][:10].tolist()}"
            )
    if problems:
        msg = f"the road network cannot be stored ({len(problems)} problem(s)):\n  " + _listed(
            problems
        )
        raise InputError(msg)

    node_records = [
        {"node_id": int(i), "geometry": g} for i, g in zip(node_ids, node_geoms, strict=True)
    ]

    def values_of(name: str) -> list[Any]:
        return links[name].tolist() if name in links.columns else [None] * len(links)

    oneway = [not _is_missing(flag) and bool(flag) for flag in values_of("oneway")]
    texts = {name: [_optional_str(x) for x in values_of(name)] for name in _ROAD_TEXT_COLUMNS}
    link_records = []
    for i in range(len(links)):
        record: dict[str, Any] = {
            "link_id": int(link_ids[i]),
            "u": int(u[i]),
            "v": int(v[i]),
            "length_m": float(lengths[i]),
            "oneway": oneway[i],
            "geometry": link_geoms[i],
        }
        for name, values in texts.items():
            record[name] = values[i]
        for name in _SPEED_COLUMNS:
            value = speeds[name][i] if name in speeds else math.nan
            record[name] = None if math.isnan(value) else float(value)
        link_records.append(record)
    return node_records, link_records


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _insert(connection: Connection, table: Any, records: list[dict[str, Any]]) -> None:
    if records:
        connection.execute(insert(table), records)


def _log_dataset(
    connection: Connection, kind: str, name: str | None, source: str | None, counts: dict[str, Any]
) -> None:
    connection.execute(
        insert(DATASETS).values(
            name=name or kind,
            kind=kind,
            source=source,
            loaded_at=datetime.now(UTC),
            counts=counts,
        )
    )


def _level_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = pd.Series([r["level"] for r in records], dtype=object).value_counts()
    return {level: int(counts.get(level, 0)) for level in _LEVEL_NAMES}


_Steps = list[tuple[Any, list[dict[str, Any]], bool]]
_Log = tuple[str, str | None, str | None, dict[str, Any]]


def _load(engine: Engine, steps: _Steps, log: _Log) -> None:
    """Apply (table, rows, replace-first) steps and log the dataset, all in ONE transaction."""
    with translate_errors(engine):
        try:
            with begin_write(engine) as connection:
                if any(table is UNITS and replace for table, _, replace in steps):
                    # The units come back with the file's statuses: work in progress on the
                    # old rows ends here, recorded, and its incidents go back to the queue.
                    end_active_assignments(
                        connection,
                        datetime.now(UTC),
                        "units reloaded with a new dataset",
                        requeue_reason="dataset reload removed its unit",
                    )
                for table, records, replace in steps:
                    if replace:
                        connection.execute(delete(table))
                    _insert(connection, table, records)
                _log_dataset(connection, *log)
                if connection.dialect.name == "postgresql":
                    # Fresh statistics, or the planner keeps plans made for empty tables
                    # (seen: a level B-tree ANDed with the GIST index, 5x slower locates).
                    for table in {t.name for t, _, _ in steps}:
                        connection.exec_driver_sql(f"ANALYZE {table}")
        except IntegrityError as exc:
            msg = f"the database rejected the load, nothing was changed: {exc.orig}"
            raise StoreError(msg) from exc


def end_active_assignments(
    connection: Connection,
    now: datetime,
    reason: str,
    where: Any = None,
    *,
    requeue: bool = True,
    requeue_reason: str | None = None,
) -> list[str]:
    """End active assignments (all, or those matching ``where``) inside a caller's transaction.

    Each ends at ``now`` with ``reason`` (never before it began). With ``requeue``, every
    incident left without an active assignment while its units were out working on it
    (dispatched, acknowledged, on scene) goes back to ``registered`` through a ``requeue``
    event (role system, ``requeue_reason`` or ``reason``): its work was interrupted, not
    finished. The units are not touched: callers free or replace them themselves.

    Returns
    -------
    list of str
        The incidents re-queued.
    """
    table = ASSIGNMENTS
    stmt = select(table.c.assignment_id, table.c.incident_id, table.c.assigned_at).where(
        table.c.active.is_(True)
    )
    if where is not None:
        stmt = stmt.where(where)
    rows = connection.execute(stmt).all()
    if not rows:
        return []
    for assignment_id, _, assigned_at in rows:
        connection.execute(
            table.update()
            .where(table.c.assignment_id == assignment_id)
            .values(active=False, released_at=max(now, assigned_at), release_reason=reason)
        )
    if not requeue:
        return []
    touched = sorted({row.incident_id for row in rows})
    still_active = {
        r[0]
        for r in connection.execute(
            select(table.c.incident_id)
            .where(table.c.incident_id.in_(touched), table.c.active.is_(True))
            .distinct()
        )
    }
    working = [str(State.DISPATCHED), str(State.ACKNOWLEDGED), str(State.ON_SCENE)]
    candidates = [i for i in touched if i not in still_active]
    if not candidates:
        return []
    requeued = [
        r[0]
        for r in connection.execute(
            select(INCIDENTS.c.incident_id)
            .where(INCIDENTS.c.incident_id.in_(candidates), INCIDENTS.c.status.in_(working))
            .order_by(INCIDENTS.c.incident_id)
            .with_for_update()
        )
    ]
    for incident_id in requeued:
        append_event(
            connection,
            incident_id,
            Action.REQUEUE,
            at=now,
            clamp=True,
            reason=requeue_reason or reason,
        )
    return requeued


def load_areas(
    engine: Engine,
    gdf_areas: gpd.GeoDataFrame,
    *,
    replace: bool = True,
    validate: bool = True,
    name: str | None = None,
    source: str | None = None,
) -> None:
    """Store an areas GeoDataFrame (all levels), replacing the stored areas by default.

    Offices and units keep pointing at their streets by code, so a replacement must still
    contain every street and grid they reference, or nothing is changed.

    Parameters
    ----------
    engine
        The store.
    gdf_areas
        An areas GeoDataFrame (``AREA_COLUMNS`` + Polygon/MultiPolygon geometry). Polygons are
        stored as one-part MultiPolygons.
    replace
        Delete the stored areas first (in the same transaction).
    validate
        Check the hierarchy with :func:`gridgov.areas.check_areas` first. Only pass False for
        a frame that has just been checked: a broken hierarchy makes the backends disagree.
    name, source
        Recorded in the dataset log.

    Raises
    ------
    AreaValidationError
        If the hierarchy has problems (all of them are listed); nothing is changed.
    InputError
        If columns are missing or a geometry is not a polygon.
    StoreError
        If the database rejects the rows (bad level, dangling parent, duplicate code...).
    """
    if validate:
        check_areas(gdf_areas)
    records = _area_records(gdf_areas)
    _load(
        engine,
        [(AREAS, records, replace)],
        ("areas", name, source, _level_counts(records)),
    )


def load_offices(
    engine: Engine,
    gdf_offices: gpd.GeoDataFrame,
    *,
    replace: bool = True,
    name: str | None = None,
    source: str | None = None,
) -> None:
    """Store an offices GeoDataFrame (``OFFICE_COLUMNS`` + Point geometry), checked first
    against the stored areas (:func:`gridgov.units.check_units`)."""
    check_units(None, read_stored_areas(engine), gdf_offices)
    records = _office_records(gdf_offices)
    _load(
        engine,
        [(OFFICES, records, replace)],
        ("offices", name, source, {"offices": len(records)}),
    )


def load_units(
    engine: Engine,
    gdf_units: gpd.GeoDataFrame,
    *,
    replace: bool = True,
    name: str | None = None,
    source: str | None = None,
) -> None:
    """Store a units GeoDataFrame (``UNIT_COLUMNS`` + Point geometry, optional ``position_time``).

    Empty or missing geometries are stored as an unknown position. The units are checked
    first against the stored areas and offices (:func:`gridgov.units.check_units`).
    """
    check_units(gdf_units, read_stored_areas(engine), read_offices(engine))
    records = _unit_records(gdf_units)
    _load(
        engine,
        [(UNITS, records, replace)],
        ("units", name, source, {"units": len(records)}),
    )


def load_matters(
    engine: Engine,
    matters: Catalog | Iterable[Matter],
    *,
    name: str | None = None,
    source: str | None = None,
) -> None:
    """Replace the stored catalogue with ``matters``.

    A whole :class:`~gridgov.catalog.Catalog` (from :func:`gridgov.catalog.load_catalog`)
    keeps its version, source and the names of its domains and event classes too; from then on
    :func:`read_catalog` gives it back to every reader. Bare matters are stored in the order
    given.
    """
    steps = _matter_steps(matters)
    _load(engine, steps, ("matters", name, source, {"matters": len(steps[0][1])}))


def load_roads(
    engine: Engine,
    gdf_nodes: gpd.GeoDataFrame,
    gdf_links: gpd.GeoDataFrame,
    *,
    name: str | None = None,
    source: str | None = None,
) -> dict[str, int]:
    """Replace the stored road network with ``gdf_nodes`` and ``gdf_links``, atomically.

    Parameters
    ----------
    engine
        The store.
    gdf_nodes
        ``node_id`` (unique; whole numbers, or text, which is numbered 1..n in sorted order
        since the store keeps whole numbers) and Point geometry.
    gdf_links
        Directed links: ``u``, ``v`` (node ids), ``length_m`` (> 0), LineString geometry from
        ``u`` to ``v``; optional ``link_id`` (numbered from 0 when absent), ``road_class``,
        ``road_name``, ``class_source``, ``oneway`` and ``speed_{drive,bike,walk}_kmh``
        (a road class, or all three speeds, is required). The frames of
        :func:`gridgov.roads.read_link_table` and :func:`gridgov.roads.read_osm` fit.
    name, source
        Recorded in the dataset log.

    Returns
    -------
    dict
        ``{"nodes": n, "links": m}`` stored.

    Raises
    ------
    InputError
        A column is missing, or the network is inconsistent (links naming unknown nodes,
        non-positive lengths, duplicate ids, geometries not running from u to v...); every
        problem is listed and nothing is changed.
    """
    node_records, link_records = _road_records(gdf_nodes, gdf_links)
    counts = {"nodes": len(node_records), "links": len(link_records)}
    _load(
        engine,
        [
            (ROAD_LINKS, [], True),
            (ROAD_NODES, node_records, True),
            (ROAD_LINKS, link_records, False),
        ],
        ("roads", name, source, counts),
    )
    return counts


def load_district(
    engine: Engine,
    gdf_areas: gpd.GeoDataFrame,
    gdf_offices: gpd.GeoDataFrame | None = None,
    gdf_units: gpd.GeoDataFrame | None = None,
    matters: Catalog | Iterable[Matter] | None = None,
    *,
    gdf_nodes: gpd.GeoDataFrame | None = None,
    gdf_links: gpd.GeoDataFrame | None = None,
    validate: bool = True,
    name: str | None = None,
    source: str | None = None,
) -> dict[str, int]:
    """Replace a whole dataset (areas, offices, units, roads, and optionally matters) atomically.

    Use this to switch a store to another district: the parts depend on each other, so they
    are swapped in one transaction. Offices, units and roads not given are emptied (dispatch
    then falls back to straight-line travel). The areas, and the offices and units against
    them, are validated first (:func:`load_areas`, :func:`gridgov.units.check_units`), the
    roads like :func:`load_roads`; any problem changes nothing. Active assignments end (the
    units are replaced) and their incidents go back to ``registered`` (a ``requeue`` event); the
    incident, dispatch and event history is kept.

    Parameters
    ----------
    gdf_nodes, gdf_links
        The road network (see :func:`load_roads`); both or neither.

    Returns
    -------
    dict
        What the store held before the swap: ``{"areas": n, "offices": n, "units": n}``, so a
        caller can tell the user what was replaced.
    """
    if (gdf_nodes is None) != (gdf_links is None):
        msg = "roads need both gdf_nodes and gdf_links (or neither)"
        raise InputError(msg)
    if validate:
        check_areas(gdf_areas)
        check_units(gdf_units, gdf_areas, gdf_offices)
    area_records = _area_records(gdf_areas)
    office_records = [] if gdf_offices is None else _office_records(gdf_offices)
    unit_records = [] if gdf_units is None else _unit_records(gdf_units)
    node_records: list[dict[str, Any]] = []
    link_records: list[dict[str, Any]] = []
    if gdf_nodes is not None and gdf_links is not None:
        node_records, link_records = _road_records(gdf_nodes, gdf_links)
    # Dependants go first so the deletes never leave a dangling reference mid-transaction.
    steps: _Steps = [
        (UNITS, [], True),
        (OFFICES, [], True),
        (AREAS, area_records, True),
        (OFFICES, office_records, False),
        (UNITS, unit_records, False),
        (ROAD_LINKS, [], True),
        (ROAD_NODES, node_records, True),
        (ROAD_LINKS, link_records, False),
    ]
    counts: dict[str, Any] = {
        **_level_counts(area_records),
        "offices": len(office_records),
        "units": len(unit_records),
        "road_nodes": len(node_records),
        "road_links": len(link_records),
    }
    if matters is not None:
        matter_steps = _matter_steps(matters)
        steps.extend(matter_steps)
        counts["matters"] = len(matter_steps[0][1])
    with translate_errors(engine), engine.connect() as connection:
        before = {
            table.name: int(
                connection.execute(select(func.count()).select_from(table)).scalar_one()
            )
            for table in (AREAS, OFFICES, UNITS)
        }
    _load(engine, steps, ("files", name, source, counts))
    return before


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def _frame(rows: Sequence[Any], columns: list[str], geometry_column: str) -> gpd.GeoDataFrame:
    df = pd.DataFrame([tuple(r) for r in rows], columns=[*columns, geometry_column])
    geoms = df.pop(geometry_column).tolist()
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries(geoms, crs=_WGS84), crs=_WGS84)


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
    rank = gdf["level"].map({name: i for i, name in enumerate(_LEVEL_NAMES)})
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


def _unit_select(
    kind: str | None,
    street_code: str | None,
    available_only: bool,
    with_position: bool,
    unit_id: str | None = None,
) -> Any:
    table = UNITS
    stmt = select(*[table.c[c] for c in _UNIT_OUT_COLUMNS], table.c.position)
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


def _unit_frame(rows: Sequence[Any], extra: Sequence[str] = ()) -> gpd.GeoDataFrame:
    gdf = _frame(rows, [*_UNIT_OUT_COLUMNS, *extra], "geometry")
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
    stmt = _unit_select(kind, street_code, available_only, with_position=False, unit_id=unit_id)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return _unit_frame(rows)


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
    catalog, _ = _catalog_from_rows([dict(r) for r in rows], None if head is None else dict(head))
    return catalog


def _catalog_from_rows(
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
    for column in ("length_m", *_SPEED_COLUMNS):
        gdf_links[column] = gdf_links[column].astype(float)
    return gdf_nodes, gdf_links


# --------------------------------------------------------------------------------------------
# locating points
# --------------------------------------------------------------------------------------------

_LOCATOR_CACHE: weakref.WeakKeyDictionary[Engine, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def _areas_version(connection: Connection) -> Any:
    table = DATASETS
    stmt = select(func.max(table.c.id)).where(table.c.kind.in_(["areas", "files"]))
    return connection.execute(stmt).scalar()


def _sqlite_locator(engine: Engine) -> Any:
    with translate_errors(engine), engine.connect() as connection:
        version = _areas_version(connection)
    cached = _LOCATOR_CACHE.get(engine)
    if cached is not None and cached[0] == version:
        return cached[1]
    locator = build_locator(read_stored_areas(engine))
    _LOCATOR_CACHE[engine] = (version, locator)
    return locator


# Above this many points, a temporary point table with its own GIST index, scanned once per
# polygon, beats one index probe per point by 5-10x (measured on 10k points, 11k areas).
_PG_TEMP_TABLE_POINTS = 1000

_PG_POINTS_CTE = """
WITH pts AS (
    SELECT t.i, ST_SetSRID(ST_MakePoint(t.x, t.y), 4326) AS g
    FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS t(x, y, i)
), hit AS (
    -- closure semantics (boundary included); the smallest code wins on a shared edge
    SELECT DISTINCT ON (p.i) p.i, a.code
    FROM pts p JOIN areas a ON a.level = :finest AND ST_Intersects(a.geometry, p.g)
    ORDER BY p.i, a.code
)
"""
_PG_POINTS_TABLE = """
CREATE TEMPORARY TABLE gridgov_points ON COMMIT DROP AS
SELECT t.i, ST_SetSRID(ST_MakePoint(t.x, t.y), 4326) AS g
FROM unnest(CAST(:xs AS float8[]), CAST(:ys AS float8[])) WITH ORDINALITY AS t(x, y, i)
"""
_PG_TABLE_CTE = """
WITH hit AS (
    -- LATERAL pins the plan to "each polygon probes the point index"; left to itself the
    -- planner probes the area index once per point, which is several times slower.
    SELECT DISTINCT ON (p.i) p.i, a.code
    FROM areas a
    CROSS JOIN LATERAL (
        SELECT q.i FROM gridgov_points q WHERE ST_Intersects(a.geometry, q.g)
    ) p
    WHERE a.level = :finest
    ORDER BY p.i, a.code
)
"""
_PG_PARENTS = """
SELECT h.i, a0.code, a0.level, a1.code, a1.level, a2.code, a2.level,
       a3.code, a3.level, a4.code, a4.level
FROM hit h
JOIN areas a0 ON a0.code = h.code
LEFT JOIN areas a1 ON a1.code = a0.parent_code
LEFT JOIN areas a2 ON a2.code = a1.parent_code
LEFT JOIN areas a3 ON a3.code = a2.parent_code
LEFT JOIN areas a4 ON a4.code = a3.parent_code
"""


def _pg_locate_many(engine: Engine, lon: np.ndarray, lat: np.ndarray) -> pd.DataFrame:
    columns = {name: np.full(len(lon), None, dtype=object) for name in _LEVEL_NAMES}
    finite = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat))
    points = {"xs": lon[finite].tolist(), "ys": lat[finite].tolist()}
    rows: Sequence[Any] = []
    with translate_errors(engine), engine.begin() as connection:
        levels = {r[0] for r in connection.execute(select(AREAS.c.level).distinct())}
        if levels and finite.size:
            finest = max(levels, key=_LEVEL_NAMES.index)
            # JIT compilation costs more than it saves on these short index-driven queries.
            connection.exec_driver_sql("SET LOCAL jit = off")
            if finite.size < _PG_TEMP_TABLE_POINTS:
                sql = _PG_POINTS_CTE + _PG_PARENTS
                rows = connection.execute(text(sql), {**points, "finest": finest}).all()
            else:
                connection.execute(text(_PG_POINTS_TABLE), points)
                connection.exec_driver_sql("CREATE INDEX ON gridgov_points USING gist (g)")
                connection.exec_driver_sql("ANALYZE gridgov_points")
                sql = _PG_TABLE_CTE + _PG_PARENTS
                rows = connection.execute(text(sql), {"finest": finest}).all()
    for row in rows:
        position = finite[int(row[0]) - 1]  # ORDINALITY counts from 1
        for code, level in zip(row[1::2], row[2::2], strict=True):
            if code is not None:
                columns[level][position] = code
    return pd.DataFrame({name: pd.Series(columns[name], dtype=object) for name in _LEVEL_NAMES})


def locate_many(engine: Engine, lon: ArrayLike, lat: ArrayLike) -> pd.DataFrame:
    """Locate WGS84 points in the stored hierarchy.

    A point on an edge shared by several areas belongs to the one with the smallest code.

    Parameters
    ----------
    engine
        The store.
    lon, lat
        Coordinates in WGS84 degrees, equal lengths.

    Returns
    -------
    pandas.DataFrame
        One row per point (same order) and one column per level name holding a code, or None
        where the point lies outside that level.
    """
    lon_arr = np.atleast_1d(np.asarray(lon, dtype=float))
    lat_arr = np.atleast_1d(np.asarray(lat, dtype=float))
    if lon_arr.shape != lat_arr.shape or lon_arr.ndim != 1:
        msg = f"lon and lat must be 1-d and equally long, got {lon_arr.shape} and {lat_arr.shape}"
        raise InputError(msg)
    with translate_errors(engine), engine.connect() as connection:
        if connection.execute(select(AREAS.c.code).limit(1)).first() is None:
            msg = "the store holds no areas; load some first (`gridgov load`)"
            raise StoreError(msg)
    if detect_backend(engine) == "postgresql":
        return _pg_locate_many(engine, lon_arr, lat_arr)
    located = _sqlite_locator(engine).locate(lon_arr, lat_arr)
    result = pd.DataFrame(located).reset_index(drop=True).reindex(columns=_LEVEL_NAMES)
    return result.astype(object).where(result.notna(), None)


# --------------------------------------------------------------------------------------------
# units near a point
# --------------------------------------------------------------------------------------------


def _check_point(lon: float, lat: float) -> None:
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        msg = f"({lon}, {lat}) is not a WGS84 longitude/latitude"
        raise InputError(msg)


def _geodesic_m(gdf: gpd.GeoDataFrame, lon: float, lat: float) -> np.ndarray:
    if len(gdf) == 0:
        return np.empty(0)
    xs = shapely.get_x(gdf.geometry.values)
    ys = shapely.get_y(gdf.geometry.values)
    # Geodesics on the WGS84 ellipsoid: the same distance PostGIS gives for geography.
    _, _, dist = _GEOD.inv(np.full(len(xs), lon), np.full(len(ys), lat), xs, ys)
    return np.asarray(dist, dtype=float)


def _sorted_by_distance(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    order = np.lexsort((gdf["unit_id"].to_numpy(), gdf["distance_m"].to_numpy()))
    return gdf.iloc[order].reset_index(drop=True)


def _pg_envelope(lon: float, lat: float, radius_m: float) -> tuple[float, ...] | None:
    """A lon/lat box surely containing every point within ``radius_m`` (None: no useful box)."""
    # A degree of latitude is at least 110,574 m and a degree of longitude at least
    # 111,320 m * cos(lat) on the ellipsoid; a 1 % margin absorbs the approximations.
    dlat = radius_m / 110_574.0 * 1.01 + 1e-9
    far_lat = abs(lat) + dlat
    if far_lat >= 89.0:
        return None
    dlon = radius_m / (111_320.0 * math.cos(math.radians(far_lat))) * 1.01 + 1e-9
    if dlon >= 180.0:
        return None
    return (lon - dlon, lat - dlat, lon + dlon, lat + dlat)


def _pg_units_within(
    connection: Connection,
    lon: float,
    lat: float,
    radius_m: float,
    kind: str | None,
    available_only: bool,
    limit: int | None,
) -> gpd.GeoDataFrame:
    table = UNITS
    point = func.ST_SetSRID(func.ST_MakePoint(lon, lat), SRID)
    geography = func.Geography
    distance = func.ST_Distance(geography(table.c.position), geography(point)).label("distance_m")
    stmt = (
        select(*[table.c[c] for c in _UNIT_OUT_COLUMNS], distance, table.c.position)
        .where(table.c.position.is_not(None))
        .where(func.ST_DWithin(geography(table.c.position), geography(point), radius_m))
        .order_by(text("distance_m"), table.c.unit_id)
    )
    box = _pg_envelope(lon, lat, radius_m)
    if box is not None:
        # Lets the planner use the GIST index; the geography test then decides exactly.
        stmt = stmt.where(table.c.position.op("&&")(func.ST_MakeEnvelope(*box, SRID)))
    if kind is not None:
        stmt = stmt.where(table.c.kind == str(kind))
    if available_only:
        stmt = stmt.where(table.c.status == str(UnitStatus.AVAILABLE), table.c.on_duty.is_(True))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = connection.execute(stmt).all()
    return _unit_frame(rows, extra=["distance_m"])


def units_within(
    engine: Engine,
    lon: float,
    lat: float,
    radius_m: float,
    kind: str | None = None,
    *,
    available_only: bool = False,
) -> gpd.GeoDataFrame:
    """Units whose position lies within ``radius_m`` metres (geodesic) of a WGS84 point.

    Returns
    -------
    geopandas.GeoDataFrame
        The units with a ``distance_m`` column, nearest first, ties by unit id.
    """
    _check_point(lon, lat)
    if not (math.isfinite(radius_m) and radius_m >= 0):
        msg = f"radius must be a non-negative number of metres, got {radius_m}"
        raise InputError(msg)
    if detect_backend(engine) == "postgresql":
        with translate_errors(engine), engine.connect() as connection:
            return _pg_units_within(connection, lon, lat, radius_m, kind, available_only, None)
    gdf = _read_positioned_units(engine, kind, available_only)
    gdf["distance_m"] = _geodesic_m(gdf, lon, lat)
    gdf = gdf[gdf["distance_m"] <= radius_m]
    return _sorted_by_distance(_reorder(gdf))


def _read_positioned_units(
    engine: Engine, kind: str | None, available_only: bool
) -> gpd.GeoDataFrame:
    stmt = _unit_select(kind, None, available_only, with_position=True)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return _unit_frame(rows)


def _reorder(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    return gdf[[*_UNIT_OUT_COLUMNS, "distance_m", "geometry"]]


def nearest_units(
    engine: Engine,
    lon: float,
    lat: float,
    k: int = 5,
    kind: str | None = None,
    available_only: bool = False,
) -> gpd.GeoDataFrame:
    """The ``k`` units nearest to a WGS84 point by straight line (geodesic metres).

    Parameters
    ----------
    engine
        The store.
    lon, lat
        The point, WGS84 degrees.
    k
        How many units at most.
    kind
        Only units of this force kind.
    available_only
        Only units that are available and on duty.

    Returns
    -------
    geopandas.GeoDataFrame
        Up to ``k`` units with ``distance_m``, nearest first; equal distances by unit id.
    """
    _check_point(lon, lat)
    if k <= 0:
        msg = f"k must be positive, got {k}"
        raise InputError(msg)
    if detect_backend(engine) != "postgresql":
        gdf = _read_positioned_units(engine, kind, available_only)
        gdf["distance_m"] = _geodesic_m(gdf, lon, lat)
        return _sorted_by_distance(_reorder(gdf)).head(k).reset_index(drop=True)
    with translate_errors(engine), engine.connect() as connection:
        radius = _pg_knn_radius(connection, lon, lat, k, kind, available_only)
        if radius is None:
            radius = math.inf
        # The k planar-nearest units all lie within `radius`, so the true k nearest do too.
        return _pg_units_within(
            connection, lon, lat, min(radius * (1 + 1e-9) + 1e-6, 4.1e7), kind, available_only, k
        )


def _pg_knn_radius(
    connection: Connection,
    lon: float,
    lat: float,
    k: int,
    kind: str | None,
    available_only: bool,
) -> float | None:
    """The largest geodesic distance among the k nearest units by the index's planar KNN."""
    table = UNITS
    point = func.ST_SetSRID(func.ST_MakePoint(lon, lat), SRID)
    knn = (
        select(table.c.position)
        .where(table.c.position.is_not(None))
        .order_by(table.c.position.op("<->")(point))
        .limit(k)
    )
    if kind is not None:
        knn = knn.where(table.c.kind == str(kind))
    if available_only:
        knn = knn.where(table.c.status == str(UnitStatus.AVAILABLE), table.c.on_duty.is_(True))
    sub = knn.subquery()
    stmt = select(
        func.max(func.ST_Distance(func.Geography(sub.c.position), func.Geography(point))),
        func.count(),
    )
    radius, found = connection.execute(stmt).one()
    if found < k:
        return None
    return float(radius)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def export_geopackage(engine: Engine, path: str | Path) -> Path:
    """Write the stored dataset to a GeoPackage: layers ``areas``, ``offices``, ``units``,
    ``matters`` (the last without geometry), and ``road_nodes`` / ``road_links`` when roads
    are loaded. Empty parts are left out. Incidents and dispatch history are not exported.

    The file is written beside ``path`` and moved over it only once complete, so a failure
    never leaves a half-written file nor destroys the one already there.

    Returns
    -------
    pathlib.Path
        The file written.

    Raises
    ------
    InputError
        ``path`` does not end in ``.gpkg``.
    StoreError
        The store holds no areas.
    DataFileError
        The file cannot be written (the message names it).
    """
    target = Path(path)
    if target.suffix.lower() != ".gpkg":
        msg = f"{target}: an export is a GeoPackage; give a path ending in .gpkg"
        raise InputError(msg)
    gdf_areas = read_stored_areas(engine)
    if gdf_areas.empty:
        msg = "the store holds no areas; nothing to export"
        raise StoreError(msg)
    partial = target.with_name(f".{target.name}.partial.gpkg")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        _write_geopackage(engine, gdf_areas, partial)
        partial.replace(target)
    except Exception as exc:  # GDAL's errors share no base class but Exception
        partial.unlink(missing_ok=True)
        msg = f"cannot write {target}: {exc}"
        raise DataFileError(msg) from exc
    return target


def _write_geopackage(engine: Engine, gdf_areas: gpd.GeoDataFrame, target: Path) -> None:
    pyogrio.write_dataframe(gdf_areas, target, layer="areas", promote_to_multi=True)
    gdf_offices = read_offices(engine)
    if not gdf_offices.empty:
        pyogrio.write_dataframe(gdf_offices, target, layer="offices", append=True)
    # What a unit is busy on means nothing without this store's incidents.
    gdf_units = read_units(engine).drop(columns="busy_incident_id")
    if not gdf_units.empty:
        gdf_units = gdf_units.copy()
        # ISO text survives every GDAL version; GeoPackage datetimes lose the zone on some.
        gdf_units["position_time"] = gdf_units["position_time"].map(
            lambda t: None if pd.isna(t) else t.isoformat()
        )
        pyogrio.write_dataframe(
            gdf_units, target, layer="units", geometry_type="Point", append=True
        )
    df_matters = read_matters(engine)
    if not df_matters.empty:
        df_matters = df_matters.copy()
        for column in _MATTER_JSON_COLUMNS:
            df_matters[column] = df_matters[column].map(lambda v: json.dumps(v, ensure_ascii=False))
        pyogrio.write_dataframe(df_matters, target, layer="matters", append=True)
        with translate_errors(engine), engine.connect() as connection:
            head = connection.execute(select(CATALOGS)).mappings().first()
        if head is not None:
            row: dict[str, Any] = {k: head[k] for k in ("version", "source")}
            row.update({k: json.dumps(head[k], ensure_ascii=False) for k in _CATALOG_JSON_COLUMNS})
            pyogrio.write_dataframe(pd.DataFrame([row]), target, layer="catalog", append=True)
    gdf_nodes, gdf_links = read_roads(engine)
    if not gdf_links.empty:
        pyogrio.write_dataframe(
            gdf_nodes, target, layer="road_nodes", geometry_type="Point", append=True
        )
        pyogrio.write_dataframe(
            gdf_links, target, layer="road_links", geometry_type="LineString", append=True
        )


def _read_roads_layers(
    source: Path, layers: set[str]
) -> tuple[gpd.GeoDataFrame | None, gpd.GeoDataFrame | None]:
    """The road layers of an export (``road_nodes``/``road_links``, or ``nodes``/``links``)."""
    for node_layer, link_layer in (_ROAD_LAYERS, ("nodes", "links")):
        if {node_layer, link_layer} <= layers:
            try:
                gdf_nodes = pyogrio.read_dataframe(source, layer=node_layer)
                gdf_links = pyogrio.read_dataframe(source, layer=link_layer)
            except Exception as exc:  # GDAL raises several types for unreadable layers
                msg = f"cannot read the road layers of {source}: {exc}"
                raise DataFileError(msg) from exc
            return gdf_nodes, gdf_links
    return None, None


def _with_position_sources(source: Path, gdf_units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Put back the ``position_source`` the shared units reader leaves out."""
    fields = pyogrio.read_info(source, layer="units")["fields"]
    if "position_source" not in list(fields):
        return gdf_units
    raw = pyogrio.read_dataframe(
        source, layer="units", columns=["unit_id", "position_source"], read_geometry=False
    )
    by_unit = dict(zip(raw["unit_id"].astype(str), raw["position_source"], strict=True))
    return gdf_units.assign(position_source=gdf_units["unit_id"].map(by_unit))


def load_files(engine: Engine, path: str | Path, *, name: str | None = None) -> dict[str, int]:
    """Load a GeoPackage written by :func:`export_geopackage` into the store, replacing the
    stored dataset in one transaction (validated like :func:`load_district`). Road layers
    (``road_nodes``/``road_links``, or ``nodes``/``links`` as in the reference roads file) are
    loaded with it; without them the stored roads are emptied.

    Its layers are read by the same readers as a user's own files (:mod:`gridgov.io`), so codes
    keep every digit.

    Returns
    -------
    dict
        Rows loaded per part (``areas``, ``offices``, ``units``, ``matters``, and
        ``road_nodes``/``road_links`` when the file has roads).

    Raises
    ------
    DataFileError
        If the file is missing, unreadable, or has no ``areas`` layer.
    """
    source = Path(path)
    layers = _layers_of(source)
    if "areas" not in layers:
        msg = f"{source} has no 'areas' layer (found: {', '.join(sorted(layers)) or 'none'})"
        raise DataFileError(msg)
    gdf_areas = read_areas(source, layer="areas")
    gdf_offices = read_offices_file(source) if "offices" in layers else None
    gdf_units = read_units_file(source) if "units" in layers else None
    if gdf_units is not None:
        gdf_units = _with_position_sources(source, gdf_units)
    gdf_nodes, gdf_links = _read_roads_layers(source, layers)
    matters: Catalog | list[Matter] | None = None
    if "matters" in layers:
        df_matters = _json_layer(source, "matters", _MATTER_JSON_COLUMNS)
        head = None
        if "catalog" in layers:
            frame = _json_layer(source, "catalog", _CATALOG_JSON_COLUMNS)
            head = frame.to_dict(orient="records")[0]
        catalog, described = _catalog_from_rows(df_matters.to_dict(orient="records"), head)
        # Without its catalog layer (an older export) the domain names are unknown: store the
        # matters alone rather than names made up from codes.
        matters = catalog if described else list(catalog.matters)
    load_district(
        engine,
        gdf_areas,
        gdf_offices,
        gdf_units,
        matters,
        gdf_nodes=gdf_nodes,
        gdf_links=gdf_links,
        name=name or source.stem,
        source=str(source),
    )
    counts = {
        "areas": len(gdf_areas),
        "offices": 0 if gdf_offices is None else len(gdf_offices),
        "units": 0 if gdf_units is None else len(gdf_units),
        "matters": 0 if matters is None else len(matters),
    }
    if gdf_nodes is not None and gdf_links is not None:
        counts.update(road_nodes=len(gdf_nodes), road_links=len(gdf_links))
    return counts


def _json_layer(source: Path, layer: str, json_columns: Sequence[str]) -> pd.DataFrame:
    """An attribute-only layer of an export, its JSON text columns parsed."""
    frame = pd.DataFrame(pyogrio.read_dataframe(source, layer=layer))
    frame = frame.drop(columns="geometry", errors="ignore")
    for column in json_columns:
        if column in frame.columns:
            frame[column] = frame[column].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    return frame


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a GeoPackage holding a whole district as :func:`export_geopackage`
    writes it (an ``areas`` layer with ``offices`` or ``units`` beside it)."""
    source = Path(path)
    if source.suffix.lower() != ".gpkg" or not source.is_file():
        return False
    layers = _layers_of(source)
    return "areas" in layers and bool({"offices", "units"} & layers)


def _layers_of(source: Path) -> set[str]:
    try:
        return {str(row[0]) for row in pyogrio.list_layers(source)}
    except Exception as exc:  # GDAL raises several types for unreadable files
        msg = f"cannot read {source}: {exc}"
        raise DataFileError(msg) from exc


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
        "areas": {level: int(per_level.get(level, 0)) for level in _LEVEL_NAMES},
        # Real vs generated, as data/README.md explains: polygons, and names with codes.
        "generated_polygons": {
            level: int(generated_per_level.get(level, 0)) for level in _LEVEL_NAMES
        },
        "official_names": {level: int(official_names.get(level, 0)) for level in _LEVEL_NAMES},
        "offices": int(offices or 0),
        "units": int(sum(per_kind.values())),
        "units_by_kind": {str(k): int(v) for k, v in sorted(per_kind.items())},
        "units_by_street": {str(k): int(v) for k, v in sorted(per_street.items())},
        "matters": int(matters or 0),
        "datasets": seen,
    }


def locate_point(engine: Engine, lon: float, lat: float) -> dict[str, dict[str, Any] | None]:
    """Locate one WGS84 point and name it, level by level.

    Returns
    -------
    dict
        Level name → ``{"code", "name", "generated", "name_source"}`` (None where the level
        is not loaded), so a user always sees what is real and what is generated.

    Raises
    ------
    OutsideDistrictError
        If the point lies outside every loaded area.
    """
    row = locate_many(engine, [lon], [lat]).iloc[0]
    codes: dict[str, str | None] = {name: row[name] for name in _LEVEL_NAMES}
    found = [code for code in codes.values() if code is not None]
    if not found:
        raise OutsideDistrictError(lon, lat)
    with translate_errors(engine), engine.connect() as connection:
        stmt = select(AREAS.c.code, AREAS.c.name, AREAS.c.generated, AREAS.c.name_source)
        rows = connection.execute(stmt.where(AREAS.c.code.in_(found))).mappings().all()
        described = {row["code"]: dict(row) for row in rows}
    return {level: None if code is None else described[code] for level, code in codes.items()}
