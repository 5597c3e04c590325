"""The coordination matters catalogue: what a street may call a department for, and how fast.

The catalogue (``data/catalog.yaml``) is the street's side of power 3, coordination: each matter
names the force kind that leads it, the kinds that must assist, its priority, its deadlines and
the level that should handle it. A matter's code is also its Open311 ``service_code``, so it must
stay stable and be safe in a URL path.

The loader validates the whole file and reports every problem in one :class:`CatalogError`, so a
maintainer fixes the file in one pass instead of one error per run.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gridgov.errors import CatalogError, DataFileError, InputError, UnknownMatterError
from gridgov.model import ForceKind, HandlingLevel
from gridgov.settings import get_settings

#: Characters RFC 3986 leaves unreserved, so a code needs no escaping in a URL path.
URL_SAFE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,31}")
_DOMAIN_CODE = re.compile(r"[A-Z][A-Z0-9]{0,7}")
_TWO_DIGITS = re.compile(r"[0-9]{2}")
PRIORITIES = (1, 2, 3, 4)

CATALOG_FIELDS = ("version", "source", "event_majors", "domains", "matters")
CODED_FIELDS = ("code", "zh", "en")  # domains and event major classes
MATTER_FIELDS = (
    "code",
    "domain",
    "name_zh",
    "name_en",
    "description_en",
    "keywords",
    "lead",
    "assist",
    "priority",
    "deadlines",
    "max_travel_min",
    "level",
    "event_class",
)
DEADLINE_FIELDS = ("acknowledge_min", "arrive_min", "resolve_h")
EVENT_CLASS_FIELDS = ("major", "minor", "name_zh")


class Stage(StrEnum):
    """A stage of an incident that has a deadline, counted from dispatch."""

    ACKNOWLEDGE = "acknowledge"
    ARRIVE = "arrive"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class Deadlines:
    """How long a department has, from dispatch, to respond, to be on scene and to resolve."""

    acknowledge_min: float
    arrive_min: float
    resolve_h: float

    def for_stage(self, stage: Stage | str) -> timedelta:
        """Return the deadline of ``stage`` (``acknowledge``, ``arrive`` or ``resolve``)."""
        stage = _stage(stage)
        if stage is Stage.ACKNOWLEDGE:
            return timedelta(minutes=self.acknowledge_min)
        if stage is Stage.ARRIVE:
            return timedelta(minutes=self.arrive_min)
        return timedelta(hours=self.resolve_h)


@dataclass(frozen=True)
class EventClass:
    """A CJ/T 214-style event class: two-digit major and minor codes and the minor class name."""

    major: str
    minor: str
    name_zh: str

    @property
    def code(self) -> str:
        """The four-digit class code, major then minor (e.g. ``0401``)."""
        return self.major + self.minor


@dataclass(frozen=True)
class EventMajor:
    """A major event class of the CJ/T 214-style coding."""

    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class Domain:
    """A domain of the coordination list (e.g. ``FS`` 消防安全, fire safety)."""

    code: str
    zh: str
    en: str


@dataclass(frozen=True)
class Matter:
    """One matter a street can call a stationed department for.

    ``code`` doubles as the Open311 ``service_code``. Joint enforcement needs one unit of every
    kind in :attr:`required_kinds`.
    """

    code: str
    domain: str
    name_zh: str
    name_en: str
    description: str
    keywords: tuple[str, ...]
    lead: ForceKind
    assist: tuple[ForceKind, ...]
    priority: int
    deadlines: Deadlines
    max_travel_min: float
    level: HandlingLevel
    event_class: EventClass

    @property
    def required_kinds(self) -> tuple[ForceKind, ...]:
        """The lead kind first, then the assisting kinds, each once."""
        return tuple(dict.fromkeys((self.lead, *self.assist)))

    @property
    def is_joint(self) -> bool:
        """Whether the matter needs more than one kind of force (joint enforcement)."""
        return len(self.required_kinds) > 1

    @property
    def acknowledge_min(self) -> float:
        return self.deadlines.acknowledge_min

    @property
    def arrive_min(self) -> float:
        return self.deadlines.arrive_min

    @property
    def resolve_h(self) -> float:
        return self.deadlines.resolve_h

    @property
    def max_travel(self) -> timedelta:
        """The longest acceptable travel time before dispatch escalates."""
        return timedelta(minutes=self.max_travel_min)

    def deadline_for(self, stage: Stage | str) -> timedelta:
        """Return the deadline of ``stage``, counted from dispatch.

        Raises
        ------
        InputError
            If ``stage`` is not ``acknowledge``, ``arrive`` or ``resolve``.
        """
        return self.deadlines.for_stage(stage)


@dataclass(frozen=True)
class Catalog:
    """The validated catalogue: domains and matters in file order.

    Build it with :func:`load_catalog` or :func:`catalog_from_dict`, which validate; the
    constructor trusts its arguments.
    """

    version: str
    source: str
    event_majors: tuple[EventMajor, ...]
    domains: tuple[Domain, ...]
    matters: tuple[Matter, ...]
    _by_code: dict[str, Matter] = field(init=False, repr=False, compare=False)
    _domains: dict[str, Domain] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen, so the lookup tables are set through object.__setattr__ once, here.
        object.__setattr__(self, "_by_code", {m.code: m for m in self.matters})
        object.__setattr__(self, "_domains", {d.code: d for d in self.domains})

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._by_code

    def __iter__(self) -> Iterator[Matter]:
        return iter(self.matters)

    def __len__(self) -> int:
        return len(self.matters)

    @property
    def codes(self) -> tuple[str, ...]:
        """Matter codes in file order."""
        return tuple(self._by_code)

    def get(self, code: str) -> Matter:
        """Return the matter with ``code``.

        Raises
        ------
        UnknownMatterError
            If there is none; the message suggests the closest codes.
        """
        try:
            return self._by_code[code]
        except KeyError:
            pass
        raise UnknownMatterError(code, tuple(self._suggest(code)))

    def domain(self, code: str) -> Domain:
        """Return the domain with ``code``.

        Raises
        ------
        InputError
            If there is none.
        """
        try:
            return self._domains[code]
        except KeyError:
            known = ", ".join(self._domains)
            msg = f"unknown domain {code!r}; known domains: {known}"
            raise InputError(msg) from None

    def by_domain(self, domain: str | Domain) -> tuple[Matter, ...]:
        """Return the matters of ``domain`` (a code or a :class:`Domain`) in file order."""
        code = self.domain(domain.code if isinstance(domain, Domain) else domain).code
        return tuple(m for m in self.matters if m.domain == code)

    def for_kind(self, kind: ForceKind | str, *, lead_only: bool = False) -> tuple[Matter, ...]:
        """Return the matters that need ``kind``, as lead or assist (only as lead if asked).

        Raises
        ------
        InputError
            If ``kind`` is not a force kind.
        """
        try:
            kind = ForceKind(kind)
        except ValueError:
            msg = f"unknown force kind {kind!r}; expected one of {', '.join(ForceKind)}"
            raise InputError(msg) from None
        if lead_only:
            return tuple(m for m in self.matters if m.lead is kind)
        return tuple(m for m in self.matters if kind in m.required_kinds)

    def open311_services(self) -> list[dict[str, Any]]:
        """Return the Open311 GeoReport v2 service list (one entry per matter)."""
        return [
            {
                "service_code": m.code,
                "service_name": m.name_en,
                "description": m.description,
                "metadata": False,
                "type": "realtime",
                "keywords": ",".join(m.keywords),
                "group": self._domains[m.domain].en,
            }
            for m in self.matters
        ]

    def _suggest(self, code: str) -> list[str]:
        codes = list(self._by_code)
        hints = difflib.get_close_matches(code.strip().upper(), codes, n=3, cutoff=0.6)
        if hints:
            return hints
        # A client may send a name instead of a code ("gas leak", "燃气泄漏").
        names = {m.name_en.lower(): m.code for m in self.matters}
        names.update({m.name_zh: m.code for m in self.matters})
        close = difflib.get_close_matches(code.strip().lower(), list(names), n=3, cutoff=0.5)
        return list(dict.fromkeys(names[n] for n in close))


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate the matters catalogue.

    Parameters
    ----------
    path
        A YAML file; defaults to ``get_settings().catalog_path``.

    Raises
    ------
    DataFileError
        If the file cannot be read.
    CatalogError
        If it is not valid YAML or fails validation; the message lists every problem.
    """
    path = get_settings().catalog_path if path is None else Path(path)
    return catalog_from_dict(read_catalog_yaml(path, "matters catalogue"), origin=str(path))


def read_catalog_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of a catalogue file (matters, consultation items).

    Raises
    ------
    DataFileError
        The file cannot be read.
    CatalogError
        It is not valid YAML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the {what} {path}: {exc.strerror or exc}"
        raise DataFileError(msg) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"the {what} {path} is not valid YAML: {exc}"
        raise CatalogError(msg) from exc


def catalog_from_dict(data: Any, *, origin: str = "<dict>") -> Catalog:
    """Validate a parsed catalogue (the YAML structure) and build a :class:`Catalog`.

    Parameters
    ----------
    data
        The mapping read from ``catalog.yaml``.
    origin
        Where the data came from, for the error message.

    Raises
    ------
    CatalogError
        Listing every problem found, not just the first.
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        problems.append(f"the catalogue must be a mapping, not {type(data).__name__}")
        _raise_if(problems, origin)
    check_fields(data, CATALOG_FIELDS, "catalogue", problems)

    version = data.get("version")
    bad_version = isinstance(version, bool) or not isinstance(version, str | int | float)
    if "version" in data and (bad_version or not str(version).strip()):
        problems.append("catalogue: 'version' must be a non-empty string")
    source = (
        text_field(data.get("source"), "catalogue", "source", problems) if "source" in data else ""
    )

    majors = _parse_majors(data.get("event_majors"), problems)
    domains = _parse_domains(data.get("domains"), problems)
    major_codes = {m.code for m in majors}
    domain_codes = {d.code for d in domains}

    raw_matters = data.get("matters")
    matters: list[Matter] = []
    if not isinstance(raw_matters, list) or not raw_matters:
        problems.append("catalogue: 'matters' must be a non-empty list")
        raw_matters = []
    seen: dict[str, int] = {}
    class_names: dict[tuple[str, str], tuple[str, str]] = {}
    for i, raw in enumerate(raw_matters):
        code = raw.get("code") if isinstance(raw, Mapping) else None
        # Checked on the raw code so a duplicate is reported even when either copy has other
        # problems too.
        duplicate = False
        if isinstance(code, str):
            duplicate = code in seen
            if duplicate:
                problems.append(
                    f"matters[{i}] ({code}): duplicate code, first used by matters[{seen[code]}]"
                )
            else:
                seen[code] = i
        matter = _parse_matter(i, raw, domain_codes, major_codes, problems)
        if matter is None or duplicate:
            continue
        ec = matter.event_class
        first = class_names.setdefault((ec.major, ec.minor), (ec.name_zh, matter.code))
        if first[0] != ec.name_zh:
            problems.append(
                f"matters[{i}] ({matter.code}): event class {ec.code} is named {ec.name_zh!r}, "
                f"but {first[1]} names it {first[0]!r}"
            )
        matters.append(matter)

    if raw_matters and len(matters) == len(raw_matters):
        used = {m.domain for m in matters}
        for d in domains:
            if d.code not in used:
                problems.append(f"domains: {d.code} ({d.zh}) has no matters")

    _raise_if(problems, origin)
    return Catalog(
        version=str(version),
        source=source,
        event_majors=tuple(majors),
        domains=tuple(domains),
        matters=tuple(matters),
    )


def _raise_if(problems: list[str], origin: str) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        msg = f"{len(problems)} problem(s) in the matters catalogue {origin}:\n{lines}"
        raise CatalogError(msg, tuple(problems))


def _stage(stage: Stage | str) -> Stage:
    try:
        return Stage(stage)
    except ValueError:
        msg = f"unknown deadline stage {stage!r}; expected one of {', '.join(Stage)}"
        raise InputError(msg) from None


def check_fields(
    raw: Mapping[str, Any], expected: tuple[str, ...], where: str, problems: list[str]
) -> None:
    """Note in ``problems`` the fields of a YAML mapping missing from, or not in, ``expected``
    (the catalogue's and the consultation catalogue's one check)."""
    missing = [f for f in expected if f not in raw]
    if missing:
        problems.append(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = [str(f) for f in raw if f not in expected]
    if unknown:
        # Usually a typo ('asist'), which would otherwise silently drop the intended value.
        problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")


def text_field(value: Any, where: str, name: str, problems: list[str]) -> str:
    """A YAML value that must be a non-empty string, stripped ("" and a problem noted if not)."""
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: {name!r} must be a non-empty string")
        return ""
    return value.strip()


def _number(value: Any) -> float | None:
    # YAML gives int or float; bool is an int subclass and would pass as 0 or 1 by accident.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


_Coded = TypeVar("_Coded", EventMajor, Domain)


def _parse_majors(raw: Any, problems: list[str]) -> list[EventMajor]:
    return _parse_coded(
        raw, "event_majors", _TWO_DIGITS, "a 2-digit string such as '04'",
        "major class code", EventMajor, problems,
    )  # fmt: skip


def _parse_domains(raw: Any, problems: list[str]) -> list[Domain]:
    return _parse_coded(
        raw, "domains", _DOMAIN_CODE,
        "1-8 capital letters or digits, starting with a letter (it prefixes the matter codes)",
        "domain code", Domain, problems,
    )  # fmt: skip


def _parse_coded(
    raw: Any,
    key: str,
    pattern: re.Pattern[str],
    code_rule: str,
    noun: str,
    make: type[_Coded],
    problems: list[str],
) -> list[_Coded]:
    """Parse a list of ``{code, zh, en}`` entries (domains, event classes), noting problems."""
    if not isinstance(raw, list) or not raw:
        problems.append(f"catalogue: '{key}' must be a non-empty list")
        return []
    parsed: list[_Coded] = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{where}: must be a mapping with code, zh and en")
            continue
        check_fields(item, CODED_FIELDS, where, problems)
        code = item.get("code")
        if not isinstance(code, str) or not pattern.fullmatch(code):
            problems.append(f"{where}: code {code!r} must be {code_rule}")
            continue
        if any(p.code == code for p in parsed):
            problems.append(f"{where}: duplicate {noun} {code}")
            continue
        zh = text_field(item.get("zh"), where, "zh", problems)
        en = text_field(item.get("en"), where, "en", problems)
        parsed.append(make(code=code, zh=zh, en=en))
    return parsed


def _parse_matter(
    i: int,
    raw: Any,
    domain_codes: set[str],
    major_codes: set[str],
    problems: list[str],
) -> Matter | None:
    """Parse one matter, appending its problems; return None if it has any."""
    if not isinstance(raw, Mapping):
        problems.append(f"matters[{i}]: must be a mapping, not {type(raw).__name__}")
        return None
    before = len(problems)
    code = raw.get("code")
    where = f"matters[{i}] ({code})" if isinstance(code, str) else f"matters[{i}]"
    check_fields(raw, MATTER_FIELDS, where, problems)

    domain = raw.get("domain")
    if "domain" in raw and (not isinstance(domain, str) or domain not in domain_codes):
        problems.append(f"{where}: unknown domain {domain!r}")
    if "code" in raw:
        if not isinstance(code, str) or not URL_SAFE_CODE.fullmatch(code):
            problems.append(
                f"{where}: code {code!r} is not URL-safe; use 1-32 letters, digits, '.', '_', "
                "'~' or '-', starting with a letter or digit"
            )
        elif isinstance(domain, str) and not re.fullmatch(re.escape(domain) + r"-[0-9]{2}", code):
            problems.append(
                f"{where}: code {code!r} does not follow the scheme <domain>-NN ({domain}-01)"
            )

    name_zh = text_field(raw.get("name_zh"), where, "name_zh", problems) if "name_zh" in raw else ""
    name_en = text_field(raw.get("name_en"), where, "name_en", problems) if "name_en" in raw else ""
    description = ""
    if "description_en" in raw:
        description = text_field(raw.get("description_en"), where, "description_en", problems)
        if "\n" in description:
            problems.append(f"{where}: description_en must be one line (it is Open311's)")

    keywords: tuple[str, ...] = ()
    if "keywords" in raw:
        kw = raw.get("keywords")
        if (
            not isinstance(kw, list)
            or not kw
            or not all(isinstance(k, str) and k.strip() for k in kw)
        ):
            problems.append(f"{where}: keywords must be a non-empty list of non-empty strings")
        else:
            keywords = tuple(k.strip() for k in kw)

    lead = _force_kind(raw.get("lead"), where, "lead", problems) if "lead" in raw else None
    assist: list[ForceKind] = []
    if "assist" in raw:
        raw_assist = raw.get("assist")
        if raw_assist is None:
            raw_assist = []
        if not isinstance(raw_assist, list):
            problems.append(f"{where}: assist must be a list of force kinds (possibly empty)")
            raw_assist = []
        for item in raw_assist:
            kind = _force_kind(item, where, "assist", problems)
            if kind is None:
                continue
            if kind is lead:
                problems.append(f"{where}: the lead kind {kind} is also listed in assist")
            elif kind in assist:
                problems.append(f"{where}: {kind} is listed twice in assist")
            else:
                assist.append(kind)

    priority = raw.get("priority")
    bad_priority = isinstance(priority, bool) or not isinstance(priority, int)
    if "priority" in raw and (bad_priority or priority not in PRIORITIES):
        problems.append(f"{where}: priority {priority!r} must be an integer from 1 (highest) to 4")

    deadlines = (
        _parse_deadlines(raw.get("deadlines"), where, problems) if ("deadlines" in raw) else None
    )

    max_travel = _number(raw.get("max_travel_min"))
    if "max_travel_min" in raw:
        if max_travel is None or max_travel <= 0:
            problems.append(
                f"{where}: max_travel_min {raw.get('max_travel_min')!r} must be a positive number"
            )
            max_travel = None
        elif deadlines is not None and max_travel > deadlines.arrive_min:
            problems.append(
                f"{where}: max_travel_min ({max_travel:g}) exceeds arrive_min "
                f"({deadlines.arrive_min:g}); a unit that far away could never arrive in time"
            )

    level: HandlingLevel | None = None
    if "level" in raw:
        try:
            level = HandlingLevel(raw["level"])
        except ValueError:
            problems.append(
                f"{where}: level {raw.get('level')!r} must be one of {', '.join(HandlingLevel)}"
            )
        else:
            if (
                level is HandlingLevel.GRID
                and lead is not None
                and lead is not ForceKind.GRID_WORKER
            ):
                problems.append(
                    f"{where}: a grid-level matter must be led by the grid worker, not {lead}"
                )

    event_class = (
        _parse_event_class(raw.get("event_class"), where, major_codes, problems)
        if "event_class" in raw
        else None
    )

    if len(problems) > before:
        return None
    # Every field was present and valid, or a problem was recorded above.
    assert isinstance(code, str) and isinstance(domain, str) and isinstance(priority, int)
    assert lead is not None and deadlines is not None and max_travel is not None
    assert level is not None and event_class is not None
    return Matter(
        code=code,
        domain=domain,
        name_zh=name_zh,
        name_en=name_en,
        description=description,
        keywords=keywords,
        lead=lead,
        assist=tuple(assist),
        priority=priority,
        deadlines=deadlines,
        max_travel_min=max_travel,
        level=level,
        event_class=event_class,
    )


def _force_kind(value: Any, where: str, name: str, problems: list[str]) -> ForceKind | None:
    try:
        return ForceKind(value)
    except ValueError:
        problems.append(
            f"{where}: unknown force kind {value!r} in {name}; expected one of "
            f"{', '.join(ForceKind)}"
        )
        return None


def _parse_deadlines(raw: Any, where: str, problems: list[str]) -> Deadlines | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: deadlines must be a mapping of {', '.join(DEADLINE_FIELDS)}")
        return None
    before = len(problems)
    check_fields(raw, DEADLINE_FIELDS, f"{where} deadlines", problems)
    values: dict[str, float] = {}
    for name in DEADLINE_FIELDS:
        if name not in raw:
            continue
        number = _number(raw[name])
        if number is None or number <= 0:
            problems.append(f"{where}: deadline {name} {raw[name]!r} must be a positive number")
        else:
            values[name] = number
    ack, arrive, resolve_h = (values.get(n) for n in DEADLINE_FIELDS)
    if ack is not None and arrive is not None and ack > arrive:
        problems.append(f"{where}: acknowledge_min ({ack:g}) is later than arrive_min ({arrive:g})")
    if arrive is not None and resolve_h is not None and arrive > resolve_h * 60:
        problems.append(
            f"{where}: arrive_min ({arrive:g} min) is later than resolve_h ({resolve_h:g} h)"
        )
    if len(problems) > before or ack is None or arrive is None or resolve_h is None:
        return None
    return Deadlines(acknowledge_min=ack, arrive_min=arrive, resolve_h=resolve_h)


def _parse_event_class(
    raw: Any, where: str, major_codes: set[str], problems: list[str]
) -> EventClass | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: event_class must be a mapping of major, minor and name_zh")
        return None
    before = len(problems)
    check_fields(raw, EVENT_CLASS_FIELDS, f"{where} event_class", problems)
    major, minor = raw.get("major"), raw.get("minor")
    for name, value in (("major", major), ("minor", minor)):
        if name in raw and (not isinstance(value, str) or not _TWO_DIGITS.fullmatch(value)):
            # An unquoted 04 in YAML arrives as the integer 4 and would lose its leading zero.
            problems.append(
                f"{where}: event_class {name} {value!r} must be a quoted 2-digit string like '04'"
            )
    if isinstance(major, str) and _TWO_DIGITS.fullmatch(major) and major not in major_codes:
        problems.append(f"{where}: event_class major {major!r} is not declared in event_majors")
    name_zh = (
        text_field(raw.get("name_zh"), f"{where} event_class", "name_zh", problems)
        if "name_zh" in raw
        else ""
    )
    if len(problems) > before or not isinstance(major, str) or not isinstance(minor, str):
        return None
    return EventClass(major=major, minor=minor, name_zh=name_zh)
