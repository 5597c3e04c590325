"""Writing an analysis result to a file whose format is its extension (the I/O edge).

GeoPackage (``.gpkg``), GeoParquet (``.parquet``), GeoJSON (``.geojson``) and CSV (``.csv``).
A table without geometry may go to CSV or Parquet only; a CSV of a GeoDataFrame carries the
geometry as WKT (``geometry`` column) so that nothing is lost. Frames are written in WGS84.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from gridgov.errors import InputError

#: Extension → format name, in the order the help lists them.
FORMATS: dict[str, str] = {
    ".gpkg": "GeoPackage",
    ".parquet": "GeoParquet",
    ".geojson": "GeoJSON",
    ".csv": "CSV",
}


def export_format(path: Path | str) -> str:
    """The format named by ``path``'s extension.

    Raises
    ------
    InputError
        An extension none of :data:`FORMATS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        msg = f"{path}: unknown output format {suffix or '(none)'}; use one of {', '.join(FORMATS)}"
        raise InputError(msg)
    return FORMATS[suffix]


def _plain_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns every format can hold: lists and dicts as text, infinities as missing."""
    out = frame.copy()
    for column in out.columns:
        if column == getattr(out, "_geometry_column_name", None):
            continue
        values = out[column]
        if values.dtype == object and values.map(lambda v: isinstance(v, list | dict)).any():
            out[column] = values.map(lambda v: None if v is None else str(v))
        elif pd.api.types.is_float_dtype(values):
            out[column] = values.where(np.isfinite(values.to_numpy(dtype=float)))
    return out


def with_area_geometry(table: pd.DataFrame, gdf_areas: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A per-area table (``code``) with each area's polygon joined, for the map formats."""
    shapes = gdf_areas.drop_duplicates("code").set_index(gdf_areas["code"].astype(str))
    geometry = shapes.geometry.reindex(table["code"].astype(str)).to_numpy()
    return gpd.GeoDataFrame(table.copy(), geometry=geometry, crs=gdf_areas.crs)


def write_result(frame: pd.DataFrame, path: Path | str, *, layer: str = "result") -> Path:
    """Write ``frame`` to ``path`` in the format its extension names.

    Parameters
    ----------
    frame
        A GeoDataFrame (any CRS; written in EPSG:4326) or, for CSV and Parquet, a DataFrame.
    path
        The file; its folder is created.
    layer
        The GeoPackage layer name.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        An unknown extension, or a table without geometry sent to a geographic format.
    """
    target = Path(path)
    fmt = export_format(target)
    geo = isinstance(frame, gpd.GeoDataFrame)
    if not geo and fmt in ("GeoPackage", "GeoJSON"):
        msg = f"{target}: this result has no geometry; write it as .csv or .parquet"
        raise InputError(msg)
    table = _plain_columns(frame)
    if isinstance(table, gpd.GeoDataFrame) and table.crs is not None:
        table = table.to_crs("EPSG:4326")
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "CSV":
        if isinstance(table, gpd.GeoDataFrame):
            table = table.to_wkt()
        # The BOM lets spreadsheet programs read Chinese names correctly.
        table.to_csv(target, index=False, encoding="utf-8-sig")
    elif fmt == "GeoParquet":
        table.to_parquet(target, index=False)
    else:
        geo_table: gpd.GeoDataFrame = table
        target.unlink(missing_ok=True)
        if fmt == "GeoJSON":
            geo_table.to_file(target, driver="GeoJSON")
        else:
            geo_table.to_file(target, layer=layer, driver="GPKG")
    return target


__all__ = ["FORMATS", "export_format", "with_area_geometry", "write_result"]
