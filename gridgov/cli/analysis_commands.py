"""Commands that read the store to assess and analyse it.

The office assessment report, the interactive maps, unit coverage (with what-if moves) and hot
spots: ``report``, ``map``, ``coverage``, ``hotspots``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gridgov.cli.command_support import (
    UrlOption,
    check_choice,
    database_url,
    domain_errors,
    out,
)
from gridgov.errors import InputError
from gridgov.model import ForceKind, Level
from gridgov.settings import get_settings


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
        typer.Option(
            help="CSV rows: office, department, street, district; overrides (the "
            "dispatchers' override rate and extra travel time, per street and per dispatcher); "
            "consult-street or consult-department (the consultations of powers 2 and 4)."
        ),
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

    Consultations (powers 2 and 4) of the requests sent in the period: per street, requests
    received, answered on time, opinions adopted (share) and acceptance refusals; per
    department, requests sent late and the share of street opinions it adopted.
    """
    from gridgov import store
    from gridgov.assessment import assess, read_department_scores
    from gridgov.periods import Period
    from gridgov.report import TABLES, report_csv, report_html
    from gridgov.service import consultations
    from gridgov.service.workspace import override_kpis

    with domain_errors():
        if fmt not in ("csv", "html"):
            msg = f"--format must be csv or html, not {fmt!r}"
            raise InputError(msg)
        check_choice(level, (*TABLES, "overrides", *_CONSULT_LEVELS), "--level")
        span = Period.parse(period)
        engine = store.open_store(database_url(url))
        overrides = override_kpis(
            store.read_choices(engine, since=span.start, until=span.end), street_code=street
        )
        figures = consultations.figures(engine, span.start, span.end)
        if street is not None:
            figures = (figures[0][figures[0]["street_code"] == street], figures[1])
        if fmt == "csv" and level in _CONSULT_LEVELS:
            frame = figures[_CONSULT_LEVELS.index(level)].copy()
            frame.insert(0, "period", span.label)
            _write_csv(report_csv(frame), out_path)
            return
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
        if fmt == "csv" and level == "overrides":
            text = report_csv(overrides.assign(period=span.label)[["period", *overrides.columns]])
            if out_path is None:
                sys.stdout.write(text)
                return
        elif fmt == "csv":
            text = report_csv(assessment, level=level)
            if out_path is None:
                sys.stdout.write(text)
                return
        else:
            streets = store.read_stored_areas(engine, level="street")
            text = report_html(
                assessment,
                street_names=dict(zip(streets["code"], streets["name"], strict=True)),
                overrides=overrides,
                consultations=figures,
            )
            if out_path is None:
                out_path = Path(f"report-{period}{'-' + street if street else ''}.html")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # The BOM lets spreadsheet programs read the Chinese names of a CSV correctly.
        out_path.write_text(text, encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    calls = int(assessment.district["calls"].sum()) if len(assessment.district) else 0
    out.print(f"wrote {out_path} ({calls} calls in {period})", highlight=False)


_CONSULT_LEVELS = ("consult-street", "consult-department")


def _write_csv(text: str, out_path: Path | None) -> None:
    if out_path is None:
        sys.stdout.write(text)
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8-sig")  # the BOM: spreadsheets read the names
    out.print(f"wrote {out_path}", highlight=False)


def map_(
    kind: Annotated[
        str, typer.Argument(help="command-centre, street, coverage, assessment or consultation.")
    ],
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
        typer.Option(
            help="Base layer: roads (the stored roads drawn by class, no tiles; the default "
            "setting), none (polygons only), osm, tianditu or an intranet XYZ URL "
            "(.../{z}/{x}/{y}.png); over tiles the roads are an overlay to switch on. "
            "Default: settings (GRIDGOV_MAP_BASE)."
        ),
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
        typer.Option(
            help="Assessment map without --kpi: the period (default: the last complete month)."
        ),
    ] = None,
    assets: Annotated[
        str,
        typer.Option(help="'inline' (the file works offline from disk) or a URL prefix (/static)."),
    ] = "inline",
    consultation: Annotated[
        int | None,
        typer.Option(help="Consultation map: the consultation (powers 2 and 4) to draw."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Write an interactive map. Leaflet and its plugins come inlined or from a local URL,
    never from a CDN, so the map works on a closed network."""
    import pandas as pd

    from gridgov import maps, store
    from gridgov.maps.road_layer import SERVED_ROAD_URL

    settings = get_settings()
    with domain_errors():
        table = None if kpi is None else pd.read_csv(kpi, dtype={"street_code": str})
        options = {
            "street": street,
            "force_kind": force_kind,
            "level": level,
            "colour_by": colour_by,
            "kpi": table,
            "kpi_value": kpi_value,
            "period": period,
            "base": settings.map_base if base is None else base,
            "tile_key": settings.tianditu_key,
            "consultation": consultation,
        }
        # Every option is checked before the store is opened: a mistake costs no loading.
        maps.check_map_options(kind, **options)  # type: ignore[arg-type]
        engine = store.open_store(database_url(url))
        m = maps.build_map(
            kind,
            engine,
            # A page served by gridgov (assets under a URL) fetches the roads per viewport.
            road_url=None if assets == "inline" else SERVED_ROAD_URL,
            **options,  # type: ignore[arg-type]
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(maps.render_html(m, assets=assets), encoding="utf-8")
    out.print(f"wrote {out_path}", highlight=False)


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
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the per-area table with its polygons: .gpkg, .parquet, .geojson or .csv.",
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Travel time from the nearest unit of a kind to every area, and what a move would change.

    Times run over the stored roads (straight lines when none are stored) from each unit to
    the area's representative point. With --move, the same is computed with the units moved,
    and the two are compared: areas better and worse, areas and micro-grids within each band.
    """
    from gridgov import store
    from gridgov.analysis.result_export import export_format, with_area_geometry, write_result
    from gridgov.coverage import (
        compare_coverage,
        count_microgrids,
        coverage_times,
        relocate_units,
    )

    with domain_errors():
        if out_path is not None:
            export_format(out_path)
        moves = _parse_moves(move)
        check_choice(kind, [k.value for k in ForceKind], "KIND")
        check_choice(level, [lv.value for lv in Level], "--level")
        engine = store.open_store(database_url(url))
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
        if out_path is not None:
            write_result(with_area_geometry(result.areas, gdf_areas), out_path, layer="coverage")
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
    if out_path is not None:
        out.print(f"wrote {out_path}", highlight=False)


def hotspots(
    period: Annotated[str, typer.Option(help="Incidents reported in this period (2026-10...).")],
    level: Annotated[str, typer.Option(help="Areas: grid, community or street.")] = "grid",
    alpha: Annotated[float, typer.Option(help="Significance level of the Gi* test.")] = 0.05,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write the per-area table here.")
    ] = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the areas with their counts and Gi*: .gpkg, .parquet, .geojson or .csv.",
        ),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Hot and cold spots of the stored incidents (Getis-Ord Gi*, areas sharing a border)."""
    from gridgov import store
    from gridgov.analysis.result_export import export_format, write_result
    from gridgov.coverage import hot_spots
    from gridgov.periods import Period

    with domain_errors():
        if out_path is not None:
            export_format(out_path)
        check_choice(level, [lv.value for lv in Level], "--level")
        Period.parse(period)
        engine = store.open_store(database_url(url))
        spots = hot_spots(
            store.read_stored_areas(engine),
            store.read_incidents(engine),
            level=level,
            period=period,
            alpha=alpha,
        )
        if out_path is not None:
            write_result(spots, out_path, layer="hotspots")
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
    if out_path is not None:
        out.print(f"wrote {out_path}", highlight=False)
