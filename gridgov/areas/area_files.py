"""Load an area hierarchy from files: pick the layers, rename the columns, normalise codes and
level names."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridgov.errors import (
    DataFileError,
)
from gridgov.io import (
    ambiguous_layers,
    frame_to_wgs84,
    is_missing,
    normalize_code,
    read_vector,
    to_bool,
)

#: Header names recognised without a ``columns`` mapping (compared case-insensitively).
DEFAULT_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "code": ("code", "area_code", "adcode", "编码", "代码", "区划代码", "行政区划代码", "网格编码"),
    "name": ("name", "area_name", "名称", "名字", "区划名称", "网格名称"),
    "level": ("level", "area_level", "层级", "级别"),
    "parent_code": (
        "parent_code",
        "parent",
        "parentcode",
        "parent_id",
        "上级编码",
        "上级代码",
        "父级编码",
        "父编码",
    ),
    "generated": ("generated", "是否生成"),
}
REQUIRED_COLUMNS = ("code", "name", "level")

# Level names as Chinese data writes them; English names are matched after lower-casing.
_LEVEL_ALIASES: dict[str, str] = {
    "区": "district",
    "区县": "district",
    "县": "district",
    "街道": "street",
    "镇": "street",
    "乡": "street",
    "社区": "community",
    "村": "community",
    "网格": "grid",
    "微网格": "microgrid",
    "微网实格": "microgrid",
    "micro-grid": "microgrid",
    "micro_grid": "microgrid",
}


def read_areas(
    paths: str | Path | Iterable[str | Path],
    crs: str | int | None = None,
    *,
    layer: str | int | None = None,
    columns: Mapping[str, str] | None = None,
) -> gpd.GeoDataFrame:
    """Read an area hierarchy from one or many files into one areas GeoDataFrame.

    Parameters
    ----------
    paths
        One path or several; GeoJSON, GeoPackage, Shapefile, GeoParquet (``.parquet``) or any
        other format GDAL reads. The files are concatenated in order.
    crs
        ``None`` (default) trusts each file's own CRS label (GeoJSON is WGS84 by definition); a
        file without one is an error asking to declare it. A declared CRS (``wgs84``,
        ``gcj02``, ``bd09`` or an EPSG code) overrides every file's label, because GCJ-02 data
        is routinely labelled EPSG:4326.
    layer
        The layer to read from a multi-layer source (name or position). ``None`` picks by
        :func:`choose_area_layers`: a layer named ``areas``, else the one polygon layer with
        the area columns, else several polygon layers that each hold their own levels (one
        hierarchy split by level); anything else is refused with the layers listed. A
        single-layer file is read whatever its type, so validation can say what is wrong.
    columns
        Renames applied before anything else, from the file's header to gridgov's, as in
        ``{"CODE": "code", "NAME": "name", "TYPE": "level", "UP": "parent_code"}``. Headers not
        named here are matched against :data:`DEFAULT_COLUMN_ALIASES` (``code``/``编码``,
        ``name``/``名称``, ``level``/``层级``, ``parent_code``/``parent``/``上级编码`` ...).

    Returns
    -------
    A new GeoDataFrame with :data:`gridgov.model.AREA_COLUMNS` and geometry in EPSG:4326. Codes
    are strings (integer codes become their exact digits, also when a column has nulls or a
    Shapefile field is wider than 18 digits), levels are lower-cased (Chinese level names map
    to the English ones), ``generated`` defaults to False. A code stored as a floating-point
    number that cannot hold it exactly is kept as written, with a ``code_error`` column that
    :func:`validate_areas` reports as ``bad_code``; digits are never guessed.

    Raises
    ------
    DataFileError
        A file is missing or unreadable (the message names it), lacks required columns
        (``code``, ``name``, ``level``; the message names those missing), has no layer
        ``layer``, or has several layers none of which can be told to be the areas (the
        message lists them).
    CRSError
        The CRS is unknown, missing (no label and none declared), or gives impossible
        longitudes/latitudes; the message names the file and the CRS used.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    path_list = [Path(p) for p in paths]
    if not path_list:
        msg = "no area files given"
        raise DataFileError(msg)
    frames = []
    for path in path_list:
        layers = read_vector(path, layer=layer, geometry_kind="Polygon", what="area")
        if layer is None and len(layers) > 1:
            layers = choose_area_layers(path, layers, columns or {})
        for name, raw in layers:
            frame = _normalize_columns(raw, path, columns or {})
            where = f"{path} (layer {name!r})" if len(layers) > 1 else str(path)
            frames.append(frame_to_wgs84(frame, crs, where))
    out = pd.concat(frames, ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


#: The layer name read from a multi-layer area file without asking (what `gridgov export` writes).
AREA_LAYER = "areas"


def choose_area_layers(
    path: Path,
    layers: list[tuple[str, gpd.GeoDataFrame]],
    columns: Mapping[str, str] | None = None,
) -> list[tuple[str, gpd.GeoDataFrame]]:
    """Pick the area layer(s) of a file whose polygon layers are ``layers`` (several).

    The rule, in order: the layer named :data:`AREA_LAYER`; else the one layer that has the
    required columns (``code``, ``name``, ``level``, or their aliases); else all of them when
    every one has those columns and no level appears in two layers (a hierarchy stored one
    group of levels per layer, e.g. streets and communities in one, grids in another).

    Raises
    ------
    DataFileError
        Anything else (two layers of the same level, layers without the columns): the file is
        ambiguous and the message lists its layers.
    """
    named = [(n, f) for n, f in layers if n == AREA_LAYER]
    if named:
        return named
    renamed = [(n, _renamed(f, columns or {})) for n, f in layers]
    has_columns = [all(c in r.columns for c in REQUIRED_COLUMNS) for _, r in renamed]
    complete = [pair for pair, ok in zip(layers, has_columns, strict=True) if ok]
    if len(complete) == 1:
        return complete
    if len(complete) < len(layers):
        lacking = ", ".join(n for (n, _), ok in zip(layers, has_columns, strict=True) if not ok)
        why = f"{len(complete)} of its polygon layers have the columns code, name and level"
        raise ambiguous_layers(path, "area", f"{why} ({lacking} lack some)")
    seen: dict[str, str] = {}
    for name, frame in renamed:
        for level in sorted({_normalize_level(v) for v in frame["level"]}):
            if level in seen:
                why = f"layers {seen[level]} and {name} both hold {level} areas"
                raise ambiguous_layers(path, "area", why)
            seen[level] = name
    return layers


def _renamed(raw: gpd.GeoDataFrame, columns: Mapping[str, str]) -> gpd.GeoDataFrame:
    """``raw`` with its headers mapped to gridgov's: ``columns`` first, then the aliases."""
    frame = raw.rename(columns=dict(columns))
    lowered = {str(c).strip().lower(): c for c in frame.columns}
    renames: dict[Any, str] = {}
    for target, aliases in DEFAULT_COLUMN_ALIASES.items():
        if target in frame.columns:
            continue
        for alias in aliases:
            if alias.lower() in lowered and lowered[alias.lower()] not in renames:
                renames[lowered[alias.lower()]] = target
                break
    return frame.rename(columns=renames)


def _normalize_columns(
    raw: gpd.GeoDataFrame, path: Path, columns: Mapping[str, str]
) -> gpd.GeoDataFrame:
    frame = _renamed(raw, columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(str(c) for c in raw.columns if c != raw.geometry.name)
        msg = (
            f"{path}: missing required column(s) {', '.join(missing)} (found: {found}); "
            "rename those columns in the file, or map them (columns= in Python)"
        )
        raise DataFileError(msg)
    geoms = np.asarray(frame.geometry.values)
    has_z = shapely.has_z(geoms)
    if has_z.any():
        geoms = np.where(has_z, shapely.force_2d(geoms), geoms)
    parent = frame["parent_code"] if "parent_code" in frame.columns else None
    generated = (
        frame["generated"].map(to_bool)
        if "generated" in frame.columns
        else pd.Series(False, index=frame.index)
    )
    codes, code_errors = _exact_codes(frame["code"], "code", path)
    parents, parent_errors = (
        ([None] * len(frame), [None] * len(frame))
        if parent is None
        else _exact_codes(parent, "parent_code", path)
    )
    data = {
        "code": pd.Series(codes, dtype=object),
        "name": pd.Series(["" if is_missing(v) else str(v) for v in frame["name"]], dtype=object),
        "level": pd.Series([_normalize_level(v) for v in frame["level"]], dtype=object),
        "parent_code": pd.Series(parents, dtype=object),
        "generated": pd.Series(np.asarray(generated, dtype=bool)),
        "name_source": pd.Series(
            [None] * len(frame)
            if "name_source" not in frame.columns
            else [None if is_missing(v) else str(v) for v in frame["name_source"]],
            dtype=object,
        ),
    }
    if "geometry_error" in frame.columns:
        data["geometry_error"] = pd.Series(list(frame["geometry_error"]), dtype=object)
    errors = [a or b for a, b in zip(code_errors, parent_errors, strict=True)]
    if any(errors):
        data["code_error"] = pd.Series(errors, dtype=object)
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms, crs=raw.crs), crs=raw.crs)


def _exact_codes(
    values: Iterable[object], column: str, path: Path
) -> tuple[list[str | None], list[str | None]]:
    """Codes as strings, and per row why a code cannot be trusted (or None)."""
    codes: list[str | None] = []
    errors: list[str | None] = []
    for value in values:
        code, error = normalize_code(value)
        codes.append(code)
        errors.append(None if error is None else f"{path}: column {column!r}: {error}")
    return codes, errors


def _normalize_level(value: object) -> str:
    if is_missing(value):
        return ""
    text = str(value).strip()
    return _LEVEL_ALIASES.get(text, _LEVEL_ALIASES.get(text.lower(), text.lower()))
