"""Storage: one schema on two backends (SQLite embedded, PostGIS in production).

Everything the rest of gridgov needs from a database is re-exported here.
"""

from gridgov.store.engine import (
    Backend,
    create_engine_from_url,
    detect_backend,
    init_db,
    is_initialised,
    open_store,
    schema_diff,
)
from gridgov.store.repository import (
    export_geopackage,
    is_export,
    load_areas,
    load_district,
    load_files,
    load_matters,
    load_offices,
    load_units,
    locate_many,
    locate_point,
    nearest_units,
    read_areas,
    read_matters,
    read_offices,
    read_units,
    summarize,
    units_within,
)

__all__ = [
    "Backend",
    "create_engine_from_url",
    "detect_backend",
    "export_geopackage",
    "init_db",
    "is_export",
    "is_initialised",
    "load_areas",
    "load_district",
    "load_files",
    "load_matters",
    "load_offices",
    "load_units",
    "locate_many",
    "locate_point",
    "nearest_units",
    "open_store",
    "read_areas",
    "read_matters",
    "read_offices",
    "read_units",
    "schema_diff",
    "summarize",
    "units_within",
]
