"""Words a person reads on the maps: one zh/en dictionary, legends that read, titles, and
options checked before anything loads (issue 19, items 4 to 6)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_maps import command_centre, make_activity
from typer.testing import CliRunner

from gridgov import labels, maps
from gridgov.catalog import load_catalog
from gridgov.cli import app
from gridgov.kpis import KPI_COLUMNS
from gridgov.maps.elements import AreaLayer, Legend
from gridgov.maps.layer_data import _breaks, class_items, value_classes
from gridgov.model import EscalationLevel, ForceKind, Level, TravelMode, UnitStatus
from gridgov.reference import ReferenceDistrict, read_reference_district
from gridgov.straight_line import StraightLine
from gridgov.workflow import Action, Role, State

runner = CliRunner()
#: Groups whose identifiers must never reach a page on their own.
IDENTIFIER_GROUPS = (
    "state",
    "action",
    "escalation",
    "rule",
    "tier",
    "kind",
    "unit_status",
    "travel_mode",
    "level",
    "kpi",
    "matter",
)
_CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef]")


def identifier_tokens() -> set[str]:
    table = labels.label_table()
    return {value for group in IDENTIFIER_GROUPS for value in table[group]}


def raw_identifiers(text: str) -> list[str]:
    """Identifiers shown on their own in ``text``.

    Every "中文 English" label is removed first; an identifier left is raw unless it is the
    English half of a zh/en pair written in place (Chinese right before it, as in "网格 grid").
    """
    table = labels.label_table()
    pairs = sorted(
        {f"{zh} {en}" for names in table.values() for zh, en in names.values()},
        key=len,
        reverse=True,
    )
    for pair in pairs:
        text = text.replace(pair, " ")
    found = []
    for token in sorted(identifier_tokens()):
        for m in re.finditer(rf"(?<![\w-]){re.escape(token)}(?![\w-])", text):
            before = text[: m.start()].rstrip(" ")
            if before and _CJK.match(before[-1]):
                continue
            found.append(token)
    return found


def visible(html_text: str) -> str:
    """Legend HTML as text, one item a line."""
    text = re.sub(r"<br\s*/?>|</h4>|</div>", "\n", html_text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")


def class_ranges(lines: list[str]) -> list[tuple[int, int]]:
    """Whole-number legend classes ("0", "1", "2–3") as (low, high); fails on anything else."""
    out = []
    for line in lines:
        m = re.fullmatch(r"(\d+)(?:–(\d+))?", line.strip())
        assert m, f"not a whole-number class: {line!r}"
        low = int(m.group(1))
        out.append((low, int(m.group(2) or low)))
    return out


def assert_disjoint_ascending(ranges: list[tuple[int, int]]) -> None:
    for (a, b), (c, d) in pairwise(ranges):
        assert a <= b < c <= d, ranges


@pytest.fixture(scope="module")
def ref() -> ReferenceDistrict:
    return read_reference_district()


# --------------------------------------------------------------------------------------------
# the dictionary
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "values"),
    [
        ("state", list(State)),
        ("action", list(Action)),
        ("role", list(Role)),
        ("escalation", list(EscalationLevel)),
        ("kind", list(ForceKind)),
        ("unit_status", list(UnitStatus)),
        ("travel_mode", list(TravelMode)),
        ("level", list(Level)),
        ("priority", [0, 1, 2, 3, 4]),
        ("kpi", [*KPI_COLUMNS, "street_score"]),
        ("matter", [m.code for m in load_catalog()]),
    ],
)
def test_every_value_has_a_chinese_and_an_english_name(group: str, values: list) -> None:
    for value in values:
        names = labels.pair(group, value)
        assert names is not None, (group, value)
        zh, en = names
        assert _CJK.search(zh), (group, value, zh)
        assert en and not _CJK.search(en) and "_" not in en, (group, value, en)
        assert labels.label(group, value) == f"{zh} {en}"


def test_label_of_unknown_and_missing_values_and_groups() -> None:
    assert labels.label("state", "on_scene") == "已到场 on scene"
    assert labels.label("state", "someday") == "someday"
    assert labels.label("kind", None) == "–"
    with pytest.raises(KeyError, match="unknown label group"):
        labels.label("colour", "red")
    table = labels.label_table()
    assert set(table) == set(labels.GROUPS)
    assert json.loads(json.dumps(table, ensure_ascii=False)) == table
    # Every KPI name has a kind that says how it prints.
    assert set(labels.KPI_KINDS) == set(table["kpi"])


def test_raw_identifier_check_finds_identifiers_and_passes_labels() -> None:
    assert raw_identifiers("状态 status\tdispatched\nstreet") == ["dispatched", "street"]
    assert raw_identifiers("on_scene") == ["on_scene"]
    assert raw_identifiers("FS-01 police") == ["FS-01", "police"]
    ok = "已派遣 dispatched 街道内 within the street 派出所 police station 网格 grid 1-police-2"
    assert raw_identifiers(ok) == []


# --------------------------------------------------------------------------------------------
# legends
# --------------------------------------------------------------------------------------------


def test_count_classes_are_whole_and_do_not_overlap() -> None:
    for counts in ([0, 1, 1, 1, 2, 3, 5, 8, 13], [0, 0, 1, 1, 1, 1, 2], [0, 0, 0], list(range(40))):
        breaks = _breaks([float(c) for c in counts], integer=True)
        assert all(float(b).is_integer() for b in breaks)
        lines = [visible(item) for item in class_items(breaks, integer=True)]
        assert lines[0] == "0"
        ranges = class_ranges(lines)
        assert_disjoint_ascending(ranges)
        # Every count falls in exactly one class.
        for c in counts:
            assert sum(a <= c <= b for a, b in ranges) == 1, (c, ranges)
    # The example of the issue: "0 / ≤1 / 1–3" cannot happen any more.
    lines = [visible(i) for i in class_items(_breaks([0, 1, 1, 2, 3.0], integer=True))]
    assert lines == ["0", "1", "2", "3"]


def test_ratio_classes_are_half_open_and_rounded() -> None:
    breaks = _breaks([0.5, 1.0, 4 / 3, 2.0, 0.25])
    lines = [visible(i) for i in class_items(breaks, integer=False)]
    assert lines[0] == "0" and all(line.startswith("> ") for line in lines[1:])
    assert not any("1.33" in line for line in lines)
    assert len(set(lines)) == len(lines)


def test_rates_squeezed_near_100_percent_give_classes_that_read_apart() -> None:
    values = [0.997, 0.998, 0.9985, 0.999, 0.9995, 0.9999, 1.0, 1.0, 1.0]
    classes = value_classes(values, percent=True)
    assert 1 <= len(classes.texts) <= 6
    assert len(set(classes.texts)) == len(classes.texts)
    assert classes.decimals <= 2
    # Each class has its own colour and its bounds increase.
    assert len(set(classes.colours)) == len(classes.colours)
    assert list(classes.bounds) == sorted(set(classes.bounds))
    # A rate that rounds the same everywhere is one class, not six that look alike.
    same = value_classes([0.99971, 0.99972, 0.99974, 0.99976, 0.99978, 0.9998], percent=True)
    assert len(same.texts) == len(set(same.texts))
    assert all(classes.colour(v) in classes.colours for v in values)


def test_assessment_map_names_each_kpi_in_both_languages(ref: ReferenceDistrict) -> None:
    streets = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].tolist()
    rates = pd.DataFrame(
        {"street_code": streets, "resolution_rate": np.linspace(0.997, 1.0, len(streets))}
    )
    m = maps.assessment_map(ref.gdf_areas, rates, value="resolution_rate")
    legend = next(c for c in m._children.values() if isinstance(c, Legend)).html
    text = visible(legend)
    assert "结案率 resolution rate" in text and "resolution_rate" not in text
    assert raw_identifiers(text) == []
    items = [line for line in text.splitlines()[1:] if "%" in line]
    assert len(items) == len(set(items)) and 1 <= len(items) <= 6
    layer = next(c for c in m._children.values() if isinstance(c, AreaLayer))
    assert "resolution_rate" not in layer.layer_name
    # Counts: whole-number classes.
    calls = pd.DataFrame({"street_code": streets, "calls": [i * 7 for i in range(len(streets))]})
    legend = next(
        c
        for c in maps.assessment_map(ref.gdf_areas, calls, value="calls")._children.values()
        if isinstance(c, Legend)
    ).html
    lines = visible(legend).splitlines()
    assert lines[0] == "考核 assessment: 派遣次数 calls"
    assert_disjoint_ascending(class_ranges(lines[1:-1]))


def test_command_centre_legends_are_whole_numbers_and_popups_use_the_dictionary(
    ref: ReferenceDistrict,
) -> None:
    m = command_centre(ref, make_activity(ref))
    legend = next(c for c in m._children.values() if isinstance(c, Legend)).html
    for part in re.findall(r"<div class='gg-level-legend'[^>]*>(.*?)</div>", legend):
        lines = visible(part).strip().splitlines()
        assert_disjoint_ascending(class_ranges(lines[1:]))
    assert raw_identifiers(visible(legend)) == []
    page = maps.render_html(m)
    assert "GG.useLabels(" in page and "已到场 on scene" in page


# --------------------------------------------------------------------------------------------
# page titles, language, default period
# --------------------------------------------------------------------------------------------


def test_every_map_page_has_a_title_and_a_language(ref: ReferenceDistrict) -> None:
    act = make_activity(ref)
    streets = ref.gdf_areas.loc[ref.gdf_areas["level"] == "street", "code"].tolist()
    pages = {
        "command-centre": command_centre(ref, act),
        "street": maps.street_map(
            act["incidents"]["street_code"].iloc[0],
            ref.gdf_areas,
            ref.gdf_units,
            act["incidents"],
        ),
        "coverage": maps.coverage_map(ref.gdf_areas, ref.gdf_units, StraightLine(), "fire"),
        "assessment": maps.assessment_map(
            ref.gdf_areas,
            pd.DataFrame({"street_code": streets, "street_score": 80.0}),
            value="street_score",
        ),
    }
    for kind, m in pages.items():
        page = maps.render_html(m, assets="/static")
        assert '<html lang="zh-CN">' in page, kind
        title = re.search(r"<title>(.+?)</title>", page)
        assert title and title.group(1).strip(), kind
        assert raw_identifiers(title.group(1)) == [], (kind, title.group(1))


@pytest.mark.parametrize(
    ("now", "month"),
    [
        (datetime(2026, 11, 30, 15, 59, tzinfo=UTC), "2026-10"),  # 23:59 on 30 Nov in Shanghai
        (datetime(2026, 11, 30, 16, 0, tzinfo=UTC), "2026-11"),  # 00:00 on 1 Dec in Shanghai
        (datetime(2027, 1, 15, 4, 0, tzinfo=UTC), "2026-12"),
    ],
)
def test_the_assessment_map_defaults_to_the_last_complete_month(now: datetime, month: str) -> None:
    assert maps.last_complete_month(now) == month


# --------------------------------------------------------------------------------------------
# fail fast
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["map", "street"], ["--street"]),
        (["map", "coverage", "--kind", "army"], ["--kind", "army"]),
        (["map", "command-centre", "--level", "block"], ["--level", "block"]),
        (["map", "command-centre", "--colour-by", "mood"], ["--colour-by"]),
        (["map", "assessment", "--kpi-value", "resolution"], ["--kpi-value", "resolution"]),
        (["map", "assessment", "--period", "2026-13"], ["--period"]),
        (["map", "street", "--base", "tiles"], ["--street", "--base"]),
        (["map", "globe"], ["globe"]),
        (["report", "--period", "2026-10", "--level", "grid"], ["--level", "grid"]),
        (["coverage", "army"], ["army"]),
        (["hotspots", "--period", "2026-10", "--level", "block"], ["--level", "block"]),
        (["route", "104.0", "30.6", "104.1", "30.7", "--mode", "fly"], ["--mode", "fly"]),
        (["act", "I-1", "return"], ["--reason"]),
        (["act", "I-1", "evaluate"], ["--satisfaction"]),
        (["act", "I-1", "evaluate", "--satisfaction", "meh"], ["--satisfaction", "meh"]),
        (["act", "I-1", "fly"], ["ACTION", "fly"]),
        (["act", "I-1", "close", "--role", "mayor"], ["--role", "mayor"]),
    ],
)
def test_missing_or_bad_options_fail_before_the_store_is_opened(
    args: list[str], names: list[str], tmp_path: Path
) -> None:
    # The store's folder does not exist: opening it would fail with another message (and
    # create files); the option must be named first.
    where = tmp_path / "missing" / "store.db"
    out = ["--out", str(tmp_path / "x.html")] if args[0] == "map" else []
    result = runner.invoke(app, [*args, *out, "--url", f"sqlite:///{where}"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    for name in names:
        assert name in text, (name, text)
    assert not where.parent.exists()
    assert not (tmp_path / "x.html").exists()
