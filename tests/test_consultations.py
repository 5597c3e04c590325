"""Consultations of the streets on plans, projects and decisions (powers 2 and 4): the item
catalogue, working-day deadlines, footprint routing, answers, adoptions, acceptances,
suggestions, supervision and scoping, on SQLite and on PostGIS.

The district is the reference one's streets and communities (``data/jinniu_areas.parquet``,
the levels below left out: routing asks streets and communities only). Clocks are plain
datetimes passed in.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import yaml
from pyproj import Transformer
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from gridgov import store
from gridgov.consultation_items import (
    consultation_catalog_from_dict,
    load_consultation_catalog,
)
from gridgov.errors import CatalogError, ConsultationError, ForbiddenError, InputError
from gridgov.footprints import read_footprint
from gridgov.service import consultations as consult
from gridgov.service.scope import Scope
from gridgov.workdays import load_work_calendar, work_calendar_from_dict

DATA = Path(__file__).resolve().parent.parent / "data"
CDZ, JQ, YMK, XH = "510106031000", "510106040000", "510106038000", "510106025000"
#: Crosses 金泉, 茶店子 and 营门口 (and within 500 m of 西华 too).
THREE_STREETS = "LINESTRING (103.99 30.712, 104.0079 30.706, 104.020 30.702)"
DEPT = "区住房和城乡建设局"
ADMIN = Scope("admin", None, None, None, district_wide=True)
DEPARTMENT = Scope("department", None, None, None, district_wide=False, department=DEPT)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def street_scope(street: str, role: str = "commander") -> Scope:
    return Scope(role, street, None, None, district_wide=False)


@pytest.fixture
def engine(store_engine: Engine) -> Engine:
    areas = gpd.read_parquet(DATA / "jinniu_areas.parquet")
    store.load_areas(store_engine, areas[areas["level"].isin(["district", "street", "community"])])
    return store_engine


def register(engine: Engine, wkt: str = THREE_STREETS, buffer_m: float = 0.0, **kw: Any) -> Any:
    values: dict[str, Any] = {
        "item_code": "P-DET-09",
        "stage": "implementation",
        "title": "街道公共空间改造",
        "letter": "方案征求意见",
        "department": DEPT,
        "footprint": None,
        "buffer_m": buffer_m,
        "at": T0,
        "actor": "department:test",
    }
    values.update(kw)
    values["footprint"] = values["footprint"] or read_footprint(wkt)
    return consult.register(engine, values.pop("scope", DEPARTMENT), **values)


def request_of(engine: Engine, consultation_id: int, street: str) -> int:
    frame = store.read_consultation_requests(engine, consultation_id=consultation_id)
    return int(frame.loc[frame["street_code"] == street, "request_id"].iloc[0])


# ------------------------------------------------------------------------------- catalogue


def test_the_catalogue_has_27_planning_items_over_3_levels_and_4_stages() -> None:
    catalog = load_consultation_catalog()
    planning = [i for i in catalog.items if i.power == 2]
    decisions = [i for i in catalog.items if i.power == 4]
    assert len(planning) == 27
    assert {i.group for i in planning} == {t.code for t in catalog.planning_levels}
    assert {i.stage for i in planning} == {t.code for t in catalog.planning_stages}
    assert len(catalog.planning_levels) == 3 and len(catalog.planning_stages) == 4
    assert {i.group for i in decisions} == {t.code for t in catalog.decision_areas}
    assert len(catalog.decision_areas) == 3 and len(catalog.decision_steps) == 3
    assert "ILLUSTRATIVE" in catalog.source
    assert any(i.acceptance for i in planning)


def test_the_catalogue_loader_reports_every_problem_at_once() -> None:
    data = yaml.safe_load((DATA / "consultation.yaml").read_text(encoding="utf-8"))
    bad = copy.deepcopy(data)
    bad["items"][0]["stage"] = "someday"
    bad["items"][1]["response_days"] = 0
    bad["items"][2]["colour"] = "red"
    bad["items"][3]["code"] = bad["items"][4]["code"]
    with pytest.raises(CatalogError) as caught:
        consultation_catalog_from_dict(bad)
    problems = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 4, problems
    assert "someday" in problems and "response_days" in problems
    assert "colour" in problems and "duplicate" in problems


def test_a_late_stage_is_judged_against_the_item() -> None:
    catalog = load_consultation_catalog()
    item = catalog.get("P-OVR-01")  # meant for appraisal
    assert not catalog.is_late(item, "appraisal")
    assert catalog.is_late(item, "approval")
    with pytest.raises(InputError, match="collect"):
        catalog.is_late(catalog.get("D-PRJ"), "drafting")


# ------------------------------------------------------------------------------- working days

_LOCAL = "+08:00"


@pytest.mark.parametrize(
    ("received", "days", "due"),
    [
        # Spring Festival 2026: 15-23 February off; Saturday 14 and 28 February worked.
        ("2026-02-13T10:00", 1, "2026-02-15T00:00"),  # day 1 = the worked Saturday
        ("2026-02-13T10:00", 2, "2026-02-25T00:00"),  # then nothing until Tuesday 24th
        ("2026-02-12T10:00", 3, "2026-02-25T00:00"),
        ("2026-02-14T10:00", 5, "2026-03-01T00:00"),  # day 5 = the worked Saturday 28th
        ("2026-02-24T10:00", 10, "2026-03-10T00:00"),
        ("2026-02-13T23:30", 1, "2026-02-15T00:00"),  # still Friday in Chengdu
        ("2026-02-14T00:30", 1, "2026-02-25T00:00"),  # received on the worked Saturday
        # National Day 2026: Sunday 20 September worked.
        ("2026-09-18T16:00", 1, "2026-09-21T00:00"),
        ("2026-09-30T09:00", 1, "2026-10-09T00:00"),  # 1-7 October off, 8th the next day
        ("2026-10-09T09:00", 1, "2026-10-11T00:00"),  # Saturday 10 October worked
    ],
)
def test_deadlines_in_working_days_match_the_hand_written_table(
    received: str, days: int, due: str
) -> None:
    deadline = load_work_calendar().deadline(
        datetime.fromisoformat(received + _LOCAL), days, "Asia/Shanghai"
    )
    assert deadline.due == datetime.fromisoformat(due + _LOCAL)
    assert not deadline.estimated


def test_a_year_the_calendar_does_not_know_gives_an_estimate() -> None:
    deadline = load_work_calendar().deadline(
        datetime.fromisoformat("2026-12-30T09:00+08:00"), 5, "Asia/Shanghai"
    )
    # 31 Dec, then 1, 4, 5, 6 January 2027 counted as plain weekdays.
    assert deadline.due == datetime.fromisoformat("2027-01-07T00:00+08:00")
    assert deadline.estimated


def test_the_calendar_file_is_checked() -> None:
    with pytest.raises(Exception, match="weekday") as caught:
        work_calendar_from_dict(
            {"years": [2026], "holidays": [], "working_weekends": [datetime(2026, 3, 2).date()]}
        )
    assert "1 problem" in str(caught.value)


# ------------------------------------------------------------------------------- footprints


def test_a_footprint_is_read_from_wkt_geojson_or_a_file_in_any_crs(tmp_path: Path) -> None:
    wgs = read_footprint(THREE_STREETS)
    to_utm = Transformer.from_crs(4326, 32648, always_xy=True)
    utm = shapely.transform(wgs, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
    assert read_footprint(utm.wkt, "EPSG:32648").equals_exact(wgs, 1e-7)
    geojson = shapely.to_geojson(wgs)
    assert read_footprint(geojson).equals(wgs)
    path = tmp_path / "plan.gpkg"
    gpd.GeoDataFrame({"name": ["plan"]}, geometry=[utm], crs=32648).to_file(path)
    assert read_footprint(path).equals_exact(wgs, 1e-7)
    disc = read_footprint("POINT (104.0079 30.706)", radius_m=300)
    assert disc.geom_type == "Polygon"
    with pytest.raises(InputError, match="radius"):
        read_footprint("POINT (104.0079 30.706)")
    with pytest.raises(InputError, match="not valid GeoJSON"):
        read_footprint("{nonsense")
    for bad in (
        '{"type": "Foo"}',
        '{"type": "FeatureCollection", "features": [{}]}',
        '{"type": "Feature", "geometry": null}',
        '{"type": "Point", "coordinates": "x"}',
    ):
        with pytest.raises(InputError, match="not a geometry"):
            read_footprint(bad)
    with pytest.raises(InputError, match="Self-intersection"):
        read_footprint("POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))")
    with pytest.raises(InputError, match="GeometryCollection"):
        read_footprint("GEOMETRYCOLLECTION (POINT (1 1))")


# ------------------------------------------------------------------------------- routing


def _postgis_buffer_count(postgis_url: str, engine: Engine, metres: float) -> int:
    """What PostGIS says on the same street polygons: ST_Intersects(ST_Buffer(...))."""
    reach = "ST_GeomFromText(:fp, 4326)"
    if metres > 0:  # ST_Buffer(line, 0) is empty: no buffer means the footprint itself
        reach = f"ST_Transform(ST_Buffer(ST_Transform({reach}, 32648), :m), 4326)"
    query = "SELECT count(*) FROM {areas} WHERE level = 'street' AND ST_Intersects(geometry, %s)"
    query = query % reach
    if store.detect_backend(engine) == "postgresql":
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(query.format(areas="areas")), {"fp": THREE_STREETS, "m": metres}
                ).scalar_one()
            )
    streets = store.read_stored_areas(engine, "street")
    pg = create_engine(postgis_url)
    try:
        with pg.connect() as connection:
            values = ", ".join(f"(ST_GeomFromWKB(:g{i}, 4326))" for i in range(len(streets)))
            params: dict[str, Any] = {
                f"g{i}": shapely.to_wkb(g) for i, g in enumerate(streets.geometry)
            }
            areas = f"(SELECT 'street' AS level, g AS geometry FROM (VALUES {values}) v(g)) a"
            return int(
                connection.execute(
                    text(query.format(areas=areas)), {**params, "fp": THREE_STREETS, "m": metres}
                ).scalar_one()
            )
    finally:
        pg.dispose()


def test_a_footprint_crossing_three_streets_opens_exactly_three_requests(
    engine: Engine, postgis_url: str
) -> None:
    registered = register(engine)
    assert sorted(registered.streets) == sorted([JQ, CDZ, YMK])
    requests = store.read_consultation_requests(engine, consultation_id=registered.consultation_id)
    assert len(requests) == 3
    assert requests["direct"].all()
    assert all(len(c) > 0 for c in requests["community_codes"])
    assert _postgis_buffer_count(postgis_url, engine, 0.0) == 3

    buffered = register(engine, buffer_m=500.0)
    expected = _postgis_buffer_count(postgis_url, engine, 500.0)
    assert len(buffered.streets) == expected == 4
    requests = store.read_consultation_requests(engine, consultation_id=buffered.consultation_id)
    assert requests.loc[requests["street_code"] == XH, "direct"].tolist() == [False]


def test_each_request_is_due_in_the_items_working_days(engine: Engine) -> None:
    registered = register(engine, at=datetime.fromisoformat("2026-02-13T10:00+08:00"))
    due = store.read_consultation_requests(engine, consultation_id=registered.consultation_id)
    # P-DET-09 allows 10 working days: 14 Feb, 24-27 Feb, 28 Feb, 2-5 March.
    assert (due["due_at"] == datetime.fromisoformat("2026-03-06T00:00+08:00")).all()


def test_a_footprint_outside_the_district_is_refused(engine: Engine) -> None:
    with pytest.raises(InputError, match="reaches no street"):
        register(engine, wkt="LINESTRING (100 20, 100.01 20.01)")
    assert store.read_footprint_consultations(engine).empty


# ------------------------------------------------------------------------------- the record


def test_answer_adoption_and_acceptance_are_tracked(engine: Engine) -> None:
    cid = register(engine).consultation_id
    rid = request_of(engine, cid, CDZ)
    street = street_scope(CDZ)
    with pytest.raises(ConsultationError, match="not answered"):
        consult.adopt(engine, DEPARTMENT, rid, adoption="adopted", reason=None, at=T0, actor="d")
    with pytest.raises(InputError, match="needs its text"):
        consult.respond(engine, street, rid, opinion="disagree", text="", at=T0, actor="s")
    consult.respond(
        engine,
        street,
        rid,
        opinion="disagree",
        text="下沉广场易积水,居民反对",
        at=T0 + timedelta(days=3),
        actor="s",
        attachments=["居民意见汇总.pdf"],
    )
    with pytest.raises(ConsultationError, match="answered"):
        consult.respond(engine, street, rid, opinion="agree", text=None, at=T0, actor="s")
    with pytest.raises(InputError, match="reason"):
        consult.adopt(engine, DEPARTMENT, rid, adoption="not_adopted", reason="", at=T0, actor="d")
    consult.adopt(
        engine,
        DEPARTMENT,
        rid,
        adoption="adopted",
        reason=None,
        at=T0 + timedelta(days=5),
        actor="d",
    )
    with pytest.raises(ConsultationError, match="already"):
        consult.adopt(engine, DEPARTMENT, rid, adoption="partly", reason="x", at=T0, actor="d")

    later = T0 + timedelta(days=60)
    with pytest.raises(InputError, match="reasons"):
        consult.accept(engine, street, rid, accepted=False, reason=None, at=later, actor="s")
    consult.accept(engine, street, rid, accepted=False, reason="铺装未完成", at=later, actor="s")
    consult.accept(
        engine, street, rid, accepted=True, reason=None, at=later + timedelta(days=7), actor="s"
    )
    with pytest.raises(ConsultationError, match="signed off"):
        consult.accept(engine, street, rid, accepted=True, reason=None, at=later, actor="s")

    row = store.read_request(engine, rid)
    assert (row["opinion"], row["adoption"], row["accepted"], row["refusals"]) == (
        "disagree",
        "adopted",
        True,
        1,
    )
    events = store.read_consultation_events(engine, cid)
    assert events["action"].tolist() == ["register", "respond", "adopt", "accept", "accept"]
    assert events.loc[1, "data"] == {"attachments": ["居民意见汇总.pdf"]}


def test_acceptance_is_only_for_items_that_give_the_street_a_say(engine: Engine) -> None:
    cid = register(engine, item_code="P-DET-03", stage="drafting").consultation_id
    rid = request_of(engine, cid, CDZ)
    with pytest.raises(ConsultationError, match="no say in acceptance"):
        consult.accept(engine, street_scope(CDZ), rid, accepted=True, reason=None, at=T0, actor="s")


def test_the_record_is_append_only(engine: Engine) -> None:
    cid = register(engine).consultation_id
    for statement in (
        "UPDATE consultation_events SET actor = 'someone else'",
        "DELETE FROM consultation_events",
        "UPDATE consultation_requests SET due_at = due_at",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    assert len(store.read_consultation_events(engine, cid)) == 1


# ------------------------------------------------------------------------------- scoping


def test_a_street_sees_its_requests_the_department_its_own_the_district_all(
    engine: Engine,
) -> None:
    cid = register(engine).consultation_id
    register(engine, department="区交通运输局", scope=ADMIN)
    assert len(consult.requests_in_scope(engine, ADMIN)) == 6
    mine = consult.requests_in_scope(engine, street_scope(CDZ))
    assert mine["street_code"].unique().tolist() == [CDZ] and len(mine) == 2
    assert set(consult.requests_in_scope(engine, DEPARTMENT)["consultation_id"]) == {cid}
    with pytest.raises(ForbiddenError):
        consult.requests_in_scope(engine, Scope("grid_worker", CDZ, "x", None, False))

    other = request_of(engine, cid, JQ)
    # Another street's request does not exist for this street; its own it may answer.
    with pytest.raises(Exception, match="no consultation request"):
        consult.respond(
            engine, street_scope(CDZ), other, opinion="agree", text=None, at=T0, actor="s"
        )
    with pytest.raises(ForbiddenError):
        consult.respond(
            engine, street_scope(JQ, "analyst"), other, opinion="agree", text=None, at=T0, actor="a"
        )
    consult.respond(engine, street_scope(JQ), other, opinion="agree", text=None, at=T0, actor="s")
    someone_else = Scope("department", None, None, None, False, department="区交通运输局")
    with pytest.raises(Exception, match="no consultation request"):
        consult.adopt(
            engine, someone_else, other, adoption="adopted", reason=None, at=T0, actor="x"
        )
    with pytest.raises(ForbiddenError):
        register(engine, scope=someone_else)  # registering for another department


# ------------------------------------------------------------------------------- supervision


def test_overdue_requests_are_supervised_street_then_district(engine: Engine) -> None:
    cid = register(engine).consultation_id
    answered = request_of(engine, cid, CDZ)
    consult.respond(
        engine,
        street_scope(CDZ),
        answered,
        opinion="conditional",
        text="保留树木",
        at=T0,
        actor="s",
    )
    due = store.read_request(engine, answered)["due_at"].to_pydatetime()
    assert consult.overdue(engine, due) == []  # at the deadline itself: on time
    just_late = consult.overdue(engine, due + timedelta(hours=1))
    assert {(o.street_code, o.stage, o.level) for o in just_late} == {
        (JQ, "answer", "street"),
        (YMK, "answer", "street"),
        (CDZ, "adoption", "street"),
    }
    much_later = due + timedelta(days=60)
    items = consult.supervise(engine, much_later)
    assert {o.level for o in items} == {"district"}
    events = store.read_consultation_events(engine, cid, action="supervise")
    # Each item supervised at the street, then the district.
    assert len(events) == 6
    assert sorted(events["level"].tolist()) == ["district"] * 3 + ["street"] * 3
    consult.supervise(engine, much_later)
    assert len(store.read_consultation_events(engine, cid, action="supervise")) == 6


# ------------------------------------------------------------------------------- suggestions


def test_suggestions_are_attached_to_the_open_consultation_that_covers_them(
    engine: Engine,
) -> None:
    cid = register(engine, footprint=read_footprint("POINT (104.0079 30.706)", radius_m=400))
    inside = (104.0079, 30.7075)
    outside = (104.0300, 30.7300)
    got = consult.suggest(
        engine, ADMIN, lon=inside[0], lat=inside[1], text="保留篮球场", at=T0, actor="grid"
    )
    assert got == [cid.consultation_id]
    with pytest.raises(ConsultationError, match="no open consultation"):
        consult.suggest(
            engine, ADMIN, lon=outside[0], lat=outside[1], text="修路灯", at=T0, actor="grid"
        )
    rid = request_of(engine, cid.consultation_id, CDZ)
    assert store.read_request(engine, rid)["suggestions"] == 1
    events = store.read_consultation_events(engine, cid.consultation_id, action="suggest")
    assert events["community_code"].str.startswith("5101060310").all()
    # Once the street has answered, its consultation takes no more suggestions.
    consult.respond(engine, street_scope(CDZ), rid, opinion="agree", text=None, at=T0, actor="s")
    with pytest.raises(ConsultationError):
        consult.suggest(engine, ADMIN, lon=inside[0], lat=inside[1], text="x", at=T0, actor="g")


# ------------------------------------------------------------------------------- figures


@pytest.mark.postgis
def test_report_figures_equal_plain_sql(postgis_schema_url: str) -> None:
    store.init_db(postgis_schema_url)
    pg = store.create_engine_from_url(postgis_schema_url)
    try:
        areas = gpd.read_parquet(DATA / "jinniu_areas.parquet")
        store.load_areas(pg, areas[areas["level"].isin(["district", "street", "community"])])
        _story(pg)
        streets, departments = consult.figures(pg)
        with pg.connect() as connection:
            by_street = {r.street_code: r for r in connection.execute(text(_STREET_SQL)).all()}
            by_department = {
                r.department: r for r in connection.execute(text(_DEPARTMENT_SQL)).all()
            }
    finally:
        pg.dispose()
    assert set(streets["street_code"]) == set(by_street)
    for row in streets.to_dict("records"):
        sql = by_street[row["street_code"]]
        assert row["requests"] == sql.requests
        assert row["answered_on_time"] == sql.on_time
        assert row["on_time_rate"] == pytest.approx(float(sql.on_time_rate))
        assert row["acceptance_refusals"] == sql.refusals
        _same_share(row["adopted_share"], sql.adopted_share)
    for row in departments.to_dict("records"):
        sql = by_department[row["department"]]
        assert (row["requests"], row["requests_late"]) == (sql.requests, sql.late)
        _same_share(row["adopted_share"], sql.adopted_share)
    assert streets["on_time_rate"].notna().all() and departments["requests_late"].sum() > 0


def _same_share(ours: float, sql: Any) -> None:
    if sql is None:
        assert ours != ours  # NaN: nothing decided
    else:
        assert ours == pytest.approx(float(sql))


def _story(engine: Engine) -> None:
    """Two departments, on-time and late answers, adoptions of each kind, a refusal."""
    first = register(engine, buffer_m=500.0).consultation_id
    second = register(
        engine, item_code="P-OVR-01", stage="approval", department="区交通运输局", scope=ADMIN
    ).consultation_id  # late: meant for appraisal
    for n, street in enumerate([JQ, CDZ, YMK, XH]):
        rid = request_of(engine, first, street)
        at = T0 + timedelta(days=2 + 10 * (n % 2))  # every other answer late
        consult.respond(engine, ADMIN, rid, opinion="disagree", text="意见", at=at, actor="s")
        if n < 3:
            adoption = ("adopted", "partly", "not_adopted")[n]
            consult.adopt(engine, ADMIN, rid, adoption=adoption, reason="理由", at=at, actor="d")
    rid = request_of(engine, first, CDZ)
    consult.accept(
        engine, ADMIN, rid, accepted=False, reason="未完工", at=T0 + timedelta(days=30), actor="s"
    )
    rid = request_of(engine, second, CDZ)
    consult.respond(engine, ADMIN, rid, opinion="agree", text=None, at=T0, actor="s")


_STREET_SQL = """
WITH answers AS (
    SELECT request_id, min(at) AS at FROM consultation_events WHERE action = 'respond'
    GROUP BY request_id
), adoptions AS (
    SELECT DISTINCT ON (request_id) request_id, adoption FROM consultation_events
    WHERE action = 'adopt' ORDER BY request_id, event_id
), refusals AS (
    SELECT request_id, count(*) AS n FROM consultation_events
    WHERE action = 'accept' AND NOT accepted GROUP BY request_id
)
SELECT r.street_code,
       count(*) AS requests,
       count(*) FILTER (WHERE a.at <= r.due_at) AS on_time,
       count(*) FILTER (WHERE a.at <= r.due_at)::float / count(*) AS on_time_rate,
       coalesce(sum(f.n), 0) AS refusals,
       (count(*) FILTER (WHERE d.adoption IN ('adopted', 'partly')))::float
           / nullif(count(d.adoption), 0) AS adopted_share
FROM consultation_requests r
LEFT JOIN answers a USING (request_id)
LEFT JOIN adoptions d USING (request_id)
LEFT JOIN refusals f USING (request_id)
GROUP BY r.street_code
"""

_DEPARTMENT_SQL = """
WITH adoptions AS (
    SELECT DISTINCT ON (request_id) request_id, adoption FROM consultation_events
    WHERE action = 'adopt' ORDER BY request_id, event_id
)
SELECT c.department,
       count(*) AS requests,
       count(*) FILTER (WHERE c.late) AS late,
       (count(*) FILTER (WHERE d.adoption IN ('adopted', 'partly')))::float
           / nullif(count(d.adoption), 0) AS adopted_share
FROM consultation_requests r
JOIN consultations c USING (consultation_id)
LEFT JOIN adoptions d USING (request_id)
GROUP BY c.department
"""


# ------------------------------------------------------------------------------- command line


def test_the_command_line_registers_answers_adopts_accepts_and_supervises(
    sqlite_url: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gridgov.cli import app

    store.init_db(sqlite_url)
    engine = store.create_engine_from_url(sqlite_url)
    try:
        areas = gpd.read_parquet(DATA / "jinniu_areas.parquet")
        store.load_areas(engine, areas[areas["level"].isin(["district", "street", "community"])])
    finally:
        engine.dispose()
    runner = CliRunner()

    def ok(*args: str) -> str:
        result = runner.invoke(app, [*args, "--url", sqlite_url])
        assert result.exit_code == 0, result.output
        return result.output

    plan = tmp_path / "plan.geojson"
    plan.write_text(shapely.to_geojson(shapely.from_wkt(THREE_STREETS)), encoding="utf-8")
    registered = ok(
        "consult", "register", "--item", "P-DET-09", "--stage", "implementation",
        "--title", "广场改造", "--letter", "征求意见", "--department", DEPT,
        "--footprint", str(plan), "--by", "住建局", "--at", "2026-03-02T09:00",
    )  # fmt: skip
    assert "3 street(s) asked" in registered and CDZ in registered
    listed = json.loads(ok("consult", "list", "--street", CDZ))
    assert [(r["kind"], r["street_code"]) for r in listed] == [("planning", CDZ)]
    rid = str(listed[0]["request_id"])
    ok("consult", "respond", rid, "--opinion", "disagree", "--text", "反对", "--by", "茶店子",
       "--at", "2026-03-03T09:00")  # fmt: skip
    ok(
        "consult",
        "adopt",
        rid,
        "--adoption",
        "adopted",
        "--by",
        "住建局",
        "--at",
        "2026-03-04T09:00",
    )
    refused = ok("consult", "accept", rid, "--refuse", "--reason", "未完工", "--by", "茶店子")
    assert "refused" in refused
    bad = runner.invoke(app, ["consult", "adopt", rid, "--adoption", "maybe", "--by", "x",
                              "--url", sqlite_url])  # fmt: skip
    assert bad.exit_code == 1 and "adoption 'maybe'" in bad.output
    # The same group under its first name.
    assert json.loads(ok("consultation", "list", "--kind", "planning"))[0]["kind"] == "planning"

    supervised = ok("supervise", "--at", "2026-05-01T09:00")
    assert "consultation requests overdue: 2" in supervised
    assert "district" in supervised
    # The report's consultation rows: the requests sent in March 2026.
    rows = list(csv.DictReader(io.StringIO(ok("report", "--period", "2026-03", "--level",
                                              "consult-street"))))  # fmt: skip
    assert {r["street_code"] for r in rows} == {JQ, CDZ, YMK}
    mine = next(r for r in rows if r["street_code"] == CDZ)
    assert (mine["requests"], mine["answered_on_time"], mine["acceptance_refusals"]) == (
        "1",
        "1",
        "1",
    )
    assert float(mine["on_time_rate"]) == 1.0 and float(mine["adopted_share"]) == 1.0
    text = ok("report", "--period", "2026-03", "--level", "consult-department")
    departments = list(csv.DictReader(io.StringIO(text)))
    assert [(d["department"], d["requests"]) for d in departments] == [(DEPT, "3")]
    assert ok("report", "--period", "2026-04", "--level", "consult-street").strip() == (
        "period,street_code,requests,answered,answered_on_time,on_time_rate,opinions_decided,"
        "opinions_adopted,adopted_share,acceptance_refusals"
    )

    # The consultation map: the footprint, the streets asked coloured by their answer, and the
    # residents' suggestions as points.
    # On the line itself (a vertex, in 金泉, whose street has not answered yet).
    ok("consult", "suggest", "103.99", "30.712", "--text", "保留篮球场", "--by", "网格员")
    cid = str(listed[0]["consultation_id"])
    page = tmp_path / "consultation.html"
    ok("map", "consultation", "--consultation", cid, "--out", str(page), "--base", "none")
    text = page.read_text(encoding="utf-8")
    assert "广场改造" in text and "保留篮球场" in text
    assert "#d73027" in text and "#bdbdbd" in text  # 茶店子 objected; the others not answered
    missing = runner.invoke(app, ["map", "consultation", "--out", str(page), "--url", sqlite_url])
    assert missing.exit_code == 1 and "--consultation" in missing.output


# ------------------------------------------------------------------------------- migration


def test_migration_0009_keeps_appointments_and_goes_back(store_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = store.create_engine_from_url(store_url)

    def migrate(step: Any, target: str) -> None:
        with engine.begin() as connection:
            cfg = Config()
            cfg.set_main_option("script_location", str(Path(store.__file__).parent / "migrations"))
            cfg.attributes["connection"] = connection
            step(cfg, target)

    try:
        migrate(command.upgrade, "0005")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO consultations (office_id, department, street_code, head_name, "
                    "proposed_move, consulted_at, letter, recorded_by) VALUES ('OF-1', '公安', "
                    f"'{CDZ}', '李四', 'promotion', :at, '函', 'test')"
                ),
                {"at": T0.replace(tzinfo=None) if "sqlite" in store_url else T0},
            )
        migrate(command.upgrade, "0009")
        kept = store.read_consultations(engine)
        assert kept["head_name"].tolist() == ["李四"]
        with engine.connect() as connection:
            kind = connection.execute(text("SELECT kind FROM consultations")).scalar_one()
        assert kind == "appointment"
        migrate(command.downgrade, "0005")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM consultations")).scalar() == 1
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------- HTML report


def test_the_html_report_has_the_consultation_tables() -> None:
    from test_assessment import CATALOG, EVENTS, INCIDENTS, OCT, OFFICES

    from gridgov.assessment import assess
    from gridgov.consultation_review import consultation_figures
    from gridgov.report import report_html

    sent = pd.Timestamp("2026-10-05T01:00Z")
    requests = pd.DataFrame(
        {
            "request_id": [1, 2],
            "street_code": [CDZ, JQ],
            "department": [DEPT, DEPT],
            "late": [False, True],
            "sent_at": [sent, sent],
            "due_at": [sent + pd.Timedelta(days=14)] * 2,
            "answered_at": [sent + pd.Timedelta(days=3), pd.NaT],
            "adoption": ["adopted", None],
            "refusals": [1, 0],
        }
    )
    html = report_html(
        assess(EVENTS, INCIDENTS, OFFICES, CATALOG, OCT),
        street_names={CDZ: "茶店子街道"},
        consultations=consultation_figures(requests),
    )
    streets = re.search(r'<table id="consult-streets">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert streets is not None
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", streets[1])
    ]
    cdz = next(r for r in rows if r[1] == CDZ)
    assert cdz[0] == "茶店子街道" and cdz[2:6] == ["1", "1", "1", "100.0%"]
    assert cdz[-1] == "1"  # one acceptance refusal
    assert 'id="consult-departments"' in html and "sent late" in html


def test_an_appointment_consultation_keeps_the_same_append_only_record(engine: Engine) -> None:
    cid = store.record_consultation(
        engine,
        office_id="OF-1",
        head_name="李四",
        proposed_move="promotion",
        letter="关于李四同志职务调整征求意见的函",
        consulted_at=T0,
        recorded_by="区公安分局",
        department="区公安分局",
        street_code=CDZ,
    )
    store.record_street_opinion(
        engine, cid, opinion="conditional", opinion_at=T0 + timedelta(days=1), opinion_text="试用期"
    )
    events = store.read_consultation_events(engine, cid)
    assert events["action"].tolist() == ["register", "respond"]
    assert events.loc[1, "opinion"] == "conditional" and events.loc[1, "street_code"] == CDZ
    # Appointments are not footprinted consultations: no requests, not in the requests list.
    assert store.read_consultation_requests(engine).empty
