"""The ``gridgov`` command.

Every command is thin: it parses arguments, calls one core or store function, and prints. Domain
errors become a one-line message and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gridgov.errors import GridgovError, InputError, OutsideDistrictError
from gridgov.settings import get_settings

app = typer.Typer(
    name="gridgov",
    help="Grid governance and enforcement dispatch for a street command centre.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)


#: The dataset name the reference district is loaded under.
DEMO_DATASET = "jinniu-reference"

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="Database URL (default: GRIDGOV_DATABASE_URL or sqlite:///gridgov.db)."
    ),
]
CrsOption = Annotated[
    str, typer.Option("--crs", help="CRS of the input coordinates: wgs84, gcj02, bd09 or EPSG:n.")
]
# Files carry their own CRS label; --crs overrides it (GCJ-02 data is often labelled EPSG:4326).
FileCrsOption = Annotated[
    str | None,
    typer.Option(
        "--crs",
        help="The files' real CRS (wgs84, gcj02, bd09 or EPSG:n); default: the files' own label.",
    ),
]


LayerOption = Annotated[
    str | None,
    typer.Option(
        "--layer",
        help="Layer of a multi-layer area file (e.g. a GeoPackage); default: the layer named "
        "'areas', else the one polygon layer with code, name and level (docs/formats.md).",
    ),
]


def _url(url: str | None) -> str:
    return url or get_settings().database_url


def _fail(message: str, code: int = 1) -> typer.Exit:
    # Escaped: messages carry brackets such as "[gcj02]" that rich would read as markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def _domain_errors() -> Iterator[None]:
    """Turn a GridgovError into a clean message and exit status 1."""
    try:
        yield
    except GridgovError as exc:
        raise _fail(str(exc)) from None


@contextmanager
def _progress(description: str, total: float | None = None) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr; yields ``advance(step=1, description=None)``."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>.0f}/{task.total:>.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(step: float = 1, description: str | None = None) -> None:
            if description is not None:
                progress.update(task, description=description)
            progress.advance(task, step)

        yield advance


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@app.command()
def init(url: UrlOption = None) -> None:
    """Create the database (if needed) and migrate it to the current schema."""
    from gridgov.store import init_db

    with _domain_errors():
        init_db(_url(url))
    out.print(f"database ready: {_redact(_url(url))}")


@app.command()
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
        raise _fail("--units and --offices go with your own area files (PATHS)")
    if not paths and (layer or units_layer or offices_layer):
        raise _fail("--layer, --units-layer and --offices-layer go with your own files (PATHS)")
    if not paths and roads is not None:
        if catalog is not None:
            raise _fail("--catalog goes with a whole district (PATHS or the reference)")
        _load_roads_only(roads, url)
        return
    with _domain_errors():
        # Checked first: a bad catalogue fails in a moment, before the files are read.
        matters = load_catalog(catalog)
        # A whole district as `gridgov export` wrote it: areas, offices, units and matters.
        alone = not (units or offices or roads or crs or layer)
        single = paths[0] if paths and len(paths) == 1 and alone else None
        whole = single is not None and store.is_export(single)
    if single is not None and whole:
        with _domain_errors():
            engine = store.open_store(_url(url))
            counts = store.load_files(engine, single)
            if catalog is not None:
                store.load_matters(engine, matters, name=catalog.name, source=str(catalog))
                counts["matters"] = len(matters)
        detail = ", ".join(f"{n} {part}" for part, n in counts.items())
        out.print(f"loaded the district exported in {single}: {detail}")
        return
    with _domain_errors(), _progress("reading", total=2) as advance:
        engine = store.open_store(_url(url))
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

    with _domain_errors(), _progress("reading roads"):
        engine = store.open_store(_url(url))
        gdf_nodes, gdf_links = _read_road_frames(roads)
        counts = store.load_roads(engine, gdf_nodes, gdf_links, name=roads.name, source=str(roads))
    out.print(
        f"loaded roads from {roads}: {counts['nodes']} nodes, {counts['links']} links "
        "(areas, offices and units unchanged)"
    )


@app.command()
def validate(
    path: Annotated[list[Path], typer.Argument(help="Area file(s) to check.")],
    layer: LayerOption = None,
    crs: FileCrsOption = None,
) -> None:
    """Check an area hierarchy; exit 0 when clean, 1 with every problem listed otherwise."""
    from gridgov.areas import read_areas, validate_areas

    with _domain_errors():
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


@app.command()
def locate(
    lon: Annotated[float, typer.Argument(help="Longitude (or x in an EPSG CRS).")],
    lat: Annotated[float, typer.Argument(help="Latitude (or y).")],
    crs: CrsOption = "wgs84",
    url: UrlOption = None,
) -> None:
    """Print the code and name at every level for one point, as JSON."""
    from gridgov import store
    from gridgov.crs import normalize_crs, to_wgs84

    with _domain_errors():
        name = normalize_crs(crs)
        wlon, wlat = to_wgs84(lon, lat, name)
        engine = store.open_store(_url(url))
        try:
            found = store.locate_point(engine, float(wlon[0]), float(wlat[0]))
        except OutsideDistrictError:
            # Name the point as the user gave it, not only its WGS84 conversion.
            raise OutsideDistrictError(lon, lat, name) from None
    _print_json(
        {
            "input": {"lon": lon, "lat": lat, "crs": name},
            "wgs84": {"lon": round(float(wlon[0]), 9), "lat": round(float(wlat[0]), 9)},
            **found,
        }
    )


@app.command()
def info(url: UrlOption = None) -> None:
    """Summarise what is loaded."""
    from gridgov import store

    with _domain_errors():
        engine = store.open_store(_url(url))
        summary = store.summarize(engine)
    _print_json(summary)


@app.command("export")
def export_(
    path: Annotated[Path, typer.Argument(help="GeoPackage to write (.gpkg).")],
    url: UrlOption = None,
) -> None:
    """Export areas, offices and units from the store to a GeoPackage."""
    from gridgov import store

    with _domain_errors():
        engine = store.open_store(_url(url))
        store.export_geopackage(engine, path)
    out.print(f"wrote {path}")


@app.command("build-reference")
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
    with _domain_errors(), _progress("building reference district") as advance:
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


@app.command()
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
        raise _fail(f"--out must end in .gpkg, .geojson or .parquet, not {suffix or 'nothing'}")
    with _domain_errors(), _progress("generating areas") as advance:
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


@app.command("dispatch")
def dispatch_(
    lon: Annotated[float, typer.Argument(help="Longitude (or x in an EPSG CRS).")],
    lat: Annotated[float, typer.Argument(help="Latitude (or y).")],
    matter: Annotated[str, typer.Argument(help="Matter code of the catalogue, e.g. FS-01.")],
    crs: CrsOption = "wgs84",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Decide and print, but store nothing and keep units free."),
    ] = False,
    incident_id: Annotated[
        str | None, typer.Option("--id", help="Incident id (default: CLI-<time>-<random>).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Dispatch one incident and print the decision with its explanation, as JSON.

    The incident is stored, its units are chosen (DESIGN "Dispatch semantics") and the
    assignments and the units' new status are committed in one transaction. A point outside the
    district or an unknown matter is refused before anything is stored. A point inside the
    district but farther than max_snap_m from every road its units use is stored as unassigned
    (an incident is never lost), its decision printed, and the command exits 1 saying why.
    """
    from gridgov import store
    from gridgov.service import intake

    with _domain_errors():
        engine = store.open_store(_url(url))
        report = intake.report(
            engine,
            store.context_from_store(engine),
            matter_code=matter,
            lon=lon,
            lat=lat,
            crs=crs,
            incident_id=incident_id,
            id_prefix="CLI",
            source="cli",
            dry_run=dry_run,
        )
    decision = report.decision
    if decision is None:
        # A duplicate (linked, rejected) or, with auto_register off, a report waiting for a
        # dispatcher: stored either way, and not dispatched.
        _print_json(
            {
                "incident_id": report.incident_id,
                "status": report.state,
                "reason": report.reason,
                "duplicate_of": report.duplicate_of,
            }
        )
        return
    _print_json({**decision.to_json(), "dry_run": dry_run})
    refused = decision.explanation.get("refused")
    if refused:
        what = (
            "dry run: nothing stored"
            if dry_run
            else f"stored as {report.incident_id}: no unit could be sent, unassigned "
            "(it stays registered)"
        )
        raise _fail(f"{refused}; {what}")
    if decision.unfilled:
        kinds = ", ".join(k.value for k in decision.unfilled)
        err.print(f"[yellow]warning:[/] no available unit of: {escape(kinds)}", highlight=False)


@app.command("dispatch-batch")
def dispatch_batch(
    incident_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Incidents to dispatch (default: every queued one)."),
    ] = None,
    street: Annotated[
        str | None, typer.Option("--street", help="Only the queued incidents of this street.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Dispatch the queued incidents together, optimally, and print the outcome as JSON.

    The assignment minimises the priority-weighted total travel time, each unit going to one
    incident at most (DESIGN "Batch mode"), and is committed in one transaction; ``gain`` is the
    reduction against greedy nearest-first. Incidents not queued, or changed meanwhile
    (cancelled...), are listed as skipped and the others commit.
    """
    from gridgov import store
    from gridgov.service import assign

    with _domain_errors():
        engine = store.open_store(_url(url))
        outcome = assign.dispatch_queue(
            engine,
            store.context_from_store(engine),
            incident_ids=incident_ids or None,
            filters={"street_code": street} if street else None,
        )
    _print_json(outcome.to_json())


@app.command("simulate")
def simulate_(
    hours: Annotated[float, typer.Option(help="Length of the simulated shift (hours).")] = 24.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same shift.")] = 0,
    rate: Annotated[
        float | None,
        typer.Option(help="Mean incidents per hour over the day (default: 40)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="Start of the shift (ISO 8601; no offset = local time; default "
            "2026-11-30T00:00+08:00)."
        ),
    ] = None,
    month: Annotated[
        str | None,
        typer.Option(help="Simulate this whole month (YYYY-MM, local time): sets start and hours."),
    ] = None,
    verify_fail_rate: Annotated[
        float | None,
        typer.Option(help="Share of verifications that fail and send the work back (0.05)."),
    ] = None,
    return_rate: Annotated[
        float | None,
        typer.Option(help="Share of calls the department returns instead of answering (0.02)."),
    ] = None,
    save: Annotated[
        bool,
        typer.Option(
            "--save",
            help="Store the simulated incidents and their event logs, so that `gridgov report` "
            "can assess them.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the summary and every record to this JSON file."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Simulate a shift of random incidents through the dispatcher and the workflow.

    Reads the district (areas, units, offices, roads) from the store and runs in memory. Poisson
    arrivals by grid with an urban day profile, the catalogue's matter mix, lognormal on-scene
    times; each incident goes through acknowledgement, arrival, resolution, verification (a few
    fail and are reworked) and evaluation. The assumptions are listed in gridgov.simulate.
    The store is changed only with --save, which adds the incidents and their events (with
    `--month 2026-10 --save`, `gridgov report --period 2026-10` then assesses that month).
    """
    from gridgov import store
    from gridgov.simulate import (
        DEFAULT_RATE_PER_HOUR,
        DEFAULT_START,
        RETURN_RATE,
        VERIFY_FAIL_RATE,
        format_summary,
        simulate,
    )

    with _domain_errors():
        if json_out is not None and json_out.suffix.lower() != ".json":
            msg = f"--json must name a .json file, not {json_out}"
            raise InputError(msg)
        begin = DEFAULT_START if start is None else _parse_instant(start, "--start")
        if month is not None:
            from gridgov.assessment import Period

            if start is not None:
                msg = "give either --month or --start, not both"
                raise InputError(msg)
            period = Period.parse(month)
            begin = period.start
            hours = (period.end - period.start).total_seconds() / 3600
        engine = store.open_store(_url(url))
        ctx = store.context_from_store(engine)
        gdf_units = store.read_units(engine)
        if gdf_units.empty:
            msg = "the store holds no units; load a district with its units first (`gridgov load`)"
            raise InputError(msg)
        gdf_offices = store.read_offices(engine)
        with _progress("simulating", total=hours) as advance:
            done = [0.0]

            def report(now_h: float, total_h: float) -> None:
                advance(now_h - done[0], f"simulating hour {now_h:.0f} of {total_h:g}")
                done[0] = now_h

            result = simulate(
                ctx,
                gdf_units,
                gdf_offices=gdf_offices,
                hours=hours,
                seed=seed,
                start=begin,
                rate_per_hour=DEFAULT_RATE_PER_HOUR if rate is None else rate,
                # Saved runs must not collide with earlier ones (other months, other seeds).
                id_prefix=f"SIM-{begin:%Y%m%d}-{seed}-" if save else "SIM-",
                verify_fail_rate=VERIFY_FAIL_RATE if verify_fail_rate is None else verify_fail_rate,
                return_rate=RETURN_RATE if return_rate is None else return_rate,
                progress=report,
            )
        summary = result.summary()
        if save:
            store.import_history(engine, result.incidents, result.events)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(
                json.dumps(result.to_json(), ensure_ascii=False, indent=1, default=str),
                encoding="utf-8",
            )
    out.print(format_summary(summary), highlight=False, markup=False)
    if save:
        out.print(
            f"stored {len(result.incidents)} incidents and {len(result.events)} events",
            highlight=False,
        )
    if json_out is not None:
        out.print(f"wrote {json_out}", highlight=False, markup=False)


def _parse_instant(value: str | None, what: str) -> datetime:
    """An ISO 8601 instant; a time without an offset is read in the display time zone."""
    from zoneinfo import ZoneInfo

    if value is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{what} must be an ISO 8601 time such as 2026-10-01T08:00+08:00, not {value!r}"
        raise InputError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(get_settings().display_tz))
    return when.astimezone(UTC)


def _local(when: Any) -> str:
    """Format an instant in the display time zone (Asia/Shanghai by default)."""
    from zoneinfo import ZoneInfo

    if when is None or (isinstance(when, float) and when != when):
        return "-"
    return str(when.astimezone(ZoneInfo(get_settings().display_tz)).strftime("%Y-%m-%d %H:%M"))


def _minutes(delta: Any) -> str:
    total = delta.total_seconds() / 60
    return f"{total:.0f} min" if total < 120 else f"{total / 60:.1f} h"


@app.command()
def supervise(
    at: Annotated[
        str | None,
        typer.Option(help="The instant to check (ISO 8601; default: now; no offset = local)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what is overdue without recording anything.")
    ] = False,
    url: UrlOption = None,
) -> None:
    """List what is overdue (督办) and record the supervision with its notices.

    A stage (acknowledge, arrive, resolve) is overdue once its catalogue deadline, counted from
    dispatch, has passed. Supervision starts at the street and escalates to the district when
    the stage is overdue by `supervise_district_after` times its deadline. Recording is
    idempotent: a second run at the same instant records nothing new.
    """
    from gridgov import store

    with _domain_errors():
        when = _parse_instant(at, "--at")
        engine = store.open_store(_url(url))
        if dry_run:
            items = store.list_overdue_stored(engine, when)
        else:
            items = store.supervise_stored(engine, when)
        overdue = store.list_overdue_stored(engine, when) if not dry_run else items
    out.print(f"overdue at {_local(when)} ({get_settings().display_tz}): {len(overdue)}")
    for item in overdue:
        out.print(
            f"  {item.incident_id}  {item.stage:<11} {item.state:<12} overdue by "
            f"{_minutes(item.overdue_by):>8} (due {_local(item.deadline)})  {item.level:<8} "
            f"office {item.office_id or '-'}",
            highlight=False,
            markup=False,
        )
    if not dry_run:
        out.print(f"recorded {len(items)} supervision(s) with their notices", highlight=False)


@app.command()
def notices(
    incident_id: Annotated[
        str | None, typer.Option("--incident", help="Only this incident's notices.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="supervision (督办 orders) or outcome (what reporters are told)."),
    ] = None,
    recipient: Annotated[
        str | None, typer.Option(help="Only notices to this office, department or reporter.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only notices written at or after (ISO 8601).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """List notices: supervision orders to offices and departments, and the outcomes sent to
    reporters (of an incident and of every duplicate linked to it)."""
    from gridgov import store

    with _domain_errors():
        frame = store.read_notices(
            store.open_store(_url(url)),
            incident_id=incident_id,
            kind=kind,
            recipient=recipient,
            since=None if since is None else _parse_instant(since, "--since"),
        )
    for row in frame.itertuples():
        out.print(
            f"{_local(row.created_at)}  {row.kind:<11} {row.incident_id}  to {row.recipient_kind} "
            f"{row.recipient}: {row.message}",
            highlight=False,
            markup=False,
        )
    out.print(f"{len(frame)} notice(s)", highlight=False)


@app.command("act")
def act(
    incident_id: Annotated[str, typer.Argument(help="The incident.")],
    action: Annotated[
        str,
        typer.Argument(
            help="acknowledge, arrive, resolve, verify, reopen, close, evaluate, return, "
            "cancel, register or reject."
        ),
    ],
    actor: Annotated[str, typer.Option(help="Who acts (a unit id, a user name...).")] = "cli",
    role: Annotated[
        str,
        typer.Option(
            help="The actor's role: dispatcher, commander, unit, office, grid_worker, reporter."
        ),
    ] = "dispatcher",
    reason: Annotated[
        str | None, typer.Option(help="Required for return, reopen, reject and cancel.")
    ] = None,
    satisfaction: Annotated[
        str | None,
        typer.Option(help="For evaluate: satisfied, basically_satisfied or dissatisfied."),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="When (ISO 8601; default: now; no offset = local).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Take one workflow action on an incident (the street calls, the department responds).

    The action is checked against the state machine; a refused one changes nothing and exits 1
    naming the actions the incident's state allows. A returned or reopened incident is
    dispatched again at once (a returning office is passed over unless no other can take it).
    """
    from gridgov import store
    from gridgov.service import actions

    with _domain_errors():
        when = _parse_instant(at, "--at")
        engine = store.open_store(_url(url))
        result = actions.act(
            engine,
            None,
            incident_id,
            action,
            at=when,
            actor=actor,
            role=role,
            reason=reason,
            satisfaction=satisfaction,
        )
    event = result.event
    out.print(
        f"{incident_id}: {event.from_state} -> {event.to_state} ({event.action}, "
        f"event {event.seq})",
        highlight=False,
    )
    if result.decision is not None:
        units = ", ".join(a.unit_id for a in result.decision.assignments) or "none"
        out.print(f"dispatched again: {result.decision.status}; units {units}", highlight=False)


@app.command()
def history(
    incident_id: Annotated[str, typer.Argument(help="The incident.")],
    url: UrlOption = None,
) -> None:
    """Print an incident's event log (append-only: who did what, when, and why)."""
    from gridgov import store

    with _domain_errors():
        engine = store.open_store(_url(url))
        events = store.read_events(engine, incident_id=incident_id)
        if events.empty:
            msg = f"incident {incident_id!r} has no events (or does not exist)"
            raise InputError(msg)
    # Plain lines, not a table: an event log is read top to bottom, and stays legible in a
    # narrow terminal or a pipe.
    out.print(f"history of {incident_id} ({get_settings().display_tz})", highlight=False)
    for row in events.itertuples():
        line = (
            f"{row.seq:>3}  {_local(row.at)}  {row.action:<11} -> {row.to_state:<12} "
            f"{row.actor} ({row.role})"
        )
        if isinstance(row.office_id, str) and row.office_id:
            line += f"  office {row.office_id}"
        if isinstance(row.reason, str) and row.reason:
            line += f"  reason: {row.reason}"
        out.print(line, highlight=False, markup=False)


@app.command()
def report(
    period: Annotated[
        str, typer.Option(help="The period: a month (2026-10), a quarter (2026-Q4) or a year.")
    ],
    street: Annotated[
        str | None, typer.Option(help="Only this street's calls and cases (12-digit code).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="csv (a table per office) or html (the full report).")
    ] = "csv",
    level: Annotated[
        str,
        typer.Option(help="CSV rows: office, department, street or district."),
    ] = "office",
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write here (default: CSV to stdout, HTML to report-<period>.html)."
        ),
    ] = None,
    department_scores: Annotated[
        Path | None,
        typer.Option(
            help="CSV of the departments' own scores (office_id,score or department,score; 0-100)."
        ),
    ] = None,
    office_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the street's evaluation in an office's assessment (at least 0.5; "
            "default from the settings)."
        ),
    ] = None,
    department_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of the street's evaluation in a department's annual performance (at "
            "least 0.3; default from the settings)."
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Assess the stationed offices for a period from the event log (power 1).

    KPIs per office, department and street: response, resolution (结案率), on-time closure
    (按期结案率), rework (返工率) and satisfaction (满意率) rates, response and arrival times, and
    the share of calls handled at each level. The street's evaluation is combined with the
    departments' own scores with weights that may not fall below the reform's floors.
    """
    from gridgov import store
    from gridgov.assessment import Period, assess, read_department_scores
    from gridgov.report import report_csv, report_html

    with _domain_errors():
        if fmt not in ("csv", "html"):
            msg = f"--format must be csv or html, not {fmt!r}"
            raise InputError(msg)
        span = Period.parse(period)
        engine = store.open_store(_url(url))
        offices = store.read_offices(engine)
        scores = (
            None
            if department_scores is None
            else read_department_scores(department_scores, offices)
        )
        assessment = assess(
            store.read_events(engine, until=span.end),
            store.read_incidents(engine),
            offices,
            store.read_catalog(engine),
            span,
            street_code=street,
            department_scores=scores,
            office_weight=office_weight,
            department_weight=department_weight,
        )
        if fmt == "csv":
            text = report_csv(assessment, level=level)
            if out_path is None:
                sys.stdout.write(text)
                return
        else:
            streets = store.read_stored_areas(engine, level="street")
            text = report_html(
                assessment, street_names=dict(zip(streets["code"], streets["name"], strict=True))
            )
            if out_path is None:
                out_path = Path(f"report-{period}{'-' + street if street else ''}.html")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # The BOM lets spreadsheet programs read the Chinese names of a CSV correctly.
        out_path.write_text(text, encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    calls = int(assessment.district["calls"].sum()) if len(assessment.district) else 0
    out.print(f"wrote {out_path} ({calls} calls in {period})", highlight=False)


@app.command("map")
def map_(
    kind: Annotated[str, typer.Argument(help="command-centre, street, coverage or assessment.")],
    out_path: Annotated[
        Path, typer.Option("--out", help="HTML file to write, e.g. maps/NAME.html.")
    ],
    street: Annotated[
        str | None, typer.Option(help="Street code (the street map; a filter elsewhere).")
    ] = None,
    force_kind: Annotated[
        str, typer.Option("--kind", help="Force kind of the coverage map.")
    ] = "police",
    level: Annotated[
        str, typer.Option(help="Area level shown first (command centre) or of the coverage.")
    ] = "grid",
    colour_by: Annotated[
        str, typer.Option(help="Colour areas by open_incidents or workload.")
    ] = "open_incidents",
    base: Annotated[
        str | None,
        typer.Option(help="Base layer: none, osm, tianditu or an XYZ URL (default: settings)."),
    ] = None,
    kpi: Annotated[
        Path | None,
        typer.Option(help="Assessment map: a CSV with street_code and a value column."),
    ] = None,
    kpi_value: Annotated[
        str,
        typer.Option(
            help="Assessment map: the column to map (of --kpi, or of the stored assessment: "
            "resolution_rate, response_rate, satisfaction_rate, street_score...)."
        ),
    ] = "resolution_rate",
    period: Annotated[
        str | None,
        typer.Option(help="Assessment map without --kpi: the period (default: this month)."),
    ] = None,
    assets: Annotated[
        str,
        typer.Option(help="'inline' (the file works offline from disk) or a URL prefix (/static)."),
    ] = "inline",
    url: UrlOption = None,
) -> None:
    """Write an interactive map. Leaflet and its plugins come inlined or from a local URL,
    never from a CDN, so the map works on a closed network."""
    import pandas as pd

    from gridgov import maps, store

    settings = get_settings()
    with _domain_errors():
        engine = store.open_store(_url(url))
        table = None if kpi is None else pd.read_csv(kpi, dtype={"street_code": str})
        m = maps.build_map(
            kind,
            engine,
            street=street,
            force_kind=force_kind,
            level=level,
            colour_by=colour_by,
            kpi=table,
            kpi_value=kpi_value,
            period=period,
            base=settings.map_base if base is None else base,
            tile_key=settings.tianditu_key,
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(maps.render_html(m, assets=assets), encoding="utf-8")
    out.print(f"wrote {out_path}", highlight=False)


consultation_app = typer.Typer(
    help="Appointment consultations (power 1): before a department moves the head of an office "
    "stationed in a street, it consults the street in writing and records the street's opinion.",
    no_args_is_help=True,
)
app.add_typer(consultation_app, name="consultation")


@consultation_app.command("record")
def consultation_record(
    office: Annotated[str, typer.Option(help="The stationed office whose head would move.")],
    head: Annotated[str, typer.Option(help="The office head concerned.")],
    move: Annotated[str, typer.Option(help="What the department proposes (transfer, ...).")],
    letter: Annotated[
        str, typer.Option(help="The department's written consultation (text, or @FILE).")
    ],
    by: Annotated[str, typer.Option(help="Who records it.")],
    at: Annotated[
        str | None, typer.Option(help="When the letter was sent (ISO 8601; default now).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Record a department's written consultation of the street; prints its id."""
    from gridgov import store

    with _domain_errors():
        text = letter
        if letter.startswith("@"):
            try:
                text = Path(letter[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                msg = f"cannot read the letter {letter[1:]}: {exc.strerror}"
                raise InputError(msg) from None
        consultation_id = store.record_consultation(
            store.open_store(_url(url)),
            office_id=office,
            head_name=head,
            proposed_move=move,
            letter=text,
            consulted_at=_parse_instant(at, "--at"),
            recorded_by=by,
        )
    out.print(f"consultation {consultation_id} recorded for {office}", highlight=False)


@consultation_app.command("opinion")
def consultation_opinion(
    consultation_id: Annotated[int, typer.Argument(help="The consultation.")],
    opinion: Annotated[str, typer.Option(help="agree, disagree or conditional.")],
    text: Annotated[
        str | None, typer.Option(help="The street's written opinion (required unless agree).")
    ] = None,
    at: Annotated[str | None, typer.Option(help="When (ISO 8601; default now).")] = None,
    url: UrlOption = None,
) -> None:
    """Record the street's opinion on a consultation (once)."""
    from gridgov import store

    with _domain_errors():
        store.record_street_opinion(
            store.open_store(_url(url)),
            consultation_id,
            opinion=opinion,
            opinion_at=_parse_instant(at, "--at"),
            opinion_text=text,
        )
    out.print(f"consultation {consultation_id}: the street's opinion is {opinion}", highlight=False)


@consultation_app.command("list")
def consultation_list(
    office: Annotated[str | None, typer.Option(help="Only this office.")] = None,
    street: Annotated[str | None, typer.Option(help="Only this street.")] = None,
    department: Annotated[str | None, typer.Option(help="Only this department.")] = None,
    url: UrlOption = None,
) -> None:
    """List the consultations as JSON, oldest first."""
    from gridgov import store

    with _domain_errors():
        frame = store.read_consultations(
            store.open_store(_url(url)), office_id=office, street_code=street, department=department
        )
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    _print_json(records)


@consultation_app.command("check")
def consultation_check(
    office: Annotated[str, typer.Argument(help="The office whose head would move.")],
    at: Annotated[str | None, typer.Option(help="The move's date (default now).")] = None,
    url: UrlOption = None,
) -> None:
    """Exit 0 if the street was consulted and answered before the move; 1 saying why if not."""
    from gridgov import store

    with _domain_errors():
        found = store.check_head_move(
            store.open_store(_url(url)), office, _parse_instant(at, "--at")
        )
    out.print(
        f"{office}: the street was consulted (consultation {found['consultation_id']}) and "
        f"answered {found['opinion']} on {_local(found['opinion_at'])}",
        highlight=False,
    )


def _parse_moves(moves: list[str] | None) -> dict[str, tuple[float, float]]:
    """``UNIT=LON,LAT`` items (WGS84) as ``{unit: (lon, lat)}``, every bad item listed."""
    parsed: dict[str, tuple[float, float]] = {}
    problems = []
    for item in moves or []:
        unit, _, where = item.partition("=")
        lon, _, lat = where.partition(",")
        try:
            parsed[unit.strip()] = (float(lon), float(lat))
        except ValueError:
            problems.append(item)
        if not unit.strip():
            problems.append(item)
    if problems:
        msg = f"--move takes UNIT=LON,LAT (WGS84), not: {', '.join(problems)}"
        raise InputError(msg)
    return parsed


@app.command()
def coverage(
    kind: Annotated[str, typer.Argument(help="Force kind, e.g. fire, police, enforcement.")],
    level: Annotated[str, typer.Option(help="Areas: grid, community or street.")] = "grid",
    move: Annotated[
        list[str] | None,
        typer.Option(
            help="What if: move a unit, UNIT=LON,LAT (WGS84); repeat for several units. The "
            "store is not changed."
        ),
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write the per-area table here.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Travel time from the nearest unit of a kind to every area, and what a move would change.

    Times run over the stored roads (straight lines when none are stored) from each unit to
    the area's representative point. With --move, the same is computed with the units moved,
    and the two are compared: areas better and worse, areas and micro-grids within each band.
    """
    from gridgov import store
    from gridgov.coverage import (
        compare_coverage,
        count_microgrids,
        coverage_times,
        relocate_units,
    )

    with _domain_errors():
        moves = _parse_moves(move)
        engine = store.open_store(_url(url))
        gdf_areas = store.read_stored_areas(engine)
        gdf_units = store.read_units(engine)
        travel = store.travel_from_store(engine)
        before = coverage_times(gdf_areas, gdf_units, travel, kind, level=level)
        after = (
            coverage_times(gdf_areas, relocate_units(gdf_units, moves), travel, kind, level=level)
            if moves
            else before
        )
        result = compare_coverage(before, after, population=count_microgrids(gdf_areas, level))
    title = f"{kind} coverage of {len(before)} {level} areas"
    out.print(title + (f", with {len(moves)} unit(s) moved" if moves else ""), highlight=False)
    bands = result.bands
    for band, row in bands.iterrows():
        line = f"  {band:<15} areas {row['areas_before']:>5.0f}"
        if moves:
            line += f" -> {row['areas_after']:>5.0f}"
        if "population_before" in bands.columns:
            line += f"   micro-grids {row['population_before']:>7.0f}"
            if moves:
                line += f" -> {row['population_after']:>7.0f}"
        out.print(line, highlight=False, markup=False)
    summary = result.summary
    out.print(
        f"mean {summary['mean_before_s'] / 60:.1f} min"
        + (f" -> {summary['mean_after_s'] / 60:.1f} min" if moves else "")
        + (
            f"; areas better {summary['better']:.0f}, worse {summary['worse']:.0f}, "
            f"same {summary['same']:.0f}"
            if moves
            else ""
        ),
        highlight=False,
    )
    worst = result.worst.head(5)
    out.print(
        "slowest areas: "
        + ", ".join(
            f"{name} {float(t) / 60:.1f} min"
            for name, t in zip(worst["name"], worst["time_after_s"], strict=True)
        ),
        highlight=False,
        markup=False,
    )
    if csv_out is not None:
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        result.areas.to_csv(csv_out, index=False, encoding="utf-8-sig")
        out.print(f"wrote {csv_out}", highlight=False)


@app.command()
def hotspots(
    period: Annotated[str, typer.Option(help="Incidents reported in this period (2026-10...).")],
    level: Annotated[str, typer.Option(help="Areas: grid, community or street.")] = "grid",
    alpha: Annotated[float, typer.Option(help="Significance level of the Gi* test.")] = 0.05,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write the per-area table here.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Hot and cold spots of the stored incidents (Getis-Ord Gi*, areas sharing a border)."""
    from gridgov import store
    from gridgov.coverage import hot_spots

    with _domain_errors():
        engine = store.open_store(_url(url))
        spots = hot_spots(
            store.read_stored_areas(engine),
            store.read_incidents(engine),
            level=level,
            period=period,
            alpha=alpha,
        )
    total = int(spots["count"].sum())
    out.print(f"{total} incidents in {len(spots)} {level} areas, {period}", highlight=False)
    for label in ("hot", "cold"):
        chosen = spots[spots["spot"] == label].sort_values("gi_star", ascending=label == "cold")
        out.print(f"{label} spots: {len(chosen)}", highlight=False)
        for row in chosen.head(10).itertuples():
            out.print(
                f"  {row.code} {row.name}: {row.count} incidents, Gi* {row.gi_star:+.2f}, "
                f"p {row.p_value:.3f}",
                highlight=False,
                markup=False,
            )
    if csv_out is not None:
        csv_out.parent.mkdir(parents=True, exist_ok=True)
        spots.drop(columns="geometry").to_csv(csv_out, index=False, encoding="utf-8-sig")
        out.print(f"wrote {csv_out}", highlight=False)


@app.command()
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

    with _domain_errors():
        name = normalize_crs(crs)
        wlon, wlat = to_wgs84([lon1, lon2], [lat1, lat2], name)
        travel = store.travel_from_store(store.open_store(_url(url)))
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
    _print_json(
        {
            "mode": found.mode.value,
            "travel_model": travel.kind,
            "time_s": round(found.time_s, 1),
            "time_min": round(found.time_s / 60, 2),
            "length_m": round(found.length_m, 1),
            "route": route_to_geojson(found),
        }
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: settings.api_workers).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Run the HTTP service: the native API (/api/v1), Open311 (/open311/v2), the live
    command-centre display (/) and the OpenAPI document (/docs).

    It serves the embedded SQLite store by default, and PostGIS when GRIDGOV_DATABASE_URL
    (or --url) points there. Tokens come from `gridgov token issue`.
    """
    import os

    import uvicorn

    from gridgov import store
    from gridgov.settings import get_settings

    settings = get_settings()
    with _domain_errors():
        database = _url(url)
        engine = store.open_store(database)
        if not store.is_initialised(engine):
            raise _fail(f"the store at {_redact(database)} is not initialised; run `gridgov init`")
        engine.dispose()
    # Each worker builds its own app from the environment (api.app.app_from_env). With one
    # worker that is this process, whose settings were cached above with the old URL: clear
    # them, or the app would serve another database than the one announced.
    os.environ["GRIDGOV_DATABASE_URL"] = database
    get_settings.cache_clear()
    count = workers if workers is not None else settings.api_workers
    err.print(
        f"serving {_redact(database)} on http://{host}:{port} with {count} worker(s)",
        highlight=False,
    )
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=count,
        access_log=False,
        log_level="info",
    )


token_app = typer.Typer(
    help="API credentials: bearer tokens for staff and units, API keys for Open311 apps.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("issue")
def token_issue(
    role: Annotated[
        str,
        typer.Argument(
            help="admin, commander, dispatcher, unit, grid_worker, analyst or citizen "
            "(an Open311 API key)."
        ),
    ],
    label: Annotated[str, typer.Option(help="Who holds it (a name, a device, an app).")],
    street: Annotated[
        str | None, typer.Option(help="The street of a commander or dispatcher.")
    ] = None,
    unit: Annotated[str | None, typer.Option(help="The unit of a unit token.")] = None,
    grid: Annotated[str | None, typer.Option(help="The grid of a grid worker.")] = None,
    days: Annotated[
        float | None, typer.Option(help="Expires after this many days (default: never).")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Issue a token (or a citizen app's API key). The secret is printed once, on stdout;
    only its hash is stored."""
    from gridgov import store

    with _domain_errors():
        engine = store.open_store(_url(url))
        now = datetime.now(UTC)
        credential, secret = store.issue_credential(
            engine,
            role,
            label=label,
            kind="api_key" if role == "citizen" else "token",
            street_code=street,
            unit_id=unit,
            grid_code=grid,
            expires_at=None if days is None else now + timedelta(days=days),
            now=now,
        )
    scope = credential.street_code or ""
    if credential.unit_id or credential.grid_code:
        scope = f"{credential.unit_id or credential.grid_code} ({scope})"
    err.print(
        f"issued {credential.kind} {credential.credential_id} for {role} {scope}".rstrip()
        + "; store the secret now, it is not shown again:",
        highlight=False,
    )
    out.print(secret, highlight=False)


@token_app.command("list")
def token_list(url: UrlOption = None) -> None:
    """List credentials (never their secrets)."""
    from gridgov import store

    with _domain_errors():
        df = store.list_credentials(store.open_store(_url(url)))
    for row in df.astype(object).where(df.notna(), None).to_dict("records"):
        state = "revoked" if row["revoked_at"] is not None else ""
        scope = str(row["street_code"] or row["unit_id"] or row["grid_code"] or "district")
        out.print(
            f"{row['credential_id']}  {row['kind']:<7} {row['role']:<11} {scope:<18} "
            f"{row['label']}  {state}",
            highlight=False,
        )


@token_app.command("revoke")
def token_revoke(
    credential_id: Annotated[str, typer.Argument(help="The id `token list` shows.")],
    url: UrlOption = None,
) -> None:
    """Revoke a credential at once."""
    from gridgov import store

    with _domain_errors():
        store.revoke_credential(store.open_store(_url(url)), credential_id)
    out.print(f"revoked {credential_id}", highlight=False)


@app.command()
def demo(
    url: UrlOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a store that holds another district.")
    ] = False,
) -> None:
    """First run: create the embedded store, load the reference district, and show it working."""
    from gridgov import store

    target = _url(url)
    out.rule("gridgov demo")
    out.print(f"store: {_redact(target)}")
    init(url=target)
    with _domain_errors():
        held = store.summarize(store.open_store(target))["datasets"]
    others = sorted({d["name"] for d in held.values()} - {DEMO_DATASET})
    if others and not force:
        raise _fail(
            f"the store at {_redact(target)} holds {', '.join(others)}; the demo would replace "
            "it. Give the demo its own store with --url sqlite:///demo.db, or pass --force"
        )
    load(paths=None, units=None, offices=None, roads=None, crs=None, url=target)
    out.rule("what is loaded")
    info(url=target)
    out.rule("locate 104.05 30.69 (WGS84), then the same place as a phone reports it (GCJ-02)")
    locate(104.05, 30.69, crs="wgs84", url=target)
    from gridgov.crs import from_wgs84

    glon, glat = from_wgs84(104.05, 30.69, "gcj02")
    locate(round(float(glon[0]), 7), round(float(glat[0]), 7), crs="gcj02", url=target)
    out.rule(f"dispatch a fire ({DEMO_MATTER}) at 104.05 30.69 over the reference roads")
    incident_id = _demo_dispatch(target)
    if incident_id is not None:
        out.rule("the call answered, through the workflow")
        _demo_workflow(target, incident_id)


#: The matter the demo dispatches: a fire, with a joint assisting unit.
DEMO_MATTER = "FS-01"


#: How long ago the demo's fire is reported: its whole workflow then lies in the past.
DEMO_BACKDATE = timedelta(minutes=90)


def _demo_dispatch(url: str) -> str | None:
    """One committed dispatch, printed as one line per unit (``gridgov dispatch`` prints all).

    Returns the incident's id when a lead unit was sent (the demo then walks its workflow).
    """
    from gridgov import store
    from gridgov.dispatch import Incident

    now = datetime.now(UTC) - DEMO_BACKDATE
    with _domain_errors():
        engine = store.open_store(url)
        ctx = store.context_from_store(engine)
        incident = Incident(
            f"DEMO-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}", DEMO_MATTER, 104.05, 30.69, now
        )
        # Every demo run reports a fire at the same spot; each is a new incident on purpose.
        store.create_incident(engine, incident, source="demo", now=now, check_duplicates=False)
        decision = store.dispatch_stored(engine, ctx, incident.incident_id, now=now, routes=False)
    out.print(
        f"incident {incident.incident_id}: {decision.status}, level "
        f"{decision.level.value if decision.level else '-'} "
        f"({decision.explanation.get('travel_model', {}).get('kind', '?')} travel times)",
        highlight=False,
    )
    width = max((len(a.unit_id) for a in decision.assignments), default=0)
    for a in decision.assignments:
        out.print(
            f"  {a.role:6} {a.kind.value:12} {a.unit_id:{width}}  {a.time_s / 60:5.1f} min  "
            f"{a.level.value:9}  {a.rule}",
            highlight=False,
        )
    for kind in decision.unfilled:
        out.print(f"  unfilled {kind.value}", highlight=False)
    lead = [a for a in decision.assignments if a.role == "lead"]
    return incident.incident_id if lead else None


def _demo_workflow(url: str, incident_id: str) -> None:
    """Answer the demo's call through the workflow (as the units and the grid worker would)."""
    from gridgov import store

    with _domain_errors():
        engine = store.open_store(url)
        events = store.read_events(engine, incident_id=incident_id)
        called = events.loc[events["action"] == "dispatch", "at"].iloc[-1].to_pydatetime()
        lead = events.loc[events["action"] == "dispatch", "data"].iloc[-1]["units"][0]
        steps = (
            ("acknowledge", 2, lead, "unit", None, None),
            ("arrive", 9, lead, "unit", None, None),
            ("resolve", 50, lead, "unit", None, None),
            ("verify", 70, "demo-grid-worker", "grid_worker", None, None),
            ("close", 71, "demo-dispatcher", "dispatcher", None, None),
            ("evaluate", 85, "demo-reporter", "reporter", None, "satisfied"),
        )
        for action, minutes, actor, role, reason, satisfaction in steps:
            store.apply_action(
                engine,
                incident_id,
                action,
                at=called + timedelta(minutes=minutes),
                actor=actor,
                role=role,
                reason=reason,
                satisfaction=satisfaction,
            )
    history(incident_id, url=url)


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
