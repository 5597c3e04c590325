"""Assessment reports: CSV round-trips, the HTML page's content and escaping, and the page in
headless Chromium (no errors, nothing loaded from outside, the SVG charts drawn)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from browser import watch
from test_assessment import CATALOG, ENF, EVENTS, INCIDENTS, OCT, OFFICES, S1, S2

from gridgov.assessment import Assessment, assess, department_scores_from_frame
from gridgov.errors import InputError
from gridgov.kpis import KPI_COLUMNS, compute_kpis
from gridgov.report import DASH, report_csv, report_html


def _assessment(**kw: Any) -> Assessment:
    return assess(EVENTS, INCIDENTS, OFFICES, CATALOG, OCT, **kw)


A = _assessment()


def _read(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype={"office_id": str, "street_code": str})


# ---------------------------------------------------------------------------------------------
# CSV


def test_csv_of_the_office_table_round_trips_through_pandas() -> None:
    back = _read(report_csv(A))
    assert list(back.columns) == ["period", *A.offices.columns]
    assert set(KPI_COLUMNS) <= set(back.columns)
    assert (back["period"] == "2026-10").all()
    assert back["office_id"].tolist() == A.offices["office_id"].tolist()
    for column in [*KPI_COLUMNS, "street_score", "department_score", "assessment", "rank"]:
        expected = A.offices[column].astype("float64").to_numpy()
        np.testing.assert_array_equal(back[column].to_numpy(dtype="float64"), expected)
    # NaN is an empty field, never "nan" or 0.
    o2 = back[back["office_id"] == "O2"].iloc[0]
    assert pd.isna(o2["rework_rate"]) and pd.isna(o2["satisfaction_rate"])
    assert ",nan," not in report_csv(A).lower()


def test_csv_of_a_plain_kpi_frame_is_the_frame() -> None:
    kpis = compute_kpis(EVENTS, INCIDENTS, OFFICES, CATALOG, OCT, by="street")
    back = _read(report_csv(kpis))
    pd.testing.assert_frame_equal(back, kpis, check_dtype=False)


@pytest.mark.parametrize(
    ("level", "key", "table"),
    [
        ("department", "department", A.departments),
        ("street", "street_code", A.streets),
        ("district", "district", A.district),
    ],
)
def test_csv_of_the_other_tables(level: str, key: str, table: pd.DataFrame) -> None:
    back = _read(report_csv(A, level=level))
    assert key in back.columns and set(KPI_COLUMNS) <= set(back.columns)
    assert back[key].astype(str).tolist() == table[key].astype(str).tolist()


def test_csv_refuses_an_unknown_table() -> None:
    with pytest.raises(InputError, match="unknown report table"):
        report_csv(A, level="community")


# ---------------------------------------------------------------------------------------------
# HTML


def _cells(html: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None, table_id
    return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", body[1])]


def test_html_has_the_period_the_kpi_tables_and_the_definitions() -> None:
    html = report_html(A)
    assert html.startswith("<!DOCTYPE html>")
    assert "2026-10" in html and "2026-10-01 00:00 – 2026-11-01 00:00" in html
    assert "Asia/Shanghai" in html and "whole district" in html
    for heading in ("响应率", "结案率", "按期结案率", "返工率", "满意率", "response rate"):
        assert heading in html
    rows = _cells(html, "kpi-offices")
    # Ranked: O1 (64.2), O3 (45.0), O2 (0.0); rank, rank in kind, name, id, kind, department...
    assert [r[3] for r in rows] == ["O1", "O3", "O2"]
    assert rows[0][:6] == ["1", "1", "西安路执法中队", "O1", "综合执法中队", ENF]
    assert rows[1][4] == "派出所"
    o1 = dict(zip(("calls", "on_time", "response_rate"), rows[0][6:9], strict=True))
    assert o1 == {"calls": "4", "on_time": "2", "response_rate": "50.0%"}
    assert "64.2" in rows[0]
    # O2's rework and satisfaction rates are undefined: a dash, never 0.
    assert rows[2].count(DASH) >= 4
    assert len(_cells(html, "kpi-departments")) == 2
    assert [r[1] for r in _cells(html, "kpi-streets")] == [S1, S2]
    assert "five-powers floor 0.5" in html and "floor 0.3" in html
    assert 'id="no-department-scores"' in html
    assert "Rework rate" in html and "Satisfaction rate" in html


def test_html_with_department_scores_has_no_missing_scores_note() -> None:
    scores = department_scores_from_frame(
        pd.DataFrame({"office_id": ["O1", "O2", "O3"], "score": [80, 90, 60]}), OFFICES
    )
    html = report_html(_assessment(department_scores=scores, office_weight=0.7))
    assert 'id="no-department-scores"' not in html
    assert "w = 0.7" in html
    o1 = _cells(html, "kpi-offices")[0]
    assert o1[-1] == f"{0.7 * 100 * (0.125 + 0.2 / 3 + 0.1 + 0.15 + 0.2) + 0.3 * 80:.1f}"


def test_html_draws_the_charts_in_svg() -> None:
    html = report_html(A)
    assert html.count('<svg class="chart"') == 3
    rates = re.search(r'<svg class="chart" id="chart-rates".*?</svg>', html, re.S)
    assert rates is not None
    # O1 and O3 have all five rates, O2 three (its rework and satisfaction are undefined).
    assert rates[0].count('<rect class="bar"') == 13
    levels = re.search(r'<svg class="chart" id="chart-levels".*?</svg>', html, re.S)
    assert levels is not None
    # District 4 levels, O1 3, O3 2, O2 2.
    assert levels[0].count('<rect class="segment"') == 11


def test_html_loads_nothing_and_runs_nothing() -> None:
    html = report_html(A).lower()
    for banned in ("<script", "http:", "https:", "src=", "url(", "@import", "<link rel=\"style",
                   "<img", "<iframe", "<a "):  # fmt: skip
        assert banned not in html, banned
    assert re.findall(r'href="([^"]*)"', html) == ["data:,"]


def test_html_escapes_every_text() -> None:
    evil = '<script>alert("x")</script> & Co'
    offices = OFFICES.assign(name=[evil, "ok", "O3's <u>"], department=["A&B", ENF, "<i>"])
    a = assess(EVENTS, INCIDENTS, offices, CATALOG, OCT, street_code=S1)
    html = report_html(a, title="<Report> & more")
    assert "<script" not in html and "<u>" not in html and "<i>" not in html
    assert "O3&#x27;s &lt;u&gt;" in html and ">&lt;i&gt;<" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in html
    assert "A&amp;B" in html and "&lt;Report&gt; &amp; more" in html
    assert f"street {S1}" in html


def test_html_of_an_empty_period() -> None:
    a = assess(EVENTS.iloc[0:0], INCIDENTS, OFFICES, CATALOG, OCT)
    html = report_html(a)
    assert "no data" in html and html.count('<svg class="chart"') == 3


# ---------------------------------------------------------------------------------------------
# browser


@pytest.mark.browser
def test_the_report_opens_in_chromium_without_errors_or_outside_requests(
    chromium: object, tmp_path: Path
) -> None:
    path = tmp_path / "report.html"
    path.write_text(report_html(A), encoding="utf-8")
    page = chromium.new_page()  # type: ignore[attr-defined]
    log = watch(page)
    try:
        page.goto(path.as_uri())
        page.wait_for_load_state("load")
        assert page.locator("svg.chart").count() == 3
        assert page.locator("#chart-rates rect.bar").count() == 13
        assert page.locator("#chart-levels rect.segment").count() == 11
        assert page.locator("#chart-streets rect.bar").count() == 2
        for chart in ("#chart-rates", "#chart-levels", "#chart-streets"):
            box = page.locator(chart).bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 20, chart
        # A rate of 50 % draws half the panel: the SVG is laid out, not just present.
        widths = page.eval_on_selector_all(
            "#chart-rates rect.bar[data-rate=response_rate]",
            "els => els.map(e => e.getBoundingClientRect().width)",
        )
        assert sorted(widths) == pytest.approx([0.0, 65.0, 130.0], abs=0.6)
        assert page.locator("#kpi-offices tbody tr").count() == 3
    finally:
        page.close()
    assert log.errors == []
    assert log.external_requests() == []
    assert all(url.startswith("file:") for url in log.requests), log.requests


def test_streets_are_named_when_names_are_given() -> None:
    assert S1 in set(A.streets["street_code"])
    named = report_html(A, street_names={S1: "西安路街道"})
    assert "西安路街道" in "".join(c for row in _cells(named, "kpi-streets") for c in row)
    assert "西安路街道" in named.split('id="chart-streets"')[1]
    assert "西安路街道" not in report_html(A)
