"""Commands on the district itself.

Create the store, load the areas, offices, units, roads and catalogue, check and export them,
locate a point, route between two points, and build or generate districts: ``init``, ``load``,
``validate``, ``locate``, ``info``, ``export``, ``build-reference``, ``generate``, ``route``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gridgov.cli.command_support import (
    CrsOption,
    FileCrsOption,
    LayerOption,
    UrlOption,
    check_choice,
    database_url,
    domain_errors,
    err,
    fail,
    out,
    print_json,
    progress_bar,
    redact,
)
from gridgov.errors import InputError, OutsideDistrictError
from gridgov.model import TravelMode
from gridgov.settings import get_settings

#: The dataset name the reference district is loaded under.
DEMO_DATASET = "jinniu-reference"


def init(url: UrlOption = None) -> None:
    """Create the database (if needed) and migrate it to the current schema."""
    from gridgov.store import init_db

    with domain_errors():
        init_db(database_url(url))
    out.print(f"database ready: {redact(database_url(url))}")


def load(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Area files (GeoJSON, GeoPackage, GeoParquet, Shapefile). "
            "None: the Jinniu reference district."
        ),
    ] = None,
    units: Annotated[
        Path | None, typer.Option(help="Units file to load with your areas (same formats).")
    ] = None,
    offices: Annotated[
        Path | None, typer.Option(help="Offices file to load with your areas (same formats).")
    ] = None,
    roads: Annotated[
        Path | None,
        typer.Option(
            help="Road network: a GeoPackage with layers nodes and links, an OpenStreetMap "
            "extract (.osm.pbf) or a link-table folder. With your area files it is loaded with "
            "them; alone, it replaces only the roads of the district in the store."
        ),
    ] = None,
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="Matters catalogue (YAML, as data/catalog.yaml) to store with the district; "
            "dispatch, Open311 and reports then read it from the store. Default: the configured "
            "data/catalog.yaml (an export keeps its own)."
        ),
    ] = None,
    layer: LayerOption = None,
    units_layer: Annotated[
        str | None,
        typer.Option(
            help="Layer of the --units file (default: 'units', else its one point layer)."
        ),
    ] = None,
    offices_layer: Annotated[
        str | None,
        typer.Option(
            help="Layer of the --offices file (default: 'offices', else its one point layer)."
        ),
    ] = None,
    crs: FileCrsOption = None,
    url: UrlOption = None,
) -> None:
    """Load the reference district, or your own files, into the store (validated first).

    The store holds one district: loading replaces areas, offices, units, roads and the matters
    catalogue together, and a problem anywhere changes nothing. Without roads, dispatch falls
    back to straight-line travel times. Every file and column is described in docs/formats.md.
    """
    from gridgov import store
    from gridgov.catalog import load_catalog

    settings = get_settings()
    if not paths and (units or offices):
        raise fail("--units and --offices go with your own area files (PATHS)")
    if not paths and (layer or units_layer or offices_layer):
        raise fail("--layer, --units-layer and --offices-layer go with your own files (PATHS)")
    if not paths and roads is not None:
        if catalog is not None:
            raise fail("--catalog goes with a whole district (PATHS or the reference)")
        _load_roads_only(roads, url)
        return
    with domain_errors():
        # Checked first: a bad catalogue fails in a moment, before the files are read.
        matters = load_catalog(catalog)
        # A whole district as `gridgov export` wrote it: areas, offices, units and matters.
        alone = not (units or offices or roads or crs or layer)
        single = paths[0] if paths and len(paths) == 1 and alone else None
        whole = single is not None and store.is_export(single)
    if single is not None and whole:
        with domain_errors():
            engine = store.open_store(database_url(url))
            counts = store.load_files(engine, single)
            if catalog is not None:
                store.load_matters(engine, matters, name=catalog.name, source=str(catalog))
                counts["matters"] = len(matters)
        detail = ", ".join(f"{n} {part}" for part, n in counts.items())
        out.print(f"loaded the district exported in {single}: {detail}")
        return
    with domain_errors(), progress_bar("reading", total=2) as advance:
        engine = store.open_store(database_url(url))
        if paths:
            from gridgov.areas import read_areas
            from gridgov.units import read_offices, read_units

            gdf_areas = read_areas(paths, crs=crs, layer=layer)
            gdf_units = read_units(units, crs=crs, layer=units_layer) if units else None
            gdf_offices = read_offices(offices, crs=crs, layer=offices_layer) if offices else None
            gdf_nodes, gdf_links = _read_road_frames(roads) if roads else (None, None)
            dataset, source = "user-files", ", ".join(str(p) for p in paths)
        else:
            from gridgov.reference import read_reference_district

            ref = read_reference_district(settings.data_dir)
            gdf_areas, gdf_units, gdf_offices = ref.gdf_areas, ref.gdf_units, ref.gdf_offices
            gdf_nodes, gdf_links = ref.gdf_nodes, ref.gdf_links
            dataset, source = DEMO_DATASET, str(settings.data_dir)
        advance(1, "validating and writing to the store")
        before = store.load_district(
            engine,
            gdf_areas,
            gdf_offices=gdf_offices,
            gdf_units=gdf_units,
            matters=matters,
            gdf_nodes=gdf_nodes,
            gdf_links=gdf_links,
            name=dataset,
            source=source,
        )
        advance(1)
    levels = gdf_areas["level"].value_counts()
    parts = [f"{levels[lv]} {lv}" for lv in levels.index]
    parts.append(f"{0 if gdf_offices is None else len(gdf_offices)} offices")
    parts.append(f"{0 if gdf_units is None else len(gdf_units)} units")
    parts.append(
        "no roads (straight-line travel)" if gdf_links is None else f"{len(gdf_links)} road links"
    )
    parts.append(f"{len(matters)} matters" + (f" from {catalog}" if catalog is not None else ""))
    out.print(f"loaded {dataset}: " + ", ".join(parts))
    if any(before.values()):
        out.print(
            f"replaced what the store held: {before['areas']} areas, {before['offices']} offices, "
            f"{before['units']} units"
        )


def _read_road_frames(path: Path) -> tuple[Any, Any]:
    """Nodes and links of a road network file, checked by building its travel graphs."""
    from gridgov.network import read_network

    network = read_network(path)
    dropped = {m: d for m, d in network.dropped.items() if any(d.values())}
    if dropped:
        detail = "; ".join(
            f"{mode}: {d.get('nodes', 0)} nodes, {d.get('links', 0)} links"
            for mode, d in sorted(dropped.items())
        )
        err.print(
            f"[yellow]note:[/] {escape(str(path))}: outside the largest strongly connected part "
            f"(left out of routing) {escape(detail)}",
            highlight=False,
        )
    links = network.gdf_links
    links = links.drop(columns=[c for c in links.columns if str(c).startswith("kept_")])
    return network.gdf_nodes, links


def _load_roads_only(roads: Path, url: str | None) -> None:
    """``gridgov load --roads FILE``: replace the stored roads, keep the district."""
    from gridgov import store

    with domain_errors(), progress_bar("reading roads"):
        engine = store.open_store(database_url(url))
        gdf_nodes, gdf_links = _read_road_frames(roads)
        counts = store.load_roads(engine, gdf_nodes, gdf_links, name=roads.name, source=str(roads))
    out.print(
        f"loaded roads from {roads}: {counts['nodes']} nodes, {counts['links']} links "
        "(areas, offices and units unchanged)"
    )


def validate(
    path: Annotated[list[Path], typer.Argument(help="Area file(s) to check.")],
    layer: LayerOption = None,
    crs: FileCrsOption = None,
) -> None:
    """Check an area hierarchy; exit 0 when clean, 1 with every problem listed otherwise."""
    from gridgov.areas import read_areas, validate_areas

    with domain_errors():
        gdf = read_areas(path, crs=crs, layer=layer)
        problems = validate_areas(gdf)
    if not problems:
        counts = gdf["level"].value_counts()
        detail = ", ".join(f"{counts[lv]} {lv}" for lv in counts.index)
        out.print(f"ok: {len(gdf)} areas ({detail}), no problems")
        return
    table = Table("kind", "code", "problem", "lon", "lat", title=f"{len(problems)} problem(s)")
    for p in problems:
        table.add_row(
            p.kind,
            p.code,
            p.message,
            "" if p.lon is None else f"{p.lon:.6f}",
            "" if p.lat is None else f"{p.lat:.6f}",
        )
    Console(width=200).print(table)
    raise typer.Exit(1)


def locate(
    lon: Annotated[float, typer.Argument(help="Longitude (or x in an EPSG CRS).")],
    lat: Annotated[float, typer.Argument(help="Latitude (or y).")],
    crs: CrsOption = "wgs84",
    url: UrlOption = None,
) -> None:
    """Print the code and name at every level for one point, as JSON."""
    from gridgov import store
    from gridgov.crs import normalize_crs, to_wgs84

    with domain_errors():
        name = normalize_crs(crs)
        wlon, wlat = to_wgs84(lon, lat, name)
        engine = store.open_store(database_url(url))
        try:
            found = store.locate_point(engine, float(wlon[0]), float(wlat[0]))
        except OutsideDistrictError:
            # Name the point as the user gave it, not only its WGS84 conversion.
            raise OutsideDistrictError(lon, lat, name) from None
    print_json(
        {
            "input": {"lon": lon, "lat": lat, "crs": name},
            "wgs84": {"lon": round(float(wlon[0]), 9), "lat": round(float(wlat[0]), 9)},
            **found,
        }
    )


def info(url: UrlOption = None) -> None:
    """Summarise what is loaded."""
    from gridgov import store

    with domain_errors():
        engine = store.open_store(database_url(url))
        summary = store.summarize(engine)
    print_json(summary)


def export_(
    path: Annotated[Path, typer.Argument(help="GeoPackage to write (.gpkg).")],
    url: UrlOption = None,
) -> None:
    """Export areas, offices and units from the store to a GeoPackage."""
    from gridgov import store

    with domain_errors():
        engine = store.open_store(database_url(url))
        store.export_geopackage(engine, path)
    out.print(f"wrote {path}")


def build_reference(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder to write (default: the data folder).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Generator seed.")] = None,
) -> None:
    """Rebuild the Jinniu reference district from the real road and code tables."""
    from gridgov.reference import build_reference_district, write_reference_district

    settings = get_settings()
    target = out_dir or settings.data_dir
    with domain_errors(), progress_bar("building reference district") as advance:
        ref = build_reference_district(
            settings.data_dir,
            seed=settings.reference_seed if seed is None else seed,
            progress=lambda stage, done, total: advance(0, stage),
        )
        write_reference_district(ref, target)
    out.print(
        f"wrote the reference district to {target}: "
        f"{len(ref.gdf_areas)} areas, {len(ref.gdf_units)} units, {len(ref.gdf_links)} road links"
    )


def generate(
    boundary: Annotated[Path, typer.Argument(help="District boundary (polygon file).")],
    roads: Annotated[
        Path | None,
        typer.Argument(
            help="Road lines, or a folder with roads_nodes.csv and roads_links.csv. "
            "Without roads, blocks are cut by k-means cells alone."
        ),
    ] = None,
    out_path: Annotated[
        Path, typer.Option("--out", help="Areas file to write (.gpkg, .geojson or .parquet).")
    ] = Path("areas.gpkg"),
    roads_layer: Annotated[
        str | None,
        typer.Option("--roads-layer", help="Layer of ROADS to use (default: its line layer)."),
    ] = None,
    boundary_layer: Annotated[
        str | None,
        typer.Option(
            "--boundary-layer", help="Layer of BOUNDARY to use (default: its polygon layer)."
        ),
    ] = None,
    crs: FileCrsOption = None,
    admin: Annotated[
        Path | None,
        typer.Option(
            help="Table level,code,name,parent_code[,lon,lat] of real streets/communities."
        ),
    ] = None,
    code: Annotated[str, typer.Option(help="District code (without --admin).")] = "510100000000",
    name: Annotated[str, typer.Option(help="District name (without --admin).")] = "示例区",
    streets: Annotated[int, typer.Option(help="Streets (without --admin).")] = 5,
    communities: Annotated[int, typer.Option(help="Communities per street (no --admin).")] = 4,
    grids: Annotated[int, typer.Option(help="Grids in the whole district.")] = 200,
    microgrids: Annotated[int, typer.Option(help="Micro-grids in the whole district.")] = 2000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
) -> None:
    """Generate a street → micro-grid hierarchy from your own boundary and road network."""
    from gridgov.areas import check_areas
    from gridgov.tessellate import (
        generate_areas,
        plan_from_admin_table,
        plan_from_counts,
        read_admin_table,
        read_boundary,
        read_roads,
    )

    suffix = out_path.suffix.lower()
    if suffix not in (".gpkg", ".geojson", ".json", ".parquet"):
        raise fail(f"--out must end in .gpkg, .geojson or .parquet, not {suffix or 'nothing'}")
    with domain_errors(), progress_bar("generating areas") as advance:
        gdf_boundary = read_boundary(boundary, crs, layer=boundary_layer)
        gdf_roads = read_roads(roads, crs, layer=roads_layer) if roads else None
        if admin:
            plan = plan_from_admin_table(
                read_admin_table(admin), grids, microgrids, crs=crs or "wgs84", source=str(admin)
            )
        else:
            plan = plan_from_counts(code, name, streets, communities, grids, microgrids)
        gdf = generate_areas(
            gdf_boundary,
            gdf_roads,
            plan,
            seed=seed,
            progress=lambda stage, done, total: advance(0, stage),
        )
        check_areas(gdf)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            gdf.to_parquet(out_path)
        else:
            gdf.to_file(out_path, driver="GPKG" if suffix == ".gpkg" else "GeoJSON")
    for warning in gdf.attrs.get("warnings", []):
        err.print(f"[yellow]warning:[/] {escape(str(warning))}", highlight=False)
    counts = gdf["level"].value_counts()
    detail = ", ".join(f"{counts[lv]} {lv}" for lv in counts.index)
    out.print(f"wrote {out_path}: {detail} (generated polygons; validated)")


def route(
    lon1: Annotated[float, typer.Argument(help="From: longitude (or x).")],
    lat1: Annotated[float, typer.Argument(help="From: latitude (or y).")],
    lon2: Annotated[float, typer.Argument(help="To: longitude (or x).")],
    lat2: Annotated[float, typer.Argument(help="To: latitude (or y).")],
    mode: Annotated[str, typer.Option(help="Travel mode: drive, bike or walk.")] = "drive",
    crs: CrsOption = "wgs84",
    url: UrlOption = None,
) -> None:
    """Print the fastest route between two points on the stored roads: time, length, GeoJSON."""
    from gridgov import store
    from gridgov.crs import normalize_crs, to_wgs84
    from gridgov.dispatch import route_to_geojson

    with domain_errors():
        check_choice(mode, [m.value for m in TravelMode], "--mode")
        name = normalize_crs(crs)
        wlon, wlat = to_wgs84([lon1, lon2], [lat1, lat2], name)
        travel = store.travel_from_store(store.open_store(database_url(url)))
        snapped = travel.snap(wlon, wlat, mode)
        for i, (x, y) in enumerate(((lon1, lat1), (lon2, lat2))):
            if bool(snapped.far[i]):
                msg = (
                    f"point ({x}, {y}) [{name}] lies {float(snapped.access_m[i]):.0f} m from the "
                    f"nearest {snapped.mode.value} road (more than "
                    f"{get_settings().max_snap_m:.0f} m)"
                )
                raise InputError(msg)
        found = travel.route(snapped.take(0), snapped.take(1))
    print_json(
        {
            "mode": found.mode.value,
            "travel_model": travel.kind,
            "time_s": round(found.time_s, 1),
            "time_min": round(found.time_s / 60, 2),
            "length_m": round(found.length_m, 1),
            "route": route_to_geojson(found),
        }
    )
