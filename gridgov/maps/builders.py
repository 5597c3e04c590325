"""The map builders: command centre, one street, coverage, assessment, and the live feed.

Every builder returns a :class:`folium.Map` and never writes a file (see
:func:`gridgov.maps.rendering.render_html`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import folium
import folium.plugins
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from branca.element import Figure
from folium.map import Layer

from gridgov.catalog import Matter
from gridgov.coverage import (
    _kind_name,
    _level_name,
    _point_xy,
    _require,
    _wgs84,
    coverage_times,
)
from gridgov.errors import InputError
from gridgov.labels import KPI_KINDS
from gridgov.labels import label as label_of
from gridgov.maps.elements import (
    AreaLayer,
    FitBounds,
    Heat,
    IncidentLayer,
    Labels,
    Legend,
    Live,
    Points,
    Routes,
    Runtime,
    Search,
    SearchIndex,
    TileFallback,
    Title,
    ViewportAreas,
)
from gridgov.maps.layer_data import (
    LEVEL_ZH,
    NO_DATA,
    SEQUENTIAL,
    area_layer_json,
    as_priority,
    as_text,
    class_items,
    codes_at,
    incident_data,
    kind_items,
    legend_html,
    open_incidents,
    priority_items,
    route_data,
    search_index_json,
    stats_by_area,
    status_items,
    swatch,
    unit_data,
    value_classes,
)
from gridgov.model import ForceKind, Level
from gridgov.settings import get_settings

if TYPE_CHECKING:
    from gridgov.travel_model import TravelModel

#: Levels the command centre inlines by default (micro-grids come through ``area_url``).
DEFAULT_LEVELS = ("street", "community", "grid")
#: Upper bounds of the live page's classes of open incidents per area (fixed, see
#: :func:`add_live_feed`).
LIVE_AREA_BREAKS = (1, 2, 5, 10, 20)
# A diverging set of fills for travel-time bands.
_BANDS = ("#1a9850", "#91cf60", "#d9ef8b", "#fee08b", "#fc8d59", "#d73027")
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
    m.add_child(Runtime())
    m.add_child(Labels())
    m.add_child(FitBounds([list(frame.bounds[0]), list(frame.bounds[1])]))
    _add_tiles(m, base, tile_key)
    return m


def name_matters_from(m: folium.Map, matters: Iterable[Matter]) -> folium.Map:
    """Name the matters on ``m`` from ``matters`` (the store's catalogue, the one source of
    truth once loaded) instead of the configured file; returns ``m``."""
    for child in m._children.values():
        if isinstance(child, Labels):
            child.matters = list(matters)
    return m


def check_base(base: str | None, tile_key: str | None) -> None:
    """Check a base layer name (see the :mod:`gridgov.maps` docstring) before building.

    Raises
    ------
    InputError
        An unknown base layer, or Tianditu without a key.
    """
    if base in ("none", "roads", "", None):
        return
    if base in _TILES:
        if "{key}" in _TILES[base][0] and not tile_key:
            msg = f"the {base} base layer needs a key (tile_key)"
            raise InputError(msg)
    elif not ("{z}" in base and "{x}" in base and "{y}" in base):
        msg = (
            f"unknown base layer {base!r}: use roads, none, osm, tianditu, or an XYZ URL "
            "template with {z}, {x} and {y}"
        )
        raise InputError(msg)


def tile_sources(base: str, tile_key: str | None) -> list[dict[str, str]]:
    """The tile layers of a base layer name, bottom first: ``url`` (XYZ template),
    ``attribution`` and ``subdomains``; none for ``roads`` and ``none`` (the field page draws
    its base from these too).

    Raises
    ------
    InputError
        As :func:`check_base`.
    """
    check_base(base, tile_key)
    if base in ("none", "roads", "", None):
        return []
    if base in _TILES:
        url, attribution, subdomains = _TILES[base]
        url = url.replace("{key}", tile_key or "")
    else:
        url, attribution, subdomains = base, "intranet tiles", ""
    sources = [{"url": url, "attribution": attribution, "subdomains": subdomains}]
    if base == "tianditu" and tile_key:
        labels = _TIANDITU_LABELS.replace("{key}", tile_key)
        sources.append({"url": labels, "attribution": attribution, "subdomains": subdomains})
    return sources


def _add_tiles(m: folium.Map, base: str, tile_key: str | None) -> None:
    check_base(base, tile_key)
    # "roads": no tiles; the stored roads are drawn instead (gridgov.maps.add_road_layer).
    if base in ("none", "roads", "", None):
        return
    base_tiles = tile_sources(base, tile_key)[0]
    url, attribution, subdomains = (
        base_tiles["url"],
        base_tiles["attribution"],
        base_tiles["subdomains"],
    )
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
    m.add_child(TileFallback(m, tiles, TILE_FAILURES_BEFORE_FALLBACK))


def _add_points(m: folium.Map, what: str, data: dict[str, Any], name: str, cluster: bool) -> Layer:
    group: Layer
    if what == "incidents":
        # Never clustered with units, priority never hidden (see GG.incidentLayer).
        group = IncidentLayer(name, cluster=cluster, priorities=data["priorities"])
    elif cluster:
        group = folium.plugins.MarkerCluster(
            name=name,
            overlay=True,
            control=True,
            options={"chunkedLoading": True, "disableClusteringAtZoom": 17},
        )
    else:
        group = folium.FeatureGroup(name=name, overlay=True, control=True)
    group.add_child(Points(what, data))
    m.add_child(group)
    return group


def _finish(m: folium.Map, legend: str, search_placeholder: str, title: str) -> folium.Map:
    m.add_child(Title(title))
    # The browser tab's title too (branca does not escape it).
    root = m.get_root()
    if isinstance(root, Figure):
        root.title = html.escape(f"{title} · gridgov")
    m.add_child(Legend(legend))
    m.add_child(folium.plugins.Fullscreen(position="topleft"))
    m.add_child(Search(search_placeholder))
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
    base: str = "roads",
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
        Cluster unit markers, and incident markers apart from them, priority 1 never
        (see the :mod:`gridgov.maps` docstring).
    base, tile_key
        The base layer (see the :mod:`gridgov.maps` docstring).
    area_url, area_url_level, area_min_zoom
        The viewport hook (see the :mod:`gridgov.maps` docstring): a URL template for the areas of
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
            values, colours, labels, breaks = stats_by_area(
                gdf_areas, lv, gdf_open, gdf_units, colour_by
            )
            breaks_of[lv] = breaks
            data = area_layer_json(gdf_areas, lv, values=values, colours=colours, labels=labels)
            style: dict[str, Any] = {}
        else:
            data = area_layer_json(gdf_areas, lv)
            style = {"fillOpacity": 0.15}
        m.add_child(
            AreaLayer(data, f"{LEVEL_ZH[lv]} {lv}", overlay=False, show=lv == shown, style=style)
        )
    # The levels not inlined (micro-grids) stay searchable by name and code.
    present = set(gdf_areas["level"].astype(str))
    for lv in ("street", "community", "grid", "microgrid"):
        if lv in present and lv not in level_names:
            m.add_child(SearchIndex(search_index_json(gdf_areas, lv)))
    if area_url:
        lv = _level_name(area_url_level)
        m.add_child(
            ViewportAreas(area_url, lv, area_min_zoom, f"{LEVEL_ZH[lv]} {lv} (视窗 viewport)", True)
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
    weights = [1.0 / max(1, as_priority(p) or 4) for p in recent["priority"]]
    heat = [
        [round(float(b), 6), round(float(a), 6), round(w, 3)]
        for a, b, w, k in zip(rx, ry, weights, rok, strict=True)
        if k
    ]
    # Leaflet.heat needs a point: with no recent incident, one of weight 0 (nothing shows).
    if with_heat:
        m.add_child(
            Heat(
                len(heat),
                heat or [[float(m.location[0]), float(m.location[1]), 0.0]],
                name=f"热力图 heat map ({recent_hours:g} h)",
                show=False,
                radius=18,
                overlay=True,
            )
        )
    m.add_child(Routes(route_data(gdf_open, gdf_assignments, gdf_units), "派遣路线 routes"))
    _add_points(m, "units", unit_data(gdf_units), "力量 units", cluster)
    _add_points(
        m,
        "incidents",
        incident_data(gdf_open, gdf_assignments, df_events, explanations),
        "未结事件 open incidents",
        cluster,
    )
    what = "未结事件 open incidents" if colour_by == "open_incidents" else "负荷 workload"
    # One class legend per level; the page shows the one of the level on screen.
    per_level = "".join(
        f"<div class='gg-level-legend' data-level='{lv}'"
        + ("" if lv == shown else " style='display:none'")
        + ">"
        + legend_html(
            [
                (
                    f"{what} ({LEVEL_ZH[lv]} {lv})",
                    class_items(breaks_of[lv], integer=colour_by == "open_incidents"),
                )
            ]
        )
        + "</div>"
        for lv in level_names
        if lv in breaks_of
    )
    legend = per_level + legend_html(
        [
            ("事件优先级 incident priority", priority_items()),
            ("力量 force kind", kind_items()),
            ("状态 unit status", status_items()),
        ]
    )
    return _finish(m, legend, "编码或名称 code or name", title)


def add_live_feed(
    m: folium.Map,
    feed_url: str,
    *,
    interval_ms: int = 1000,
    dataset: int | None = None,
    token_key: str = "gridgov.token",
    time_zone: str | None = None,
    stream_url: str | None = None,
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
    stream_url
        The feed pushed as Server-Sent Events (``GET /api/v1/live/stream``): the page listens
        there and polls only as a slow safety net, or every ``interval_ms`` while the stream
        cannot be had.
    """
    if interval_ms < 100:
        msg = f"interval_ms must be at least 100, got {interval_ms}"
        raise InputError(msg)
    # Areas are coloured by the open incidents the feed sends (so within the caller's scope),
    # in fixed classes: a page cannot know the quantiles of counts it has not seen yet.
    breaks = list(LIVE_AREA_BREAKS)
    items = [swatch(NO_DATA, "0 / 不在权限内 outside your scope")]
    low = 0
    for i, b in enumerate(breaks):
        items.append(swatch(SEQUENTIAL[i + 1], str(b) if b == low + 1 else f"{low + 1}–{b}"))
        low = b
    items.append(swatch(SEQUENTIAL[len(breaks) + 1], f"> {low}"))
    options = {
        "feed": feed_url,
        "stream": stream_url,
        "interval": int(interval_ms),
        "dataset": dataset,
        "tokenKey": token_key,
        "timeZone": time_zone or get_settings().display_tz,
        "areaClasses": {
            "breaks": breaks,
            "colours": list(SEQUENTIAL[1 : len(breaks) + 2]),
            "none": NO_DATA,
        },
        "legend": legend_html([("未结事件 open incidents (实时 live)", items)]),
    }
    m.add_child(Live(options))
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
    base: str = "roads",
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
    located = codes_at(incidents, streets, "street") if len(incidents) else pd.Series(dtype=str)
    incidents = incidents[located == code] if len(incidents) else incidents
    name = as_text(street["name"].iloc[0]) or code
    m = _new_map(_frame(street), base, tile_key)
    gdf_open = open_incidents(incidents)
    # Grids carry the colour; communities are outlines over them (two fills would mix).
    grid_breaks: list[float] = []
    for lv, frame, fill in (("grid", grids, 0.5), ("community", communities, 0.0)):
        values, colours, labels, breaks = stats_by_area(sub, lv, gdf_open, units, "open_incidents")
        grid_breaks = breaks if lv == "grid" else grid_breaks
        data = area_layer_json(frame, lv, values=values, colours=colours, labels=labels)
        style = {"fillOpacity": fill, "weight": 2.5 if lv == "community" else 0.8}
        m.add_child(AreaLayer(data, f"{LEVEL_ZH[lv]} {lv}", overlay=True, show=True, style=style))
    m.add_child(
        AreaLayer(
            area_layer_json(street, "street"),
            "街道 street",
            overlay=True,
            show=True,
            style={"fillOpacity": 0, "weight": 3, "stroke": "#111"},
        )
    )
    m.add_child(Routes(route_data(gdf_open, gdf_assignments, units), "派遣路线 routes"))
    _add_points(m, "units", unit_data(units), "力量 units", False)
    _add_points(
        m,
        "incidents",
        incident_data(incidents, gdf_assignments, df_events, explanations),
        "事件 incidents",
        False,
    )
    legend = legend_html(
        [
            ("未结事件 open incidents (网格 grid)", class_items(grid_breaks)),
            ("事件优先级 incident priority", priority_items()),
            ("力量 force kind", kind_items(set(units["kind"].astype(str)))),
            ("状态 unit status", status_items()),
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
    base: str = "roads",
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
        AreaLayer(
            data,
            f"{ForceKind(k).zh} 覆盖 coverage ({label_of('level', lv)})",
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
    _add_points(m, "units", unit_data(units), label_of("kind", k), False)
    items = [
        swatch(c, f"{label} ({n})") for c, label, n in zip(palette, labels_of, counts, strict=True)
    ]
    legend = legend_html(
        [
            (f"到达时间 travel time: {ForceKind(k).zh} {ForceKind(k).en}", items),
            ("力量 force kind", kind_items([k])),
            ("状态 unit status", status_items()),
        ]
    )
    return _finish(m, legend, "编码或名称 code or name", f"覆盖 coverage: {label_of('kind', k)}")


def assessment_map(
    gdf_areas: gpd.GeoDataFrame,
    df_kpi: pd.DataFrame,
    *,
    value: str = "value",
    key: str = "street_code",
    label: str | None = None,
    percent: bool | None = None,
    base: str = "roads",
    tile_key: str | None = None,
) -> folium.Map:
    """A choropleth of one KPI by street.

    Parameters
    ----------
    gdf_areas
        Areas holding the street level.
    df_kpi
        One row per street: ``key`` (street code) and ``value`` (NaN is shown as "–", in grey).
        Any KPI table works, e.g. ``gridgov.kpis.compute_kpis(..., by="street")`` with
        ``value="resolution_rate"``.
    label
        The legend title; by default the KPI's zh/en name (:mod:`gridgov.labels`) when
        ``value`` is an assessment column, else ``value``.
    percent
        Show values as percentages; by default for rates, and for unknown columns when every
        value lies in [0, 1]. Counts get whole-number classes.

    Classes are the values' quantiles, printed with the precision they need; classes whose
    rounded bounds coincide are merged (see :func:`gridgov.maps.layer_data.value_classes`).

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
    kpi_kind = KPI_KINDS.get(value)
    title = label or (label_of("kpi", value) if kpi_kind else value)
    as_percent = (
        percent
        if percent is not None
        else kpi_kind == "rate"
        or (kpi_kind is None and bool(finite) and all(0 <= v <= 1 for v in finite))
    )
    integer = not as_percent and (
        kpi_kind == "count" or (kpi_kind is None and all(float(v).is_integer() for v in finite))
    )
    classes = value_classes(finite, percent=as_percent, integer=integer)
    colours = {c: classes.colour(v) for c, v in values.items()}
    labels = {c: f"{title}: {classes.text(v)}" for c, v in values.items()}
    m = _new_map(_frame(streets), base, tile_key)
    data = area_layer_json(streets, "street", values=values, colours=colours, labels=labels)
    m.add_child(
        AreaLayer(
            data,
            f"{title} (街道 street)",
            overlay=True,
            show=True,
            style={"fillOpacity": 0.7, "weight": 1.5},
        )
    )
    items = [swatch(c, t) for c, t in zip(classes.colours, classes.texts, strict=True)]
    items.append(swatch(NO_DATA, "无数据 no data (–)"))
    legend = legend_html([(f"考核 assessment: {title}", items)])
    return _finish(m, legend, "街道编码或名称 street code or name", f"考核 assessment: {title}")
