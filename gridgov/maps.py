"""Interactive maps (folium): command centre, one street, coverage, assessment.

Every builder returns a :class:`folium.Map` and never writes a file; write one with
:func:`render_html`, which also makes it work offline.

Offline assets
--------------
folium links Leaflet and its plugins from CDNs. :func:`render_html` rewrites every such link to
the copies vendored in ``gridgov/static/vendor`` (versions and licences in its README):

- ``render_html(m, assets="inline")`` embeds them in the page: the file works opened from disk
  with no network at all;
- ``render_html(m, assets="/static")`` links them under a URL prefix where the server mounts
  :data:`STATIC_DIR` (for FastAPI: ``app.mount("/static", StaticFiles(directory=STATIC_DIR))``).

Links folium adds that gridgov maps never use (Bootstrap, Font Awesome, Glyphicons, awesome
markers) are dropped; a map that still needs them (a ``folium.Icon``), or any other outside URL,
is refused with an :class:`~gridgov.errors.InputError` instead of silently loading from the
internet. Icons are CSS DivIcons: a coloured disc with the force's Chinese initial.

Base layer
----------
``base="none"`` (default: vector layers only), ``"osm"`` (OpenStreetMap), ``"tianditu"``
(天地图 vector tiles + labels; needs ``tile_key``) or an XYZ URL template of an intranet tile
server (``"http://tiles.local/{z}/{x}/{y}.png"``). Tiles are an overlay under the vector layers;
after a few failed tiles the page drops them and says so, and the vector layers stay.

Scale
-----
The heavy layers are compact JSON turned into Leaflet layers by a small runtime
(``gridgov/static/gridgov/gridgov-map.js``): polygons on a canvas renderer, markers added to a
MarkerCluster in one call, popups built when first opened. Polygons are simplified per level
(:data:`SIMPLIFY_M`) and rounded to 1e-5° (about 1 m). Micro-grids are not inlined by
default (``levels`` holds street, community and grid). For them, pass ``area_url`` (the
*viewport hook*): a URL template the page fetches on every pan or zoom at or above
``area_min_zoom``, with ``{level}``, ``{west}``, ``{south}``, ``{east}``, ``{north}`` and
``{zoom}`` filled in; the answer must be the JSON :func:`area_layer_json` returns (the API
serves it later, e.g. ``/api/areas?level={level}&bbox={west},{south},{east},{north}``).

Each page registers its layers in ``window.GG.maps[<map id>]`` (``areas[level]``,
``layers.units``, ``layers.incidents``, ``layers.routes``, each with ``ggCount``) and sets
``GG.ready`` (and ``data-gridgov-ready`` on ``<html>``) once every layer is added and painted.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import folium
import folium.plugins
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import MacroElement
from folium.elements import JSCSSMixin
from folium.map import Layer
from folium.template import Template

# coverage_times lives in the pure core; it stays importable from here (and in __all__).
# The frame checks are the analysis module's: maps validate their inputs the same way.
from gridgov.coverage import (
    _kind_name,
    _level_name,
    _point_xy,
    _require,
    _wgs84,
    coverage_times,
)
from gridgov.errors import InputError
from gridgov.model import ForceKind, Level, UnitStatus
from gridgov.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from gridgov.network import TravelModel

#: Folder of the static files (vendored Leaflet and plugins, the gridgov runtime).
STATIC_DIR = Path(__file__).parent / "static"

# The gridgov runtime's own placeholder URLs (resolved like the vendored files).
_RUNTIME_JS = "gridgov-static:gridgov/gridgov-map.js"
_RUNTIME_CSS = "gridgov-static:gridgov/gridgov-map.css"
_LIVE_JS = "gridgov-static:gridgov/gridgov-live.js"
_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs/"
_FOLIUM_GH = "https://cdn.jsdelivr.net/gh/python-visualization/folium"
# folium's CDN URL -> the vendored copy (relative to STATIC_DIR). One entry per file folium or
# this module references; render_html refuses any outside URL not listed here.
_VENDORED: dict[str, str] = {
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js": "vendor/leaflet-1.9.3/leaflet.js",
    "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css": (
        "vendor/leaflet-1.9.3/leaflet.css"
    ),
    "https://code.jquery.com/jquery-3.7.1.min.js": "vendor/jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/leaflet.markercluster.js": (
        "vendor/leaflet.markercluster-1.1.0/leaflet.markercluster.js"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.css": (
        "vendor/leaflet.markercluster-1.1.0/MarkerCluster.css"
    ),
    _CDNJS + "leaflet.markercluster/1.1.0/MarkerCluster.Default.css": (
        "vendor/leaflet.markercluster-1.1.0/MarkerCluster.Default.css"
    ),
    _FOLIUM_GH + "@main/folium/templates/leaflet_heat.min.js": (
        "vendor/leaflet-heat/leaflet_heat.min.js"
    ),
    # jsDelivr minifies on the fly; the npm package ships the unminified file (7.9 kB).
    "https://cdn.jsdelivr.net/npm/leaflet.fullscreen@3.0.0/Control.FullScreen.min.js": (
        "vendor/leaflet.fullscreen-3.0.0/Control.FullScreen.js"
    ),
    "https://cdn.jsdelivr.net/npm/leaflet.fullscreen@3.0.0/Control.FullScreen.css": (
        "vendor/leaflet.fullscreen-3.0.0/Control.FullScreen.css"
    ),
    "https://cdn.jsdelivr.net/npm/leaflet-search@2.9.7/dist/leaflet-search.min.js": (
        "vendor/leaflet-search-2.9.7/dist/leaflet-search.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/leaflet-search@2.9.7/dist/leaflet-search.min.css": (
        "vendor/leaflet-search-2.9.7/dist/leaflet-search.min.css"
    ),
    _RUNTIME_JS: "gridgov/gridgov-map.js",
    _RUNTIME_CSS: "gridgov/gridgov-map.css",
    _LIVE_JS: "gridgov/gridgov-live.js",
}
# folium's defaults that gridgov maps never use: dropped, so nothing loads from outside.
_UNUSED = {
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css",
    "https://netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css",
    "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@6.2.0/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.js",
    "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.css",
    "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/leaflet.awesome.rotate.min.css",
}
# A script body that needs a dropped library (folium.Icon).
_NEEDS_UNUSED = "L.AwesomeMarkers"

#: Douglas-Peucker tolerance (metres) per level: coarse levels are seen zoomed out.
SIMPLIFY_M: dict[str, float] = {
    "district": 20.0,
    "street": 12.0,
    "community": 6.0,
    "grid": 3.0,
    "microgrid": 1.5,
}
#: Levels the command centre inlines by default (micro-grids come through ``area_url``).
DEFAULT_LEVELS = ("street", "community", "grid")
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
_STATUS_ZH = {"available": "空闲", "busy": "出勤", "off_duty": "离岗"}
_STATUS_EN = {"available": "available", "busy": "busy", "off_duty": "off duty"}
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
# Sequential fills (light to dark) for counts, and a diverging set for travel-time bands.
_SEQUENTIAL = ("#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#8c2d04")
_BANDS = ("#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59", "#d73027")
_NO_DATA = "#d0d0d0"
_LEVEL_ZH = {lv.value: lv.zh for lv in Level}
#: Upper bounds of the live page's classes of open incidents per area (fixed, see
#: :func:`add_live_feed`).
LIVE_AREA_BREAKS = (1, 2, 5, 10, 20)
#: Base layers by name; ``{key}`` is filled with ``tile_key``.
_TILES: dict[str, tuple[str, str, str]] = {
    "osm": (
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        "&copy; OpenStreetMap contributors",
        "",
    ),
    "tianditu": (
        "https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
        "&LAYER=vec&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}"
        "&TILECOL={x}&tk={key}",
        "&copy; 天地图 Tianditu",
        "01234567",
    ),
}
_TIANDITU_LABELS = _TILES["tianditu"][0].replace("vec_w", "cva_w").replace("LAYER=vec", "LAYER=cva")
#: Failed tiles after which the page drops the base layer.
TILE_FAILURES_BEFORE_FALLBACK = 4


# --------------------------------------------------------------------------------------------
# elements
# --------------------------------------------------------------------------------------------


class _Runtime(JSCSSMixin):
    """Loads the gridgov runtime (and, through the map, Leaflet)."""

    _template = Template("")

    def __init__(self) -> None:
        super().__init__()
        self._name = "GGRuntime"
        # Per instance: folium's add_js_link would otherwise mutate a list shared by the class.
        self.default_js = [("gridgov_map_js", _RUNTIME_JS)]
        self.default_css = [("gridgov_map_css", _RUNTIME_CSS)]


class _Live(JSCSSMixin):
    """Keeps a map's unit and incident layers up to date from a live feed (``GG.live``)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.live({{ this._parent.get_name() }}, {{ this.options|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__()
        self._name = "GGLive"
        self.default_js = [("gridgov_live_js", _LIVE_JS)]
        self.options = options


class _AreaLayer(Layer):
    """Polygons of one level from compact JSON (see ``GG.areas``)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GG.areas({{ this._parent.get_name() }},
            {{ this.json }}, {{ this.style|tojson }});
        {% endmacro %}
        """
    )

    def __init__(
        self,
        data: dict[str, Any],
        name: str,
        *,
        overlay: bool,
        show: bool,
        style: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name=name, overlay=overlay, control=True, show=show)
        self._name = "AreaLayer"
        self.data = data
        self.level = str(data["level"])
        self.n_features = len(data["features"])
        self.style = dict(style or {})

    @property
    def json(self) -> str:
        return _js(self.data)


class _ViewportAreas(Layer):
    """An empty layer the page fills from ``url`` for the visible box (the viewport hook)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = L.featureGroup();
        {{ this._parent.get_name() }}.whenReady(function () {
            GG.viewportAreas({{ this._parent.get_name() }}, {{ this.get_name() }},
                {{ this.options|tojson }});
        });
        {% endmacro %}
        """
    )

    def __init__(self, url: str, level: str, min_zoom: int, name: str, show: bool) -> None:
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "ViewportAreas"
        self.level = level
        self.options = {"url": url, "level": level, "minZoom": min_zoom, "style": {"weight": 0.5}}


class _Points(MacroElement):
    """Adds unit or incident markers to its parent (a MarkerCluster or a FeatureGroup)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.{{ this.what }}({{ this._parent._parent.get_name() }}, {{ this._parent.get_name() }},
            {{ this.json }});
        {% endmacro %}
        """
    )

    def __init__(self, what: str, data: dict[str, Any]) -> None:
        super().__init__()
        self._name = "Points"
        self.what = what
        self.data = data
        self.n_features = len(data["rows"])

    @property
    def json(self) -> str:
        return _js(self.data)


class _Routes(Layer):
    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GG.routes({{ this._parent.get_name() }},
            {{ this.json }});
        {% endmacro %}
        """
    )

    def __init__(self, data: dict[str, Any], name: str) -> None:
        super().__init__(name=name, overlay=True, control=True, show=True)
        self._name = "Routes"
        self.data = data
        self.n_features = len(data["rows"])

    @property
    def json(self) -> str:
        return _js(self.data)


class _Heat(folium.plugins.HeatMap):
    """folium's HeatMap, knowing how many incidents it holds (its data may be a placeholder)."""

    def __init__(self, count: int, data: list[list[float]], **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self.gg_count = count


class _Legend(MacroElement):
    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.legend({{ this._parent.get_name() }}, {{ this.html|tojson }},
            {{ this.position|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, html_text: str, position: str = "bottomright") -> None:
        super().__init__()
        self._name = "Legend"
        self.html = html_text
        self.position = position


class _Search(JSCSSMixin):
    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.search({{ this._parent.get_name() }}, {{ this.placeholder|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, placeholder: str) -> None:
        super().__init__()
        self._name = "GGSearch"
        self.default_js = list(folium.plugins.Search.default_js)
        self.default_css = list(folium.plugins.Search.default_css)
        self.placeholder = placeholder


class _TileFallback(MacroElement):
    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.tileFallback({{ this.map.get_name() }}, {{ this.tiles.get_name() }}, {{ this.limit }});
        {% endmacro %}
        """
    )

    def __init__(self, map_: folium.Map, tiles: folium.TileLayer, limit: int) -> None:
        super().__init__()
        self._name = "TileFallback"
        self.map = map_
        self.tiles = tiles
        self.limit = limit


class _FitBounds(MacroElement):
    """Fit the view without animation (folium's FitBounds animates: the page would be "ready"
    while the zoom still runs, and a view set then is ignored)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        {{ this._parent.get_name() }}.fitBounds({{ this.bounds|tojson }}, {animate: false});
        {% endmacro %}
        """
    )

    def __init__(self, bounds: list[list[float]]) -> None:
        super().__init__()
        self._name = "FitBounds"
        self.bounds = bounds


class _Title(MacroElement):
    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function () {
            var c = L.control({position: "topright"});
            c.onAdd = function () {
                var d = L.DomUtil.create("div", "gg-title");
                d.textContent = {{ this.text|tojson }};
                return d;
            };
            c.addTo({{ this._parent.get_name() }});
        })();
        {% endmacro %}
        """
    )

    def __init__(self, text: str) -> None:
        super().__init__()
        self._name = "Title"
        self.text = text


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _js(data: Any) -> str:
    """JSON for a page script: compact and UTF-8 (CJK text takes half the bytes of tojson's
    escapes; NaN and Infinity are JavaScript literals too); ``<``, ``>``, ``&`` and ``'``
    escaped, so no text can end the script."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(char, escaped)
    # U+2028/2029 end a line in old JavaScript engines.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _text(value: Any) -> str | None:
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
# data for the page
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
                _text(name) or code,
                None if value is None or not math.isfinite(value) else round(float(value), 4),
                colours.get(code, _NO_DATA),
                labels.get(code, ""),
                _polygon_coords(geom),
            ]
        )
    return {"level": lv, "zh": _LEVEL_ZH[lv], "features": features}


def _breaks(values: Sequence[float], n: int = 6) -> list[float]:
    """Upper bounds of up to ``n`` classes over the positive values (quantiles, distinct)."""
    arr = np.asarray([v for v in values if v > 0 and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return []
    qs = np.unique(np.round(np.quantile(arr, np.linspace(0, 1, n + 1)[1:]), 2))
    return [float(q) for q in qs]


def _classify(value: float, breaks: Sequence[float], palette: Sequence[str]) -> str:
    if not math.isfinite(value):
        return _NO_DATA
    if value <= 0 or not breaks:
        return palette[0]
    for i, b in enumerate(breaks):
        if value <= b:
            return palette[min(i + 1, len(palette) - 1)]
    return palette[-1]


def _codes_at(gdf_points: gpd.GeoDataFrame, gdf_areas: gpd.GeoDataFrame, level: str) -> pd.Series:
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


def _area_stats(
    gdf_areas: gpd.GeoDataFrame,
    level: str,
    gdf_open: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    colour_by: str,
) -> tuple[dict[str, float], dict[str, str], dict[str, str], list[float]]:
    counts = _codes_at(gdf_open, gdf_areas, level).value_counts() if len(gdf_open) else pd.Series()
    codes = gdf_areas.loc[gdf_areas["level"].astype(str) == level, "code"].astype(str)
    n_open = {c: float(counts.get(c, 0)) for c in codes}
    if colour_by == "open_incidents":
        values = n_open
        labels = {c: f"未结事件 open incidents: {int(v)}" for c, v in values.items()}
    else:
        on_duty = gdf_units[gdf_units["on_duty"].fillna(False).astype(bool)]
        unit_counts: dict[str, Any] = (
            dict(_codes_at(on_duty, gdf_areas, level).value_counts()) if len(on_duty) else {}
        )
        values = {c: n_open[c] / max(1.0, float(unit_counts.get(c, 0))) for c in codes}
        labels = {
            c: f"负荷 workload: {values[c]:.2f} ({int(n_open[c])} open / "
            f"{int(unit_counts.get(c, 0))} on duty)"
            for c in codes
        }
    breaks = _breaks(list(values.values()))
    colours = {c: _classify(v, breaks, _SEQUENTIAL) for c, v in values.items()}
    return values, colours, labels, breaks


def _unit_data(gdf_units: gpd.GeoDataFrame) -> dict[str, Any]:
    gdf = _wgs84(gdf_units)
    x, y, ok = _point_xy(gdf)
    kinds = list(KIND_STYLE)
    statuses = list(STATUS_COLOURS)
    # Departments and streets repeat across thousands of units: sent once, rows index them.
    departments: dict[str | None, int] = {}
    streets: dict[str | None, int] = {}
    rows = []
    for i in np.flatnonzero(ok):
        row = gdf.iloc[i]
        kind = str(row["kind"])
        status = str(row["status"])
        rows.append(
            [
                round(float(y[i]), 6),
                round(float(x[i]), 6),
                kinds.index(kind) if kind in kinds else 0,
                statuses.index(status) if status in statuses else 2,
                str(row["unit_id"]),
                _text(row.get("name")) or str(row["unit_id"]),
                departments.setdefault(_text(row.get("department")), len(departments)),
                streets.setdefault(_text(row.get("street_code")), len(streets)),
                1 if bool(row.get("on_duty", True)) else 0,
            ]
        )
    return {
        "kinds": [
            {"id": k, "glyph": g, "colour": c, "zh": ForceKind(k).zh, "en": ForceKind(k).en}
            for k, (g, c) in KIND_STYLE.items()
        ],
        "statuses": [
            {"id": s, "colour": c, "zh": _STATUS_ZH[s], "en": _STATUS_EN[s]}
            for s, c in STATUS_COLOURS.items()
        ],
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
                _text(row.action),
                _text(getattr(row, "to_state", None)),
                _text(getattr(row, "actor", None)),
                _text(getattr(row, "reason", None)),
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


def _priority(value: Any) -> int:
    try:
        p = int(value)
    except (TypeError, ValueError):
        return 0
    return p if p in PRIORITY_COLOURS else 0


def _incident_data(
    gdf_open: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None,
    df_events: pd.DataFrame | None,
    explanations: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Any]:
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
                    _text(getattr(row, "role", None)),
                    _text(getattr(row, "rule", None)),
                    _text(getattr(row, "level", None)),
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
                _priority(row.get("priority")),
                iid,
                _text(row.get("matter_code")),
                _text(row.get("status")),
                _local_time(row.get("reported_at")),
                _text(row.get("street_code")),
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


def _route_data(
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
        str(i): (float(a), float(b), _priority(p))
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
# map scaffolding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    centre: tuple[float, float]
    bounds: tuple[tuple[float, float], tuple[float, float]]


def _frame(gdf: gpd.GeoDataFrame) -> _Frame:
    if len(gdf) == 0:
        msg = "nothing to show: no areas"
        raise InputError(msg)
    minx, miny, maxx, maxy = _wgs84(gdf).total_bounds
    return _Frame(((miny + maxy) / 2, (minx + maxx) / 2), ((miny, minx), (maxy, maxx)))


def _new_map(frame: _Frame, base: str, tile_key: str | None) -> folium.Map:
    m = folium.Map(
        location=list(frame.centre),
        zoom_start=13,
        tiles=None,
        prefer_canvas=True,
        control_scale=True,
        # MarkerCluster needs the map's maximum zoom, which a map without tiles lacks (folium
        # gives max_zoom to its default tile layer only, so it goes in as a map option).
        maxZoom=19,
        minZoom=8,
    )
    m.add_child(_Runtime())
    m.add_child(_FitBounds([list(frame.bounds[0]), list(frame.bounds[1])]))
    _add_tiles(m, base, tile_key)
    return m


def _add_tiles(m: folium.Map, base: str, tile_key: str | None) -> None:
    if base in ("none", "", None):
        return
    if base in _TILES:
        url, attribution, subdomains = _TILES[base]
        if "{key}" in url:
            if not tile_key:
                msg = f"the {base} base layer needs a key (tile_key)"
                raise InputError(msg)
            url = url.replace("{key}", tile_key)
    elif "{z}" in base and "{x}" in base and "{y}" in base:
        url, attribution, subdomains = base, "intranet tiles", ""
    else:
        msg = (
            f"unknown base layer {base!r}: use none, osm, tianditu, or an XYZ URL template with "
            "{z}, {x} and {y}"
        )
        raise InputError(msg)
    options: dict[str, Any] = {"subdomains": subdomains} if subdomains else {}
    tiles = folium.TileLayer(
        tiles=url, attr=attribution, name="底图 basemap", overlay=True, control=True, **options
    )
    m.add_child(tiles)
    if base == "tianditu" and tile_key:
        labels = folium.TileLayer(
            tiles=_TIANDITU_LABELS.replace("{key}", tile_key),
            attr=attribution,
            name="注记 labels",
            overlay=True,
            control=True,
            subdomains=subdomains,
        )
        m.add_child(labels)
    m.add_child(_TileFallback(m, tiles, TILE_FAILURES_BEFORE_FALLBACK))


def _legend_html(sections: Sequence[tuple[str, Sequence[str]]]) -> str:
    parts = []
    for title, items in sections:
        parts.append(f"<h4>{html.escape(title)}</h4>" + "<br>".join(items))
    return "".join(parts)


def _swatch(colour: str, text: str) -> str:
    return f"<i style='background:{colour}'></i>{html.escape(text)}"


def _class_items(breaks: Sequence[float], fmt: str = "{:g}") -> list[str]:
    # Classes are (low, b]: the first above zero reads "≤ b", the others "low–b".
    items = [_swatch(_SEQUENTIAL[0], "0")]
    low = 0.0
    for i, b in enumerate(breaks):
        text = f"≤ {fmt.format(b)}" if low == 0 else f"{fmt.format(low)}–{fmt.format(b)}"
        items.append(_swatch(_SEQUENTIAL[min(i + 1, len(_SEQUENTIAL) - 1)], text))
        low = b
    return items


def _kind_items(kinds: Iterable[str] | None = None) -> list[str]:
    wanted = set(kinds) if kinds is not None else set(KIND_STYLE)
    return [
        f"<b class='gg-glyph' style='border-color:{c}'>{g}</b>{ForceKind(k).zh} {ForceKind(k).en}"
        for k, (g, c) in KIND_STYLE.items()
        if k in wanted
    ]


def _status_items() -> list[str]:
    return [_swatch(c, f"{_STATUS_ZH[s]} {_STATUS_EN[s]}") for s, c in STATUS_COLOURS.items()]


def _priority_items() -> list[str]:
    names = {1: "紧急 urgent", 2: "高 high", 3: "中 medium", 4: "低 low", 0: "未知 unknown"}
    return [_swatch(c, f"{p or '?'} {names[p]}") for p, c in PRIORITY_COLOURS.items()]


def _add_points(m: folium.Map, what: str, data: dict[str, Any], name: str, cluster: bool) -> Layer:
    group: Layer
    if cluster:
        group = folium.plugins.MarkerCluster(
            name=name,
            overlay=True,
            control=True,
            options={"chunkedLoading": True, "disableClusteringAtZoom": 17},
        )
    else:
        group = folium.FeatureGroup(name=name, overlay=True, control=True)
    group.add_child(_Points(what, data))
    m.add_child(group)
    return group


def _finish(m: folium.Map, legend: str, search_placeholder: str, title: str) -> folium.Map:
    m.add_child(_Title(title))
    m.add_child(_Legend(legend))
    m.add_child(folium.plugins.Fullscreen(position="topleft"))
    m.add_child(_Search(search_placeholder))
    m.add_child(folium.LayerControl(collapsed=False, position="topright"))
    return m


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------


def command_centre_map(
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    gdf_incidents: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None = None,
    df_events: pd.DataFrame | None = None,
    *,
    level: Level | str = "grid",
    levels: Sequence[Level | str] = DEFAULT_LEVELS,
    colour_by: str = "open_incidents",
    explanations: Mapping[str, Mapping[str, Any]] | None = None,
    recent_hours: float = 24.0,
    now: datetime | None = None,
    cluster: bool = True,
    base: str = "none",
    tile_key: str | None = None,
    area_url: str | None = None,
    area_url_level: Level | str = "microgrid",
    area_min_zoom: int = 15,
    title: str = "指挥中心 command centre",
    area_stats: bool = True,
    with_heat: bool = True,
) -> folium.Map:
    """The command centre's map: areas, units, open incidents, routes, heat.

    Parameters
    ----------
    gdf_areas
        The area hierarchy (:data:`gridgov.model.AREA_COLUMNS`, EPSG:4326).
    gdf_units
        Units (:data:`gridgov.model.UNIT_COLUMNS` + Point geometry); unpositioned ones are left
        out.
    gdf_incidents
        Incidents (``gridgov.store.read_incidents`` columns: ``incident_id``, ``matter_code``,
        ``priority``, ``status``, ``reported_at``, area codes, Point geometry). Markers and routes
        are drawn for the open ones (status not in :data:`CLOSED_STATUSES`); the heat map takes
        every incident reported in the last ``recent_hours`` before ``now``.
    gdf_assignments
        ``gridgov.store.read_assignments`` rows; the active ones join incidents to units with
        their route line (a dashed straight line when no route is stored).
    df_events
        Workflow events (``incident_id``, ``at``, ``action``, optional ``seq``, ``to_state``,
        ``actor``, ``reason``): each incident's history in its popup.
    level
        The level shown first; the layer control switches between ``levels``.
    levels
        Levels inlined in the page (each a base layer of the layer control).
    colour_by
        ``"open_incidents"`` (count per area) or ``"workload"`` (open incidents per on-duty
        unit positioned in the area, at least one).
    explanations
        Per incident id, the dispatch explanation (``read_dispatch(...)["explanation"]``):
        the popup then names the rule, the tier and the runner-up of each kind.
    recent_hours, now
        The heat map's window (``now`` defaults to the current time).
    cluster
        Cluster unit and incident markers (MarkerCluster).
    base, tile_key
        The base layer (see the module docstring).
    area_url, area_url_level, area_min_zoom
        The viewport hook (see the module docstring): a URL template for the areas of
        ``area_url_level`` in the visible box, fetched at zoom ``area_min_zoom`` and above.
    title
        Shown in the top-right corner.
    area_stats
        Colour the areas by ``colour_by`` and say so in the legend. The live page
        (:func:`add_live_feed`) turns it off: its markers come from the feed, so counts baked
        into the page would go stale (and a public page must not hold them).
    with_heat
        Add the heat map of recent incidents (the live page has none: it would stay empty).

    Raises
    ------
    InputError
        A frame misses columns or geometry, or a level, ``colour_by`` or base is unknown.
    """
    _require(gdf_areas, ("code", "name", "level"), "areas")
    _require(gdf_units, ("unit_id", "kind", "status", "on_duty"), "units")
    _require(gdf_incidents, ("incident_id", "status", "priority", "reported_at"), "incidents")
    if colour_by not in ("open_incidents", "workload"):
        msg = f"colour_by must be 'open_incidents' or 'workload', got {colour_by!r}"
        raise InputError(msg)
    shown = _level_name(level)
    level_names = [_level_name(lv) for lv in levels]
    if shown not in level_names:
        level_names.append(shown)
    gdf_open = open_incidents(gdf_incidents)
    m = _new_map(_frame(gdf_areas), base, tile_key)
    breaks_of: dict[str, list[float]] = {}
    for lv in level_names:
        if area_stats:
            values, colours, labels, breaks = _area_stats(
                gdf_areas, lv, gdf_open, gdf_units, colour_by
            )
            breaks_of[lv] = breaks
            data = area_layer_json(gdf_areas, lv, values=values, colours=colours, labels=labels)
            style: dict[str, Any] = {}
        else:
            data = area_layer_json(gdf_areas, lv)
            style = {"fillOpacity": 0.15}
        m.add_child(
            _AreaLayer(data, f"{_LEVEL_ZH[lv]} {lv}", overlay=False, show=lv == shown, style=style)
        )
    if area_url:
        lv = _level_name(area_url_level)
        m.add_child(
            _ViewportAreas(
                area_url, lv, area_min_zoom, f"{_LEVEL_ZH[lv]} {lv} (视窗 viewport)", True
            )
        )
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        msg = "now must be a timezone-aware datetime"
        raise InputError(msg)
    reported = pd.to_datetime(gdf_incidents["reported_at"], utc=True)
    recent = gdf_incidents[
        (reported >= pd.Timestamp(when - timedelta(hours=recent_hours))) & (reported <= when)
    ]
    rx, ry, rok = _point_xy(_wgs84(recent))
    weights = [1.0 / max(1, _priority(p) or 4) for p in recent["priority"]]
    heat = [
        [round(float(b), 6), round(float(a), 6), round(w, 3)]
        for a, b, w, k in zip(rx, ry, weights, rok, strict=True)
        if k
    ]
    # Leaflet.heat needs a point: with no recent incident, one of weight 0 (nothing shows).
    if with_heat:
        m.add_child(
            _Heat(
                len(heat),
                heat or [[float(m.location[0]), float(m.location[1]), 0.0]],
                name=f"热力图 heat map ({recent_hours:g} h)",
                show=False,
                radius=18,
                overlay=True,
            )
        )
    m.add_child(_Routes(_route_data(gdf_open, gdf_assignments, gdf_units), "派遣路线 routes"))
    _add_points(m, "units", _unit_data(gdf_units), "力量 units", cluster)
    _add_points(
        m,
        "incidents",
        _incident_data(gdf_open, gdf_assignments, df_events, explanations),
        "未结事件 open incidents",
        cluster,
    )
    what = "未结事件 open incidents" if colour_by == "open_incidents" else "负荷 workload"
    # One class legend per level; the page shows the one of the level on screen.
    per_level = "".join(
        f"<div class='gg-level-legend' data-level='{lv}'"
        + ("" if lv == shown else " style='display:none'")
        + ">"
        + _legend_html([(f"{what} ({_LEVEL_ZH[lv]} {lv})", _class_items(breaks_of[lv]))])
        + "</div>"
        for lv in level_names
        if lv in breaks_of
    )
    legend = per_level + _legend_html(
        [
            ("事件优先级 incident priority", _priority_items()),
            ("力量 force kind", _kind_items()),
            ("状态 unit status", _status_items()),
        ]
    )
    return _finish(m, legend, "编码或名称 code or name", title)


def unit_layer_json(gdf_units: gpd.GeoDataFrame) -> dict[str, Any]:
    """Units as the compact JSON the page runtime draws (``GG.units``); unpositioned ones
    are left out (``skipped`` counts them)."""
    _require(gdf_units, ("unit_id", "kind", "status", "on_duty"), "units")
    return _unit_data(gdf_units)


def incident_layer_json(
    gdf_incidents: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None = None,
    df_events: pd.DataFrame | None = None,
    explanations: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Incidents (every one given, open or not) as the compact JSON of ``GG.incidents``, each
    with its history (``df_events``) and active assignments (``gdf_assignments``)."""
    _require(gdf_incidents, ("incident_id", "status", "priority", "reported_at"), "incidents")
    return _incident_data(gdf_incidents, gdf_assignments, df_events, explanations)


def route_layer_json(
    gdf_incidents: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None,
    gdf_units: gpd.GeoDataFrame,
) -> dict[str, Any]:
    """Route lines of the incidents' active assignments as the JSON of ``GG.routes`` (a
    straight line from the unit when no route is stored)."""
    return _route_data(gdf_incidents, gdf_assignments, gdf_units)


def add_live_feed(
    m: folium.Map,
    feed_url: str,
    *,
    interval_ms: int = 1000,
    dataset: int | None = None,
    token_key: str = "gridgov.token",
    time_zone: str | None = None,
) -> folium.Map:
    """Make a built map live: the page polls ``feed_url`` and keeps its unit, incident and
    route layers up to date (``gridgov/static/gridgov/gridgov-live.js``), and colours the
    street, community and grid layers by the open incidents it holds (:data:`LIVE_AREA_BREAKS`;
    build the map with ``area_stats=False``).

    The feed answers ``{"cursor", "reset", "incidents", "closed", "units", "routes",
    "dataset"}`` (the API's ``GET /api/v1/live``) and 304 when nothing changed since the
    cursor. The bearer token comes from the page URL's fragment (``#token=gg_...``, never sent
    to the server) and is kept in ``sessionStorage`` under ``token_key``. The page shows the
    time of its last update, and a banner while the feed cannot be reached. When the feed
    reports another ``dataset`` than the page was built from, the page reloads itself.

    Parameters
    ----------
    m
        A map from :func:`command_centre_map` or :func:`street_map` (it has unit and incident
        layers).
    feed_url
        The feed's URL (same origin).
    interval_ms
        Time between two polls.
    dataset
        The dataset version the page was built from.
    token_key
        The ``sessionStorage`` key of the token.
    time_zone
        The IANA zone of the "last update" clock (default: ``settings.display_tz``, the zone
        incident times are shown in).
    """
    if interval_ms < 100:
        msg = f"interval_ms must be at least 100, got {interval_ms}"
        raise InputError(msg)
    # Areas are coloured by the open incidents the feed sends (so within the caller's scope),
    # in fixed classes: a page cannot know the quantiles of counts it has not seen yet.
    breaks = list(LIVE_AREA_BREAKS)
    items = [_swatch(_NO_DATA, "0 / 不在权限内 outside your scope")]
    low = 0
    for i, b in enumerate(breaks):
        items.append(_swatch(_SEQUENTIAL[i + 1], str(b) if b == low + 1 else f"{low + 1}–{b}"))
        low = b
    items.append(_swatch(_SEQUENTIAL[len(breaks) + 1], f"> {low}"))
    options = {
        "feed": feed_url,
        "interval": int(interval_ms),
        "dataset": dataset,
        "tokenKey": token_key,
        "timeZone": time_zone or get_settings().display_tz,
        "areaClasses": {
            "breaks": breaks,
            "colours": list(_SEQUENTIAL[1 : len(breaks) + 2]),
            "none": _NO_DATA,
        },
        "legend": _legend_html([("未结事件 open incidents (实时 live)", items)]),
    }
    m.add_child(_Live(options))
    return m


def street_map(
    street_code: str,
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    gdf_incidents: gpd.GeoDataFrame,
    gdf_assignments: gpd.GeoDataFrame | None = None,
    df_events: pd.DataFrame | None = None,
    *,
    explanations: Mapping[str, Mapping[str, Any]] | None = None,
    open_only: bool = True,
    base: str = "none",
    tile_key: str | None = None,
) -> folium.Map:
    """One street: its communities and grids, the units it commands and its incidents.

    Units are those commanded by the street (``street_code``) plus any positioned inside it;
    incidents those located in it (``street_code``, else by point). Markers are not clustered.

    Raises
    ------
    InputError
        The street code is not a street of ``gdf_areas``, or a frame misses columns.
    """
    _require(gdf_areas, ("code", "name", "level", "parent_code"), "areas")
    _require(gdf_units, ("unit_id", "kind", "status", "on_duty", "street_code"), "units")
    _require(gdf_incidents, ("incident_id", "status", "priority"), "incidents")
    code = str(street_code)
    streets = gdf_areas[gdf_areas["level"].astype(str) == "street"]
    street = streets[streets["code"].astype(str) == code]
    if street.empty:
        known = ", ".join(sorted(streets["code"].astype(str))[:20])
        msg = f"no street {code!r} in the areas (streets: {known})"
        raise InputError(msg)
    parent = gdf_areas["parent_code"].astype("string")
    communities = gdf_areas[(gdf_areas["level"].astype(str) == "community") & (parent == code)]
    grids = gdf_areas[
        (gdf_areas["level"].astype(str) == "grid")
        & parent.isin(communities["code"].astype(str).tolist())
    ]
    sub = pd.concat([street, communities, grids])
    outline = street.geometry.to_numpy()[0]
    ux, uy, uok = _point_xy(_wgs84(gdf_units))
    inside = np.zeros(len(gdf_units), dtype=bool)
    inside[uok] = shapely.intersects_xy(outline, ux[uok], uy[uok])
    units = gdf_units[(gdf_units["street_code"].astype(str) == code) | inside]
    incidents = open_incidents(gdf_incidents) if open_only else gdf_incidents
    located = _codes_at(incidents, streets, "street") if len(incidents) else pd.Series(dtype=str)
    incidents = incidents[located == code] if len(incidents) else incidents
    name = _text(street["name"].iloc[0]) or code
    m = _new_map(_frame(street), base, tile_key)
    gdf_open = open_incidents(incidents)
    # Grids carry the colour; communities are outlines over them (two fills would mix).
    grid_breaks: list[float] = []
    for lv, frame, fill in (("grid", grids, 0.5), ("community", communities, 0.0)):
        values, colours, labels, breaks = _area_stats(sub, lv, gdf_open, units, "open_incidents")
        grid_breaks = breaks if lv == "grid" else grid_breaks
        data = area_layer_json(frame, lv, values=values, colours=colours, labels=labels)
        style = {"fillOpacity": fill, "weight": 2.5 if lv == "community" else 0.8}
        m.add_child(_AreaLayer(data, f"{_LEVEL_ZH[lv]} {lv}", overlay=True, show=True, style=style))
    m.add_child(
        _AreaLayer(
            area_layer_json(street, "street"),
            "街道 street",
            overlay=True,
            show=True,
            style={"fillOpacity": 0, "weight": 3, "stroke": "#111"},
        )
    )
    m.add_child(_Routes(_route_data(gdf_open, gdf_assignments, units), "派遣路线 routes"))
    _add_points(m, "units", _unit_data(units), "力量 units", False)
    _add_points(
        m,
        "incidents",
        _incident_data(incidents, gdf_assignments, df_events, explanations),
        "事件 incidents",
        False,
    )
    legend = _legend_html(
        [
            ("未结事件 open incidents (网格 grid)", _class_items(grid_breaks)),
            ("事件优先级 incident priority", _priority_items()),
            ("力量 force kind", _kind_items(set(units["kind"].astype(str)))),
            ("状态 unit status", _status_items()),
        ]
    )
    return _finish(m, legend, "编码或名称 code or name", f"{name} {code}")


def _band_labels(bands_min: Sequence[float]) -> list[str]:
    labels = []
    low = 0.0
    for b in bands_min:
        labels.append(f"{low:g}–{b:g} min")
        low = b
    labels.append(f"> {low:g} min")
    return labels


def coverage_map(
    gdf_areas: gpd.GeoDataFrame,
    gdf_units: gpd.GeoDataFrame,
    travel: TravelModel,
    kind: ForceKind | str,
    *,
    level: Level | str = "grid",
    bands_min: Sequence[float] = (5, 10, 15, 20, 30),
    street_code: str | None = None,
    on_duty_only: bool = True,
    base: str = "none",
    tile_key: str | None = None,
) -> folium.Map:
    """Travel-time bands to the nearest unit of ``kind``, per area (see :func:`coverage_times`).

    Parameters
    ----------
    bands_min
        Upper bounds of the bands (minutes, increasing); the last band is "more than the last
        bound" (not reached within it).
    street_code
        Only the areas (and units) of this street; the whole district when None.
    """
    bands = [float(b) for b in bands_min]
    if not bands or any(b <= 0 for b in bands) or bands != sorted(set(bands)):
        msg = f"bands_min must be positive and strictly increasing, got {list(bands_min)}"
        raise InputError(msg)
    if len(bands) > len(_BANDS) - 1:
        msg = f"at most {len(_BANDS) - 1} bands, got {len(bands)}"
        raise InputError(msg)
    k = _kind_name(kind)
    lv = _level_name(level)
    areas = gdf_areas
    if street_code is not None:
        _require(gdf_areas, ("code", "level"), "areas")
        prefix = str(street_code)[: Level.STREET.prefix_length]
        areas = gdf_areas[gdf_areas["code"].astype(str).str.startswith(prefix)]
        if not (areas["level"].astype(str) == lv).any():
            msg = f"no {lv} of street {street_code!r} in the areas"
            raise InputError(msg)
    table = coverage_times(
        areas, gdf_units, travel, k, level=lv, limit_s=bands[-1] * 60, on_duty_only=on_duty_only
    )
    palette = (*_BANDS[: len(bands)], _BANDS[-1])
    labels_of = _band_labels(bands)
    colours: dict[str, str] = {}
    labels: dict[str, str] = {}
    values: dict[str, float] = {}
    counts = [0] * (len(bands) + 1)
    for code, t, unit in zip(table["code"], table["time_s"], table["unit_id"], strict=True):
        band = (
            int(np.searchsorted(bands, t / 60.0, side="left")) if math.isfinite(t) else len(bands)
        )
        counts[band] += 1
        colours[code] = palette[band]
        values[code] = t
        labels[code] = f"{t / 60:.1f} min ← {unit}" if math.isfinite(t) else f"> {bands[-1]:g} min"
    m = _new_map(_frame(areas[areas["level"].astype(str) == lv]), base, tile_key)
    data = area_layer_json(areas, lv, values=values, colours=colours, labels=labels)
    m.add_child(
        _AreaLayer(
            data,
            f"{ForceKind(k).zh} 覆盖 coverage ({lv})",
            overlay=True,
            show=True,
            style={"fillOpacity": 0.6, "weight": 0.5},
        )
    )
    units = gdf_units[gdf_units["kind"].astype(str) == k]
    if street_code is not None and len(units):
        outline = shapely.union_all(areas[areas["level"].astype(str) == lv].geometry.to_numpy())
        ux, uy, uok = _point_xy(_wgs84(units))
        near = np.zeros(len(units), dtype=bool)
        near[uok] = shapely.dwithin(outline, shapely.points(ux[uok], uy[uok]), 0.01)
        units = units[near]
    _add_points(m, "units", _unit_data(units), f"{ForceKind(k).zh} {k}", False)
    items = [
        _swatch(c, f"{label} ({n})") for c, label, n in zip(palette, labels_of, counts, strict=True)
    ]
    legend = _legend_html(
        [
            (f"到达时间 travel time: {ForceKind(k).zh} {ForceKind(k).en}", items),
            ("力量 force kind", _kind_items([k])),
            ("状态 unit status", _status_items()),
        ]
    )
    return _finish(m, legend, "编码或名称 code or name", f"覆盖 coverage: {ForceKind(k).zh}")


def assessment_map(
    gdf_areas: gpd.GeoDataFrame,
    df_kpi: pd.DataFrame,
    *,
    value: str = "value",
    key: str = "street_code",
    label: str | None = None,
    percent: bool | None = None,
    base: str = "none",
    tile_key: str | None = None,
) -> folium.Map:
    """A choropleth of one KPI by street.

    Parameters
    ----------
    gdf_areas
        Areas holding the street level.
    df_kpi
        One row per street: ``key`` (street code) and ``value`` (NaN is shown as "–", in grey).
        Any KPI table works, e.g. ``gridgov.assessment.compute_kpis(..., by="street")`` with
        ``value="resolution_rate"``.
    label
        The legend title (``value`` when None).
    percent
        Show values as percentages; by default when every value lies in [0, 1].

    Raises
    ------
    InputError
        Missing columns, duplicate or unknown street codes, or non-numeric values.
    """
    _require(gdf_areas, ("code", "name", "level"), "areas")
    _require(df_kpi, (key, value), "KPI table", geometry=False)
    streets = gdf_areas[gdf_areas["level"].astype(str) == "street"]
    codes = df_kpi[key].astype(str)
    problems = []
    dup = sorted(set(codes[codes.duplicated()]))
    if dup:
        problems.append(f"duplicate {key}: {', '.join(dup[:10])}")
    unknown = sorted(set(codes) - set(streets["code"].astype(str)))
    if unknown:
        problems.append(f"not a street of the areas: {', '.join(unknown[:10])}")
    numbers = pd.to_numeric(df_kpi[value], errors="coerce")
    bad = df_kpi[value].notna() & numbers.isna()
    if bad.any():
        problems.append(f"non-numeric {value} for {', '.join(codes[bad].tolist()[:10])}")
    if problems:
        msg = "KPI table: " + "; ".join(problems)
        raise InputError(msg)
    values = dict(zip(codes, numbers.astype(float), strict=True))
    finite = [v for v in values.values() if math.isfinite(v)]
    as_percent = (
        percent if percent is not None else bool(finite) and all(0 <= v <= 1 for v in finite)
    )
    fmt = (lambda v: f"{v * 100:.1f}%") if as_percent else (lambda v: f"{v:.3g}")
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    edges = list(np.linspace(lo, hi, 6)) if hi > lo else [lo]
    palette = _SEQUENTIAL[1:]

    def colour(v: float) -> str:
        if not math.isfinite(v):
            return _NO_DATA
        if hi <= lo:
            return palette[len(palette) // 2]
        i = min(int((v - lo) / (hi - lo) * (len(palette))), len(palette) - 1)
        return palette[i]

    colours = {c: colour(v) for c, v in values.items()}
    labels = {
        c: f"{label or value}: {fmt(v) if math.isfinite(v) else '–'}" for c, v in values.items()
    }
    m = _new_map(_frame(streets), base, tile_key)
    data = area_layer_json(streets, "street", values=values, colours=colours, labels=labels)
    m.add_child(
        _AreaLayer(
            data,
            f"{label or value} (街道 street)",
            overlay=True,
            show=True,
            style={"fillOpacity": 0.7, "weight": 1.5},
        )
    )
    items = []
    if len(edges) > 1:
        for i in range(len(palette)):
            a = lo + (hi - lo) * i / len(palette)
            b = lo + (hi - lo) * (i + 1) / len(palette)
            items.append(_swatch(palette[i], f"{fmt(a)} – {fmt(b)}"))
    else:
        items.append(_swatch(palette[len(palette) // 2], fmt(lo) if finite else "–"))
    items.append(_swatch(_NO_DATA, "无数据 no data (–)"))
    legend = _legend_html([(f"考核 assessment: {label or value}", items)])
    return _finish(m, legend, "街道编码或名称 street code or name", f"考核 {label or value}")


# --------------------------------------------------------------------------------------------
# layers of a built map (tests, CLI summaries)
# --------------------------------------------------------------------------------------------


def describe_map(m: folium.Map) -> dict[str, Any]:
    """What a built map holds: per layer name, its kind and feature count.

    Returns
    -------
    dict
        ``{"layers": {name: {"kind": ..., "count": n, "level": ...}}, "controls": [...]}``.
    """
    layers: dict[str, dict[str, Any]] = {}
    controls: list[str] = []
    for child in m._children.values():
        if isinstance(child, _AreaLayer):
            layers[child.layer_name] = {
                "kind": "areas",
                "count": child.n_features,
                "level": child.level,
                "base": not child.overlay,
            }
        elif isinstance(child, _ViewportAreas):
            layers[child.layer_name] = {"kind": "viewport", "count": 0, "level": child.level}
        elif isinstance(child, _Routes):
            layers[child.layer_name] = {"kind": "routes", "count": child.n_features}
        elif isinstance(child, folium.plugins.HeatMap):
            layers[child.layer_name] = {
                "kind": "heat",
                "count": child.gg_count if isinstance(child, _Heat) else len(child.data),
            }
        elif isinstance(child, folium.plugins.MarkerCluster | folium.FeatureGroup):
            points = [c for c in child._children.values() if isinstance(c, _Points)]
            for p in points:
                layers[child.layer_name] = {
                    "kind": p.what,
                    "count": p.n_features,
                    "clustered": isinstance(child, folium.plugins.MarkerCluster),
                }
        elif isinstance(child, folium.TileLayer):
            layers[child.layer_name] = {"kind": "tiles", "count": 0}
        elif isinstance(child, folium.LayerControl):
            controls.append("layers")
        elif isinstance(child, folium.plugins.Fullscreen):
            controls.append("fullscreen")
        elif isinstance(child, _Search):
            controls.append("search")
        elif isinstance(child, _Legend):
            controls.append("legend")
    return {"layers": layers, "controls": controls}


# --------------------------------------------------------------------------------------------
# writing: offline assets
# --------------------------------------------------------------------------------------------

_SCRIPT_LINK = re.compile(r'<script src="([^"]+)"></script>')
_CSS_LINK = re.compile(r'<link rel="stylesheet" href="([^"]+)"/>')
_CSS_URL = re.compile(r"url\((['\"]?)([^)'\"#]+)\1\)")
_MIME = {".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}
_READY = "<script>GG.markReady();</script>"


def _asset_path(url: str) -> Path:
    return STATIC_DIR / _VENDORED[url]


def _inline_css(path: Path) -> str:
    text = path.read_text(encoding="utf-8")

    def data_uri(match: re.Match[str]) -> str:
        ref = match.group(2)
        if ref.startswith("data:"):
            return match.group(0)
        target = (path.parent / ref).resolve()
        if not target.is_file() or target.suffix not in _MIME:
            return match.group(0)
        encoded = base64.b64encode(target.read_bytes()).decode("ascii")
        return f"url({_MIME[target.suffix]};base64,{encoded})".replace("url(", "url(data:", 1)

    return _CSS_URL.sub(data_uri, text)


def _check_links(page: str) -> None:
    unknown = sorted(
        {u for u in _SCRIPT_LINK.findall(page) + _CSS_LINK.findall(page)} - set(_VENDORED) - _UNUSED
    )
    needs = _NEEDS_UNUSED in page
    problems = []
    if unknown:
        problems.append(f"no vendored copy of {', '.join(unknown)}")
    if needs:
        problems.append("the map uses folium.Icon (Font Awesome / awesome markers), not vendored")
    if problems:
        msg = (
            "cannot write the map for offline use: "
            + "; ".join(problems)
            + " (gridgov maps load nothing from the internet)"
        )
        raise InputError(msg)


def render_html(m: folium.Map, assets: str = "inline") -> str:
    """The map's HTML page, with no link to the internet.

    Parameters
    ----------
    m
        A map from one of the builders (or any folium map using only vendored plugins).
    assets
        ``"inline"``: Leaflet, the plugins, their CSS and images are embedded (the file works
        opened from disk, with no network). Otherwise a URL prefix (``"/static"``) under which
        :data:`STATIC_DIR` is served: the page links ``<prefix>/vendor/...`` and
        ``<prefix>/gridgov/...``.

    Raises
    ------
    InputError
        The map links a resource that is not vendored (see the module docstring).
    """
    page = m.get_root().render()
    _check_links(page)
    inline = assets == "inline"
    prefix = assets.rstrip("/")
    if not inline and not prefix:
        msg = "assets must be 'inline' or a URL prefix such as '/static'"
        raise InputError(msg)

    def script(match: re.Match[str]) -> str:
        url = match.group(1)
        if url in _UNUSED:
            return ""
        if inline:
            body = _asset_path(url).read_text(encoding="utf-8")
            return "<script>" + body.replace("</script", "<\\/script") + "</script>"
        return f'<script src="{html.escape(prefix + "/" + _VENDORED[url])}"></script>'

    def css(match: re.Match[str]) -> str:
        url = match.group(1)
        if url in _UNUSED:
            return ""
        if inline:
            return (
                "<style>"
                + _inline_css(_asset_path(url)).replace("</style", "<\\/style")
                + "</style>"
            )
        return f'<link rel="stylesheet" href="{html.escape(prefix + "/" + _VENDORED[url])}"/>'

    page = _SCRIPT_LINK.sub(script, page)
    # Browsers ask for /favicon.ico unless the page names one: an empty one, so no request.
    page = page.replace("<head>", '<head>\n    <link rel="icon" href="data:,"/>', 1)
    page = _CSS_LINK.sub(css, page)
    # The page script adds every layer synchronously; mark the page ready once it has painted.
    if "GG." in page:
        page = page.rstrip()
        page = (
            page[: -len("</html>")] + _READY + "\n</html>"
            if page.endswith("</html>")
            else page + _READY
        )
    return page


# --------------------------------------------------------------------------------------------
# from the store (the CLI's entry point)
# --------------------------------------------------------------------------------------------

#: Map kinds :func:`build_map` knows.
MAP_KINDS = ("command-centre", "street", "coverage", "assessment")


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
    base: str = "none",
    tile_key: str | None = None,
    now: datetime | None = None,
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
        default: the current month in the display time zone.
    base, tile_key
        The base layer.
    now
        The command centre's "now" (heat map window).
    """
    from gridgov import store

    if kind not in MAP_KINDS:
        msg = f"unknown map kind {kind!r}; expected one of {', '.join(MAP_KINDS)}"
        raise InputError(msg)
    gdf_areas = store.read_stored_areas(engine)
    if kind == "assessment":
        table = kpi if kpi is not None else _store_kpis(engine, period, now)
        return assessment_map(gdf_areas, table, value=kpi_value, base=base, tile_key=tile_key)
    gdf_units = store.read_units(engine)
    if kind == "coverage":
        travel = store.travel_from_store(engine)
        return coverage_map(
            gdf_areas,
            gdf_units,
            travel,
            force_kind,
            level=level,
            street_code=street,
            base=base,
            tile_key=tile_key,
        )
    gdf_incidents = store.read_incidents(engine)
    gdf_assignments = store.read_assignments(engine, active=True)
    df_events = store.read_events(engine)
    explanations: dict[str, Mapping[str, Any]] = {}
    active_ids = set(gdf_assignments["incident_id"].astype(str))
    for iid in sorted(active_ids & set(open_incidents(gdf_incidents)["incident_id"].astype(str))):
        explanations[iid] = store.read_dispatch(engine, iid).get("explanation") or {}
    if kind == "street":
        if not street:
            msg = "the street map needs a street code (--street)"
            raise InputError(msg)
        return street_map(
            street,
            gdf_areas,
            gdf_units,
            gdf_incidents,
            gdf_assignments,
            df_events,
            explanations=explanations,
            base=base,
            tile_key=tile_key,
        )
    return command_centre_map(
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


def _store_kpis(engine: Engine, period: str | None, now: datetime | None) -> pd.DataFrame:
    """The stored event log assessed by street over ``period`` (default: the current month)."""
    from gridgov import store
    from gridgov.assessment import Period, assess

    if period is None:
        when = (now or datetime.now(UTC)).astimezone(ZoneInfo(get_settings().display_tz))
        period = f"{when:%Y-%m}"
    span = Period.parse(period)
    result = assess(
        store.read_events(engine, until=span.end),
        store.read_incidents(engine),
        store.read_offices(engine),
        store.read_catalog(engine),
        span,
    )
    return result.streets


__all__ = [
    "CLOSED_STATUSES",
    "DEFAULT_LEVELS",
    "KIND_STYLE",
    "LIVE_AREA_BREAKS",
    "MAP_KINDS",
    "PRIORITY_COLOURS",
    "SIMPLIFY_M",
    "STATIC_DIR",
    "STATUS_COLOURS",
    "add_live_feed",
    "area_layer_json",
    "assessment_map",
    "build_map",
    "command_centre_map",
    "coverage_map",
    "coverage_times",
    "describe_map",
    "incident_layer_json",
    "open_incidents",
    "render_html",
    "route_layer_json",
    "street_map",
    "unit_layer_json",
]
