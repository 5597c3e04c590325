"""A simulated month's KPIs, recomputed independently in plain SQL on PostGIS.

The month runs through the real dispatcher and workflow on the reference district, is stored
with ``import_history``, and is then assessed twice: by :func:`gridgov.kpis.compute_kpis`
(pandas, from the events read back) and by the SQL below, written from the KPI definitions
alone (gridgov/kpis.py's docstring) against the raw ``events``, ``matters`` and ``offices``
tables. Every count must match exactly and every rate and time to 1e-9.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from gridgov import store
from gridgov.catalog import load_catalog
from gridgov.kpis import compute_kpis
from gridgov.periods import Period
from gridgov.simulate import simulate

pytestmark = [pytest.mark.postgis, pytest.mark.slow]

SHANGHAI = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 10, 1, tzinfo=SHANGHAI)
END = datetime(2026, 11, 1, tzinfo=SHANGHAI)

# One row per call: a dispatch event in the period, with its cycle's first acknowledge and arrive
# (the cycle ends at the incident's next dispatch, return, requeue or reopen). Only events before
# the period's end count: the assessment is "as of" that instant.
CALLS_SQL = """
WITH calls AS (
    SELECT d.incident_id, d.seq, d.at, d.office_id, d.street_code, d.level,
           m.acknowledge_min,
           (SELECT min(b.seq) FROM events b
             WHERE b.incident_id = d.incident_id AND b.seq > d.seq AND b.at < :end
               AND b.action IN ('dispatch', 'return', 'requeue', 'reopen')) AS cycle_end
      FROM events d
      JOIN incidents i ON i.incident_id = d.incident_id
      JOIN matters m ON m.code = i.matter_code
     WHERE d.action = 'dispatch' AND d.at >= :start AND d.at < :end
)
SELECT c.*,
       (SELECT min(a.at) FROM events a
         WHERE a.incident_id = c.incident_id AND a.action = 'acknowledge' AND a.seq > c.seq
           AND a.at < :end AND (c.cycle_end IS NULL OR a.seq < c.cycle_end)) AS ack_at,
       (SELECT min(a.at) FROM events a
         WHERE a.incident_id = c.incident_id AND a.action = 'arrive' AND a.seq > c.seq
           AND a.at < :end AND (c.cycle_end IS NULL OR a.seq < c.cycle_end)) AS arrive_at
  FROM calls c
"""

# Per group: counts, rates, mean and p90 (percentile_cont = numpy's linear interpolation).
CALL_KPIS_SQL = """
WITH c AS ({calls}), g AS (
    SELECT {key} AS key, c.*,
           extract(epoch FROM ack_at - at) / 60.0 AS response_min,
           extract(epoch FROM arrive_at - at) / 60.0 AS arrival_min
      FROM c LEFT JOIN offices o ON o.office_id = c.office_id
)
SELECT key,
       count(*) AS calls,
       count(*) FILTER (WHERE response_min <= acknowledge_min) AS responded_on_time,
       avg(response_min) AS response_mean_min,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY response_min) AS response_p90_min,
       avg(arrival_min) AS arrival_mean_min,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY arrival_min) AS arrival_p90_min,
       count(*) FILTER (WHERE level = 'community') AS n_community,
       count(*) FILTER (WHERE level = 'street') AS n_street,
       count(*) FILTER (WHERE level = 'neighbour') AS n_neighbour,
       count(*) FILTER (WHERE level = 'district') AS n_district
  FROM g GROUP BY key
"""

# One row per case: an incident first dispatched in the period, owned by its latest dispatch's
# office as of the end, with its deadline and outcome flags.
CASES_SQL = """
WITH first_dispatch AS (
    SELECT DISTINCT ON (incident_id) incident_id, at
      FROM events WHERE action = 'dispatch' AND at < :end ORDER BY incident_id, seq
), last_dispatch AS (
    SELECT DISTINCT ON (incident_id) incident_id, office_id, street_code
      FROM events WHERE action = 'dispatch' AND at < :end ORDER BY incident_id, seq DESC
), flags AS (
    SELECT incident_id,
           min(at) FILTER (WHERE action = 'close') AS closed_at,
           bool_or(action = 'resolve') AS resolved,
           bool_or(action = 'reopen') AS reworked,
           (array_agg(satisfaction ORDER BY seq) FILTER (WHERE action = 'evaluate'))[1]
               AS satisfaction
      FROM events WHERE at < :end GROUP BY incident_id
)
SELECT f.incident_id, l.office_id, l.street_code,
       f.at + make_interval(secs => m.resolve_h * 3600) AS deadline,
       x.closed_at, x.resolved, x.reworked, x.satisfaction
  FROM first_dispatch f
  JOIN last_dispatch l USING (incident_id)
  JOIN flags x USING (incident_id)
  JOIN incidents i USING (incident_id)
  JOIN matters m ON m.code = i.matter_code
 WHERE f.at >= :start
"""

CASE_KPIS_SQL = """
WITH c AS ({cases}), g AS (
    SELECT {key} AS key, c.*,
           (closed_at IS NOT NULL OR deadline <= :end) AS due,
           (closed_at IS NOT NULL AND closed_at <= deadline) AS on_time
      FROM c LEFT JOIN offices o ON o.office_id = c.office_id
)
SELECT key,
       count(*) AS cases,
       count(*) FILTER (WHERE closed_at IS NOT NULL) AS closed,
       count(*) FILTER (WHERE due) AS due,
       count(*) FILTER (WHERE on_time) AS on_time,
       count(*) FILTER (WHERE resolved) AS resolved,
       count(*) FILTER (WHERE reworked) AS reworked,
       count(*) FILTER (WHERE satisfaction IS NOT NULL) AS evaluated,
       count(*) FILTER (WHERE satisfaction IN ('satisfied', 'basically_satisfied')) AS satisfied
  FROM g GROUP BY key
"""

KEYS = {
    "office": ("office_id", "c.office_id"),
    "department": ("department", "o.department"),
    "street": ("street_code", "c.street_code"),
    "district": (None, "'district'"),
}


def _rate(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).astype(float)


def _sql_kpis(engine: Engine, by: str) -> pd.DataFrame:
    _, key = KEYS[by]
    params = {"start": START, "end": END}
    with engine.connect() as connection:
        calls = pd.read_sql(
            text(CALL_KPIS_SQL.format(calls=CALLS_SQL, key=key)), connection, params=params
        )
        cases = pd.read_sql(
            text(CASE_KPIS_SQL.format(cases=CASES_SQL, key=key)), connection, params=params
        )
    out = calls.merge(cases, on="key", how="outer").set_index("key").sort_index()
    counts = [c for c in out.columns if not c.endswith("_min")]
    out[counts] = out[counts].fillna(0).astype(int)
    out["response_rate"] = _rate(out["responded_on_time"], out["calls"])
    for level in ("community", "street", "neighbour", "district"):
        out[f"share_{level}"] = _rate(out[f"n_{level}"], out["calls"])
    out["resolution_rate"] = _rate(out["closed"], out["cases"])
    out["on_time_closure_rate"] = _rate(out["on_time"], out["due"])
    out["rework_rate"] = _rate(out["reworked"], out["resolved"])
    out["satisfaction_rate"] = _rate(out["satisfied"], out["evaluated"])
    return out


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory, postgis_url: str) -> Iterator[Engine]:
    """The reference district on PostGIS with a simulated October 2026 stored in it."""
    from conftest import _fresh_schema
    from typer.testing import CliRunner

    from gridgov.cli import app

    with _fresh_schema(postgis_url) as url:
        runner = CliRunner()
        for args in (["init", "--url", url], ["load", "--url", url]):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        engine = store.open_store(url)
        try:
            ctx = store.context_from_store(engine)
            # A lighter load than the default 40/h keeps the test to a minute; the rework,
            # return and duplicate rates are raised so every side path occurs many times.
            result = simulate(
                ctx,
                store.read_units(engine),
                gdf_offices=store.read_offices(engine),
                hours=31 * 24,
                seed=7,
                start=START,
                rate_per_hour=4.0,
                verify_fail_rate=0.1,
                return_rate=0.05,
            )
            store.import_history(engine, result.incidents, result.events)
            yield engine
        finally:
            engine.dispose()


def _gridgov_kpis(engine: Engine, by: str) -> pd.DataFrame:
    events = store.read_events(engine)
    incidents = store.read_incidents(engine)
    offices = store.read_offices(engine)
    kpis = compute_kpis(events, incidents, offices, load_catalog(), Period.parse("2026-10"), by=by)
    column = KEYS[by][0]
    index = pd.Index(["district"] * len(kpis)) if column is None else kpis[column]
    return kpis.set_index(index).sort_index()


@pytest.mark.parametrize("by", list(KEYS))
def test_kpis_equal_plain_sql_on_the_raw_event_table(month: Engine, by: str) -> None:
    ours = _gridgov_kpis(month, by)
    sql = _sql_kpis(month, by)
    assert len(sql) > 0
    if by == "office":
        assert len(sql) >= 20  # many offices were called
    assert list(ours.index) == list(sql.index)
    for column in (
        "calls",
        "responded_on_time",
        "cases",
        "closed",
        "due",
        "on_time",
        "resolved",
        "reworked",
        "evaluated",
        "satisfied",
    ):
        assert ours[column].astype(int).tolist() == sql[column].tolist(), column
    for column in (
        "response_rate",
        "resolution_rate",
        "on_time_closure_rate",
        "rework_rate",
        "satisfaction_rate",
        "share_community",
        "share_street",
        "share_neighbour",
        "share_district",
        "response_mean_min",
        "response_p90_min",
        "arrival_mean_min",
        "arrival_p90_min",
    ):
        np.testing.assert_allclose(
            ours[column].astype(float).to_numpy(),
            sql[column].astype(float).to_numpy(),
            rtol=0,
            atol=1e-9,
            equal_nan=True,
            err_msg=column,
        )


def test_the_month_exercises_every_path(month: Engine) -> None:
    with month.connect() as connection:
        counts: dict[str, Any] = dict(
            connection.execute(text("SELECT action, count(*) FROM events GROUP BY action")).all()
        )
    for action in (
        "report",
        "register",
        "reject",
        "dispatch",
        "acknowledge",
        "arrive",
        "resolve",
        "verify",
        "reopen",
        "close",
        "evaluate",
        "return",
    ):
        assert counts.get(action, 0) > 0, action
    district = _sql_kpis(month, "district").iloc[0]
    # Sanity of the month itself: most calls answered in time, most cases closed.
    assert district["calls"] > 2_000
    assert 0.5 < district["response_rate"] < 1.0
    assert 0.5 < district["resolution_rate"] <= 1.0
    assert 0.0 < district["rework_rate"] < 0.3
