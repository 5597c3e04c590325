"""The area hierarchy: load it, validate it, locate points in it, and find neighbours.

An areas GeoDataFrame holds every level (district, street, community, grid, micro-grid) in one
frame with the columns ``code``, ``name``, ``level``, ``parent_code``, ``generated``,
``name_source`` and a Polygon/MultiPolygon ``geometry`` in EPSG:4326.

Locating is the hot path of the whole system (every incident, every unit position). A
:class:`Locator` is cheap to build: a level answers its first points exactly through an STRtree
and a closed-polygon test, and only once it has answered enough points to pay for it
(``RASTER_AFTER_POINTS``) does it build a raster of area labels, which then answers most points
by lookup and sends those in cells crossed by a boundary to the exact test. Every path applies
the same boundary rule: a point on a shared edge belongs to the area with the smallest code among
those whose closure contains it.
"""

# The names the services, the store, the command line, the notebooks and the tests use.
from gridgov.areas.area_checks import check_areas, validate_areas
from gridgov.areas.area_files import DEFAULT_COLUMN_ALIASES, REQUIRED_COLUMNS, read_areas
from gridgov.areas.area_geojson import areas_geojson, tolerance_for_zoom
from gridgov.areas.locator import Locator, build_locator
from gridgov.areas.neighbours import street_adjacency

__all__ = [
    "DEFAULT_COLUMN_ALIASES",
    "REQUIRED_COLUMNS",
    "Locator",
    "areas_geojson",
    "build_locator",
    "check_areas",
    "read_areas",
    "street_adjacency",
    "tolerance_for_zoom",
    "validate_areas",
]
