"""The folium elements of gridgov maps and the placeholder links of the page runtime.

A layer is one element that hands its compact JSON to one call of the page runtime
(``GG.areas``, ``GG.units``...), not one folium element per feature; the controls (legend,
search, title, tile fallback) call the runtime too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import folium
import folium.plugins
from branca.element import MacroElement
from folium.elements import JSCSSMixin
from folium.map import Layer
from folium.template import Template

from gridgov.catalog import Matter
from gridgov.labels import label_table

# The gridgov runtime's own placeholder URLs (resolved like the vendored files).
RUNTIME_JS = "gridgov-static:gridgov/gridgov-map.js"
RUNTIME_CSS = "gridgov-static:gridgov/gridgov-map.css"
LIVE_JS = "gridgov-static:gridgov/gridgov-live.js"


class Runtime(JSCSSMixin):
    """Loads the gridgov runtime (and, through the map, Leaflet)."""

    _template = Template("")

    def __init__(self) -> None:
        super().__init__()
        self._name = "GGRuntime"
        # Per instance: folium's add_js_link would otherwise mutate a list shared by the class.
        self.default_js = [("gridgov_map_js", RUNTIME_JS)]
        self.default_css = [("gridgov_map_css", RUNTIME_CSS)]


class Labels(MacroElement):
    """Embeds the zh/en dictionary (:func:`gridgov.labels.label_table`) that ``GG.label``
    reads; added before any layer, so every popup and legend built later finds it."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.useLabels({{ this.json }});
        {% endmacro %}
        """
    )

    def __init__(self) -> None:
        super().__init__()
        self._name = "GGLabels"
        #: The matters to name (a store's catalogue); None: the configured file's.
        self.matters: Iterable[Matter] | None = None

    @property
    def json(self) -> str:
        return _js(label_table(self.matters))


class Live(JSCSSMixin):
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
        self.default_js = [("gridgov_live_js", LIVE_JS)]
        self.options = options


class AreaLayer(Layer):
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


class ViewportAreas(Layer):
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


class IncidentLayer(JSCSSMixin, Layer):
    """The open-incident layer (``GG.incidentLayer``): above the units, priority 1 never
    clustered; the others in a MarkerCluster coloured by priority when ``cluster``."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GG.incidentLayer({{ this._parent.get_name() }},
            {{ this.options|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, name: str, *, cluster: bool, priorities: Mapping[str, str]) -> None:
        super().__init__(name=name, overlay=True, control=True, show=True)
        self._name = "IncidentLayer"
        self.cluster = cluster
        self.options = {"cluster": cluster, "priorities": dict(priorities)}
        # MarkerCluster's files (vendored like folium's own).
        self.default_js = list(folium.plugins.MarkerCluster.default_js) if cluster else []
        self.default_css = list(folium.plugins.MarkerCluster.default_css) if cluster else []


class SearchIndex(MacroElement):
    """Names, codes and bounds of areas the page does not draw, for its search."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GG.searchIndex({{ this._parent.get_name() }}, {{ this.json }});
        {% endmacro %}
        """
    )

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__()
        self._name = "SearchIndex"
        self.data = data

    @property
    def json(self) -> str:
        return _js(self.data)


class Points(MacroElement):
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


class Routes(Layer):
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


class Heat(folium.plugins.HeatMap):
    """folium's HeatMap, knowing how many incidents it holds (its data may be a placeholder)."""

    def __init__(self, count: int, data: list[list[float]], **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self.gg_count = count


class Legend(MacroElement):
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


class Search(JSCSSMixin):
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


class TileFallback(MacroElement):
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


class FitBounds(MacroElement):
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


class Title(MacroElement):
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


def _js(data: Any) -> str:
    """JSON for a page script: compact and UTF-8 (CJK text takes half the bytes of tojson's
    escapes; NaN and Infinity are JavaScript literals too); ``<``, ``>``, ``&`` and ``'``
    escaped, so no text can end the script."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        text = text.replace(char, escaped)
    # U+2028/2029 end a line in old JavaScript engines.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
