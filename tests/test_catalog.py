"""The matters catalogue: the real file's shape, the loader's validation, and lookups."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridgov.catalog import (
    URL_SAFE_CODE,
    Catalog,
    Matter,
    Stage,
    catalog_from_dict,
    load_catalog,
)
from gridgov.errors import CatalogError, DataFileError, InputError, UnknownMatterError
from gridgov.model import ForceKind, HandlingLevel
from gridgov.settings import get_settings


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# ---------------------------------------------------------------------------------------------
# The real catalogue


def test_real_catalogue_has_10_domains_and_34_matters(catalog: Catalog) -> None:
    assert len(catalog.domains) == 10
    assert len(catalog) == 34
    assert len(catalog.matters) == 34


def test_default_path_comes_from_settings(catalog: Catalog) -> None:
    assert load_catalog(get_settings().catalog_path) == catalog


def test_every_domain_is_used(catalog: Catalog) -> None:
    for domain in catalog.domains:
        assert catalog.by_domain(domain), domain
    assert sum(len(catalog.by_domain(d.code)) for d in catalog.domains) == 34


def test_seed_domains_present(catalog: Catalog) -> None:
    zh = {d.zh: d for d in catalog.domains}
    assert {"消防安全", "自然资源", "民生服务"} <= set(zh)
    assert "fire" in zh["消防安全"].en
    assert "natural resources" in zh["自然资源"].en
    assert "livelihood" in zh["民生服务"].en


def test_source_says_the_list_is_ours(catalog: Catalog) -> None:
    text = catalog.source.lower()
    assert "34 matters" in text and "10 domains" in text
    assert "not an official list" in text
    assert catalog.version


def test_force_kinds_as_lead(catalog: Catalog) -> None:
    leads = {m.lead for m in catalog}
    assert len(set(ForceKind) - leads) <= 1, set(ForceKind) - leads


def test_every_force_kind_is_needed_somewhere(catalog: Catalog) -> None:
    for kind in ForceKind:
        assert catalog.for_kind(kind), kind


def test_joint_and_grid_level_matters_exist(catalog: Catalog) -> None:
    joint = [m for m in catalog if m.is_joint]
    assert joint
    assert any(len(m.required_kinds) >= 3 for m in joint)
    grid = [m for m in catalog if m.level is HandlingLevel.GRID]
    assert grid
    assert all(m.lead is ForceKind.GRID_WORKER for m in grid)
    assert {m.level for m in catalog} == set(HandlingLevel)


def test_codes_are_url_safe_unique_and_follow_one_scheme(catalog: Catalog) -> None:
    codes = [m.code for m in catalog]
    assert len(set(codes)) == len(codes)
    for m in catalog:
        assert URL_SAFE_CODE.fullmatch(m.code)
        assert re.fullmatch(rf"{m.domain}-\d\d", m.code), m.code
    assert catalog.codes == tuple(codes)


def test_top_priority_matters_are_fast(catalog: Catalog) -> None:
    top = [m for m in catalog if m.priority == 1]
    assert top
    for m in top:
        assert m.acknowledge_min <= 2
        assert m.max_travel_min <= 20
    fire = [m for m in top if m.lead is ForceKind.FIRE]
    assert fire
    for m in fire:
        assert m.acknowledge_min == 1
        assert 5 <= m.arrive_min <= 10
        assert 8 <= m.max_travel_min <= 10
        assert {ForceKind.EMERGENCY, ForceKind.GRID_WORKER} <= set(m.assist)


def test_realistic_force_mixes(catalog: Catalog) -> None:
    def lead_of(keyword: str) -> Matter:
        hits = [m for m in catalog if keyword in m.keywords]
        assert len(hits) == 1, keyword
        return hits[0]

    stall = lead_of("food stall")
    assert stall.lead is ForceKind.MARKET and ForceKind.ENFORCEMENT in stall.assist
    assert lead_of("mediation").lead is ForceKind.JUDICIAL
    wages = lead_of("wage arrears")
    assert wages.lead is ForceKind.HRSS and ForceKind.JUDICIAL in wages.assist
    assert lead_of("illegal construction").lead is ForceKind.ENFORCEMENT
    assert lead_of("fight").lead is ForceKind.POLICE
    for word in ("litter", "drain", "illegal parking"):
        m = lead_of(word)
        assert m.lead is ForceKind.GRID_WORKER and m.level is HandlingLevel.GRID


def test_deadlines_are_consistent(catalog: Catalog) -> None:
    for m in catalog:
        ack, arrive, resolve = (m.deadline_for(s) for s in Stage)
        assert timedelta(0) < ack <= arrive <= resolve, m.code
        assert m.max_travel <= arrive, m.code
        assert m.priority in (1, 2, 3, 4)
    by_priority: dict[int, list[float]] = {}
    for m in catalog:
        by_priority.setdefault(m.priority, []).append(m.acknowledge_min)
    # A more urgent class never waits longer, on average, for the department to respond.
    means = [sum(v) / len(v) for _, v in sorted(by_priority.items())]
    assert means == sorted(means)


def test_event_classes_are_cjt214_style(catalog: Catalog) -> None:
    majors = {e.code: e.zh for e in catalog.event_majors}
    assert {"市容环境", "宣传广告", "施工管理", "突发事件", "街面秩序", "扩展事件"} <= set(
        majors.values()
    )
    for m in catalog:
        ec = m.event_class
        assert ec.major in majors
        assert re.fullmatch(r"\d{4}", ec.code)
        assert ec.name_zh
    fire = catalog.get("FS-01")
    assert majors[fire.event_class.major] == "突发事件"


def test_open311_services(catalog: Catalog) -> None:
    services = catalog.open311_services()
    assert [s["service_code"] for s in services] == list(catalog.codes)
    first = services[0]
    assert set(first) == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert first["group"] == catalog.domain(catalog.matters[0].domain).en
    assert all("\n" not in s["description"] for s in services)


# ---------------------------------------------------------------------------------------------
# The Catalog and Matter API


def test_lookup_protocol(catalog: Catalog) -> None:
    m = catalog.get("FS-01")
    assert m.code == "FS-01"
    assert "FS-01" in catalog
    assert "FS-99" not in catalog
    assert 3 not in catalog
    assert list(catalog) == list(catalog.matters)
    assert catalog.by_domain("FS") == catalog.by_domain(catalog.domain("FS"))
    assert all(x.domain == "FS" for x in catalog.by_domain("FS"))


def test_for_kind(catalog: Catalog) -> None:
    hrss_any = catalog.for_kind("hrss")
    hrss_lead = catalog.for_kind(ForceKind.HRSS, lead_only=True)
    assert hrss_lead and set(hrss_lead) <= set(hrss_any)
    assert all(m.lead is ForceKind.HRSS for m in hrss_lead)
    grid_any = catalog.for_kind(ForceKind.GRID_WORKER)
    assert any(m.lead is not ForceKind.GRID_WORKER for m in grid_any)
    with pytest.raises(InputError, match="unknown force kind 'firemen'"):
        catalog.for_kind("firemen")


def test_unknown_domain(catalog: Catalog) -> None:
    with pytest.raises(InputError, match="unknown domain 'XX'"):
        catalog.by_domain("XX")


def test_required_kinds_lead_first_without_duplicates(catalog: Catalog) -> None:
    m = catalog.get("FS-01")
    assert m.required_kinds == (ForceKind.FIRE, ForceKind.EMERGENCY, ForceKind.GRID_WORKER)
    # The constructor trusts its input; required_kinds must still never list a kind twice.
    odd = dataclasses.replace(m, assist=(ForceKind.EMERGENCY, ForceKind.FIRE, ForceKind.EMERGENCY))
    assert odd.required_kinds == (ForceKind.FIRE, ForceKind.EMERGENCY)
    solo = dataclasses.replace(m, assist=())
    assert solo.required_kinds == (ForceKind.FIRE,)
    assert not solo.is_joint


def test_deadline_for(catalog: Catalog) -> None:
    m = catalog.get("FS-01")
    assert m.deadline_for("acknowledge") == timedelta(minutes=1)
    assert m.deadline_for(Stage.ARRIVE) == timedelta(minutes=8)
    assert m.deadline_for("resolve") == timedelta(hours=4)
    assert m.max_travel == timedelta(minutes=8)
    with pytest.raises(InputError, match="unknown deadline stage 'close'"):
        m.deadline_for("close")


def test_catalog_is_frozen(catalog: Catalog) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.matters = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.get("FS-01").priority = 4  # type: ignore[misc]


def test_unknown_code_suggests_the_closest(catalog: Catalog) -> None:
    with pytest.raises(UnknownMatterError) as info:
        catalog.get("FS-1")
    assert info.value.code == "FS-1"
    message = str(info.value)
    assert "unknown matter code 'FS-1'" in message
    assert "did you mean FS-01" in message

    with pytest.raises(UnknownMatterError, match="did you mean FS-01"):
        catalog.get("fs-01")
    with pytest.raises(UnknownMatterError, match="did you mean WS-02"):
        catalog.get("gas leak")
    with pytest.raises(UnknownMatterError) as info:
        catalog.get("completely unrelated")
    assert "did you mean" not in str(info.value)
    assert isinstance(info.value, InputError)


# ---------------------------------------------------------------------------------------------
# Validation: every rule fires, and all problems are reported at once


def _matter(code: str, domain: str, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "code": code,
        "domain": domain,
        "name_zh": "测试事项",
        "name_en": "Test matter",
        "description_en": "A matter made up for a test.",
        "keywords": ["test"],
        "lead": "enforcement",
        "assist": ["police"],
        "priority": 2,
        "deadlines": {"acknowledge_min": 5, "arrive_min": 30, "resolve_h": 24},
        "max_travel_min": 20,
        "level": "street",
        "event_class": {"major": "01", "minor": "01", "name_zh": "测试类"},
    }
    raw.update(overrides)
    return raw


def _valid() -> dict[str, Any]:
    return {
        "version": "test",
        "source": "built by the test",
        "event_majors": [
            {"code": "01", "zh": "市容环境", "en": "city appearance"},
            {"code": "04", "zh": "突发事件", "en": "emergencies"},
        ],
        "domains": [
            {"code": "FS", "zh": "消防安全", "en": "fire safety"},
            {"code": "UM", "zh": "城市管理", "en": "urban management"},
        ],
        "matters": [
            _matter(
                "FS-01",
                "FS",
                lead="fire",
                assist=["emergency", "grid_worker"],
                priority=1,
                deadlines={"acknowledge_min": 1, "arrive_min": 8, "resolve_h": 4},
                max_travel_min=8,
                event_class={"major": "04", "minor": "01", "name_zh": "火情"},
            ),
            _matter("UM-01", "UM"),
            _matter(
                "UM-02",
                "UM",
                lead="grid_worker",
                assist=[],
                level="grid",
                event_class={"major": "01", "minor": "02", "name_zh": "暴露垃圾"},
            ),
        ],
    }


def test_the_valid_test_dict_loads() -> None:
    cat = catalog_from_dict(_valid())
    assert cat.codes == ("FS-01", "UM-01", "UM-02")
    assert cat.get("UM-02").assist == ()
    assert cat.get("FS-01").event_class.code == "0401"
    assert cat.version == "test"


Mutation = Callable[[dict[str, Any]], None]


def _set(*path_and_value: Any) -> Mutation:
    *path, value = path_and_value

    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(*path: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _add_domain(domain: dict[str, str]) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        data["domains"].append(domain)

    return mutate


M1 = ("matters", 1)  # UM-01, a joint street-level matter led by enforcement

CASES: list[tuple[str, Mutation, str]] = [
    ("unknown lead", _set(*M1, "lead", "fireman"), r"unknown force kind 'fireman' in lead"),
    (
        "unknown assist",
        _set(*M1, "assist", ["police", "army"]),
        r"unknown force kind 'army' in assist",
    ),
    ("unknown domain", _set(*M1, "domain", "XX"), r"\(UM-01\): unknown domain 'XX'"),
    ("duplicate code", _set("matters", 2, "code", "UM-01"), r"duplicate code, first used by"),
    ("priority 0", _set(*M1, "priority", 0), r"priority 0 must be an integer from 1"),
    ("priority 5", _set(*M1, "priority", 5), r"priority 5 must be an integer"),
    ("priority text", _set(*M1, "priority", "1"), r"priority '1' must be an integer"),
    ("priority bool", _set(*M1, "priority", True), r"priority True must be an integer"),
    ("priority float", _set(*M1, "priority", 1.5), r"priority 1.5 must be an integer"),
    (
        "zero deadline",
        _set(*M1, "deadlines", "acknowledge_min", 0),
        r"deadline acknowledge_min 0 must be a positive number",
    ),
    (
        "negative deadline",
        _set(*M1, "deadlines", "resolve_h", -2),
        r"deadline resolve_h -2 must be a positive number",
    ),
    (
        "text deadline",
        _set(*M1, "deadlines", "arrive_min", "soon"),
        r"deadline arrive_min 'soon' must be a positive number",
    ),
    (
        "arrive after resolve",
        _set(*M1, "deadlines", {"acknowledge_min": 5, "arrive_min": 120, "resolve_h": 1}),
        r"arrive_min \(120 min\) is later than resolve_h \(1 h\)",
    ),
    (
        "acknowledge after arrive",
        _set(*M1, "deadlines", {"acknowledge_min": 60, "arrive_min": 30, "resolve_h": 24}),
        r"acknowledge_min \(60\) is later than arrive_min \(30\)",
    ),
    ("deadlines not a mapping", _set(*M1, "deadlines", 30), r"deadlines must be a mapping"),
    (
        "deadline missing",
        _drop(*M1, "deadlines", "resolve_h"),
        r"deadlines: missing field\(s\) resolve_h",
    ),
    (
        "lead in assist",
        _set(*M1, "assist", ["police", "enforcement"]),
        r"the lead kind enforcement is also listed in assist",
    ),
    (
        "assist twice",
        _set(*M1, "assist", ["police", "police"]),
        r"police is listed twice in assist",
    ),
    ("assist not a list", _set(*M1, "assist", "police"), r"assist must be a list"),
    ("bad level", _set(*M1, "level", "province"), r"level 'province' must be one of grid"),
    (
        "grid level not led by grid worker",
        _set(*M1, "level", "grid"),
        r"a grid-level matter must be led by the grid worker, not enforcement",
    ),
    ("missing lead", _drop(*M1, "lead"), r"\(UM-01\): missing field\(s\) lead"),
    ("missing code", _drop(*M1, "code"), r"matters\[1\]: missing field\(s\) code"),
    ("misspelt field", _set(*M1, "asist", ["police"]), r"unknown field\(s\) asist"),
    ("missing top field", _drop("domains"), r"missing field\(s\) domains"),
    ("code with space", _set(*M1, "code", "UM 01"), r"code 'UM 01' is not URL-safe"),
    ("code with slash", _set(*M1, "code", "UM/01"), r"code 'UM/01' is not URL-safe"),
    ("code with hanzi", _set(*M1, "code", "城管-01"), r"code '城管-01' is not URL-safe"),
    ("code with query", _set(*M1, "code", "UM-01?x"), r"is not URL-safe"),
    ("empty code", _set(*M1, "code", ""), r"code '' is not URL-safe"),
    ("code not text", _set(*M1, "code", 101), r"code 101 is not URL-safe"),
    (
        "code off scheme",
        _set(*M1, "code", "UM-1"),
        r"code 'UM-1' does not follow the scheme <domain>-NN",
    ),
    (
        "code of another domain",
        _set(*M1, "code", "FS-02"),
        r"code 'FS-02' does not follow the scheme <domain>-NN \(UM-01\)",
    ),
    (
        "non-positive max travel",
        _set(*M1, "max_travel_min", 0),
        r"max_travel_min 0 must be a positive number",
    ),
    (
        "max travel beyond arrival",
        _set(*M1, "max_travel_min", 45),
        r"max_travel_min \(45\) exceeds arrive_min \(30\)",
    ),
    (
        "unquoted event major",
        _set(*M1, "event_class", {"major": 1, "minor": "01", "name_zh": "测试类"}),
        r"event_class major 1 must be a quoted 2-digit string",
    ),
    (
        "undeclared event major",
        _set(*M1, "event_class", {"major": "07", "minor": "01", "name_zh": "测试类"}),
        r"event_class major '07' is not declared",
    ),
    (
        "event class renamed",
        _set("matters", 2, "event_class", {"major": "01", "minor": "01", "name_zh": "别的"}),
        r"event class 0101 is named '别的', but UM-01 names it '测试类'",
    ),
    ("empty keywords", _set(*M1, "keywords", []), r"keywords must be a non-empty list"),
    ("blank name", _set(*M1, "name_en", "  "), r"'name_en' must be a non-empty string"),
    (
        "multi-line description",
        _set(*M1, "description_en", "line one\nline two"),
        r"description_en must be one line",
    ),
    ("matter not a mapping", _set("matters", 1, "UM-01"), r"matters\[1\]: must be a mapping"),
    ("no matters", _set("matters", []), r"'matters' must be a non-empty list"),
    (
        "unused domain",
        _add_domain({"code": "HE", "zh": "卫生健康", "en": "health"}),
        r"domains: HE \(卫生健康\) has no matters",
    ),
    (
        "duplicate domain",
        _set("domains", 1, {"code": "FS", "zh": "又一个", "en": "again"}),
        r"duplicate domain code FS",
    ),
    (
        "bad domain code",
        _set("domains", 1, {"code": "u-m", "zh": "城管", "en": "x"}),
        r"domains\[1\]: code 'u-m' must be 1-8 capital letters",
    ),
    (
        "bad major code",
        _set("event_majors", 1, {"code": "4", "zh": "突发事件", "en": "x"}),
        r"event_majors\[1\]: code '4' must be a 2-digit string",
    ),
    ("blank version", _set("version", " "), r"'version' must be a non-empty string"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_reports_its_problem(mutate: Mutation, expected: str) -> None:
    data = _valid()
    mutate(data)
    with pytest.raises(CatalogError, match=expected) as info:
        catalog_from_dict(data)
    assert "problem(s) in the matters catalogue" in str(info.value)


def test_all_problems_are_reported_at_once() -> None:
    data = _valid()
    data["matters"][0]["lead"] = "fireman"
    data["matters"][1]["priority"] = 9
    data["matters"][1]["deadlines"]["arrive_min"] = -1
    data["matters"][2]["level"] = "province"
    data["matters"].append(_matter("UM-01", "UM"))
    data["matters"].append(_matter("UM 03", "ZZ"))
    data["version"] = ""
    with pytest.raises(CatalogError) as info:
        catalog_from_dict(data)
    message = str(info.value)
    expected = [
        "unknown force kind 'fireman' in lead",
        "priority 9 must be an integer",
        "deadline arrive_min -1 must be a positive number",
        "level 'province' must be one of",
        "duplicate code, first used by matters[1]",
        "code 'UM 03' is not URL-safe",
        "unknown domain 'ZZ'",
        "'version' must be a non-empty string",
    ]
    for text in expected:
        assert text in message, text
    count = int(message.split(" problem(s)")[0])
    assert count == message.count("\n  - ")
    assert count >= len(expected)


def test_not_a_mapping() -> None:
    with pytest.raises(CatalogError, match="must be a mapping, not list"):
        catalog_from_dict([1, 2])


def test_validation_does_not_mutate_the_input() -> None:
    data = _valid()
    before = copy.deepcopy(data)
    catalog_from_dict(data)
    assert data == before


# ---------------------------------------------------------------------------------------------
# Files


def test_load_catalog_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(_valid(), allow_unicode=True), encoding="utf-8")
    cat = load_catalog(path)
    assert cat == catalog_from_dict(_valid())


def test_load_catalog_names_the_file_in_problems(tmp_path: Path) -> None:
    data = _valid()
    data["matters"][1]["lead"] = "navy"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(CatalogError, match=re.escape(str(path))):
        load_catalog(path)


def test_unquoted_yaml_codes_are_caught(tmp_path: Path) -> None:
    # The common YAML slip: major: 04 without quotes parses as the integer 4.
    text = (Path(get_settings().catalog_path)).read_text(encoding="utf-8")
    broken = text.replace('major: "04", minor: "01"', "major: 04, minor: 01", 1)
    assert broken != text
    path = tmp_path / "catalog.yaml"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(CatalogError, match=r"\(FS-01\): event_class major 4"):
        load_catalog(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read the matters catalogue"):
        load_catalog(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("matters: [unclosed\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(path)
