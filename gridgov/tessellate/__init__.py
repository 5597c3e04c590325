"""Generate an area hierarchy (district → street → community → grid → micro-grid) from road blocks.

Everything here works in a projected metric CRS on plain shapely geometries, so it runs on any
boundary and road lines a user brings.

How it works
------------
1. **Approximate partition, top down.** A parent polygon is cut into road blocks (the faces of its
   boundary plus the road lines inside it). With at least twice as many blocks as children, blocks
   are grown into children from seeds (anchors, or k-means centres), the smallest child growing
   first, so children are connected unions of whole blocks. With fewer blocks, small blocks are
   merged into neighbours, each block gets a share of the children by area, and a block with
   several children is split by the Voronoi cells of k-means centres of a uniform point sample (a
   centroidal Voronoi partition, so the pieces have similar areas).
2. **Exact tiling.** The boundaries of all approximate micro-grids are snapped to a 1 cm grid,
   noded once, split into edges of at most :data:`MAX_EDGE_M` (so the tiling stays exact when
   each vertex is reprojected to EPSG:4326 on its own) and polygonized once into atomic faces.
   Each face takes the micro-grid containing its representative point; faces left in a gap take
   their neighbour's label. Where a label ended up
   in pieces, the smaller pieces join the neighbour (within the same parent) sharing the longest
   edge, level by level from the street down.
3. **Dissolve bottom-up.** Every area of every level is the union of its faces, so neighbours
   share identical vertices and every child lies exactly within its parent.

Running it on your own district
-------------------------------
:func:`read_boundary` and :func:`read_roads` read files (or a Chengdu-style link-table folder) in
a declared CRS; :func:`plan_from_counts` or :func:`plan_from_admin_table` says what to generate;
:func:`generate_areas` checks the inputs, works in a metric CRS and returns EPSG:4326 areas::

    plan = plan_from_counts("510199000000", "某区", n_streets=3, communities_per_street=3,
                            n_grids=60, n_microgrids=400)
    gdf_areas = generate_areas(read_boundary("district.geojson", "gcj02"),
                               read_roads("roads.gpkg", "gcj02"), plan, seed=1)
    gdf_areas.attrs["warnings"]   # fallbacks and shortfalls, also logged

When no road line reaches the boundary, the areas are k-means Voronoi cells; that is a warning,
not an error, because a district without mapped roads still needs grids.
"""

# The names the command line, the reference district, the simulation and the tests use.
from gridgov.tessellate.area_plans import (
    ADMIN_COLUMNS,
    DEFAULT_GENERATED_COMMUNITIES,
    CommunitySpec,
    HierarchyPlan,
    StreetSpec,
    plan_from_admin_table,
    plan_from_counts,
    plan_problems,
    read_admin_table,
    transform_anchors,
)
from gridgov.tessellate.block_tiling import (
    MAX_EDGE_M,
    ProgressCallback,
    generate_hierarchy,
    kmeans_centres,
    partition_polygon,
    road_blocks,
    sample_points,
    split_polygon,
)
from gridgov.tessellate.generator import generate_areas, read_boundary, read_roads

__all__ = [
    "ADMIN_COLUMNS",
    "DEFAULT_GENERATED_COMMUNITIES",
    "MAX_EDGE_M",
    "CommunitySpec",
    "HierarchyPlan",
    "ProgressCallback",
    "StreetSpec",
    "generate_areas",
    "generate_hierarchy",
    "kmeans_centres",
    "partition_polygon",
    "plan_from_admin_table",
    "plan_from_counts",
    "plan_problems",
    "read_admin_table",
    "read_boundary",
    "read_roads",
    "road_blocks",
    "sample_points",
    "split_polygon",
    "transform_anchors",
]
