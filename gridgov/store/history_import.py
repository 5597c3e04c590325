"""History imports: a finished history (e.g. a simulated month), its incidents and their event
logs, checked whole and stored in one transaction."""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from gridgov.errors import (
    InputError,
    InvalidTransitionError,
    StoreError,
)
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.event_log import _MAX_LISTED
from gridgov.store.journal import (
    insert_events,
)
from gridgov.store.models import (
    INCIDENTS,
)
from gridgov.store.reporter_rows import insert_reporter
from gridgov.workflow import (
    Event,
    State,
    events_from_frame,
    replay,
)

_INCIDENT_REQUIRED = ("incident_id", "matter_code", "reported_at")
_INCIDENT_OPTIONAL = (
    "priority",
    "street_code",
    "community_code",
    "grid_code",
    "microgrid_code",
    "source",
    "reporter",
    "description",
    "created_at",
)


def _listed(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _points(incidents_df: pd.DataFrame, problems: list[str]) -> list[Any]:
    if isinstance(incidents_df, gpd.GeoDataFrame) and "geometry" in incidents_df.columns:
        gdf = incidents_df
        if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
            gdf = gdf.to_crs("EPSG:4326")
        geoms = list(gdf.geometry)
    elif {"lon", "lat"} <= set(incidents_df.columns):
        geoms = list(
            shapely.points(
                incidents_df["lon"].to_numpy(dtype=float), incidents_df["lat"].to_numpy(dtype=float)
            )
        )
    else:
        problems.append("incidents need a point geometry (GeoDataFrame) or lon/lat columns")
        return []
    ids = incidents_df["incident_id"].tolist()
    for incident_id, geom in zip(ids, geoms, strict=True):
        if geom is None or geom.is_empty or geom.geom_type != "Point":
            problems.append(f"incident {incident_id}: no point geometry")
    return geoms


def _none(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def import_history(
    engine: Engine, incidents_df: pd.DataFrame, events_df: pd.DataFrame
) -> dict[str, int]:
    """Store a finished history (e.g. a simulated month): its incidents and their event logs.

    Everything is checked first and every problem listed in one error: columns, duplicate or
    already stored ids, each incident's log replayed with :func:`gridgov.workflow.replay`, the
    incidents' ``status`` (when given) equal to their log's final state, events of unknown
    incidents, incidents without events, and ``duplicate_of`` naming an unknown incident. Then
    all rows are inserted in one transaction; nothing is written when anything is wrong.

    Parameters
    ----------
    engine
        The store.
    incidents_df
        ``incident_id``, ``matter_code``, ``reported_at`` (aware) and a point: a GeoDataFrame's
        geometry or ``lon``/``lat`` (WGS84); optional ``priority``, ``status``, ``street_code``,
        ``community_code``, ``grid_code``, ``microgrid_code``, ``duplicate_of``, ``source``,
        ``reporter`` (a contact: stored apart, :mod:`gridgov.store.reporter_rows`),
        ``description``, ``created_at``.
    events_df
        :data:`gridgov.workflow.EVENT_COLUMNS` (``at`` timezone-aware).

    Returns
    -------
    dict
        ``{"incidents": n, "events": m}`` stored.

    Raises
    ------
    InputError
        Listing every problem found; nothing was written.
    """
    problems: list[str] = []
    missing = [c for c in _INCIDENT_REQUIRED if c not in incidents_df.columns]
    if missing:
        msg = f"cannot import the history: incidents lack column(s) {', '.join(missing)}"
        raise InputError(msg)
    try:
        events = events_from_frame(events_df)
    except InputError as exc:
        msg = f"cannot import the history: {exc}"
        raise InputError(msg) from exc
    ids = [str(i) for i in incidents_df["incident_id"]]
    seen: set[str] = set()
    for incident_id in ids:
        if incident_id in seen:
            problems.append(f"incident {incident_id}: listed twice")
        seen.add(incident_id)
    logs: dict[str, list[Event]] = {}
    for event in events:
        logs.setdefault(event.incident_id, []).append(event)
    unknown = sorted(set(logs) - seen)
    if unknown:
        problems.append(f"events of unknown incident(s): {', '.join(unknown[:_MAX_LISTED])}")
    states: dict[str, State] = {}
    for incident_id in ids:
        log = logs.get(incident_id)
        if not log:
            problems.append(f"incident {incident_id}: no events")
            continue
        try:
            states[incident_id] = replay(log)
        except InvalidTransitionError as exc:
            problems.append(str(exc))
    if "status" in incidents_df.columns:
        for incident_id, status in zip(ids, incidents_df["status"], strict=True):
            state = states.get(incident_id)
            if state is not None and _none(status) is not None and str(status) != str(state):
                problems.append(
                    f"incident {incident_id}: status {status} but its events end in {state}"
                )
    reported = pd.to_datetime(incidents_df["reported_at"])
    if getattr(reported.dt, "tz", None) is None:
        problems.append("incidents' reported_at holds naive times; give timezone-aware times")
    geoms = _points(incidents_df, problems)
    duplicate_of = (
        [_none(v) for v in incidents_df["duplicate_of"]]
        if "duplicate_of" in incidents_df.columns
        else [None] * len(ids)
    )
    with translate_errors(engine), begin_write(engine) as connection:
        stored = _stored_ids(connection, ids + [d for d in duplicate_of if d is not None])
        clash = sorted(seen & stored)
        if clash:
            problems.append(f"incident(s) already stored: {', '.join(clash[:_MAX_LISTED])}")
        for incident_id, master in zip(ids, duplicate_of, strict=True):
            if master is not None and str(master) not in seen | stored:
                problems.append(f"incident {incident_id}: duplicate_of {master} is unknown")
        if problems:
            msg = f"cannot import the history ({len(problems)} problem(s)): {_listed(problems)}"
            raise InputError(msg)
        rows = _incident_rows(incidents_df, ids, geoms, reported, states, logs)
        try:
            for row in rows:
                # A contact goes to its own erasable row; the incident keeps the opaque id.
                contact = row.pop("reporter")
                row["reporter_id"] = (
                    None
                    if contact is None
                    else insert_reporter(connection, contact, row["created_at"])
                )
            connection.execute(insert(INCIDENTS), rows)
            links = [{"i": i, "m": str(m)} for i, m in zip(ids, duplicate_of, strict=True) if m]
            if links:
                # Linked after every row exists: duplicates may come before their incident.
                for link in links:
                    connection.execute(
                        update(INCIDENTS)
                        .where(INCIDENTS.c.incident_id == link["i"])
                        .values(duplicate_of=link["m"])
                    )
            insert_events(connection, events)
        except IntegrityError as exc:
            msg = f"the database rejected the history, nothing was imported: {exc.orig}"
            raise StoreError(msg) from exc
    return {"incidents": len(rows), "events": len(events)}


def _stored_ids(connection: Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    unique = sorted(set(ids))
    for start in range(0, len(unique), 1000):
        chunk = unique[start : start + 1000]
        found.update(
            r[0]
            for r in connection.execute(
                select(INCIDENTS.c.incident_id).where(INCIDENTS.c.incident_id.in_(chunk))
            )
        )
    return found


def _incident_rows(
    incidents_df: pd.DataFrame,
    ids: list[str],
    geoms: list[Any],
    reported: pd.Series,
    states: dict[str, State],
    logs: dict[str, list[Event]],
) -> list[dict[str, Any]]:
    optional = {c: incidents_df[c].tolist() for c in _INCIDENT_OPTIONAL if c in incidents_df}
    reported_at = reported.dt.tz_convert(UTC).dt.to_pydatetime().tolist()
    rows = []
    for k, incident_id in enumerate(ids):
        log = logs[incident_id]
        row: dict[str, Any] = {
            "incident_id": incident_id,
            "matter_code": str(incidents_df["matter_code"].iloc[k]),
            "geometry": geoms[k],
            "reported_at": reported_at[k],
            "status": str(states[incident_id]),
            "created_at": reported_at[k],
            "updated_at": max(e.at for e in log),
            "duplicate_of": None,
        }
        for column in _INCIDENT_OPTIONAL:
            row.setdefault(column, None)
            if column in optional:
                value = _none(optional[column][k])
                if column == "created_at" and value is not None:
                    value = pd.Timestamp(value).to_pydatetime()
                elif column == "priority" and value is not None:
                    value = int(value)
                elif value is not None:
                    value = str(value)
                row[column] = value if value is not None else row[column]
        if row["created_at"] is None:
            row["created_at"] = reported_at[k]
        rows.append(row)
    return rows
