"""Assessment reports: CSV tables and one self-contained HTML page with charts.

The HTML page is for command centres on closed networks: it loads nothing. The CSS is inline, the
charts are SVG drawn here in Python (no JavaScript at all, no fonts, images or links that
load), and every piece of text from the data is escaped. Headings are in Chinese and English.
An undefined rate (nothing to divide by) is shown as "–", never as 0.

:func:`report_csv` writes one table of an :class:`~gridgov.assessment.Assessment` (or any KPI
frame); missing values are empty fields, so ``pandas.read_csv`` gives them back as NaN.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from html import escape
from typing import Any

import pandas as pd

from gridgov.assessment import RATE_COLUMNS, Assessment
from gridgov.errors import InputError
from gridgov.model import ForceKind
from gridgov.settings import STREET_WEIGHT_FLOOR_DEPARTMENT, STREET_WEIGHT_FLOOR_OFFICE

__all__ = ["DASH", "report_csv", "report_html"]

#: What an undefined value (NaN) looks like in the HTML report.
DASH = "–"
TABLES = ("office", "department", "street", "district")

_RATE_LABELS = {
    "response_rate": ("响应率", "response"),
    "resolution_rate": ("结案率", "resolution"),
    "on_time_closure_rate": ("按期结案率", "on-time closure"),
    "rework_rate": ("返工率", "rework"),
    "satisfaction_rate": ("满意率", "satisfaction"),
}
_RATE_COLOURS = {
    "response_rate": "#2f6db5",
    "resolution_rate": "#3a9a5b",
    "on_time_closure_rate": "#c98a1b",
    "rework_rate": "#c0392b",
    "satisfaction_rate": "#7b4fa6",
}
_LEVELS = (
    ("share_community", "社区", "community", "#4e9a6b"),
    ("share_street", "街道", "street", "#2f6db5"),
    ("share_neighbour", "相邻街道", "neighbour", "#c98a1b"),
    ("share_district", "区级", "district", "#c0392b"),
)

_CSS = """
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","Microsoft YaHei","PingFang SC",
 sans-serif;margin:24px;color:#1d2733;background:#fff;line-height:1.45}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:2px solid
 #2f6db5;padding-bottom:3px}.en{color:#5a6573;font-weight:normal;font-size:.85em}
.meta{color:#44505e;margin:2px 0}table{border-collapse:collapse;font-size:.85em;margin:6px 0}
th,td{border:1px solid #ccd3db;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#eef2f6;text-align:center}td.t{text-align:left}
tr:nth-child(even) td{background:#f8fafc}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ccd3db;border-radius:6px;
 padding:8px 12px;min-width:120px}.card .v{font-size:1.4em;font-weight:bold}
.note{background:#fff8e6;border-left:4px solid #c98a1b;padding:6px 10px}
svg.chart{display:block;margin:8px 0;font-size:11px}svg.chart text{fill:#1d2733}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;
 height:12px;margin-right:4px;vertical-align:-1px}
dl.defs dt{font-weight:bold;margin-top:6px}dl.defs dd{margin-left:18px}
"""


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def report_csv(table: Assessment | pd.DataFrame, *, level: str = "office") -> str:
    """Return a KPI table as CSV text (UTF-8; a header row; NaN as an empty field).

    Parameters
    ----------
    table
        An :class:`~gridgov.assessment.Assessment` (its ``level`` table, with a leading
        ``period`` column) or any frame (written as it is, without its index).
    level
        With an assessment: ``"office"`` (KPIs, scores, ranks), ``"department"``, ``"street"``
        or ``"district"``.

    Returns
    -------
    str
        The CSV text. Floats keep their full precision, so the file reads back equal.
    """
    if isinstance(table, Assessment):
        frame = _assessment_table(table, level)
        frame = frame.copy()
        frame.insert(0, "period", table.period.label)
    else:
        frame = table
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def _assessment_table(a: Assessment, level: str) -> pd.DataFrame:
    tables = {
        "office": a.offices,
        "department": a.departments,
        "street": a.streets,
        "district": a.district,
    }
    if level not in tables:
        msg = f"unknown report table {level!r}; expected one of {', '.join(TABLES)}"
        raise InputError(msg)
    return tables[level]


# ------------------------------------------------------------------------------------------
# formatting
# ------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _pct(value: Any) -> str:
    return DASH if _missing(value) else f"{100 * float(value):.1f}%"


def _num(value: Any) -> str:
    return DASH if _missing(value) else f"{float(value):.1f}"


def _int(value: Any) -> str:
    return DASH if _missing(value) else str(int(value))


def _txt(value: Any) -> str:
    return DASH if _missing(value) else str(value)


def _kind(value: Any) -> str:
    if _missing(value):
        return DASH
    try:
        return ForceKind(str(value)).zh
    except ValueError:
        return str(value)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


# One row of a table, as ``DataFrame.to_dict("records")`` gives it.
_Record = Mapping[Any, Any]


def _get(record: _Record, key: str) -> Any:
    return record.get(key)


# A column of an HTML table: (zh heading, en heading, field, formatter, is text).
_Column = tuple[str, str, str, Callable[[Any], str], bool]

_KPI_TAIL: tuple[_Column, ...] = (
    ("呼叫", "calls", "calls", _int, False),
    ("按时响应", "on time", "responded_on_time", _int, False),
    ("响应率", "response rate", "response_rate", _pct, False),
    ("响应均值", "resp. mean min", "response_mean_min", _num, False),
    ("响应P90", "resp. p90 min", "response_p90_min", _num, False),
    ("到场均值", "arr. mean min", "arrival_mean_min", _num, False),
    ("到场P90", "arr. p90 min", "arrival_p90_min", _num, False),
    ("案件", "cases", "cases", _int, False),
    ("结案率", "resolution", "resolution_rate", _pct, False),
    ("按期结案率", "on-time closure", "on_time_closure_rate", _pct, False),
    ("返工率", "rework", "rework_rate", _pct, False),
    ("满意率", "satisfaction", "satisfaction_rate", _pct, False),
    ("街道评分", "street score", "street_score", _num, False),
)
_OFFICE_COLUMNS: tuple[_Column, ...] = (
    ("排名", "rank", "rank", _int, False),
    ("类内", "in kind", "rank_in_kind", _int, False),
    ("站所", "office", "name", _txt, True),
    ("编号", "id", "office_id", _txt, True),
    ("类别", "kind", "kind", _kind, True),
    ("部门", "department", "department", _txt, True),
    *_KPI_TAIL,
    ("部门评分", "department score", "department_score", _num, False),
    ("综合考核", "assessment", "assessment", _num, False),
)
_DEPARTMENT_COLUMNS: tuple[_Column, ...] = (
    ("排名", "rank", "rank", _int, False),
    ("部门", "department", "department", _txt, True),
    *_KPI_TAIL,
    ("街道评价部分", "street part", "street_part", _num, False),
    ("部门自评", "department own", "department_own", _num, False),
    ("年度绩效", "performance", "performance", _num, False),
)
_STREET_COLUMNS: tuple[_Column, ...] = (
    ("排名", "rank", "rank", _int, False),
    ("街道", "street", "street_name", _txt, True),
    ("代码", "code", "street_code", _txt, True),
    *_KPI_TAIL,
    *((zh, en, field, _pct, False) for field, zh, en, _ in _LEVELS),
)


_OVERRIDE_COLUMNS: tuple[_Column, ...] = (
    ("范围", "by", "group", _txt, True),
    ("街道/调度员", "street / dispatcher", "key", _txt, True),
    ("人工派遣", "decisions", "decisions", _int, False),
    ("改派推荐", "overrides", "overrides", _int, False),
    ("改派率", "override rate", "override_rate", _pct, False),
    ("多用时 秒", "extra travel s", "extra_travel_s", _num, False),
    ("每次多用时 秒", "extra s per override", "mean_extra_travel_s", _num, False),
)


_CONSULT_STREET_COLUMNS: tuple[_Column, ...] = (
    ("街道", "street", "street_name", _txt, True),
    ("代码", "code", "street_code", _txt, True),
    ("收到征询", "requests received", "requests", _int, False),
    ("已答复", "answered", "answered", _int, False),
    ("按时答复", "answered on time", "answered_on_time", _int, False),
    ("按时答复率", "on-time rate", "on_time_rate", _pct, False),
    ("意见被采纳", "opinions adopted", "opinions_adopted", _int, False),
    ("采纳率", "adopted share", "adopted_share", _pct, False),
    ("拒绝验收", "acceptance refusals", "acceptance_refusals", _int, False),
)
_CONSULT_DEPARTMENT_COLUMNS: tuple[_Column, ...] = (
    ("部门", "department", "department", _txt, True),
    ("发出征询", "requests sent", "requests", _int, False),
    ("逾期阶段发出", "sent late", "requests_late", _int, False),
    ("已处理意见", "opinions decided", "opinions_decided", _int, False),
    ("采纳街道意见", "opinions adopted", "opinions_adopted", _int, False),
    ("采纳率", "adopted share", "adopted_share", _pct, False),
)


def _consultation_section(
    figures: tuple[pd.DataFrame, pd.DataFrame], street_names: Mapping[str, str] | None
) -> list[str]:
    streets, departments = figures
    streets = streets.assign(street_name=streets["street_code"].map(street_names or {}))
    return [
        '<section id="consultations"><h2>规划参与与重大决策征询 <span class="en">Consultations '
        "of the streets (powers 2 and 4), by when the request was sent</span></h2>",
        "<h3>各街道 <span class='en'>Streets</span></h3>",
        _table(streets, _CONSULT_STREET_COLUMNS, "consult-streets"),
        "<h3>各部门 <span class='en'>Departments</span></h3>",
        _table(departments, _CONSULT_DEPARTMENT_COLUMNS, "consult-departments"),
        '<p class="meta">采纳 = 全部或部分采纳 · adopted = fully or partly; sent late = '
        "after the stage its item was meant for.</p></section>",
    ]


def _table(frame: pd.DataFrame, columns: Sequence[_Column], table_id: str) -> str:
    present = [c for c in columns if c[2] in frame.columns]
    head = "".join(
        f'<th scope="col">{_e(zh)}<br><span class="en">{_e(en)}</span></th>'
        for zh, en, *_ in present
    )
    rows = []
    for record in frame.to_dict("records"):
        cells = "".join(
            f'<td class="t">{_e(fmt(record[f]))}</td>' if text else f"<td>{_e(fmt(record[f]))}</td>"
            for _, _, f, fmt, text in present
        )
        rows.append(f"<tr>{cells}</tr>")
    if not rows:
        rows.append(f'<tr><td class="t" colspan="{len(present)}">无数据 no data</td></tr>')
    return (
        f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# ------------------------------------------------------------------------------------------
# charts (SVG)
# ------------------------------------------------------------------------------------------

_ROW_H = 16
_LABEL_W = 190
_PANEL_W = 130
_PANEL_GAP = 14
_TOP = 34


def _label(record: _Record) -> str:
    # The office's name reads best on a chart; its id is in the tooltip and the table.
    name = _get(record, "name")
    return _txt(_get(record, "office_id")) if _missing(name) else str(name)


def _tip(record: _Record) -> str:
    ident = _get(record, "office_id")
    return _label(record) if _missing(ident) else f"{_label(record)} ({ident})"


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rates_chart(offices: pd.DataFrame) -> str:
    """Five small bar panels side by side: one row per office, one panel per rate."""
    records = offices.to_dict("records")
    width = _LABEL_W + len(RATE_COLUMNS) * (_PANEL_W + _PANEL_GAP)
    height = _TOP + max(1, len(records)) * _ROW_H + 8
    parts = [
        f'<svg class="chart" id="chart-rates" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
        "<title>五项指标（各站所） The five rates per office</title>"
    ]
    for j, rate in enumerate(RATE_COLUMNS):
        x0 = _LABEL_W + j * (_PANEL_W + _PANEL_GAP)
        zh, en = _RATE_LABELS[rate]
        parts.append(
            f'<text x="{x0}" y="12" font-weight="bold">{_e(zh)}</text>'
            f'<text x="{x0}" y="26" class="en">{_e(en)}</text>'
            f'<line x1="{x0}" y1="{_TOP - 2}" x2="{x0}" y2="{height - 6}" stroke="#9aa5b1"/>'
            f'<line x1="{x0 + _PANEL_W}" y1="{_TOP - 2}" x2="{x0 + _PANEL_W}" '
            f'y2="{height - 6}" stroke="#dde3ea" stroke-dasharray="2,2"/>'
        )
    for i, record in enumerate(records):
        y = _TOP + i * _ROW_H
        label = _label(record)
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 11}" text-anchor="end">{_e(_short(label))}</text>'
        )
        for j, rate in enumerate(RATE_COLUMNS):
            x0 = _LABEL_W + j * (_PANEL_W + _PANEL_GAP)
            value = _get(record, rate)
            zh, en = _RATE_LABELS[rate]
            tip = f"{_tip(record)} · {zh} {en}: {_pct(value)}"
            if _missing(value):
                parts.append(
                    f'<text x="{x0 + 4}" y="{y + 11}" fill="#8a96a3">{DASH}'
                    f"<title>{_e(tip)}</title></text>"
                )
                continue
            w = max(0.0, min(1.0, float(value))) * _PANEL_W
            parts.append(
                f'<rect class="bar" data-rate="{rate}" x="{x0}" y="{y + 2}" width="{w:.1f}" '
                f'height="{_ROW_H - 4}" fill="{_RATE_COLOURS[rate]}">'
                f"<title>{_e(tip)}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _levels_chart(rows: list[tuple[str, _Record]]) -> str:
    """One 100 % stacked bar per row (the district first, then each office)."""
    bar_w = 420
    width = _LABEL_W + bar_w + 20
    height = 10 + max(1, len(rows)) * _ROW_H + 8
    parts = [
        f'<svg class="chart" id="chart-levels" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>处置层级占比 Share of calls handled at each '
        "level</title>"
    ]
    for i, (label, record) in enumerate(rows):
        y = 10 + i * _ROW_H
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 11}" text-anchor="end">{_e(_short(label))}</text>'
        )
        if _missing(_get(record, "share_community")):
            parts.append(f'<text x="{_LABEL_W + 4}" y="{y + 11}" fill="#8a96a3">{DASH}</text>')
            continue
        x = float(_LABEL_W)
        for field, zh, en, colour in _LEVELS:
            share = _get(record, field)
            if _missing(share) or float(share) <= 0:
                continue
            w = float(share) * bar_w
            tip = f"{label} · {zh} {en}: {_pct(share)}"
            parts.append(
                f'<rect class="segment" data-level="{en}" x="{x:.1f}" y="{y + 2}" '
                f'width="{w:.1f}" height="{_ROW_H - 4}" fill="{colour}">'
                f"<title>{_e(tip)}</title></rect>"
            )
            x += w
    parts.append("</svg>")
    return "".join(parts)


def _score_chart(streets: pd.DataFrame) -> str:
    """Street scores (0-100) of each street, as horizontal bars."""
    bar_w = 420
    records = streets.to_dict("records")
    width = _LABEL_W + bar_w + 60
    height = 10 + max(1, len(records)) * _ROW_H + 8
    parts = [
        f'<svg class="chart" id="chart-streets" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>各街道评分 Street score of each street</title>'
    ]
    for i, record in enumerate(records):
        y = 10 + i * _ROW_H
        label = _txt(_get(record, "street_name") or _get(record, "street_code"))
        score = _get(record, "street_score")
        parts.append(f'<text x="{_LABEL_W - 6}" y="{y + 11}" text-anchor="end">{_e(label)}</text>')
        if _missing(score):
            parts.append(f'<text x="{_LABEL_W + 4}" y="{y + 11}" fill="#8a96a3">{DASH}</text>')
            continue
        w = max(0.0, min(100.0, float(score))) / 100 * bar_w
        parts.append(
            f'<rect class="bar" x="{_LABEL_W}" y="{y + 2}" width="{w:.1f}" '
            f'height="{_ROW_H - 4}" fill="#2f6db5"><title>{_e(label)}: {_num(score)}</title>'
            f'</rect><text x="{_LABEL_W + w + 4:.1f}" y="{y + 11}">{_num(score)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    spans = "".join(
        f'<span><i style="background:{colour}"></i>{_e(text)}</span>' for text, colour in items
    )
    return f'<p class="legend">{spans}</p>'


# ------------------------------------------------------------------------------------------
# the page
# ------------------------------------------------------------------------------------------


def _card(zh: str, en: str, value: str) -> str:
    return (
        f'<div class="card"><div>{_e(zh)} <span class="en">{_e(en)}</span></div>'
        f'<div class="v">{_e(value)}</div></div>'
    )


def _summary(a: Assessment) -> str:
    d = a.district.iloc[0].to_dict() if len(a.district) else {}
    cards = [
        _card("呼叫", "calls", _int(_get(d, "calls"))),
        _card("案件", "cases", _int(_get(d, "cases"))),
        *(_card(*_RATE_LABELS[r], _pct(_get(d, r))) for r in RATE_COLUMNS),
        _card("响应均值", "mean response (min)", _num(_get(d, "response_mean_min"))),
        _card("到场均值", "mean arrival (min)", _num(_get(d, "arrival_mean_min"))),
        _card("街道评分", "street score", _num(_get(d, "street_score"))),
    ]
    return f'<div class="cards" id="summary-cards">{"".join(cards)}</div>'


def _notes(a: Assessment) -> str:
    kpi_weights = "、".join(
        f"{_RATE_LABELS[k][0]} {_RATE_LABELS[k][1]}"
        f"{' (1 − rate)' if k == 'rework_rate' else ''} {a.kpi_weights[k]:g}"
        for k in RATE_COLUMNS
    )
    missing_scores = (
        ""
        if a.has_department_scores
        else '<p class="note" id="no-department-scores">未提供部门评分：综合考核与年度绩效两列为空'
        "（–）。 No department scores were given, so the office assessment and the department "
        "performance are empty (–); give them as a CSV of <code>office_id,score</code> or "
        "<code>department,score</code>.</p>"
    )
    weights = (
        "<ul>"
        f"<li>站所考核 Office assessment = w × 街道评分 street score + (1 − w) × 部门评分 "
        f"department score, w = {a.office_weight:g} "
        f"(五权赋能下限 five-powers floor {STREET_WEIGHT_FLOOR_OFFICE:g}).</li>"
        f"<li>部门年度绩效 Department performance = w′ × 街道评价部分 street part + (1 − w′) × "
        f"部门自评 department own, w′ = {a.department_weight:g} "
        f"(下限 floor {STREET_WEIGHT_FLOOR_DEPARTMENT:g}); the street part is the calls-weighted "
        "mean of the street scores of the department's offices.</li>"
        "<li>权重可以提高，不得低于下限 A weight may be raised above its floor, never lowered "
        "below it.</li>"
        f"<li>街道评分 Street score = 100 × weighted mean of {_e(kpi_weights)}; an undefined "
        "rate is left out and the other weights renormalised.</li>"
        "</ul>"
    )
    definitions = (
        '<dl class="defs">'
        "<dt>呼叫 Call</dt><dd>A dispatch in the period (the street calls); its office, street "
        "and level are the dispatch's. Only events before the end of the period count.</dd>"
        "<dt>响应率 Response rate</dt><dd>Calls acknowledged within the matter's "
        "acknowledge deadline (counted from the call, before any return, requeue, reopen or "
        "new dispatch) / calls. Response and arrival times: minutes from the call to the first "
        "acknowledgement / arrival of that cycle (mean and 90th percentile).</dd>"
        "<dt>案件 Case</dt><dd>An incident first dispatched in the period; its office is that of "
        "its latest dispatch.</dd>"
        "<dt>结案率 Resolution rate</dt><dd>Closed cases / cases.</dd>"
        "<dt>按期结案率 On-time closure rate</dt><dd>Cases closed within resolve_h of the "
        "first dispatch / cases due (closed, or past that deadline by the end of the "
        "period).</dd>"
        "<dt>返工率 Rework rate</dt><dd>Cases reopened after a failed verification / cases "
        "resolved.</dd>"
        "<dt>满意率 Satisfaction rate</dt><dd>Cases evaluated satisfied or basically satisfied "
        "/ cases evaluated.</dd>"
        "<dt>处置层级 Handling level</dt><dd>Share of calls answered by a unit of the community, "
        "the street, a neighbouring street or the district.</dd>"
        "<dt>–</dt><dd>Not defined: nothing to divide by (never shown as 0).</dd>"
        "</dl>"
    )
    return missing_scores + weights + definitions


def report_html(
    assessment: Assessment,
    *,
    title: str | None = None,
    street_names: Mapping[str, str] | None = None,
    overrides: pd.DataFrame | None = None,
    consultations: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> str:
    """Return the assessment as one self-contained HTML page.

    Parameters
    ----------
    assessment
        From :func:`gridgov.assessment.assess`.
    title
        The page title; default "街道考核报告 Street assessment report".
    street_names
        Street names by code, so that tables and charts name the streets (codes otherwise).
    overrides
        The dispatchers' override KPIs per street and per dispatcher
        (:func:`gridgov.service.workspace.override_kpis`); a section of their own when given.
    consultations
        The per-street and per-department consultation figures
        (:func:`gridgov.consultation_review.consultation_figures`), shown in their own section.

    Returns
    -------
    str
        HTML5 with inline CSS and inline SVG charts: no script, no external URL of any kind.
        Sections: summary of the district (or the street filtered on), offices (ranked, with
        scores), departments, streets, charts (the five rates per office, the stacked level
        shares, street scores), weights, floors and definitions.
    """
    a = assessment
    if street_names:
        # The assessment is frozen: name the streets on a copy of its streets table.
        streets = a.streets.assign(street_name=a.streets["street_code"].map(street_names))
        a = replace(a, streets=streets)
    heading = title or "街道考核报告 Street assessment report"
    period = a.period
    span = f"{period.start:%Y-%m-%d %H:%M} – {period.end:%Y-%m-%d %H:%M} ({period.start.tzinfo})"
    named = (street_names or {}).get(a.street_code or "")
    scope = (
        "全区 whole district"
        if a.street_code is None
        else f"街道 street {named + ' ' if named else ''}{a.street_code}"
    )
    level_rows = [("全区 district" if a.street_code is None else scope, _first(a.district))]
    level_rows += [(_label(r), r) for r in a.offices.to_dict("records")]
    sections = [
        '<header><h1 id="title">',
        _e(heading),
        "</h1>",
        f'<p class="meta" id="period">考核期 Period: <b>{_e(period.label)}</b> · {_e(span)}</p>',
        f'<p class="meta" id="scope">范围 Scope: {_e(scope)}</p></header>',
        '<section id="summary"><h2>概况 <span class="en">Summary</span></h2>',
        _summary(a),
        "</section>",
        '<section id="offices"><h2>驻街站所考核 <span class="en">Stationed offices, ranked by '
        "street score</span></h2>",
        _table(a.offices, _OFFICE_COLUMNS, "kpi-offices"),
        "</section>",
        '<section id="departments"><h2>部门年度绩效 <span class="en">Departments</span></h2>',
        _table(a.departments, _DEPARTMENT_COLUMNS, "kpi-departments"),
        "</section>",
        '<section id="streets"><h2>各街道 <span class="en">Streets</span></h2>',
        _table(a.streets, _STREET_COLUMNS, "kpi-streets"),
        "</section>",
        *(
            []
            if overrides is None
            else [
                '<section id="overrides"><h2>人工派遣与改派 <span class="en">Dispatchers\' '
                "choices and overrides of the recommendation</span></h2>",
                _table(overrides, _OVERRIDE_COLUMNS, "kpi-overrides"),
                "</section>",
            ]
        ),
        *([] if consultations is None else _consultation_section(consultations, street_names)),
        '<section id="charts"><h2>图表 <span class="en">Charts</span></h2>',
        "<h3>五项指标 <span class='en'>The five rates per office</span></h3>",
        _legend([(f"{zh} {en}", _RATE_COLOURS[k]) for k, (zh, en) in _RATE_LABELS.items()]),
        _rates_chart(a.offices),
        "<h3>处置层级占比 <span class='en'>Share of calls by handling level</span></h3>",
        _legend([(f"{zh} {en}", colour) for _, zh, en, colour in _LEVELS]),
        _levels_chart(level_rows),
        "<h3>街道评分 <span class='en'>Street scores</span></h3>",
        _score_chart(a.streets),
        "</section>",
        '<section id="notes"><h2>权重与定义 <span class="en">Weights, floors and definitions'
        "</span></h2>",
        _notes(a),
        "</section>",
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # An empty data: icon, so the browser does not go looking for /favicon.ico.
        '<link rel="icon" href="data:,">'
        f"<title>{_e(heading)} · {_e(period.label)}</title>"
        f"<style>{_CSS}</style></head><body>" + "".join(sections) + "</body></html>\n"
    )


def _first(frame: pd.DataFrame) -> _Record:
    return frame.iloc[0].to_dict() if len(frame) else {}
