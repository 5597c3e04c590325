"""Writing a built map: the offline page (:func:`render_html`) and its layers
(:func:`describe_map`).

folium links Leaflet and its plugins from CDNs; :func:`render_html` resolves each link to the
copy vendored under :data:`STATIC_DIR` and refuses any other outside URL.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import folium
import folium.plugins

from gridgov.errors import InputError
from gridgov.maps.elements import (
    LIVE_JS,
    RUNTIME_CSS,
    RUNTIME_JS,
    AreaLayer,
    Heat,
    IncidentLayer,
    Legend,
    Points,
    Routes,
    Search,
    ViewportAreas,
)
from gridgov.maps.road_layer import ROADS_JS, RoadLayer

#: Folder of the static files (``gridgov/static``: vendored Leaflet and plugins, the runtime).
STATIC_DIR = Path(__file__).parent.parent / "static"

#: The ``lang`` of every page written.
PAGE_LANG = "zh-CN"
_CDNJS = "https://cdnjs.cloudflare.com/ajax/libs/"
_FOLIUM_GH = "https://cdn.jsdelivr.net/gh/python-visualization/folium"
# folium's CDN URL -> the vendored copy (relative to STATIC_DIR). One entry per file folium or
# the elements reference; render_html refuses any outside URL not listed here.
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
    RUNTIME_JS: "gridgov/gridgov-map.js",
    RUNTIME_CSS: "gridgov/gridgov-map.css",
    LIVE_JS: "gridgov/gridgov-live.js",
    ROADS_JS: "gridgov/gridgov-roads.js",
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
        if isinstance(child, AreaLayer):
            layers[child.layer_name] = {
                "kind": "areas",
                "count": child.n_features,
                "level": child.level,
                "base": not child.overlay,
            }
        elif isinstance(child, ViewportAreas):
            layers[child.layer_name] = {"kind": "viewport", "count": 0, "level": child.level}
        elif isinstance(child, RoadLayer):
            layers[child.layer_name] = {
                "kind": "roads",
                "count": child.n_features,
                "shown": child.show,
                "viewport": child.data is None,
            }
        elif isinstance(child, Routes):
            layers[child.layer_name] = {"kind": "routes", "count": child.n_features}
        elif isinstance(child, folium.plugins.HeatMap):
            layers[child.layer_name] = {
                "kind": "heat",
                "count": child.gg_count if isinstance(child, Heat) else len(child.data),
            }
        elif isinstance(child, IncidentLayer | folium.plugins.MarkerCluster | folium.FeatureGroup):
            points = [c for c in child._children.values() if isinstance(c, Points)]
            for p in points:
                layers[child.layer_name] = {
                    "kind": p.what,
                    "count": p.n_features,
                    "clustered": (
                        child.cluster
                        if isinstance(child, IncidentLayer)
                        else isinstance(child, folium.plugins.MarkerCluster)
                    ),
                }
        elif isinstance(child, folium.TileLayer):
            layers[child.layer_name] = {"kind": "tiles", "count": 0}
        elif isinstance(child, folium.LayerControl):
            controls.append("layers")
        elif isinstance(child, folium.plugins.Fullscreen):
            controls.append("fullscreen")
        elif isinstance(child, Search):
            controls.append("search")
        elif isinstance(child, Legend):
            controls.append("legend")
    return {"layers": layers, "controls": controls}


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
        The map links a resource that is not vendored (see the :mod:`gridgov.maps` docstring).
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
    # The pages are Chinese first (screen readers, fonts, hyphenation follow the language).
    page = page.replace("<html>", f'<html lang="{PAGE_LANG}">', 1)
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
