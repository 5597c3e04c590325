"""Decisions on the reference district, for comparing two versions of the dispatcher.

``decisions()`` dispatches a fixed, seeded set of incidents (random matters at points near the
reference roads, with a seeded third of the units busy) through the public API only, so the same
function runs against an older checkout. ``tests/data/reference_decisions.json`` holds its
output from the code before the multi-link snapping fix (issue 12); the test in
``test_reference_decisions.py`` compares today's decisions with it. Regenerate the file only
from that older code:

    cd tests && PYTHONPATH=OLD_CHECKOUT:. python -m reference_decisions \
        > data/reference_decisions.json
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
N_INCIDENTS = 1500
SEED = 20261205


def decisions(n: int = N_INCIDENTS, seed: int = SEED) -> list[dict[str, Any]]:
    """One record per incident: its id, matter, and per assignment kind, unit, time and level."""
    from gridgov import dispatch
    from gridgov.catalog import load_catalog
    from gridgov.errors import InputError
    from gridgov.network import build_network
    from gridgov.reference import read_reference_district

    ref = read_reference_district()
    ctx = dispatch.build_context(
        ref.gdf_areas, load_catalog(), build_network(ref.gdf_nodes, ref.gdf_links)
    )
    units = dispatch.prepare_units(ref.gdf_units, ref.gdf_offices, now=NOW)
    rng = np.random.default_rng(seed)
    units = units.assign(
        status=np.where(rng.random(len(units)) < 0.3, "busy", units["status"].to_numpy())
    )
    # Road nodes inside the district, so that most incidents are dispatchable.
    nodes = ref.gdf_nodes
    xs, ys = nodes.geometry.x.to_numpy(), nodes.geometry.y.to_numpy()
    inside = ctx.locator.locate(xs, ys)["street"].notna().to_numpy()
    xs, ys = xs[inside], ys[inside]
    codes = sorted(ctx.catalog.codes)
    out: list[dict[str, Any]] = []
    for k in range(n):
        i = int(rng.integers(len(xs)))
        lon, lat = float(xs[i] + rng.normal(0, 0.002)), float(ys[i] + rng.normal(0, 0.002))
        code = codes[int(rng.integers(len(codes)))]
        incident = dispatch.Incident(
            incident_id=f"ref-{k}", matter_code=code, lon=lon, lat=lat, reported_at=NOW
        )
        record: dict[str, Any] = {"incident_id": incident.incident_id, "matter_code": code}
        try:
            decision = dispatch.dispatch_incident(incident, units, ctx, routes=False)
        except InputError as exc:  # outside the district, or too far from a road
            record["error"] = type(exc).__name__
            out.append(record)
            continue
        record["level"] = None if decision.level is None else decision.level.value
        record["assignments"] = [
            {
                "kind": a.kind.value,
                "unit_id": a.unit_id,
                "time_s": a.time_s,
                "level": a.level.value,
                "rule": a.rule,
            }
            for a in decision.assignments
        ]
        out.append(record)
    return out


if __name__ == "__main__":
    json.dump(decisions(), sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")
