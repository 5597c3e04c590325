"""The road base layer: the stored road network drawn by class, offline.

With no tile server a map would show polygons only; the stored roads give a dispatcher
something to orient by. Each road class has a colour, a width and the zoom from which it shows
(:data:`ROAD_STYLES`); named roads say their name on hover. The layer is compact JSON
(:func:`road_layer_json`) drawn by ``gridgov/static/gridgov/gridgov-roads.js`` (``GG.roads``) as
SVG lines in a pane of their own, above the area fills and below the markers, that lets every
click beside a road through to the areas under it.

A static map inlines the roads (:func:`add_road_layer` with ``gdf_roads``), simplified once for
the deepest zoom they are read at (Leaflet thins them further per zoom on screen). A page served
by gridgov fetches them per viewport instead (``url``: the API's ``/api/v1/roads``), simplified
for the zoom on screen like the micro-grids.
"""

from __future__ import annotations

import html
from typing import Any, NamedTuple

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from folium.elements import JSCSSMixin
from folium.map import Layer
from folium.template import Template

from gridgov.areas import tolerance_for_zoom
from gridgov.coverage import _require, _wgs84
from gridgov.errors import InputError
from gridgov.maps.elements import _js
from gridgov.settings import get_settings

#: The base value that draws the stored roads (and no tiles).
ROAD_BASE = "roads"
#: The page runtime of the road layer (a placeholder resolved like the vendored files).
ROADS_JS = "gridgov-static:gridgov/gridgov-roads.js"
#: Zoom whose half-pixel tolerance simplifies inlined roads (about 1 m: the 1e-5° rounding).
INLINE_ROAD_ZOOM = 16
#: Where a page served by gridgov fetches the roads of its viewport (``api/routes/road_routes.py``).
SERVED_ROAD_URL = "/api/v1/roads?bbox={west},{south},{east},{north}&zoom={zoom}&format=compact"
#: The layer's name in the layer control.
ROAD_LAYER_NAME = "道路 roads"


class RoadStyle(NamedTuple):
    """How one road class is drawn."""

    zh: str
    en: str
    colour: str
    weight: float
    min_zoom: int = 0
    dash: str | None = None


_MAJOR = "#253494"
_FAST = "#2c7fb8"
_MAIN = "#4d4d4d"
_MINOR = "#7a7a7a"
_PATH = "#8c8c8c"
#: Style per road class: the classes of :mod:`gridgov.roads` (Chengdu link table) and the
#: OpenStreetMap ``highway`` values :func:`gridgov.roads.read_osm` keeps. Minor classes show
#: only zoomed in, where they help rather than clutter.
ROAD_STYLES: dict[str, RoadStyle] = {
    "expressway": RoadStyle("高速公路", "expressway", _MAJOR, 5.0),
    "urban_expressway": RoadStyle("城市快速路", "urban expressway", _FAST, 4.0),
    "arterial": RoadStyle("主干路", "arterial", _MAIN, 2.0),
    "motorway": RoadStyle("高速公路", "motorway", _MAJOR, 5.0),
    "motorway_link": RoadStyle("高速匝道", "motorway link", _MAJOR, 2.5),
    "trunk": RoadStyle("快速路", "trunk", _FAST, 4.0),
    "trunk_link": RoadStyle("快速路匝道", "trunk link", _FAST, 2.0),
    "primary": RoadStyle("主干路", "primary", _MAIN, 3.0),
    "primary_link": RoadStyle("主干路连接线", "primary link", _MAIN, 1.5),
    "secondary": RoadStyle("次干路", "secondary", _MAIN, 2.0),
    "secondary_link": RoadStyle("次干路连接线", "secondary link", _MAIN, 1.5),
    "tertiary": RoadStyle("支路", "tertiary", _MINOR, 1.5, 13),
    "tertiary_link": RoadStyle("支路连接线", "tertiary link", _MINOR, 1.2, 13),
    "unclassified": RoadStyle("其他道路", "unclassified", _MINOR, 1.2, 14),
    "road": RoadStyle("道路", "road", _MINOR, 1.2, 14),
    "residential": RoadStyle("小区道路", "residential", _MINOR, 1.0, 15),
    "living_street": RoadStyle("生活街道", "living street", _MINOR, 1.0, 15),
    "service": RoadStyle("服务道路", "service", _PATH, 0.8, 16),
    "track": RoadStyle("小道", "track", _PATH, 0.8, 16),
    "busway": RoadStyle("公交专用道", "busway", _FAST, 1.5, 14),
    "pedestrian": RoadStyle("步行街", "pedestrian", _PATH, 1.0, 15, "4 3"),
    "footway": RoadStyle("人行道", "footway", _PATH, 0.8, 16, "3 3"),
    "bridleway": RoadStyle("马道", "bridleway", _PATH, 0.8, 16, "3 3"),
    "path": RoadStyle("小径", "path", _PATH, 0.8, 16, "3 3"),
    "cycleway": RoadStyle("自行车道", "cycleway", _FAST, 0.8, 16, "3 3"),
    "steps": RoadStyle("台阶", "steps", _PATH, 0.8, 17, "1 2"),
}
#: Classes not in :data:`ROAD_STYLES` (or none) are drawn like this.
OTHER_ROAD = RoadStyle("其他道路", "other road", _MINOR, 1.2, 14)


def _style(road_class: str) -> RoadStyle:
    return ROAD_STYLES.get(road_class, OTHER_ROAD)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return ""
    return str(value).strip()


def road_layer_json(
    gdf_roads: gpd.GeoDataFrame,
    *,
    zoom: float | None = None,
    simplify_m: float | None = None,
) -> dict[str, Any]:
    """Road lines as the compact JSON the page runtime draws (``GG.roads``).

    Lines of one class and name are merged where they meet (one drawn feature each), then
    simplified in the metric CRS.

    Parameters
    ----------
    gdf_roads
        Road lines with ``road_class`` and ``road_name`` (``gridgov.store.read_road_lines``, or
        links of :func:`gridgov.roads.read_osm`), any CRS.
    zoom
        The map zoom the lines are for: classes that show only deeper are left out, and the
        tolerance is half a pixel at this zoom (:func:`gridgov.areas.tolerance_for_zoom`).
    simplify_m
        Tolerance in metres (overrides the zoom's); 0 keeps every vertex.

    Returns
    -------
    dict
        ``{"classes": [{"id", "zh", "en", "colour", "weight", "minZoom", "dash"}, ...],
        "features": [[class index, name, [[[lon, lat], ...], ...]], ...], "segments": n}``;
        coordinates rounded to 1e-5° (about a metre).
    """
    _require(gdf_roads, ("road_class", "road_name"), "roads")
    gdf = _wgs84(gdf_roads)
    classes = np.array([_text(c) for c in gdf["road_class"]], dtype=object)
    names = np.array([_text(n) for n in gdf["road_name"]], dtype=object)
    geoms = gdf.geometry.to_numpy()
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if zoom is not None:
        keep &= np.array([_style(c).min_zoom <= zoom for c in classes], dtype=bool)
    classes, names, geoms = classes[keep], names[keep], geoms[keep]
    tolerance = 0.0
    if simplify_m is not None:
        tolerance = float(simplify_m)
    elif zoom is not None and len(geoms):
        lat = float(np.mean(shapely.bounds(geoms)[:, [1, 3]]))
        tolerance = tolerance_for_zoom(zoom, lat)
    order: list[str] = []
    features: list[list[Any]] = []
    if len(geoms):
        groups: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(zip(classes.tolist(), names.tolist(), strict=True)):
            groups.setdefault(key, []).append(i)
        # Minor classes first: the page draws in order, so major roads lie on top.
        keys = sorted(groups, key=lambda k: (_style(k[0]).weight, k))
        merged = np.array(
            [
                shapely.line_merge(shapely.multilinestrings(shapely.get_parts(geoms[groups[k]])))
                for k in keys
            ],
            dtype=object,
        )
        if tolerance > 0:
            metric_crs = get_settings().metric_crs
            metric = gpd.GeoSeries(merged, crs="EPSG:4326").to_crs(metric_crs).to_numpy()
            simple = shapely.simplify(metric, tolerance, preserve_topology=False)
            simple = np.where(shapely.is_empty(simple), metric, simple)
            merged = gpd.GeoSeries(simple, crs=metric_crs).to_crs("EPSG:4326").to_numpy()
        index: dict[str, int] = {}
        for (road_class, name), geom in zip(keys, merged, strict=True):
            parts = _line_parts(geom)
            if not parts:
                continue
            if road_class not in index:
                index[road_class] = len(order)
                order.append(road_class)
            features.append([index[road_class], name, parts])
    return {
        "classes": [_class_json(c) for c in order],
        "features": features,
        "segments": len(geoms),
    }


def _class_json(road_class: str) -> dict[str, Any]:
    style = _style(road_class)
    return {
        "id": road_class or "other",
        "zh": style.zh,
        "en": style.en,
        "colour": style.colour,
        "weight": style.weight,
        "minZoom": style.min_zoom,
        "dash": style.dash,
    }


def _line_parts(geom: Any) -> list[list[list[float]]]:
    """Line coordinates rounded to 1e-5°, parts that round to a point dropped."""
    out = []
    for part in shapely.get_parts(geom):
        coords = np.round(shapely.get_coordinates(part), 5)
        if len(coords) >= 2 and np.any(coords != coords[0]):
            out.append(coords.tolist())
    return out


def road_legend_html(classes: list[dict[str, Any]]) -> str:
    """The road layer's legend: a line of each class's colour and width, widest first."""
    items = [
        f"<i class='gg-road-swatch' style='border:0;height:0;width:18px;border-top:"
        f"{max(1.0, c['weight']):g}px {'dashed' if c['dash'] else 'solid'} {c['colour']}'></i>"
        f"{html.escape(c['zh'] + ' ' + c['en'])}"
        for c in sorted(classes, key=lambda c: -c["weight"])
    ]
    return "<h4>道路 roads</h4>" + "<br>".join(items)


class RoadLayer(JSCSSMixin, Layer):
    """The road layer: inlined lines (``data``) or lines fetched per viewport (``url``)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GG.roads({{ this._parent.get_name() }},
            {{ this.json }}, {{ this.options|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, data: dict[str, Any] | None, url: str | None, *, show: bool) -> None:
        super().__init__(name=ROAD_LAYER_NAME, overlay=True, control=True, show=show)
        self._name = "RoadLayer"
        self.default_js = [("gridgov_roads_js", ROADS_JS)]
        self.data = data
        self.n_features = 0 if data is None else len(data["features"])
        # A viewport page learns its classes from each answer: its legend names the main ones.
        legend = road_legend_html(_main_classes() if data is None else data["classes"])
        self.options = {"url": url, "legend": legend}

    @property
    def json(self) -> str:
        return _js(self.data)


def _main_classes() -> list[dict[str, Any]]:
    return [_class_json(c) for c in ("expressway", "urban_expressway", "arterial")]


def add_road_layer(
    m: folium.Map,
    base: str,
    *,
    gdf_roads: gpd.GeoDataFrame | None = None,
    url: str | None = None,
) -> folium.Map:
    """Add the road layer to a built map, as its base allows.

    Parameters
    ----------
    m
        A map from one of the builders.
    base
        The map's base: ``"roads"`` (:data:`ROAD_BASE`) shows the roads; a tile base (``osm``,
        ``tianditu``, a URL) adds them as an overlay the user can switch on; ``"none"`` adds
        nothing (polygons only).
    gdf_roads
        Road lines to inline (``gridgov.store.read_road_lines``), every class, simplified by
        half a pixel at :data:`INLINE_ROAD_ZOOM`; nothing is added when empty.
    url
        Instead, a URL template the page fetches for the visible box on every pan or zoom, with
        ``{west}``, ``{south}``, ``{east}``, ``{north}`` and ``{zoom}`` filled in; the answer is
        :func:`road_layer_json` (the API's ``/api/v1/roads?...&format=compact``).

    Raises
    ------
    InputError
        Both or neither of ``gdf_roads`` and ``url`` given.
    """
    if (gdf_roads is None) == (url is None):
        msg = "add_road_layer takes gdf_roads or url, one of the two"
        raise InputError(msg)
    if base in ("none", "", None):
        return m
    data = None
    if gdf_roads is not None:
        if len(gdf_roads) == 0:
            return m
        lat = float(np.mean(_wgs84(gdf_roads).total_bounds[[1, 3]]))
        data = road_layer_json(gdf_roads, simplify_m=tolerance_for_zoom(INLINE_ROAD_ZOOM, lat))
    m.add_child(RoadLayer(data, url, show=base == ROAD_BASE))
    # The layer control lists the layers defined before its script: it goes after this one.
    for key, child in list(m._children.items()):
        if isinstance(child, folium.LayerControl):
            m._children.move_to_end(key)
    return m
