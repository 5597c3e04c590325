"""Isochrone bands as a map layer (folium), and a small map of them around their point."""

from __future__ import annotations

import folium
import geopandas as gpd

#: Fill colours of the bands, smallest (fastest) first.
BAND_COLOURS = ("#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027")


def isochrone_layer(
    bands: gpd.GeoDataFrame, name: str = "isochrones 等时圈"
) -> folium.FeatureGroup:
    """The bands of :func:`gridgov.analysis.isochrone.isochrones`, largest drawn first."""
    layer = folium.FeatureGroup(name=name)
    ordered = bands.to_crs("EPSG:4326").sort_values("minutes", ascending=False)
    n = len(ordered)
    for k, row in enumerate(ordered.itertuples()):
        colour = BAND_COLOURS[min(n - 1 - k, len(BAND_COLOURS) - 1)]
        label = f"≤ {row.minutes:g} min ({row.mode})"
        folium.GeoJson(
            row.geometry.__geo_interface__,
            style_function=lambda _f, c=colour: {
                "color": c,
                "weight": 1,
                "fillColor": c,
                "fillOpacity": 0.35,
            },
            tooltip=label,
        ).add_to(layer)
    return layer


def isochrone_map(bands: gpd.GeoDataFrame, lon: float, lat: float) -> folium.Map:
    """A map without tiles holding the bands and their point."""
    west, south, east, north = bands.to_crs("EPSG:4326").total_bounds
    m = folium.Map(location=[lat, lon], tiles=None, zoom_start=14)
    isochrone_layer(bands).add_to(m)
    folium.CircleMarker([lat, lon], radius=5, color="#000", fill=True, tooltip="origin").add_to(m)
    if south < north and west < east:
        m.fit_bounds([[south, west], [north, east]])
    folium.LayerControl().add_to(m)
    return m


__all__ = ["BAND_COLOURS", "isochrone_layer", "isochrone_map"]
