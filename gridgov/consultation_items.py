"""The consultation items catalogue of powers 2 and 4: what a department must consult the
streets about, at which stage, and how many working days they have to answer.

The catalogue (``data/consultation.yaml``) lists the planning items of power 2 by level and stage
and the major-decision items of power 4 by area and step. Like the matters catalogue, the loader
validates the whole file and reports every problem in one :class:`CatalogError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridgov.catalog import URL_SAFE_CODE, check_fields, read_catalog_yaml, text_field
from gridgov.errors import CatalogError, InputError
from gridgov.settings import get_settings

__all__ = [
    "ConsultationCatalog",
    "ConsultationItem",
    "Term",
    "consultation_catalog_from_dict",
    "load_consultation_catalog",
]

#: Top-level fields of ``data/consultation.yaml``, all required.
CONSULTATION_FIELDS = (
    "version",
    "source",
    "planning_levels",
    "planning_stages",
    "decision_areas",
    "decision_steps",
    "items",
)
#: Fields of a level, stage, area or step.
TERM_FIELDS = ("code", "zh", "en")
#: Fields of an item, all required.
ITEM_FIELDS = ("code", "power", "group", "stage", "response_days", "acceptance", "zh", "en")
#: The powers this catalogue serves: 2 (planning) and 4 (major decisions).
POWERS = (2, 4)
_MAX_DAYS = 60


@dataclass(frozen=True)
class Term:
    """A coded term (a level, stage, area or step) with its zh and en names."""

    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class ConsultationItem:
    """One item the streets are consulted on.

    ``group`` is a planning level (power 2) or a decision area (power 4); ``stage`` the stage or
    step at which the street is to be asked; ``acceptance`` whether it also signs off the
    project's acceptance.
    """

    code: str
    power: int
    group: str
    stage: str
    response_days: int
    acceptance: bool
    zh: str
    en: str


@dataclass(frozen=True)
class ConsultationCatalog:
    """The validated catalogue; ``stages_of(power)`` gives that power's stages in order."""

    version: str
    source: str
    planning_levels: tuple[Term, ...]
    planning_stages: tuple[Term, ...]
    decision_areas: tuple[Term, ...]
    decision_steps: tuple[Term, ...]
    items: tuple[ConsultationItem, ...]

    def get(self, code: str) -> ConsultationItem:
        """The item of ``code``.

        Raises
        ------
        InputError
            No such item (the message lists the known codes' prefixes).
        """
        for item in self.items:
            if item.code == code:
                return item
        msg = (
            f"unknown consultation item {code!r}; the catalogue has {len(self.items)} items "
            f"({', '.join(i.code for i in self.items[:3])}, ...)"
        )
        raise InputError(msg)

    def stages_of(self, power: int) -> tuple[str, ...]:
        """The stage (power 2) or step (power 4) codes, in their order."""
        terms = self.planning_stages if power == 2 else self.decision_steps
        return tuple(t.code for t in terms)

    def is_late(self, item: ConsultationItem, stage: str) -> bool:
        """Whether consulting on ``item`` at ``stage`` comes after the stage it was meant for.

        Raises
        ------
        InputError
            ``stage`` is not a stage of the item's power.
        """
        order = self.stages_of(item.power)
        if stage not in order:
            msg = f"stage {stage!r} of item {item.code} must be one of {', '.join(order)}"
            raise InputError(msg)
        return order.index(stage) > order.index(item.stage)


def load_consultation_catalog(path: Path | None = None) -> ConsultationCatalog:
    """Read and validate ``data/consultation.yaml`` (or ``path``).

    Raises
    ------
    DataFileError
        The file cannot be read.
    CatalogError
        Not valid YAML, or it fails validation; the message lists every problem.
    """
    path = get_settings().data_dir / "consultation.yaml" if path is None else Path(path)
    data = read_catalog_yaml(path, "consultation catalogue")
    return consultation_catalog_from_dict(data, origin=str(path))


def consultation_catalog_from_dict(data: Any, *, origin: str = "<dict>") -> ConsultationCatalog:
    """Validate a parsed catalogue and build a :class:`ConsultationCatalog`.

    Raises
    ------
    CatalogError
        Listing every problem found, not just the first.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        _raise(
            [f"the catalogue must be a mapping, not {type(data).__name__}"],
            origin,
        )
    check_fields(data, CONSULTATION_FIELDS, "catalogue", problems)
    version = str(data.get("version", "")).strip()
    if not version:
        problems.append("catalogue: 'version' must be a non-empty string")
    source = text_field(data.get("source"), "catalogue", "source", problems)
    terms = {
        name: _terms(data.get(name), name, problems)
        for name in ("planning_levels", "planning_stages", "decision_areas", "decision_steps")
    }
    groups = {
        2: {t.code for t in terms["planning_levels"]},
        4: {t.code for t in terms["decision_areas"]},
    }
    stages = {
        2: {t.code for t in terms["planning_stages"]},
        4: {t.code for t in terms["decision_steps"]},
    }
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        problems.append("catalogue: 'items' must be a non-empty list")
        raw_items = []
    items: list[ConsultationItem] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_items):
        item = _item(i, raw, groups, stages, problems)
        if item is None:
            continue
        if item.code in seen:
            problems.append(f"items[{i}] ({item.code}): duplicate code")
            continue
        seen.add(item.code)
        items.append(item)
    _raise(problems, origin)
    return ConsultationCatalog(
        version=version,
        source=source,
        planning_levels=terms["planning_levels"],
        planning_stages=terms["planning_stages"],
        decision_areas=terms["decision_areas"],
        decision_steps=terms["decision_steps"],
        items=tuple(items),
    )


def _item(
    i: int,
    raw: Any,
    groups: Mapping[int, set[str]],
    stages: Mapping[int, set[str]],
    problems: list[str],
) -> ConsultationItem | None:
    if not isinstance(raw, Mapping):
        problems.append(f"items[{i}]: must be a mapping")
        return None
    where = f"items[{i}] ({raw.get('code', '?')})"
    before = len(problems)
    check_fields(raw, ITEM_FIELDS, where, problems)
    code = raw.get("code")
    if not isinstance(code, str) or not URL_SAFE_CODE.fullmatch(code):
        problems.append(f"{where}: 'code' must be a URL-safe code such as P-OVR-01")
    power = raw.get("power")
    if power not in POWERS or isinstance(power, bool):
        problems.append(f"{where}: 'power' must be 2 (planning) or 4 (major decisions)")
        power = None
    group, stage = raw.get("group"), raw.get("stage")
    if power is not None and group not in groups[power]:
        what = "planning level" if power == 2 else "decision area"
        problems.append(f"{where}: group {group!r} is not a {what} ({', '.join(groups[power])})")
    if power is not None and stage not in stages[power]:
        what = "planning stage" if power == 2 else "decision step"
        problems.append(f"{where}: stage {stage!r} is not a {what} ({', '.join(stages[power])})")
    days = raw.get("response_days")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= _MAX_DAYS:
        problems.append(f"{where}: 'response_days' must be a whole number of days, 1..{_MAX_DAYS}")
    acceptance = raw.get("acceptance")
    if not isinstance(acceptance, bool):
        problems.append(f"{where}: 'acceptance' must be true or false")
    zh = text_field(raw.get("zh"), where, "zh", problems)
    en = text_field(raw.get("en"), where, "en", problems)
    if len(problems) > before:
        return None
    return ConsultationItem(
        code=str(code),
        power=int(power or 0),
        group=str(group),
        stage=str(stage),
        response_days=int(str(days)),
        acceptance=bool(acceptance),
        zh=zh,
        en=en,
    )


def _terms(raw: Any, name: str, problems: list[str]) -> tuple[Term, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"catalogue: {name!r} must be a non-empty list")
        return ()
    out: list[Term] = []
    for i, entry in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be a mapping with code, zh and en")
            continue
        check_fields(entry, TERM_FIELDS, where, problems)
        code = text_field(entry.get("code"), where, "code", problems)
        zh = text_field(entry.get("zh"), where, "zh", problems)
        en = text_field(entry.get("en"), where, "en", problems)
        if code in {t.code for t in out}:
            problems.append(f"{where}: duplicate code {code!r}")
        elif code and zh and en:
            out.append(Term(code, zh, en))
    return tuple(out)


def _raise(problems: list[str], origin: str) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        msg = f"{len(problems)} problem(s) in the consultation catalogue {origin}:\n{lines}"
        raise CatalogError(msg, tuple(problems))
