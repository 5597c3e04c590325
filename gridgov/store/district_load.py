"""Loading the district: frames checked and turned into rows, stored in one transaction.

Every function takes an :class:`~sqlalchemy.Engine` from
:func:`gridgov.store.engine.create_engine_from_url`. Loads run in one transaction each (all or
nothing) and replace what was there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import MultiPolygon, Polygon
from sqlalchemy import Connection, Engine, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from gridgov.areas import check_areas
from gridgov.catalog import Catalog, Domain, EventMajor, Matter
from gridgov.errors import InputError, StoreError
from gridgov.model import (
    AREA_COLUMNS,
    OFFICE_COLUMNS,
    UNIT_COLUMNS,
)
from gridgov.roads import same_id_type
from gridgov.store.district_read import (
    LEVEL_NAMES,
    SPEED_COLUMNS,
    WGS84,
    read_offices,
    read_stored_areas,
)
from gridgov.store.engine import begin_write, translate_errors
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
    UNITS,
)
from gridgov.units import check_units
from gridgov.workflow import Action, State

# Optional text columns of the road links.
_ROAD_TEXT_COLUMNS = ("road_class", "road_name", "class_source")
# How far (degrees, about 10 cm) a link's geometry may end from its nodes.
_ROAD_END_TOLERANCE = 1e-6
# At most this many problems are listed in one error message.
_MAX_LISTED = 20


# --------------------------------------------------------------------------------------------
# input preparation
# --------------------------------------------------------------------------------------------


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        msg = f"{what} lack the column(s) {', '.join(missing)}"
        raise InputError(msg)


def _as_wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if gdf.crs is None or gdf.crs.equals(WGS84):
        return gdf
    return gdf.to_crs(WGS84)


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
    has_speeds = all(c in gdf_links.columns for c in SPEED_COLUMNS)
    if "road_class" not in gdf_links.columns and not has_speeds:
        msg = (
            "road links need a road_class column or all of "
            f"{', '.join(SPEED_COLUMNS)} to give each mode a speed"
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
    for column in SPEED_COLUMNS:
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
        for name in SPEED_COLUMNS:
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
    return {level: int(counts.get(level, 0)) for level in LEVEL_NAMES}


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
    :func:`~gridgov.store.read_catalog` gives it back to every reader. Bare matters are stored
    in the order given.
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
