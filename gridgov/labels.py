"""The one zh/en dictionary of what a person reads: states, levels, kinds, statuses, matters.

Every page (the static maps, the live wall, later pages) shows a value as "中文 English" from
here, never as its identifier (``dispatched``, ``street``, ``police``). The maps embed
:func:`label_table` as JSON and the page runtime reads it through ``GG.label(group, value)``;
Python code calls :func:`label`. Matter names come from the catalogue a page is given (the
stored one, :func:`label_table`), else from the configured file (``data/catalog.yaml``).

Groups: ``state`` (workflow states), ``action`` (workflow actions), ``role`` (who acted, and a
unit's role in an assignment), ``escalation`` (how far dispatch reached), ``rule`` and ``tier``
(dispatch rules and search tiers), ``kind`` (force kinds), ``unit_status``, ``travel_mode``,
``priority``, ``level`` (area levels), ``kpi`` (assessment columns) and ``matter``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from gridgov.catalog import Matter, load_catalog
from gridgov.model import EscalationLevel, ForceKind, Level, TravelMode, UnitStatus
from gridgov.workflow import Action, Role, State

__all__ = ["GROUPS", "KPI_KINDS", "label", "label_table", "pair"]

_STATE: dict[str, tuple[str, str]] = {
    State.REPORTED: ("已上报", "reported"),
    State.REGISTERED: ("已立案", "registered"),
    State.REJECTED: ("不予立案", "rejected"),
    State.DISPATCHED: ("已派遣", "dispatched"),
    State.ACKNOWLEDGED: ("已响应", "acknowledged"),
    State.ON_SCENE: ("已到场", "on scene"),
    State.RESOLVED: ("已处置", "resolved"),
    State.VERIFIED: ("已核查", "verified"),
    State.CLOSED: ("已结案", "closed"),
    State.EVALUATED: ("已评价", "evaluated"),
    State.CANCELLED: ("已撤销", "cancelled"),
}
_ACTION: dict[str, tuple[str, str]] = {
    Action.REPORT: ("上报", "report"),
    Action.REGISTER: ("立案", "register"),
    Action.REJECT: ("不予立案", "reject"),
    Action.DISPATCH: ("派遣", "dispatch"),
    Action.ACKNOWLEDGE: ("响应", "acknowledge"),
    Action.ARRIVE: ("到场", "arrive"),
    Action.RESOLVE: ("处置完毕", "resolve"),
    Action.VERIFY: ("核查", "verify"),
    Action.REOPEN: ("返工", "reopen"),
    Action.CLOSE: ("结案", "close"),
    Action.EVALUATE: ("评价", "evaluate"),
    Action.RETURN: ("退回", "return"),
    Action.REQUEUE: ("重新排队", "requeue"),
    Action.SUPERVISE: ("督办", "supervise"),
    Action.CANCEL: ("撤销", "cancel"),
    Action.RELEASE: ("撤回单位", "release a unit"),
    Action.REASSIGN: ("改派", "reassign"),
    Action.BACKUP: ("增援", "backup"),
}
_ROLE: dict[str, tuple[str, str]] = {
    Role.SYSTEM: ("系统", "system"),
    Role.REPORTER: ("上报人", "reporter"),
    Role.GRID_WORKER: ("网格员", "grid worker"),
    Role.DISPATCHER: ("调度员", "dispatcher"),
    Role.COMMANDER: ("指挥长", "commander"),
    Role.UNIT: ("处置力量", "unit"),
    Role.OFFICE: ("派驻机构", "office"),
    Role.DISTRICT: ("区级", "district"),
    # A unit's role in an assignment (gridgov.dispatch.single.ROLE_LEAD / ROLE_ASSIST).
    "lead": ("主办", "lead"),
    "assist": ("协办", "assist"),
    # Scopes of the live feed that are not workflow roles.
    "admin": ("管理员", "administrator"),
    "analyst": ("分析员", "analyst"),
    "citizen": ("市民", "citizen"),
    "public": ("公众", "public"),
}
_ESCALATION: dict[str, tuple[str, str]] = {
    EscalationLevel.COMMUNITY: ("社区内", "within the community"),
    EscalationLevel.STREET: ("街道内", "within the street"),
    EscalationLevel.NEIGHBOUR: ("邻街支援", "neighbouring street"),
    EscalationLevel.DISTRICT: ("区级支援", "district-wide"),
}
_RULE: dict[str, tuple[str, str]] = {
    "own_grid_worker": ("本网格网格员", "the grid's own worker"),
    "nearest_in_street": ("街道内最近", "nearest in the street"),
    "nearest_in_neighbours": ("邻街最近", "nearest in a neighbouring street"),
    "nearest_in_district": ("全区最近", "nearest in the district"),
    "best_over_max_travel": ("超出最长到达时间的最优", "best, over the maximum travel time"),
    "preemption": ("抢占", "preempted for a priority-1 matter"),
    "dispatcher_choice": ("调度员选定", "chosen by the dispatcher"),
}
_TIER: dict[str, tuple[str, str]] = {
    "own_grid": ("本网格", "own grid"),
    "street": ("街道", "street"),
    "neighbour": ("邻街", "neighbouring streets"),
    "district": ("全区", "district"),
}
_UNIT_STATUS: dict[str, tuple[str, str]] = {
    UnitStatus.AVAILABLE: ("空闲", "available"),
    UnitStatus.BUSY: ("出勤", "busy"),
    UnitStatus.OFF_DUTY: ("离岗", "off duty"),
}
_TRAVEL_MODE: dict[str, tuple[str, str]] = {
    TravelMode.DRIVE: ("车行", "driving"),
    TravelMode.BIKE: ("骑行", "cycling"),
    TravelMode.WALK: ("步行", "walking"),
}
_PRIORITY: dict[str, tuple[str, str]] = {
    "1": ("紧急", "urgent"),
    "2": ("高", "high"),
    "3": ("中", "medium"),
    "4": ("低", "low"),
    "0": ("未知", "unknown"),
}
_LEVEL_EN = {
    Level.DISTRICT: "district",
    Level.STREET: "street",
    Level.COMMUNITY: "community",
    Level.GRID: "grid",
    Level.MICROGRID: "micro-grid",
}
#: How each assessment column reads: a count, a rate (shown in %), minutes, or a 0-100 score.
KPI_KINDS: Mapping[str, str] = {
    "calls": "count",
    "responded_on_time": "count",
    "response_rate": "rate",
    "response_mean_min": "minutes",
    "response_p90_min": "minutes",
    "arrival_mean_min": "minutes",
    "arrival_p90_min": "minutes",
    "share_community": "rate",
    "share_street": "rate",
    "share_neighbour": "rate",
    "share_district": "rate",
    "cases": "count",
    "closed": "count",
    "resolution_rate": "rate",
    "due": "count",
    "on_time": "count",
    "on_time_closure_rate": "rate",
    "resolved": "count",
    "reworked": "count",
    "rework_rate": "rate",
    "evaluated": "count",
    "satisfied": "count",
    "satisfaction_rate": "rate",
    "street_score": "score",
    "rank": "count",
}
_KPI: dict[str, tuple[str, str]] = {
    "calls": ("派遣次数", "calls"),
    "responded_on_time": ("按时响应次数", "calls answered on time"),
    "response_rate": ("响应率", "response rate (on time)"),
    "response_mean_min": ("平均响应时间（分钟）", "mean response time (min)"),
    "response_p90_min": ("响应时间90分位（分钟）", "response time, 90th percentile (min)"),
    "arrival_mean_min": ("平均到场时间（分钟）", "mean arrival time (min)"),
    "arrival_p90_min": ("到场时间90分位（分钟）", "arrival time, 90th percentile (min)"),
    "share_community": ("社区内处置占比", "share handled within the community"),
    "share_street": ("街道内处置占比", "share handled within the street"),
    "share_neighbour": ("邻街支援占比", "share handled by a neighbouring street"),
    "share_district": ("区级支援占比", "share handled district-wide"),
    "cases": ("案件数", "cases"),
    "closed": ("结案数", "cases closed"),
    "resolution_rate": ("结案率", "resolution rate"),
    "due": ("应结案数", "cases due"),
    "on_time": ("按期结案数", "cases closed on time"),
    "on_time_closure_rate": ("按期结案率", "on-time closure rate"),
    "resolved": ("处置完毕数", "cases resolved"),
    "reworked": ("返工数", "cases reworked"),
    "rework_rate": ("返工率", "rework rate"),
    "evaluated": ("已评价数", "cases evaluated"),
    "satisfied": ("满意数", "satisfied reporters"),
    "satisfaction_rate": ("满意率", "satisfaction rate"),
    "street_score": ("街道评价得分", "street score"),
    "rank": ("排名", "rank"),
}


def _kinds() -> dict[str, tuple[str, str]]:
    return {k.value: (k.zh, k.en) for k in ForceKind}


def _levels() -> dict[str, tuple[str, str]]:
    return {lv.value: (lv.zh, _LEVEL_EN[lv]) for lv in Level}


def _matters() -> dict[str, tuple[str, str]]:
    return {m.code: (m.name_zh, m.name_en) for m in load_catalog()}


#: The groups :func:`label` knows.
GROUPS = (
    "state",
    "action",
    "role",
    "escalation",
    "rule",
    "tier",
    "kind",
    "unit_status",
    "travel_mode",
    "priority",
    "level",
    "kpi",
    "matter",
)


@cache
def _table() -> dict[str, dict[str, tuple[str, str]]]:
    fixed = {
        "state": _STATE,
        "action": _ACTION,
        "role": _ROLE,
        "escalation": _ESCALATION,
        "rule": _RULE,
        "tier": _TIER,
        "kind": _kinds(),
        "unit_status": _UNIT_STATUS,
        "travel_mode": _TRAVEL_MODE,
        "priority": _PRIORITY,
        "level": _levels(),
        "kpi": _KPI,
        "matter": _matters(),
    }
    # StrEnum keys as plain strings: the JSON the pages embed and lookups by str agree.
    return {g: {str(k): v for k, v in fixed[g].items()} for g in GROUPS}


def pair(group: str, value: Any) -> tuple[str, str] | None:
    """The (Chinese, English) names of ``value`` in ``group``; None when it has none."""
    if group not in GROUPS:
        msg = f"unknown label group {group!r}; expected one of {', '.join(GROUPS)}"
        raise KeyError(msg)
    if value is None:
        return None
    return _table()[group].get(str(value))


def label(group: str, value: Any) -> str:
    """``value`` as a person reads it: "中文 English" (the value itself when unknown, "–" when
    missing)."""
    if value is None:
        return "–"
    names = pair(group, value)
    return str(value) if names is None else f"{names[0]} {names[1]}"


def label_table(matters: Iterable[Matter] | None = None) -> dict[str, dict[str, list[str]]]:
    """The whole dictionary, JSON-ready: ``{group: {value: [zh, en]}}`` (what pages embed).

    ``matters`` names the matters (a store's own catalogue, which may differ from the file);
    None keeps the configured file's.
    """
    table = _table()
    if matters is not None:
        table = {**table, "matter": {m.code: (m.name_zh, m.name_en) for m in matters}}
    return {g: {k: list(v) for k, v in names.items()} for g, names in table.items()}
