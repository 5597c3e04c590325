"""The store: one schema on SQLite and PostGIS, the same answers from both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from helpers import no_schema_dropped
from pyproj import Geod
from shapely.geometry import MultiPolygon, Point, box
from sqlalchemy import Engine, text

from gridgov.catalog import Matter, load_catalog
from gridgov.errors import (
    AreaValidationError,
    DataFileError,
    InputError,
    OutsideDistrictError,
    StoreError,
    UnitValidationError,
)
from gridgov.model import AREA_COLUMNS, LEVELS, Level
from gridgov.settings import get_settings
from gridgov.store import (
    create_engine_from_url,
    detect_backend,
    export_geopackage,
    init_db,
    is_initialised,
    load_areas,
    load_district,
    load_files,
    load_matters,
    load_offices,
    load_units,
    locate_many,
    locate_point,
    nearest_units,
    read_matters,
    read_offices,
    read_stored_areas,
    read_units,
    schema_diff,
    summarize,
    units_within,
)

DISTRICT = "510106000000"
# Binary fractions of a degree, so every shared edge is exactly representable.
X0, Y0, SIZE = 104.0, 30.5, 0.0625
GEOD = Geod(ellps="WGS84")


# --------------------------------------------------------------------------------------------
# a tiny exact hierarchy: 1 district, 2 streets, 4 communities, 8 grids, 16 micro-grids
# --------------------------------------------------------------------------------------------


def _split(cell: tuple[float, float, float, float], vertical: bool) -> list[tuple[float, ...]]:
    minx, miny, maxx, maxy = cell
    if vertical:
        midx = (minx + maxx) / 2
        return [(minx, miny, midx, maxy), (midx, miny, maxx, maxy)]
    midy = (miny + maxy) / 2
    return [(minx, miny, maxx, midy), (minx, midy, maxx, maxy)]


def make_tiny_areas() -> gpd.GeoDataFrame:
    """Each level halves its parent, alternating vertical and horizontal cuts."""
    rows = []
    district = (X0, Y0, X0 + SIZE, Y0 + SIZE)
    rows.append((DISTRICT, "测试区", "district", None, district))
    parents = [(DISTRICT, district)]
    for level in LEVELS[1:]:
        children = []
        vertical = level in (Level.STREET, Level.GRID)
        for parent_code, cell in parents:
            for i, child in enumerate(_split(cell, vertical), start=1):
                if level is Level.STREET:
                    code = f"{parent_code[:6]}{i:03d}000"
                elif level is Level.COMMUNITY:
                    code = f"{parent_code[:9]}{i:03d}"
                else:
                    code = f"{parent_code}{i:03d}"
                rows.append((code, f"{level.zh}{code[-3:]}", str(level), parent_code, child))
                children.append((code, child))
        parents = children
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "level": [r[2] for r in rows],
            "parent_code": [r[3] for r in rows],
            "generated": [True] * len(rows),
        },
        geometry=[box(*r[4]) for r in rows],
        crs="EPSG:4326",
    )


STREET_1, STREET_2 = "510106001000", "510106002000"
GRID_1 = "510106001001001"  # first grid of the first community of street 1


def make_offices() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "office_id": ["OF-POL-1", "OF-MKT-1", "OF-POL-2"],
            "name": ["派出所一", "市场监管所一", "派出所二"],
            "kind": ["police", "market", "police"],
            "department": ["公安分局", "市场监管局", "公安分局"],
            "street_code": [STREET_1, STREET_1, STREET_2],
            "generated": [True, True, True],
        },
        geometry=[Point(104.01, 30.51), Point(104.02, 30.52), Point(104.05, 30.53)],
        crs="EPSG:4326",
    )


# Query point for the unit tests; units lie due north or east of it at known distances.
QX, QY = 104.03, 30.53


def make_units() -> gpd.GeoDataFrame:
    spec = [
        # unit_id, kind, office, street, status, on_duty, position
        ("U01", "police", "OF-POL-1", STREET_1, "available", True, (QX, QY + 0.001)),
        ("U02", "police", "OF-POL-1", STREET_1, "busy", True, (QX, QY + 0.002)),
        ("U03", "police", "OF-POL-2", STREET_2, "available", True, (QX + 0.003, QY)),
        # U04 and U05 share a position: the tie goes to the smaller id
        ("U05", "police", "OF-POL-2", STREET_2, "available", True, (QX, QY - 0.004)),
        ("U04", "police", "OF-POL-2", STREET_2, "available", True, (QX, QY - 0.004)),
        ("U06", "market", "OF-MKT-1", STREET_1, "available", True, (QX - 0.0005, QY)),
        ("U07", "market", "OF-MKT-1", STREET_1, "available", False, (QX + 0.0002, QY)),
        ("U08", "police", "OF-POL-1", STREET_1, "available", True, None),
        ("U09", "grid_worker", None, STREET_1, "off_duty", False, (QX + 0.01, QY + 0.01)),
    ]
    when = datetime(2026, 11, 27, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    return gpd.GeoDataFrame(
        {
            "unit_id": [s[0] for s in spec],
            "name": [f"单元{s[0]}" for s in spec],
            "kind": [s[1] for s in spec],
            "office_id": [s[2] for s in spec],
            "department": ["部门"] * len(spec),
            "street_code": [s[3] for s in spec],
            "travel_mode": [
                "drive",
                "bike",
                "walk",
                "drive",
                "drive",
                "bike",
                "walk",
                "drive",
                "walk",
            ],
            "status": [s[4] for s in spec],
            "on_duty": [s[5] for s in spec],
            "grid_code": [GRID_1 if s[1] == "grid_worker" else None for s in spec],
            "generated": [True] * len(spec),
            "position_time": [when] * len(spec),
        },
        geometry=[Point(*s[6]) if s[6] else None for s in spec],
        crs="EPSG:4326",
    )


def _catalog_matters() -> list[Matter]:
    catalog = load_catalog(get_settings().catalog_path)
    return [catalog.get("FS-01"), catalog.get("MK-01")]


def load_sample(engine: Engine) -> None:
    load_areas(engine, make_tiny_areas(), name="tiny")
    load_offices(engine, make_offices())
    load_units(engine, make_units())
    load_matters(engine, _catalog_matters())


def _same_geometries(a: gpd.GeoSeries, b: gpd.GeoSeries, tolerance: float = 1e-9) -> bool:
    left = shapely.normalize(np.asarray(a.values, dtype=object))
    right = shapely.normalize(np.asarray(b.values, dtype=object))
    return bool(np.all(shapely.equals_exact(left, right, tolerance=tolerance)))


def _as_multi(series: gpd.GeoSeries) -> gpd.GeoSeries:
    return series.apply(lambda g: g if isinstance(g, MultiPolygon) else MultiPolygon([g]))


# --------------------------------------------------------------------------------------------
# schema and engine
# --------------------------------------------------------------------------------------------


def test_init_is_idempotent(store_url: str) -> None:
    engine = create_engine_from_url(store_url)
    try:
        assert not is_initialised(engine)
        init_db(store_url)
        init_db(store_url)  # a second run must be a no-op, not an error
        assert is_initialised(engine)
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert [v[0] for v in versions] == ["0013"]
    finally:
        engine.dispose()


def test_migrations_match_models(store_engine: Engine) -> None:
    with no_schema_dropped(store_engine):
        assert schema_diff(store_engine) == []
    # The comparison must be able to notice a difference.
    with store_engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_units_kind"))
    with no_schema_dropped(store_engine):
        diffs = schema_diff(store_engine)
    assert any(d[0] == "add_index" and d[1].name == "ix_units_kind" for d in diffs)


def _catalogue_rows(url: str, sql: str) -> list[Any]:
    """Rows of a query of PostgreSQL's catalogue, on a store initialised at ``url``."""
    init_db(url)
    engine = create_engine_from_url(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)).all())
    finally:
        engine.dispose()


@pytest.mark.postgis
def test_postgis_has_spatial_indexes(postgis_schema_url: str) -> None:
    rows = _catalogue_rows(
        postgis_schema_url,
        "SELECT indexname FROM pg_indexes "
        "WHERE schemaname = current_schema() AND indexdef LIKE '%USING gist%'",
    )
    assert {r[0] for r in rows} == {
        "ix_areas_geometry_gist",
        "ix_offices_position_gist",
        "ix_units_position_gist",
        "ix_road_nodes_geometry_gist",
        "ix_road_links_geometry_gist",
        "ix_incidents_geometry_gist",
    }


def test_uninitialised_store_tells_user_to_init(store_url: str) -> None:
    engine = create_engine_from_url(store_url)
    try:
        with pytest.raises(StoreError, match="gridgov init"):
            read_stored_areas(engine)
        with pytest.raises(StoreError, match="gridgov init"):
            summarize(engine)
    finally:
        engine.dispose()


def test_unreachable_databases_give_store_errors(tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "gridgov.db"
    with pytest.raises(StoreError, match="cannot use the database"):
        init_db(f"sqlite:///{missing_dir}")
    # Port 1 on loopback refuses at once; no PostGIS server is needed for this check.
    engine = create_engine_from_url("postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    try:
        with pytest.raises(StoreError, match="cannot use the database"):
            read_units(engine)
    finally:
        engine.dispose()


def test_detect_backend() -> None:
    assert detect_backend("sqlite:///x.db") == "sqlite"
    assert detect_backend("postgresql+psycopg://u@h/db") == "postgresql"
    assert detect_backend("postgresql://u@h/db") == "postgresql"
    with pytest.raises(StoreError, match="unsupported"):
        detect_backend("mysql://u@h/db")
    with pytest.raises(StoreError, match="not a database URL"):
        detect_backend("nonsense")


# --------------------------------------------------------------------------------------------
# loading and reading
# --------------------------------------------------------------------------------------------


def test_areas_round_trip(store_engine: Engine) -> None:
    gdf_in = make_tiny_areas()
    load_areas(store_engine, gdf_in)
    gdf_out = read_stored_areas(store_engine)
    assert list(gdf_out.columns) == [*AREA_COLUMNS, "geometry"]
    # The tiny areas do not say where their names come from; the store keeps that unknown.
    assert gdf_out["name_source"].isna().all()
    assert gdf_out.crs.to_epsg() == 4326
    assert list(gdf_out["code"]) == list(gdf_in["code"])  # built outermost first, by code
    assert list(gdf_out["name"]) == list(gdf_in["name"])
    assert list(gdf_out["level"]) == list(gdf_in["level"])
    assert list(gdf_out["parent_code"]) == list(gdf_in["parent_code"])
    assert gdf_out["generated"].tolist() == [True] * len(gdf_in)
    assert (gdf_out.geom_type == "MultiPolygon").all()
    assert _same_geometries(gdf_out.geometry, _as_multi(gdf_in.geometry))

    microgrids = read_stored_areas(store_engine, level="microgrid")
    assert len(microgrids) == 16
    assert set(microgrids["level"]) == {"microgrid"}


def test_offices_and_units_round_trip(store_engine: Engine) -> None:
    load_sample(store_engine)
    offices = read_offices(store_engine)
    expected_offices = make_offices().sort_values("office_id").reset_index(drop=True)
    assert offices["office_id"].tolist() == expected_offices["office_id"].tolist()
    assert offices["street_code"].tolist() == expected_offices["street_code"].tolist()
    assert _same_geometries(offices.geometry, expected_offices.geometry)

    units = read_units(store_engine)
    expected = make_units().sort_values("unit_id").reset_index(drop=True)
    assert units["unit_id"].tolist() == expected["unit_id"].tolist()
    for column in ("kind", "office_id", "street_code", "travel_mode", "status", "grid_code"):
        assert units[column].tolist() == expected[column].tolist(), column
    assert units["on_duty"].tolist() == expected["on_duty"].tolist()
    assert units.geometry.isna().tolist() == expected.geometry.isna().tolist()
    positioned = expected.geometry.notna()
    assert _same_geometries(units.geometry[positioned], expected.geometry[positioned])
    # Stored in UTC, whatever zone it came in.
    assert str(units["position_time"].dt.tz) == "UTC"
    assert units["position_time"].iloc[0] == pd.Timestamp("2026-11-27T01:30:00Z")

    assert read_units(store_engine, kind="market")["unit_id"].tolist() == ["U06", "U07"]
    assert read_units(store_engine, street_code=STREET_2)["unit_id"].tolist() == [
        "U03",
        "U04",
        "U05",
    ]


def test_matters_reject_anything_but_catalogue_matters(store_engine: Engine) -> None:
    with pytest.raises(InputError, match=r"gridgov\.catalog\.Matter"):
        load_matters(store_engine, [{"code": "FS-01"}])  # type: ignore[list-item]


def test_the_store_gives_back_the_whole_catalogue_it_was_given(store_engine: Engine) -> None:
    from dataclasses import replace

    from gridgov.store import read_catalog

    catalog = load_catalog(get_settings().catalog_path)
    assert read_catalog(store_engine) == catalog  # nothing stored: the configured file
    load_matters(store_engine, catalog, source="catalog.yaml")
    assert read_catalog(store_engine) == catalog  # names, version, file order (not by code)
    assert list(read_catalog(store_engine).codes) != sorted(catalog.codes)
    # Matters stored alone are not described by the earlier catalogue's row any more.
    changed = [replace(catalog.matters[0], code="FS-99"), *catalog.matters[1:]]
    load_matters(store_engine, changed)
    bare = read_catalog(store_engine)
    assert sorted(bare.codes) == sorted(m.code for m in changed)
    assert bare.version == "" and bare.domain("FS").en == "FS"
    assert bare.get("FS-99").deadlines == catalog.matters[0].deadlines


def test_load_the_real_catalogue(store_engine: Engine) -> None:
    catalog = load_catalog(get_settings().catalog_path)
    load_matters(store_engine, catalog.matters, source="catalog.yaml")
    df = read_matters(store_engine).set_index("code")
    assert sorted(df.index) == sorted(m.code for m in catalog.matters)
    for matter in catalog.matters:
        row = df.loc[matter.code]
        assert row["lead_kind"] == str(matter.lead)
        assert row["assist_kinds"] == [str(k) for k in matter.assist]
        assert row["max_travel_min"] == matter.max_travel_min
        assert row["acknowledge_min"] == matter.deadlines.acknowledge_min
        assert row["arrive_min"] == matter.deadlines.arrive_min
        assert row["resolve_h"] == matter.deadlines.resolve_h
        assert row["handling_level"] == str(matter.level)
        assert row["event_class"] == matter.event_class.code
        assert row["keywords"] == list(matter.keywords)
        assert row["priority"] == matter.priority


def test_bad_batch_leaves_old_data_intact(store_engine: Engine) -> None:
    load_sample(store_engine)
    before_areas = read_stored_areas(store_engine)
    before_units = read_units(store_engine)

    bad_areas = make_tiny_areas()
    bad_areas.loc[5, "level"] = "province"  # violates the level CHECK on the sixth row
    with pytest.raises(AreaValidationError, match="unknown_level"):
        load_areas(store_engine, bad_areas)
    # Past validation, the database's own constraints still guard the tables.
    with pytest.raises(StoreError, match="nothing was changed"):
        load_areas(store_engine, bad_areas, validate=False)

    dangling = make_tiny_areas()
    dangling = dangling[~dangling["code"].str.startswith(STREET_2[:9])]  # units still use it
    with pytest.raises(StoreError, match="nothing was changed"):
        load_areas(store_engine, dangling, validate=False)

    bad_units = make_units()
    bad_units.loc[len(bad_units) - 1, "street_code"] = "510106999000"
    with pytest.raises(UnitValidationError, match="unknown_street"):
        load_units(store_engine, bad_units)

    with pytest.raises(InputError, match="Point"):
        load_units(store_engine, make_units().set_geometry([box(0, 0, 1, 1)] * 9))

    after_areas = read_stored_areas(store_engine)
    assert after_areas["code"].tolist() == before_areas["code"].tolist()
    assert after_areas["level"].tolist() == before_areas["level"].tolist()
    assert _same_geometries(after_areas.geometry, before_areas.geometry)
    assert read_units(store_engine)["unit_id"].tolist() == before_units["unit_id"].tolist()
    # And the store still accepts a good load afterwards.
    load_units(store_engine, make_units().iloc[:3])
    assert read_units(store_engine)["unit_id"].tolist() == ["U01", "U02", "U03"]


def test_load_district_swaps_everything_at_once(store_engine: Engine) -> None:
    load_sample(store_engine)
    smaller = make_tiny_areas()
    smaller = smaller[~smaller["code"].str.startswith(STREET_2[:9])].copy()
    # The district shrinks to its one remaining street, so the hierarchy stays sound.
    is_district = smaller["level"] == "district"
    street_1 = smaller.loc[smaller["code"] == STREET_1, "geometry"].iloc[0]
    smaller.loc[is_district, "geometry"] = gpd.GeoSeries(
        [street_1], index=smaller.index[is_district]
    )
    offices = make_offices()
    units = make_units()
    before = load_district(
        store_engine,
        smaller,
        offices[offices["street_code"] == STREET_1],
        # Units of street 1 standing in it: one parked over the border would now be outside.
        units[(units["street_code"] == STREET_1) & units.within(street_1)],
        name="half",
    )
    assert before == {"areas": 31, "offices": len(offices), "units": len(units)}
    assert set(read_stored_areas(store_engine, level="street")["code"]) == {STREET_1}
    assert set(read_units(store_engine)["street_code"]) == {STREET_1}
    summary = summarize(store_engine)
    assert summary["datasets"]["files"]["name"] == "half"
    kept = units[(units["street_code"] == STREET_1) & units.within(street_1)]
    assert summary["datasets"]["files"]["counts"]["units"] == len(kept) > 0


def test_summarize(store_engine: Engine) -> None:
    load_sample(store_engine)
    summary = summarize(store_engine)
    assert summary["backend"] == detect_backend(store_engine)
    assert summary["areas"] == {
        "district": 1,
        "street": 2,
        "community": 4,
        "grid": 8,
        "microgrid": 16,
    }
    assert summary["offices"] == 3
    assert summary["units"] == 9
    assert summary["units_by_kind"] == {"grid_worker": 1, "market": 2, "police": 6}
    assert summary["units_by_street"] == {STREET_1: 6, STREET_2: 3}
    assert summary["matters"] == 2
    assert summary["datasets"]["areas"]["name"] == "tiny"
    assert summary["datasets"]["areas"]["counts"]["microgrid"] == 16
    loaded_at = datetime.fromisoformat(summary["datasets"]["areas"]["loaded_at"])
    assert loaded_at.tzinfo is not None
    assert abs(datetime.now(UTC) - loaded_at) < timedelta(days=1)


# --------------------------------------------------------------------------------------------
# locating
# --------------------------------------------------------------------------------------------

STEP = SIZE / 4  # micro-grid width and height


def locate(engine: Engine, lon: float, lat: float) -> dict[str, str | None]:
    """Codes at every level for one point (None outside), through the vectorised call."""
    return dict(locate_many(engine, [lon], [lat]).iloc[0].to_dict())


def test_locate_inside_outside_and_on_edges(store_engine: Engine) -> None:
    load_areas(store_engine, make_tiny_areas())
    inside = locate(store_engine, X0 + STEP / 2, Y0 + STEP / 2)  # south-west micro-grid
    assert inside == {
        "district": DISTRICT,
        "street": STREET_1,
        "community": "510106001001",
        "grid": "510106001001001",
        "microgrid": "510106001001001001",
    }
    assert locate(store_engine, X0 - 0.01, Y0) == dict.fromkeys(
        ["district", "street", "community", "grid", "microgrid"]
    )
    # On the edge between the two streets: both closures contain it, the smaller code wins.
    on_street_edge = locate(store_engine, X0 + SIZE / 2, Y0 + STEP / 2)
    assert on_street_edge["street"] == STREET_1
    assert on_street_edge["microgrid"] == "510106001001002001"
    # The district's outer boundary still belongs to the district.
    assert locate(store_engine, X0, Y0 + SIZE / 3)["district"] == DISTRICT
    # The centre vertex is shared by micro-grids of both streets.
    centre = locate(store_engine, X0 + SIZE / 2, Y0 + SIZE / 2)
    assert centre["street"] == STREET_1
    assert centre["microgrid"].startswith(STREET_1[:9])


def test_locate_point_names_every_level_or_says_outside(store_engine: Engine) -> None:
    load_sample(store_engine)
    named = locate_point(store_engine, X0 + STEP / 2, Y0 + STEP / 2)
    assert named["district"] == {
        "code": DISTRICT,
        "name": "测试区",
        "generated": True,
        "name_source": None,
    }
    assert named["microgrid"] is not None
    assert named["microgrid"]["code"] == "510106001001001001"
    with pytest.raises(OutsideDistrictError, match="outside the loaded district"):
        locate_point(store_engine, X0 - 0.01, Y0)


def test_an_empty_store_says_so_on_both_backends(store_engine: Engine) -> None:
    with pytest.raises(StoreError, match="holds no areas"):
        locate_many(store_engine, [X0], [Y0])


def test_a_broken_hierarchy_is_refused_before_the_database(store_engine: Engine) -> None:
    load_sample(store_engine)
    before = read_stored_areas(store_engine)
    holed = make_tiny_areas()
    holed = holed[holed["code"] != "510106001001001001"]  # a micro-grid gone: a gap
    with pytest.raises(AreaValidationError, match="gap"):
        load_areas(store_engine, holed)
    with pytest.raises(AreaValidationError, match="gap"):
        load_district(store_engine, holed)
    pd.testing.assert_frame_equal(read_stored_areas(store_engine), before)


def test_locate_many_matches_locate(store_engine: Engine) -> None:
    load_areas(store_engine, make_tiny_areas())
    rng = np.random.default_rng(7)
    lon = rng.uniform(X0 - 0.01, X0 + SIZE + 0.01, 200)
    lat = rng.uniform(Y0 - 0.01, Y0 + SIZE + 0.01, 200)
    lon[:3] = [X0 + SIZE / 2, X0 + STEP, X0 - 1]  # edges and far outside
    lat[:3] = [Y0 + SIZE / 2, Y0 + STEP, Y0]
    df = locate_many(store_engine, lon, lat)
    assert list(df.columns) == ["district", "street", "community", "grid", "microgrid"]
    assert len(df) == 200
    inside = (lon >= X0) & (lon <= X0 + SIZE) & (lat >= Y0) & (lat <= Y0 + SIZE)
    assert (df["district"].notna().to_numpy() == inside).all()
    for i in range(0, 200, 23):
        assert df.iloc[i].to_dict() == locate(store_engine, lon[i], lat[i])
    # Each micro-grid code must carry its parents' prefixes.
    located = df[df["microgrid"].notna()]
    assert (located.apply(lambda r: r["microgrid"].startswith(r["grid"]), axis=1)).all()
    assert (located.apply(lambda r: r["community"].startswith(r["street"][:9]), axis=1)).all()


# --------------------------------------------------------------------------------------------
# units near a point
# --------------------------------------------------------------------------------------------


def _geodesic(lon: float, lat: float, lon2: float, lat2: float) -> float:
    return float(GEOD.inv(lon, lat, lon2, lat2)[2])


def test_nearest_units(store_engine: Engine) -> None:
    load_sample(store_engine)
    nearest = nearest_units(store_engine, QX, QY, k=4)
    assert nearest["unit_id"].tolist() == ["U07", "U06", "U01", "U02"]
    expected = [_geodesic(QX, QY, *p) for p in [(QX + 0.0002, QY), (QX - 0.0005, QY)]]
    assert np.allclose(nearest["distance_m"].iloc[:2], expected, atol=1e-3)
    assert 100 < nearest["distance_m"].iloc[2] < 120  # 0.001 degree of latitude

    police = nearest_units(store_engine, QX, QY, k=10, kind="police", available_only=True)
    # U02 is busy, U08 has no position; U04 beats U05 at the same spot by id.
    assert police["unit_id"].tolist() == ["U01", "U03", "U04", "U05"]
    assert police["distance_m"].is_monotonic_increasing
    assert nearest_units(store_engine, QX, QY, k=1, kind="fire").empty


def test_units_within(store_engine: Engine) -> None:
    load_sample(store_engine)
    within = units_within(store_engine, QX, QY, 250.0)
    assert within["unit_id"].tolist() == ["U07", "U06", "U01", "U02"]
    assert units_within(store_engine, QX, QY, 250.0, kind="market")["unit_id"].tolist() == [
        "U07",
        "U06",
    ]
    assert within["distance_m"].max() <= 250.0
    with pytest.raises(InputError):
        units_within(store_engine, QX, QY, -1.0)
    with pytest.raises(InputError):
        nearest_units(store_engine, 200.0, QY)


@pytest.mark.postgis
def test_backends_give_the_same_answers(sqlite_url: str, postgis_schema_url: str) -> None:
    engines = []
    for url in (sqlite_url, postgis_schema_url):
        init_db(url)
        engine = create_engine_from_url(url)
        engines.append(engine)
        load_areas(engine, make_tiny_areas())
        load_offices(engine, make_offices())
        rng = np.random.default_rng(11)
        units = pd.concat([make_units()] * 20, ignore_index=True)
        units["unit_id"] = [f"R{i:04d}" for i in range(len(units))]
        units["office_id"] = None
        units = units.set_geometry(
            gpd.points_from_xy(
                rng.uniform(X0, X0 + SIZE, len(units)), rng.uniform(Y0, Y0 + SIZE, len(units))
            )
        )
        load_units(engine, units)
    try:
        sqlite_engine, postgis_engine = engines
        rng = np.random.default_rng(5)
        # Every lattice vertex and edge midpoint tests the boundary rule on both backends.
        ticks = X0 + np.arange(9) * STEP / 2, Y0 + np.arange(9) * STEP / 2
        lattice_x, lattice_y = (a.ravel() for a in np.meshgrid(*ticks))
        lon = np.concatenate([lattice_x, rng.uniform(X0 - 0.005, X0 + SIZE + 0.005, 1500)])
        lat = np.concatenate([lattice_y, rng.uniform(Y0 - 0.005, Y0 + SIZE + 0.005, 1500)])
        # A few points take PostGIS's per-point path, many its temporary-table path.
        for n in (len(lattice_x), len(lon)):
            pd.testing.assert_frame_equal(
                locate_many(sqlite_engine, lon[:n], lat[:n]),
                locate_many(postgis_engine, lon[:n], lat[:n]),
            )
        for x, y in zip(lon[:25], lat[:25], strict=True):
            for kind, available in ((None, False), ("police", True), ("market", False)):
                a = nearest_units(sqlite_engine, x, y, k=7, kind=kind, available_only=available)
                b = nearest_units(postgis_engine, x, y, k=7, kind=kind, available_only=available)
                assert a["unit_id"].tolist() == b["unit_id"].tolist()
                assert np.allclose(a["distance_m"], b["distance_m"], atol=1e-3)
            a = units_within(sqlite_engine, x, y, 900.0)
            b = units_within(postgis_engine, x, y, 900.0)
            assert a["unit_id"].tolist() == b["unit_id"].tolist()
            assert np.allclose(a["distance_m"], b["distance_m"], atol=1e-3)
    finally:
        for engine in engines:
            engine.dispose()


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------


def test_load_files_rejects_bad_files(store_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read"):
        load_files(store_engine, tmp_path / "missing.gpkg")
    path = tmp_path / "offices_only.gpkg"
    make_offices().to_file(path, layer="offices")
    with pytest.raises(DataFileError, match="no 'areas' layer"):
        load_files(store_engine, path)


def test_geopackage_round_trip(store_engine: Engine, sqlite_url: str, tmp_path: Path) -> None:
    load_sample(store_engine)
    path = export_geopackage(store_engine, tmp_path / "district.gpkg")
    assert path.exists()

    init_db(sqlite_url)
    target = create_engine_from_url(sqlite_url)
    try:
        counts = load_files(target, path)
        assert counts == {"areas": 31, "offices": 3, "units": 9, "matters": 2}
        for read in (read_stored_areas, read_offices, read_units):
            a, b = read(store_engine), read(target)
            key = a.columns[0]
            assert a[key].tolist() == b[key].tolist()
            assert a.geometry.isna().tolist() == b.geometry.isna().tolist()
            known = a.geometry.notna()
            assert _same_geometries(a.geometry[known], b.geometry[known])
        pd.testing.assert_frame_equal(read_units(store_engine), read_units(target))
        pd.testing.assert_frame_equal(read_stored_areas(store_engine), read_stored_areas(target))
        pd.testing.assert_frame_equal(read_matters(store_engine), read_matters(target))
        assert summarize(target)["datasets"]["files"]["name"] == "district"
        # Exporting over an existing file replaces it.
        assert export_geopackage(target, path) == path
    finally:
        target.dispose()


@pytest.mark.postgis
def test_large_answers_are_compressed_with_lz4(postgis_schema_url: str) -> None:
    """Migration 0012: a report's stored answer and its dispatch's explanation (each ~9 KB)
    are compressed with LZ4, several times cheaper than pglz for the same size."""
    methods = _catalogue_rows(
        postgis_schema_url,
        "SELECT attrelid::regclass::text, attname, attcompression FROM pg_attribute "
        "WHERE (attrelid, attname) IN "
        "(('idempotency'::regclass, 'body'), ('dispatches'::regclass, 'explanation'))",
    )
    assert sorted((t, c, m) for t, c, m in methods) == [
        ("dispatches", "explanation", "l"),
        ("idempotency", "body", "l"),
    ]
