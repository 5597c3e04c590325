"""The search index of the levels a page does not draw (micro-grids by default)."""

from __future__ import annotations

import shapely

from gridgov import maps
from gridgov.maps.elements import SearchIndex
from gridgov.maps.layer_data import search_index_json
from gridgov.reference import read_reference_district


def test_search_index_holds_every_area_not_inlined() -> None:
    ref = read_reference_district()
    micro = ref.gdf_areas[ref.gdf_areas["level"] == "microgrid"].set_index("code")
    data = search_index_json(ref.gdf_areas, "microgrid")
    assert data["level"] == "microgrid" and len(data["rows"]) == len(micro)
    for code, name, west, south, east, north in data["rows"][::997]:
        assert name == micro.loc[code, "name"]
        inside = shapely.box(west - 2e-5, south - 2e-5, east + 2e-5, north + 2e-5)
        assert inside.contains(micro.geometry[code])
    # A map inlining street, community and grid indexes the micro-grids only.
    empty = ref.gdf_units.iloc[:0]
    m = maps.command_centre_map(
        ref.gdf_areas,
        ref.gdf_units,
        empty.assign(incident_id=[], status=[], priority=[], reported_at=[]),
    )
    levels = [c.data["level"] for c in m._children.values() if isinstance(c, SearchIndex)]
    assert levels == ["microgrid"]
