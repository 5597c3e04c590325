"""The stored district as one GeoPackage: export, detection and loading back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
from sqlalchemy import Engine, select

from gridgov.areas import read_areas
from gridgov.catalog import Catalog, Matter
from gridgov.errors import DataFileError, InputError, StoreError
from gridgov.store.district_load import load_district
from gridgov.store.district_read import (
    catalog_from_rows,
    read_matters,
    read_offices,
    read_roads,
    read_stored_areas,
    read_units,
)
from gridgov.store.engine import translate_errors
from gridgov.store.models import CATALOGS
from gridgov.units import read_offices as read_offices_file
from gridgov.units import read_units as read_units_file

# Export layer names of the roads; "nodes"/"links" (the reference roads file) are read too.
_ROAD_LAYERS = ("road_nodes", "road_links")
# List-valued matter columns, kept as JSON text where a file format has no list type.
_MATTER_JSON_COLUMNS = ("keywords", "assist_kinds")
_CATALOG_JSON_COLUMNS = ("event_majors", "domains", "matter_codes")


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
    stored dataset in one transaction (validated like :func:`~gridgov.store.load_district`).
    Road layers (``road_nodes``/``road_links``, or ``nodes``/``links`` as in the reference roads
    file) are loaded with it; without them the stored roads are emptied.

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
        catalog, described = catalog_from_rows(df_matters.to_dict(orient="records"), head)
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
