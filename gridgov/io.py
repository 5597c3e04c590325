"""Reading vector files: the one reader every user-facing loader goes through.

Areas, boundaries, roads, offices and units arrive as GeoJSON, GeoPackage, Shapefile,
GeoParquet or anything else GDAL reads. They all go through :func:`read_vector`, which keeps
what the file says exactly (18-digit integer codes stay integers, also next to nulls; a feature
whose geometry GEOS cannot parse is kept and explained), and :func:`frame_to_wgs84`, which
applies the one CRS convention: ``crs=None`` trusts the data's own label, a declared ``crs``
overrides it (GCJ-02 data is routinely labelled EPSG:4326).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyogrio
import pyogrio.raw
import shapely
from pyproj import CRS

from gridgov.crs import gdf_to_wgs84, likely_crs, mislabelled_degrees, normalize_crs
from gridgov.errors import CRSError, DataFileError

__all__ = [
    "PARQUET_SUFFIXES",
    "ambiguous_layers",
    "frame_to_wgs84",
    "read_vector",
    "read_vector_wgs84",
    "reject_geometry_errors",
]

logger = logging.getLogger(__name__)

#: File name endings read as GeoParquet (everything else goes to GDAL).
PARQUET_SUFFIXES = (".parquet", ".geoparquet")
# RFC 7946: GeoJSON coordinates are WGS84 longitude/latitude whatever the file says.
_GEOJSON_SUFFIXES = (".geojson", ".json", ".geojsonl", ".geojsons")
_DECLARE = "--crs on the command line, crs= in Python: wgs84, gcj02, bd09 or an EPSG code"


def read_vector(
    path: str | Path,
    *,
    layer: str | int | None = None,
    geometry_kind: str | None = None,
    what: str = "file",
) -> list[tuple[str, gpd.GeoDataFrame]]:
    """Read the layer(s) of a vector file exactly as it stores them.

    Parameters
    ----------
    path
        GeoJSON, GeoPackage, Shapefile, GeoParquet (``.parquet``/``.geoparquet``) or any other
        format GDAL reads.
    layer
        The layer to read (name or position). A GeoParquet file has one layer and ignores it.
    geometry_kind
        With ``layer=None``: ``"Polygon"``, ``"LineString"`` or ``"Point"`` reads every layer
        whose declared geometry is of that kind (multi-part and Z variants included; layers of
        generic geometry when none is declared of that kind); ``None`` reads every layer. A
        single-layer file is read whatever its type, so the caller can say what is wrong with it.
    what
        What the file holds (``"area"``, ``"boundary"``, ``"units"``...), for messages.

    Returns
    -------
    list of (str, geopandas.GeoDataFrame)
        One ``(layer name, frame)`` per layer read, in file order; each frame in the CRS its
        file declares (GeoJSON without a label is EPSG:4326) or none. Integer attributes are
        nullable ``Int64``/``UInt64`` (never float), integer Shapefile fields too wide for
        float64 keep their digits as text. A feature whose geometry GEOS cannot parse (a ring
        that does not close, too few points) is kept, repaired where a repair exists, and a
        ``geometry_error`` column (None elsewhere) says what was wrong.

    Raises
    ------
    DataFileError
        The file is missing or unreadable, the named layer does not exist, or several layers
        exist and none is of ``geometry_kind``; the message names ``what``, the file and, for
        a layer problem, its layers.
    """
    source = Path(path)
    noun = "file" if what == "file" else f"{what} file"
    if not source.exists():
        msg = f"{noun} not found: {source}"
        raise DataFileError(msg)
    # GDAL and arrow warn about things handled here (unclosed rings, several layers, odd field
    # types); they are logged, never shown to the user raw.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source.suffix.lower() in PARQUET_SUFFIXES:
            try:
                frame = gpd.read_parquet(source, to_pandas_kwargs={"types_mapper": _exact_dtype})
            except Exception as exc:  # arrow raises many unrelated types for a bad file
                msg = f"cannot read {noun} {source}: {exc}"
                raise DataFileError(msg) from exc
            layers = [(source.stem, frame)]
        else:
            names = _pick_layers(source, noun, layer, geometry_kind)
            layers = []
            for name in names:
                try:
                    frame = _read_gdal_layer(source, name)
                except Exception as exc:  # GDAL raises its own types for a bad file
                    where = f" (layer {name!r})" if len(names) > 1 or layer is not None else ""
                    msg = f"cannot read {noun} {source}{where}: {exc}"
                    raise DataFileError(msg) from exc
                layers.append((name, frame))
    for warning in caught:
        logger.info("%s: %s", source, warning.message)
    if source.suffix.lower() in _GEOJSON_SUFFIXES:
        layers = [(n, f.set_crs("EPSG:4326") if f.crs is None else f) for n, f in layers]
    return layers


def read_vector_wgs84(
    path: str | Path,
    crs: str | int | None = None,
    *,
    layer: str | int | None = None,
    geometry_kind: str | None = None,
    what: str = "file",
) -> gpd.GeoDataFrame:
    """Read a vector file (:func:`read_vector`) into one frame in EPSG:4326.

    Each layer is converted on its own (:func:`frame_to_wgs84`; layers may carry different
    labels), then they are concatenated.

    Returns
    -------
    geopandas.GeoDataFrame
        The features in EPSG:4326. When several layers were read a first ``layer`` column tells
        them apart; ``attrs["layers"]`` names the layer(s) read.

    Raises
    ------
    DataFileError
        As :func:`read_vector`.
    CRSError
        As :func:`frame_to_wgs84`; the message names the file (and layer).
    """
    source = Path(path)
    layers = read_vector(source, layer=layer, geometry_kind=geometry_kind, what=what)
    several = len(layers) > 1 or layer is not None
    converted = [
        frame_to_wgs84(frame, crs, f"{source} (layer {name!r})" if several else str(source))
        for name, frame in layers
    ]
    if len(converted) == 1:
        out = converted[0]
    else:
        for (name, _), frame in zip(layers, converted, strict=True):
            frame.insert(0, "layer", name)
        out = gpd.GeoDataFrame(pd.concat(converted, ignore_index=True), crs="EPSG:4326")
    out.attrs["layers"] = [name for name, _ in layers]
    return out


def frame_to_wgs84(gdf: gpd.GeoDataFrame, crs: str | int | None, where: str) -> gpd.GeoDataFrame:
    """Return a copy of ``gdf`` in EPSG:4326 under the one CRS convention of gridgov.

    Parameters
    ----------
    gdf
        Features as read or as given.
    crs
        What the coordinates really are (``wgs84``, ``gcj02``, ``bd09`` or an EPSG code); it
        overrides the frame's own label. ``None`` trusts the label; a label without an EPSG code
        (other than a lon/lat WGS84 one) must be declared.
    where
        What the frame is, e.g. its file, at the start of every message.

    Returns
    -------
    geopandas.GeoDataFrame
        A new frame in EPSG:4326; every converted coordinate is checked to be lon/lat.

    Raises
    ------
    CRSError
        No label and none declared, an unknown declared CRS, a label without an EPSG code, or
        coordinates that are not longitude/latitude once converted. The message names
        ``where`` and the CRS the coordinates were read in.
    """
    label = gdf.crs
    if crs is not None:
        try:
            name = normalize_crs(crs)
        except CRSError as exc:
            msg = f"{where}: {exc}"
            raise CRSError(msg) from exc
        how = f"as declared, {name} ({_label_note(label)})"
    else:
        epsg = _label_epsg(label, where)
        name = normalize_crs(f"EPSG:{epsg}")
        how = f"in the CRS its own label declares, EPSG:{epsg}"
    if len(gdf):
        wrong = mislabelled_degrees(gdf.total_bounds, name)
        if wrong is not None:
            msg = f"{where}: read {how}, {wrong}; declare the real CRS ({_DECLARE})"
            raise CRSError(msg)
    try:
        # gdf_to_wgs84 checks every converted coordinate and raises when one is not lon/lat.
        out = gdf_to_wgs84(gdf, name)
    except CRSError as exc:
        bounds = np.round(gdf.total_bounds, 3).tolist() if len(gdf) else []
        likely = f"; they look like {likely_crs(gdf.total_bounds)}" if len(gdf) else ""
        msg = (
            f"{where}: coordinates are not longitude/latitude when read {how}; bounds "
            f"{bounds}{likely}; declare the real CRS ({_DECLARE}) ({exc})"
        )
        raise CRSError(msg) from exc
    _check_area_of_use(out, name, where, how)
    return out


# A CRS's published area of use, widened by this many degrees so data just past a UTM zone's
# edge still loads. Degrees read as UTM metres land about 4.5° west of the zone's central
# meridian, 1.5° past its edge, and are caught.
_AREA_OF_USE_MARGIN_DEG = 1.0
# GCJ-02 and BD-09 only shift coordinates inside mainland China.
_CHINA_BOUNDS = (72.0, 0.8, 137.9, 55.9)


def _check_area_of_use(out: gpd.GeoDataFrame, name: str, where: str, how: str) -> None:
    """Reject data that lands outside the declared CRS's area of use after conversion.

    Reading degrees as UTM metres still gives valid-looking lon/lat (near the zone's false
    origin on the equator), so the lon/lat check alone cannot catch a wrong declaration.
    """
    if not len(out) or name == "wgs84":
        return
    if name in ("gcj02", "bd09"):
        west, south, east, north = _CHINA_BOUNDS
    else:
        area = CRS.from_user_input(name).area_of_use
        if area is None:
            return
        west, south, east, north = area.west, area.south, area.east, area.north
    m = _AREA_OF_USE_MARGIN_DEG
    minx, miny, maxx, maxy = out.total_bounds
    if not np.isfinite([minx, miny, maxx, maxy]).all():
        return
    if minx < west - m or maxx > east + m or miny < south - m or maxy > north + m:
        bounds = np.round([minx, miny, maxx, maxy], 4).tolist()
        msg = (
            f"{where}: read {how}, the data lands at lon/lat {bounds}, outside where {name} is "
            f"used ({west}..{east} E, {south}..{north} N); the declared CRS is probably wrong "
            f"({_DECLARE})"
        )
        raise CRSError(msg)


def reject_geometry_errors(gdf: gpd.GeoDataFrame, where: str) -> None:
    """Raise when :func:`read_vector` kept features whose geometry could not be parsed.

    For readers whose callers cannot report such features themselves (boundaries, roads,
    units); the area validation reports them per area instead.

    Raises
    ------
    DataFileError
        Naming ``where``, the rows (first ten) and what is wrong with the first of them.
    """
    if "geometry_error" not in gdf.columns:
        return
    bad = np.flatnonzero(pd.notna(gdf["geometry_error"]).to_numpy())
    if len(bad) == 0:
        return
    rows = ", ".join(str(int(r)) for r in bad[:10]) + (", ..." if len(bad) > 10 else "")
    msg = (
        f"{where}: {len(bad)} feature(s) have a geometry that cannot be parsed (rows {rows}); "
        f"first: {gdf['geometry_error'].iloc[bad[0]]}"
    )
    raise DataFileError(msg)


def ambiguous_layers(path: str | Path, what: str, why: str) -> DataFileError:
    """The error for a multi-layer file whose input layer cannot be told apart.

    Parameters
    ----------
    path
        The file.
    what
        What it should hold (``"area"``, ``"units"``...).
    why
        Why no layer was picked, e.g. ``"2 polygon layers hold areas"``.

    Returns
    -------
    DataFileError
        Naming the file, every layer with its geometry type, and how to choose one (to raise).
    """
    try:
        listed = pyogrio.list_layers(path)
        found = ", ".join(f"{name} ({gtype})" for name, gtype in listed)
    except Exception:  # GDAL raises its own types; the layers were readable a moment ago
        found = "unknown"
    msg = (
        f"{what} file {path} has several layers and {why} (layers: {found}); name the one to "
        "read with --layer NAME (layer= in Python)"
    )
    return DataFileError(msg)


def _pick_layers(path: Path, noun: str, layer: str | int | None, kind: str | None) -> list[str]:
    try:
        listed = pyogrio.list_layers(path)
    except Exception as exc:  # GDAL raises its own error types for an unreadable file
        msg = f"cannot read {noun} {path}: {exc}"
        raise DataFileError(msg) from exc
    names = [str(name) for name, _ in listed]
    types = [str(gtype) for _, gtype in listed]
    found = ", ".join(f"{n} ({t})" for n, t in zip(names, types, strict=True))
    if layer is not None:
        if isinstance(layer, int) and 0 <= layer < len(names):
            return [names[layer]]
        if str(layer) in names:
            return [str(layer)]
        msg = f"{noun} {path} has no layer {layer!r} (layers: {found})"
        raise DataFileError(msg)
    if len(names) <= 1 or kind is None:
        return names
    # "Polygon" also matches "MultiPolygon" and "Polygon Z"; a layer declared as generic
    # geometry may hold the kind, so it is the fallback.
    chosen = [n for n, t in zip(names, types, strict=True) if kind in t] or [
        n for n, t in zip(names, types, strict=True) if t == "Unknown"
    ]
    if not chosen:
        msg = f"{noun} {path} has no {kind} layer (layers: {found}); pass the layer to read"
        raise DataFileError(msg)
    logger.info("%s: read %s layer(s) %s", path, kind, ", ".join(chosen))
    return chosen


def _read_gdal_layer(path: Path, layer: str) -> gpd.GeoDataFrame:
    # Through arrow, integer columns stay integers even with nulls (numpy would make them
    # float64 and round 18-digit codes). Geometry stays WKB so one bad feature cannot fail the
    # whole read.
    meta, table = pyogrio.raw.read_arrow(path, layer=layer)
    geometry_column = meta["geometry_name"] or "wkb_geometry"
    wkb: np.ndarray = np.full(table.num_rows, None, dtype=object)
    if geometry_column in table.column_names:
        wkb = np.asarray(table[geometry_column].to_numpy(zero_copy_only=False), dtype=object)
        table = table.drop_columns([geometry_column])
    attrs = table.to_pandas(types_mapper=_exact_dtype)
    if path.suffix.lower() in (".shp", ".dbf"):
        attrs = _exact_dbf_integers(path.with_suffix(".dbf"), attrs)
    geoms = shapely.from_wkb(wkb, on_invalid="ignore")
    errors = np.full(len(geoms), None, dtype=object)
    for i in np.flatnonzero(shapely.is_missing(geoms) & pd.notna(wkb)):
        try:
            shapely.from_wkb(wkb[i])
        except shapely.errors.GEOSException as exc:
            errors[i] = _explain_wkb_error(str(exc))
        geoms[i] = shapely.from_wkb(wkb[i], on_invalid="fix")
    gdf = gpd.GeoDataFrame(attrs, geometry=gpd.GeoSeries(geoms), crs=meta.get("crs"))
    if errors.any():
        gdf["geometry_error"] = pd.Series(errors, index=gdf.index, dtype=object)
    return gdf


def _exact_dtype(dtype: pa.DataType) -> pd.api.extensions.ExtensionDtype | None:
    if pa.types.is_signed_integer(dtype):
        return pd.Int64Dtype()
    if pa.types.is_unsigned_integer(dtype):
        return pd.UInt64Dtype()
    return None


def _exact_dbf_integers(dbf: Path, attrs: pd.DataFrame) -> pd.DataFrame:
    """Replace float columns read from integer DBF fields by the digits the file stores.

    GDAL reads a numeric field wider than 18 digits as float64, which cannot hold an 18-digit
    code exactly. A DBF stores numbers as text, so those fields are read again, as text.
    """
    if not dbf.exists():
        return attrs
    raw = dbf.read_bytes()
    if len(raw) < 32:
        return attrs
    count = int.from_bytes(raw[4:8], "little")
    header_len = int.from_bytes(raw[8:10], "little")
    record_len = int.from_bytes(raw[10:12], "little")
    fields: list[tuple[int, int, bool]] = []  # (offset in record, width, integer numeric)
    offset = 1  # the deletion flag comes first
    for pos in range(32, header_len - 1, 32):
        if raw[pos] == 0x0D:
            break
        kind, width, decimals = chr(raw[pos + 11]), raw[pos + 16], raw[pos + 17]
        fields.append((offset, width, kind in "NF" and decimals == 0))
        offset += width
    names = list(attrs.columns)
    wanted = [
        k
        for k, (_, _, integer) in enumerate(fields)
        if integer and k < len(names) and pd.api.types.is_float_dtype(attrs[names[k]])
    ]
    if not wanted or len(fields) != len(names) or header_len + count * record_len > len(raw):
        return attrs
    records = [
        raw[header_len + i * record_len : header_len + (i + 1) * record_len] for i in range(count)
    ]
    records = [r for r in records if r[:1] != b"*"]  # GDAL skips deleted records too
    if len(records) != len(attrs):
        return attrs
    out = attrs.copy()
    for k in wanted:
        start, width, _ = fields[k]
        text = [r[start : start + width].decode("ascii", "replace").strip() for r in records]
        out[names[k]] = pd.Series([t or None for t in text], index=attrs.index, dtype=object)
    return out


def _explain_wkb_error(geos_message: str) -> str:
    if "closed linestring" in geos_message:
        what = "a ring does not close (its first and last points differ)"
    elif "number of points" in geos_message.lower():
        what = "a ring has too few points (a polygon ring needs at least 4, closed)"
    else:
        what = "the geometry cannot be parsed"
    return f"{what}; GEOS: {geos_message}"


def _label_epsg(label: CRS | None, where: str) -> int:
    """The EPSG code of a frame's own CRS label (a lon/lat WGS84 label without one is 4326)."""
    if label is None:
        msg = f"{where} has no CRS label; declare what its coordinates are ({_DECLARE})"
        raise CRSError(msg)
    epsg = label.to_epsg()
    ellipsoid = label.ellipsoid.name if label.ellipsoid is not None else None
    if epsg is None and label.is_geographic and ellipsoid == "WGS 84" and not label.is_derived:
        epsg = 4326  # OGC:CRS84 and other lon/lat WGS84 labels without an EPSG code
    if epsg is None:
        msg = (
            f"{where}: its CRS label ({label.name}) has no EPSG code; declare its EPSG code "
            f"({_DECLARE})"
        )
        raise CRSError(msg)
    return int(epsg)


def _label_note(label: CRS | None) -> str:
    if label is None:
        return "it has no CRS label"
    epsg = label.to_epsg()
    return f"its own label says {f'EPSG:{epsg}' if epsg is not None else label.name}"


# --------------------------------------------------------------------------------------------
# values: what readers turn codes and flags into, undone the same way everywhere
# --------------------------------------------------------------------------------------------


def is_missing(value: object) -> bool:
    """True for None, NaN, NaT and pandas' NA: every way a reader says "no value"."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def normalize_code(value: object) -> tuple[str | None, str | None]:
    """Return ``(code, error)``: a code as text with the digits the file really stores.

    Readers turn digit codes into integers or floats. Integers and exact floats give their
    digits back; a float that cannot hold the code exactly gives an ``error`` saying why,
    and the caller reports it rather than guessing digits.
    """
    if is_missing(value):
        return None, None
    if isinstance(value, bool | np.bool_):
        return str(value), None
    if isinstance(value, int | np.integer):
        return str(int(value)), None
    if isinstance(value, float | np.floating):
        number = float(value)
        if number.is_integer() and abs(number) < 2**53:
            return str(int(number)), None
        if number.is_integer():
            why = (
                "arrived as a floating-point number, which holds only 15-16 digits exactly, "
                "so its real digits are unknown"
            )
        else:
            why = "is not a whole number"
        error = f"code {number!r} {why}; store codes as text (a string column) in the file"
        return repr(number), error
    text = str(value).strip()
    if re.fullmatch(r"\d+\.0*", text):
        text = text.split(".", 1)[0]
    return text or None, None


def to_bool(value: object) -> bool:
    """Read a flag as files write it (true/1/yes/是 ...); a missing value is False."""
    if is_missing(value):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "t", "是")
    return bool(value)
