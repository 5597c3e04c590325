"""Command-centre page at district scale: bytes and time to interactive in headless Chromium.

    .venv/bin/python bench/map_load.py                  # 5 runs of every page
    .venv/bin/python bench/map_load.py --runs 3 --append-readme

The district is the Jinniu reference district (``gridgov.reference.read_reference_district``):
10,000 micro-grids, 995 grids, 90 communities, 13 streets, 1,211 units. It is brought to the
issue's size with generated data from one seed:

- units: 789 more (police patrols and grid-worker deputies), copies of real units moved to
  random points of random micro-grids, statuses 70 % available, 25 % busy, 5 % off duty: 2,000;
- incidents: 1,000 open ones at random points of random micro-grids (priorities 1–4, statuses
  registered/dispatched/acknowledged/on_scene) plus 1,000 closed ones, all reported in the last
  48 hours, so the heat map has data;
- assignments: one active unit for each of 700 incidents, with a 12-vertex route line;
- events: a 3-event history per open incident;
- roads: the district's stored road network (the Chengdu link table inside it, each two-way
  road once: ``gridgov.roads.one_line_per_segment``).

Pages (all rendered by ``gridgov.maps``; each gets the same "ready" mark, set in the first
animation frame after the page script has added every layer):

``bare``
    a Leaflet map with no layers (the floor: Leaflet itself);
``command-centre``
    ``command_centre_map`` with no road layer (base ``none``): street/community/grid inlined and
    simplified, micro-grids left to the viewport hook, markers clustered;
``command-centre + roads``
    the same with the road base layer inlined (``add_road_layer``, base ``roads``: what
    ``gridgov map command-centre`` writes by default);
``command-centre, unclustered``
    the same without MarkerCluster (2,000 + 1,000 DOM markers);
``naive GeoJSON``
    the baseline the design avoids: every area of every level (11,099 polygons, full geometry)
    and every unit and incident inlined as one folium ``GeoJson`` (circle markers).

Each page is written with its assets inlined and opened from a file URL, and the command-centre
page is also served from a localhost HTTP server with its assets under ``/static`` (how the API
serves it), without and with the roads; served, the roads come per viewport from a URL (a file
holding the road route's answer for the district at zoom 12, as the live wall gets it). Each run
opens a fresh browser context (empty cache). Time to interactive = ``performance.now()`` at the
ready mark (navigation start is its origin); for a page whose roads come from the server, "roads
drawn" is the moment its road layer was filled.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridgov import maps
from gridgov.reference import read_reference_district
from gridgov.roads import one_line_per_segment

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OPEN_STATUSES = ("registered", "dispatched", "acknowledged", "on_scene")
READY_JS = (
    "<script>window.GG=window.GG||{maps:{}};requestAnimationFrame(function(){setTimeout("
    "function(){GG.ready=true;GG.readyAt=performance.now();},0);});</script>"
)


def _random_points(gdf_cells: gpd.GeoDataFrame, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points, each inside a random cell (rejection-sampled in its bounding box)."""
    cells = gdf_cells.geometry.to_numpy()[rng.integers(0, len(gdf_cells), n)]
    out = shapely.point_on_surface(cells)
    bounds = shapely.bounds(cells)
    for _ in range(8):
        x = rng.uniform(bounds[:, 0], bounds[:, 2])
        y = rng.uniform(bounds[:, 1], bounds[:, 3])
        cand = shapely.points(x, y)
        ok = shapely.contains(cells, cand)
        out = np.where(ok, cand, out)
    return out


def build_district(seed: int = 6, n_units: int = 2000, n_open: int = 1000) -> dict[str, Any]:
    """The reference district grown to the issue's size (see the module docstring)."""
    rng = np.random.default_rng(seed)
    ref = read_reference_district()
    gdf_areas = ref.gdf_areas
    micro = gdf_areas[gdf_areas["level"] == "microgrid"]
    units = ref.gdf_units.copy()
    extra = n_units - len(units)
    if extra > 0:
        pool = units[units["kind"].isin(["police", "grid_worker"])]
        picks = pool.iloc[rng.integers(0, len(pool), extra)].copy()
        picks["unit_id"] = [f"{u}-x{i:04d}" for i, u in enumerate(picks["unit_id"])]
        picks["name"] = [f"{n}·{i}" for i, n in enumerate(picks["name"])]
        picks = picks.set_geometry(_random_points(micro, extra, rng))
        units = pd.concat([units, picks], ignore_index=True)
    units["status"] = rng.choice(["available", "busy", "off_duty"], len(units), p=[0.7, 0.25, 0.05])
    units["on_duty"] = units["status"] != "off_duty"
    n_all = 2 * n_open
    points = _random_points(micro, n_all, rng)
    statuses = np.where(np.arange(n_all) < n_open, rng.choice(OPEN_STATUSES, n_all), "closed")
    incidents = gpd.GeoDataFrame(
        {
            "incident_id": [f"BENCH-{i:05d}" for i in range(n_all)],
            "matter_code": rng.choice(["FS-01", "CM-03", "ML-02", "PS-05"], n_all),
            "priority": rng.integers(1, 5, n_all),
            "status": statuses,
            "reported_at": [NOW - timedelta(hours=float(h)) for h in rng.uniform(0, 48, n_all)],
            "street_code": None,
        },
        geometry=points,
        crs="EPSG:4326",
    )
    n_asg = int(n_open * 0.7)
    chosen = units.iloc[rng.integers(0, len(units), n_asg)]
    routes = []
    for u, p in zip(chosen.geometry, incidents.geometry[:n_asg], strict=True):
        t = np.linspace(0, 1, 12)
        # A staircase, like a route along a street grid, rather than a straight segment.
        x = u.x + (p.x - u.x) * np.round(t * 3) / 3
        y = u.y + (p.y - u.y) * np.round(t * 3 + 0.5) / 3
        routes.append(shapely.LineString(np.column_stack([x, y])))
    assignments = gpd.GeoDataFrame(
        {
            "incident_id": incidents["incident_id"].iloc[:n_asg].to_numpy(),
            "unit_id": chosen["unit_id"].to_numpy(),
            "kind": chosen["kind"].to_numpy(),
            "role": "lead",
            "level": "street",
            "rule": "nearest_in_street",
            "time_s": rng.uniform(60, 900, n_asg),
            "over_max_travel": False,
            "active": True,
        },
        geometry=routes,
        crs="EPSG:4326",
    )
    events = pd.DataFrame(
        [
            {
                "incident_id": iid,
                "seq": s + 1,
                "at": at + timedelta(minutes=3 * s),
                "action": action,
                "to_state": state,
                "actor": "bench",
                "reason": None,
            }
            for iid, at in zip(
                incidents["incident_id"][:n_open], incidents["reported_at"][:n_open], strict=True
            )
            for s, (action, state) in enumerate(
                [("report", "reported"), ("register", "registered"), ("dispatch", "dispatched")]
            )
        ]
    )
    return {
        "areas": gdf_areas,
        "roads": one_line_per_segment(ref.gdf_links),
        "units": units,
        "incidents": incidents,
        "assignments": assignments,
        "events": events,
    }


def _bare_page() -> str:
    m = folium.Map(location=[30.72, 104.04], zoom_start=12, tiles=None)
    return _with_ready(maps.render_html(m))


def _with_ready(page: str) -> str:
    return page.replace("</html>", READY_JS + "\n</html>")


def _naive_page(d: dict[str, Any]) -> str:
    """Everything inlined as one GeoJSON: the baseline the design avoids."""
    areas = d["areas"][["code", "name", "level", "geometry"]]
    units = d["units"][["unit_id", "name", "geometry"]].rename(columns={"unit_id": "code"})
    units["level"] = "unit"
    incidents = maps.open_incidents(d["incidents"])[["incident_id", "geometry"]]
    incidents = incidents.rename(columns={"incident_id": "code"})
    incidents["name"] = incidents["code"]
    incidents["level"] = "incident"
    everything = gpd.GeoDataFrame(
        pd.concat([areas, units, incidents], ignore_index=True), crs="EPSG:4326"
    )
    # folium's defaults (SVG renderer), as a first attempt would have it.
    m = folium.Map(location=[30.72, 104.04], zoom_start=12, tiles=None)
    folium.GeoJson(
        everything,
        name="everything",
        marker=folium.CircleMarker(radius=4),
        tooltip=folium.GeoJsonTooltip(["code", "name"]),
    ).add_to(m)
    return _with_ready(maps.render_html(m))


def _command_centre(d: dict[str, Any], *, cluster: bool = True, roads: str | None = None) -> Any:
    """The command centre; ``roads``: None (no road layer), "inline", or a URL template."""
    m = maps.command_centre_map(
        d["areas"],
        d["units"],
        d["incidents"],
        d["assignments"],
        d["events"],
        now=NOW,
        cluster=cluster,
        base="none" if roads is None else maps.ROAD_BASE,
    )
    if roads == "inline":
        maps.add_road_layer(m, maps.ROAD_BASE, gdf_roads=d["roads"])
    elif roads is not None:
        maps.add_road_layer(m, maps.ROAD_BASE, url=roads)
    return m


def build_pages(d: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Page name -> (HTML with assets inlined, seconds to build and render it in Python)."""
    pages: dict[str, tuple[str, float]] = {}
    t = time.perf_counter()
    pages["bare Leaflet"] = (_bare_page(), time.perf_counter() - t)
    for name, cluster, roads in (
        ("command-centre", True, None),
        ("command-centre + roads", True, "inline"),
        ("command-centre, unclustered", False, None),
    ):
        t = time.perf_counter()
        m = _command_centre(d, cluster=cluster, roads=roads)
        pages[name] = (maps.render_html(m), time.perf_counter() - t)
    t = time.perf_counter()
    pages["naive GeoJSON"] = (_naive_page(d), time.perf_counter() - t)
    return pages


def _serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# A page whose road layer comes from a URL, and when that layer was filled.
_FETCHES_ROADS = """() => Object.values(GG.maps).some((e) => e.layers.roads
    && e.layers.roads.ggLoad !== undefined)"""
_ROADS_AT = """() => { for (const e of Object.values(GG.maps)) {
    const r = e.layers.roads; if (r && r.ggLoadedAt) return r.ggLoadedAt; } return null; }"""


def measure(browser: Any, url: str, runs: int) -> dict[str, Any]:
    """Time to interactive (ms) over ``runs`` fresh contexts, and what the page rendered."""
    times = []
    roads_at: list[float] = []
    counts: dict[str, Any] = {}
    errors: list[str] = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url, wait_until="commit", timeout=120_000)
        page.wait_for_function("window.GG && GG.ready === true", timeout=120_000, polling=10)
        times.append(float(page.evaluate("GG.readyAt")))
        if page.evaluate(_FETCHES_ROADS):
            page.wait_for_function(_ROADS_AT, timeout=120_000, polling=10)
            roads_at.append(float(page.evaluate(_ROADS_AT)))
        counts = page.evaluate(
            """() => { const out = {}; for (const e of Object.values(GG.maps || {})) {
                 for (const [k, v] of Object.entries(e.areas)) out[k] = v.getLayers().length;
                 for (const [k, v] of Object.entries(e.layers)) out[k] = v.getLayers().length; }
               return out; }"""
        )
        context.close()
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "runs": times,
        "roads_ms": statistics.median(roads_at) if roads_at else None,
        "counts": counts,
        "errors": errors,
        "browser": f"Chromium {browser.version}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--append-readme", action="store_true", help="append to bench/README.md")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    from browser import launch
    from playwright.sync_api import sync_playwright

    t = time.perf_counter()
    d = build_district(args.seed)
    print(
        f"district: {int((d['areas']['level'] == 'microgrid').sum()):,} micro-grids, "
        f"{len(d['areas']):,} areas, {len(d['units']):,} units, "
        f"{len(maps.open_incidents(d['incidents'])):,} open incidents "
        f"({len(d['incidents']):,} in all), {len(d['assignments']):,} routes "
        f"[{time.perf_counter() - t:.1f} s]"
    )
    pages = build_pages(d)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        folder = Path(tmp)
        (folder / "static").symlink_to(maps.STATIC_DIR)
        served = maps.render_html(_command_centre(d), assets="/static")
        (folder / "served.html").write_text(served, encoding="utf-8")
        # The road route's answer for the whole district at the page's zoom; the file server
        # ignores the query, as the page fills the template.
        answer = maps.road_layer_json(d["roads"], zoom=12)
        (folder / "roads.json").write_text(json.dumps(answer), encoding="utf-8")
        url = "/roads.json?bbox={west},{south},{east},{north}&zoom={zoom}"
        served_roads = maps.render_html(_command_centre(d, roads=url), assets="/static")
        (folder / "served_roads.html").write_text(served_roads, encoding="utf-8")
        server, base = _serve(folder)
        browser = launch(pw)
        try:
            for name, (page, _) in pages.items():
                path = folder / f"{len(results)}.html"
                path.write_text(page, encoding="utf-8")
                results[name] = measure(browser, path.as_uri(), args.runs)
            name = "command-centre, served (/static)"
            results[name] = measure(browser, f"{base}/served.html", args.runs)
            pages[name] = (served, float("nan"))
            name = "command-centre + roads, served (/static, roads per viewport)"
            results[name] = measure(browser, f"{base}/served_roads.html", args.runs)
            pages[name] = (served_roads, float("nan"))
        finally:
            browser.close()
            server.shutdown()
    baseline = results["bare Leaflet"]["median_ms"]
    naive = results["naive GeoJSON"]["median_ms"]
    lines = [
        "| page | bytes | Python build+render (s) | interactive, median (ms) | min–max (ms) "
        "| vs bare | vs naive |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        page, secs = pages[name]
        lines.append(
            f"| {name} | {len(page.encode()):,} | "
            f"{'–' if secs != secs else f'{secs:.2f}'} | {r['median_ms']:.0f} | "
            f"{r['min_ms']:.0f}–{r['max_ms']:.0f} | {r['median_ms'] / baseline:.1f}× | "
            f"{r['median_ms'] / naive:.2f}× |"
        )
    print("\n".join(lines))
    for name, r in results.items():
        print(f"{name}: rendered {r['counts']}; errors: {len(r['errors'])} {r['errors'][:3]}")
    cc = results["command-centre"]["median_ms"]
    print(
        f"command centre interactive in {cc / 1000:.2f} s (target <= 3 s): "
        f"{'OK' if cc <= 3000 else 'OVER'}"
    )
    roads_line = _roads_line(results)
    print(roads_line)
    lines += ["", roads_line]
    if args.append_readme:
        _append_readme(lines, results, args.runs)
    return 0


def _roads_line(results: dict[str, dict[str, Any]]) -> str:
    """The issue's figure: the command centre interactive with the roads off and on."""
    off = results["command-centre"]["median_ms"]
    on = results["command-centre + roads"]["median_ms"]
    served = results["command-centre + roads, served (/static, roads per viewport)"]
    slowest = max(off, on, served["median_ms"], served["roads_ms"] or 0.0)
    return (
        f"roads off / on: command centre interactive in {off / 1000:.2f} s / {on / 1000:.2f} s "
        f"(inlined); served, interactive in {served['median_ms'] / 1000:.2f} s and roads drawn "
        f"at {(served['roads_ms'] or float('nan')) / 1000:.2f} s (target <= 3 s): "
        f"{'OK' if slowest <= 3000 else 'OVER'}"
    )


def _append_readme(lines: list[str], results: dict[str, dict[str, Any]], runs: int) -> None:
    import platform
    from importlib.metadata import version

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    counts = results["command-centre"]["counts"]
    text = [
        "",
        f"### `map_load.py` run ({stamp}, {platform.machine()}, {runs} runs per page)",
        "",
        f"Python {platform.python_version()}, folium {folium.__version__}, Playwright "
        f"{version('playwright')}, {results['bare Leaflet'].get('browser', 'chromium')} "
        f"(Debian, headless), load average {os.getloadavg()[0]:.1f} at the end. "
        f"Command centre rendered: {counts}.",
        "",
        *lines,
        "",
    ]
    with open(ROOT / "bench" / "README.md", "a", encoding="utf-8") as fh:
        fh.write("\n".join(text))


if __name__ == "__main__":
    raise SystemExit(main())
