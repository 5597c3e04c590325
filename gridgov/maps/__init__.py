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
``base="roads"`` (default: no tiles; the stored road network drawn by class, see
:mod:`gridgov.maps.road_layer`), ``"none"`` (vector layers only, no roads), ``"osm"``
(OpenStreetMap), ``"tianditu"`` (天地图 vector tiles + labels; needs ``tile_key``) or an XYZ URL
template of an intranet tile server (``"http://tiles.local/{z}/{x}/{y}.png"``). Tiles are an
overlay under the vector layers; after a few failed tiles the page drops them and says so, and the
vector layers stay. With tiles, the roads are an overlay the user can switch on. The builders
take the base for the tiles; :func:`add_road_layer` adds the roads (:func:`build_map` does).

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
The page holds the names, codes and bounds of the levels it does not inline
(:func:`gridgov.maps.layer_data.search_index_json`), so the search finds every level.

Markers
-------
Open incidents are a layer of their own above the units (Leaflet panes: units 600, incidents
640, priority 1 at 660, popups 700), so a click reaches an incident before a unit under it.
Priority-1 incidents are never clustered; the others cluster (``cluster=True``) into bubbles
of the colour of their most urgent member, with a count per priority. Units cluster apart.

Words
-----
Every value a person reads (states, levels, force kinds, unit statuses, matters, rules, KPI
names) is "中文 English" from one dictionary, :mod:`gridgov.labels`: legends are built with it in
Python, and each page embeds it as JSON for the runtime's ``GG.label(group, value)``, which the
popups use (the identifier stays in a ``data-id`` attribute). Pages are ``<html lang="zh-CN">``
with a ``<title>``. Class legends use quantile breaks: whole, non-overlapping ranges for counts;
other values rounded to the precision they need, with classes that would read the same merged.

Each page registers its layers in ``window.GG.maps[<map id>]`` (``areas[level]``,
``layers.units``, ``layers.incidents``, ``layers.routes``, ``layers.roads``, each with
``ggCount``) and sets ``GG.ready`` (and ``data-gridgov-ready`` on ``<html>``) once every layer
is added and painted (roads fetched per viewport arrive after it).
"""

from __future__ import annotations

# coverage_times lives in the pure core; it stays importable from here (and in __all__).
from gridgov.coverage import coverage_times
from gridgov.maps.builders import (
    DEFAULT_LEVELS,
    LIVE_AREA_BREAKS,
    add_live_feed,
    assessment_map,
    command_centre_map,
    coverage_map,
    name_matters_from,
    street_map,
    tile_sources,
)
from gridgov.maps.from_store import MAP_KINDS, build_map, check_map_options, last_complete_month
from gridgov.maps.layer_data import (
    CLOSED_STATUSES,
    KIND_STYLE,
    PRIORITY_COLOURS,
    SIMPLIFY_M,
    STATUS_COLOURS,
    area_layer_json,
    incident_layer_json,
    open_incidents,
    route_layer_json,
    unit_layer_json,
)
from gridgov.maps.rendering import STATIC_DIR, describe_map, render_html
from gridgov.maps.road_layer import (
    ROAD_BASE,
    ROAD_STYLES,
    add_road_layer,
    road_layer_json,
)

__all__ = [
    "CLOSED_STATUSES",
    "DEFAULT_LEVELS",
    "KIND_STYLE",
    "LIVE_AREA_BREAKS",
    "MAP_KINDS",
    "PRIORITY_COLOURS",
    "ROAD_BASE",
    "ROAD_STYLES",
    "SIMPLIFY_M",
    "STATIC_DIR",
    "STATUS_COLOURS",
    "add_live_feed",
    "add_road_layer",
    "area_layer_json",
    "assessment_map",
    "build_map",
    "check_map_options",
    "command_centre_map",
    "coverage_map",
    "coverage_times",
    "describe_map",
    "incident_layer_json",
    "last_complete_month",
    "name_matters_from",
    "open_incidents",
    "render_html",
    "road_layer_json",
    "route_layer_json",
    "street_map",
    "tile_sources",
    "unit_layer_json",
]
