"""The analyst's toolkit commands: ``isochrone``, ``sites`` and ``workload``.

Each reads the store, calls one function of :mod:`gridgov.analysis` and prints; ``--out``
writes the result in the format its extension names (``.gpkg``, ``.parquet``, ``.geojson``,
``.csv``; an isochrone also ``.html``, a map).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gridgov.cli.command_support import (
    CrsOption,
    UrlOption,
    check_choice,
    database_url,
    domain_errors,
    out,
)
from gridgov.errors import InputError
from gridgov.model import ForceKind, Level, TravelMode

OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Write the result here: .gpkg, .parquet (GeoParquet), .geojson or .csv."
    ),
]


def _minutes(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        msg = f"--minutes takes numbers separated by commas (2,4,8), not {text!r}"
        raise InputError(msg) from exc


def isochrone(
    lon: Annotated[float | None, typer.Argument(help="Longitude of the point.")] = None,
    lat: Annotated[float | None, typer.Argument(help="Latitude of the point.")] = None,
    minutes: Annotated[str, typer.Option(help="Band limits in minutes, e.g. 2,4,8.")] = "2,4,8",
    mode: Annotated[str, typer.Option(help="Travel mode: drive, bike or walk.")] = "drive",
    unit: Annotated[
        str | None,
        typer.Option(help="Around this unit's position, in its own travel mode (not LON LAT)."),
    ] = None,
    buffer_m: Annotated[
        float, typer.Option(help="Half-width (m) of the strip around the roads reached.")
    ] = 50.0,
    crs: CrsOption = "wgs84",
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Write the bands: .gpkg, .parquet, .geojson, .csv or .html."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """Travel-time bands around a point, station or unit: the roads reached within each band,
    buffered and unioned (one-way streets and access legs count)."""
    from gridgov import store
    from gridgov.analysis.isochrone import isochrones
    from gridgov.analysis.result_export import write_result
    from gridgov.crs import normalize_crs, to_wgs84

    with domain_errors():
        bands_min = _minutes(minutes)
        check_choice(mode, [m.value for m in TravelMode], "--mode")
        if out_path is not None and out_path.suffix.lower() != ".html":
            from gridgov.analysis.result_export import export_format

            export_format(out_path)
        engine = store.open_store(database_url(url))
        if unit is not None:
            units = store.read_units(engine)
            row = units[units["unit_id"].astype(str) == unit]
            if row.empty:
                msg = f"no unit {unit!r}"
                raise InputError(msg)
            point = row.geometry.iloc[0]
            wlon, wlat, mode = float(point.x), float(point.y), str(row["travel_mode"].iloc[0])
        elif lon is None or lat is None:
            msg = "give LON LAT or --unit"
            raise InputError(msg)
        else:
            xs, ys = to_wgs84(lon, lat, normalize_crs(crs))
            wlon, wlat = float(xs[0]), float(ys[0])
        bands = isochrones(
            store.travel_from_store(engine),
            wlon,
            wlat,
            minutes=bands_min,
            mode=mode,
            buffer_m=buffer_m,
        )
        if out_path is not None:
            if out_path.suffix.lower() == ".html":
                from gridgov.maps import render_html
                from gridgov.maps.isochrone_layer import isochrone_map

                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(render_html(isochrone_map(bands, wlon, wlat)), encoding="utf-8")
            else:
                write_result(bands, out_path, layer="isochrones")
    out.print(f"isochrones around ({wlon:.5f}, {wlat:.5f}), {mode}:", highlight=False)
    for row in bands.itertuples():
        out.print(
            f"  within {row.minutes:g} min: {row.area_km2:.2f} km², "
            f"{row.reached_nodes} road nodes reached",
            highlight=False,
        )
    if out_path is not None:
        out.print(f"wrote {out_path}", highlight=False)


def sites(
    kind: Annotated[str, typer.Argument(help="Force kind, e.g. fire, police, enforcement.")],
    add: Annotated[int, typer.Option(help="How many stations to add.")] = 1,
    standard: Annotated[
        float | None,
        typer.Option(
            help="Coverage standard in seconds (default: fire 240 s as NFPA 1710 uses; other "
            "kinds the catalogue's strictest maximum travel time)."
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(help="max-cover (demand within the standard) or p-median (mean time)."),
    ] = "max-cover",
    candidates: Annotated[
        Path | None,
        typer.Option(help="Candidate sites (points, any vector format); default: road nodes."),
    ] = None,
    max_candidates: Annotated[
        int, typer.Option(help="Road nodes tried as candidates when no file is given.")
    ] = 40,
    level: Annotated[str, typer.Option(help="Demand areas (weighted by micro-grids).")] = "grid",
    period: Annotated[
        str | None,
        typer.Option(
            help="Weight the demand areas by the stored incidents of this period (2026-10...) "
            "instead of their micro-grids."
        ),
    ] = None,
    weight: Annotated[
        str | None,
        typer.Option(help="Weight the demand areas by this numeric column of the areas."),
    ] = None,
    free: Annotated[
        bool,
        typer.Option(help="Let the existing stations move too (default: they stay)."),
    ] = False,
    out_path: OutOption = None,
    url: UrlOption = None,
) -> None:
    """Where new stations of a kind should go (location-allocation with spopt): the chosen
    sites and the coverage before and after.

    Demand: the areas of --level, weighted by their micro-grids, a column (--weight) or a
    period's incidents (--period).
    """
    from gridgov import store
    from gridgov.analysis.result_export import export_format, write_result
    from gridgov.analysis.siting import demand_weights, plan_sites
    from gridgov.io import read_vector_wgs84

    with domain_errors():
        check_choice(kind, [k.value for k in ForceKind], "KIND")
        check_choice(level, [lv.value for lv in Level], "--level")
        check_choice(model, ["max-cover", "p-median"], "--model")
        if out_path is not None:
            export_format(out_path)
        if period is not None and weight is not None:
            msg = "give either --period or --weight, not both"
            raise InputError(msg)
        cand = None if candidates is None else read_vector_wgs84(candidates)
        engine = store.open_store(database_url(url))
        gdf_areas = store.read_stored_areas(engine)
        weights = None
        if period is not None:
            from gridgov.coverage import hot_spots

            counts = hot_spots(gdf_areas, store.read_incidents(engine), level=level, period=period)
            weights = counts.set_index("code")["count"].astype(float)
        elif weight is not None:
            weights = demand_weights(gdf_areas, level, weight)
        result = plan_sites(
            gdf_areas,
            store.read_units(engine),
            store.travel_from_store(engine),
            kind,
            add,
            model=model,
            standard_s=standard,
            catalog=store.read_catalog(engine),
            candidates=cand,
            weights=weights,
            level=level,
            max_candidates=max_candidates,
            keep_existing=not free,
        )
        if out_path is not None:
            write_result(result.sites, out_path, layer="sites")
    s = result.summary
    chosen = result.sites[result.sites["added"]]
    out.print(f"{kind}: {len(chosen)} site(s) added by {result.model}", highlight=False)
    for row in chosen.itertuples():
        out.print(
            f"  {row.site_id} at ({row.geometry.x:.5f}, {row.geometry.y:.5f}), "
            f"serving a demand of {row.demand_served:.0f}",
            highlight=False,
            markup=False,
        )
    out.print(
        f"within {s['standard_s']:.0f} s: {s['covered_share_before']:.1%} -> "
        f"{s['covered_share_after']:.1%} of demand "
        f"(+{(s['covered_share_after'] - s['covered_share_before']) * 100:.1f} points); "
        f"weighted mean {s['weighted_mean_s_before'] / 60:.1f} -> "
        f"{s['weighted_mean_s_after'] / 60:.1f} min",
        highlight=False,
    )
    if out_path is not None:
        out.print(f"wrote {out_path}", highlight=False)


def workload(
    period: Annotated[str, typer.Option(help="The period: 2026-10, 2026-Q4 or 2026.")],
    by: Annotated[str, typer.Option(help="Rows of the table written: unit, office or street.")] = (
        "office"
    ),
    out_path: OutOption = None,
    url: UrlOption = None,
) -> None:
    """Workload and balance from the event log: calls, busy time, utilisation and response
    times per unit, office and street, and the Gini imbalance of units and streets."""
    from gridgov import store
    from gridgov.analysis.result_export import export_format, write_result
    from gridgov.analysis.workload import workload as compute
    from gridgov.periods import Period

    with domain_errors():
        check_choice(by, ["unit", "office", "street"], "--by")
        if out_path is not None:
            export_format(out_path)
        span = Period.parse(period)
        engine = store.open_store(database_url(url))
        result = compute(store.read_events(engine, until=span.end), store.read_units(engine), span)
        table = {"unit": result.units, "office": result.offices, "street": result.streets}[by]
        if out_path is not None:
            write_result(table, out_path, layer=f"workload_{by}")
    s = result.summary
    out.print(
        f"{period}: {s['calls']:.0f} calls on {s['incidents']:.0f} incidents; mean unit "
        f"utilisation {s['mean_utilisation']:.1%}; Gini of units {s['gini_units']:.2f}, "
        f"of streets' calls per unit {s['gini_streets']:.2f}",
        highlight=False,
    )
    busiest = result.offices.sort_values(["utilisation", "office_id"], ascending=[False, True])
    for row in busiest.head(8).itertuples():
        out.print(
            f"  {row.office_id}: {row.calls:.0f} calls, utilisation {row.utilisation:.1%}, "
            f"response p50 {row.response_p50_min:.1f} / p90 {row.response_p90_min:.1f} min",
            highlight=False,
            markup=False,
        )
    if out_path is not None:
        out.print(f"wrote {out_path}", highlight=False)
