"""The consultation map: a plan's footprint (and its buffer), the streets asked coloured by
their answer, their communities, and residents' suggestions as points.

Like the other builders it returns a :class:`folium.Map` and writes nothing; the suggestions
carry their text and community only (no personal data is ever stored with them).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import folium
import geopandas as gpd
import pandas as pd
import shapely

from gridgov.errors import InputError
from gridgov.footprints import buffer_metres
from gridgov.maps.builders import _finish, _frame, _new_map
from gridgov.maps.elements import AreaLayer
from gridgov.maps.layer_data import area_layer_json, legend_html, swatch

__all__ = ["ANSWER_COLOURS", "consultation_map"]

#: The fill of a street by its answer (None: not answered yet).
ANSWER_COLOURS: dict[str | None, tuple[str, str]] = {
    "agree": ("#1a9850", "同意 agree"),
    "conditional": ("#fdae61", "附条件同意 agree with conditions"),
    "disagree": ("#d73027", "反对 object"),
    None: ("#bdbdbd", "未答复 not answered"),
}
_ADOPTION = {
    "adopted": "已采纳 adopted",
    "partly": "部分采纳 partly adopted",
    "not_adopted": "未采纳 not adopted",
}
_FOOTPRINT = "#3f007d"
_SUGGESTION = "#6a51a3"


def consultation_map(
    consultation: Mapping[str, Any],
    requests: pd.DataFrame,
    suggestions: pd.DataFrame,
    gdf_areas: gpd.GeoDataFrame,
    *,
    base: str = "roads",
    tile_key: str | None = None,
) -> folium.Map:
    """Build the map of one consultation.

    Parameters
    ----------
    consultation
        Its row (``consultation_id``, ``title``, ``item_code``, ``department``,
        ``footprint`` (WGS84), ``buffer_m``).
    requests
        Its requests (:func:`gridgov.store.read_consultation_requests`).
    suggestions
        Its ``suggest`` events (``data`` with ``lon``/``lat``, ``text``, ``community_code``).
    gdf_areas
        Streets and communities (WGS84).

    Raises
    ------
    InputError
        No street was asked (nothing to show).
    """
    if requests.empty:
        msg = f"consultation {consultation['consultation_id']} asked no street: nothing to show"
        raise InputError(msg)
    asked = set(requests["street_code"].astype(str))
    level = gdf_areas["level"].astype(str)
    streets = gdf_areas[(level == "street") & gdf_areas["code"].astype(str).isin(asked)]
    communities = gdf_areas[
        (level == "community") & gdf_areas["parent_code"].astype(str).isin(asked)
    ]
    colours: dict[str, str] = {}
    labels: dict[str, str] = {}
    for row in requests.to_dict("records"):
        opinion = None if pd.isna(row["opinion"]) else str(row["opinion"])
        colour, said = ANSWER_COLOURS[opinion]
        adoption = None if pd.isna(row["adoption"]) else _ADOPTION[str(row["adoption"])]
        colours[str(row["street_code"])] = colour
        labels[str(row["street_code"])] = " · ".join(
            part for part in (said, adoption, f"{row['suggestions']} 条建议 suggestions") if part
        )
    m = _new_map(_frame(streets), base, tile_key)
    m.add_child(
        AreaLayer(
            area_layer_json(streets, "street", colours=colours, labels=labels),
            "征询街道 streets asked",
            overlay=True,
            show=True,
            style={"fillOpacity": 0.45, "weight": 2.5},
        )
    )
    m.add_child(
        AreaLayer(
            area_layer_json(communities, "community"),
            "社区 communities",
            overlay=True,
            show=True,
            style={"fillOpacity": 0.0, "weight": 1.0},
        )
    )
    footprint = consultation["footprint"]
    buffer_m = float(consultation.get("buffer_m") or 0.0)
    shapes = folium.FeatureGroup(name="项目范围 footprint", overlay=True, control=True)
    if buffer_m > 0:
        folium.GeoJson(
            shapely.geometry.mapping(buffer_metres(footprint, buffer_m)),
            style_function=lambda _: {
                "color": _FOOTPRINT,
                "weight": 1.5,
                "dashArray": "6 4",
                "fillOpacity": 0.0,
            },
            tooltip=f"{buffer_m:g} m",
        ).add_to(shapes)
    folium.GeoJson(
        shapely.geometry.mapping(footprint),
        style_function=lambda _: {
            "color": _FOOTPRINT,
            "weight": 4,
            "fillColor": _FOOTPRINT,
            "fillOpacity": 0.25,
        },
        tooltip=html.escape(str(consultation["title"])),
    ).add_to(shapes)
    m.add_child(shapes)
    points = folium.FeatureGroup(name="居民建议 residents' suggestions", overlay=True, control=True)
    for row in suggestions.to_dict("records"):
        data = row["data"] or {}
        folium.CircleMarker(
            location=[float(data["lat"]), float(data["lon"])],
            radius=6,
            color="#ffffff",
            weight=1.5,
            fill=True,
            fill_color=_SUGGESTION,
            fill_opacity=0.9,
            tooltip=html.escape(f"{row['text']} ({row['community_code'] or '-'})"),
        ).add_to(points)
    m.add_child(points)
    legend = legend_html(
        [
            ("街道意见 the street's answer", [swatch(c, t) for c, t in ANSWER_COLOURS.values()]),
            (
                "范围与建议 footprint and suggestions",
                [swatch(_FOOTPRINT, "项目范围 footprint"), swatch(_SUGGESTION, "居民建议")],
            ),
        ]
    )
    title = f"{consultation['title']} · {consultation['item_code']} · {consultation['department']}"
    return _finish(m, legend, "编码或名称 code or name", title)
