"""The whole reference district through both stores: locating agrees, and files round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Engine

from gridgov.areas import build_locator
from gridgov.reference import read_reference_district
from gridgov.store import (
    create_engine_from_url,
    detect_backend,
    export_geopackage,
    init_db,
    load_files,
    locate_many,
    read_matters,
    read_offices,
    read_stored_areas,
    read_units,
)

N_POINTS = 100_000


def _engine(url: str) -> Engine:
    return create_engine_from_url(url)


def test_locating_agrees_in_memory_and_in_the_store(reference_store_url: str) -> None:
    ref = read_reference_district()
    rng = np.random.default_rng(7)
    minx, miny, maxx, maxy = ref.gdf_areas.total_bounds
    # A margin around the bbox so that some points are outside and must come back as None.
    pad = 0.01
    lon = rng.uniform(minx - pad, maxx + pad, N_POINTS)
    lat = rng.uniform(miny - pad, maxy + pad, N_POINTS)
    # Random points never land on an edge, so add the hard cases: shared vertices and the
    # midpoints of shared edges of the micro-grids, where the smallest-code rule decides.
    micro = ref.gdf_areas[ref.gdf_areas["level"] == "microgrid"].geometry
    rings = shapely.get_exterior_ring(np.asarray(micro.values))
    vertices, ring_of = shapely.get_coordinates(rings, return_index=True)
    picked = vertices[rng.choice(len(vertices), 10_000, replace=False)]
    same_ring = np.flatnonzero(ring_of[:-1] == ring_of[1:])  # segment i -> i+1 of one ring
    segments = rng.choice(same_ring, 10_000, replace=False)
    midpoints = (vertices[segments] + vertices[segments + 1]) / 2
    lon = np.concatenate([lon, picked[:, 0], midpoints[:, 0]])
    lat = np.concatenate([lat, picked[:, 1], midpoints[:, 1]])

    in_memory = build_locator(ref.gdf_areas).locate(lon, lat)
    engine = _engine(reference_store_url)
    try:
        stored = locate_many(engine, lon, lat)
    finally:
        engine.dispose()

    outside = in_memory["district"].isna()
    assert 0 < outside.sum() < N_POINTS  # both cases are exercised
    # The edge cases are inside, but for midpoints of the district's outer edges, which float
    # rounding may put a hair outside; the backends must still agree on them.
    assert in_memory["microgrid"].iloc[N_POINTS:].notna().mean() > 0.99
    pd.testing.assert_frame_equal(
        stored.reset_index(drop=True).astype(object).where(stored.notna(), None),
        in_memory.reset_index(drop=True).astype(object).where(in_memory.notna(), None),
        check_dtype=False,
    )


def test_export_to_geopackage_and_reload_is_lossless(
    reference_store_url: str, tmp_path: Path, store_url: str
) -> None:
    """Every pairing of backends: PostGIS → GeoPackage → PostGIS included."""
    source = _engine(reference_store_url)
    target_url = store_url
    init_db(target_url)
    target = _engine(target_url)
    try:
        path = export_geopackage(source, tmp_path / "jinniu.gpkg")
        counts = load_files(target, path)
        before, after = read_stored_areas(source), read_stored_areas(target)
        units_before, units_after = read_units(source), read_units(target)
        offices_before, offices_after = read_offices(source), read_offices(target)
        matters_before, matters_after = read_matters(source), read_matters(target)
        backend = detect_backend(source)
    finally:
        source.dispose()
        target.dispose()

    assert counts["areas"] == len(before), backend
    assert before["code"].tolist() == after["code"].tolist()
    assert (before["name"] == after["name"]).all()
    assert (before["parent_code"].fillna("") == after["parent_code"].fillna("")).all()
    a = shapely.normalize(np.asarray(before.geometry.values))
    b = shapely.normalize(np.asarray(after.geometry.values))
    assert bool(np.all(shapely.equals_exact(a, b, tolerance=1e-9)))
    assert (before["name_source"].fillna("") == after["name_source"].fillna("")).all()
    for old, new in ((units_before, units_after), (offices_before, offices_after)):
        attributes = [c for c in old.columns if c != "geometry"]
        pd.testing.assert_frame_equal(
            pd.DataFrame(new[attributes]), pd.DataFrame(old[attributes]), check_dtype=False
        )
        pa = shapely.get_coordinates(np.asarray(old.geometry.values))
        pb = shapely.get_coordinates(np.asarray(new.geometry.values))
        assert np.abs(pa - pb).max() <= 1e-9
    pd.testing.assert_frame_equal(matters_after, matters_before, check_dtype=False)
    assert len(matters_after) == 34
