"""Working days in the PRC: public holidays and the weekends that are worked instead (调休).

Consultation deadlines are counted in working days (``data/holidays.yaml``). A year the file does
not cover is counted by weekends alone and the answer says it is an estimate, so a deadline is
never silently wrong about a holiday nobody told us of.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from gridgov.errors import DataFileError, InputError
from gridgov.settings import get_settings

__all__ = [
    "CALENDAR_FIELDS",
    "Deadline",
    "WorkCalendar",
    "load_work_calendar",
    "work_calendar_from_dict",
]

#: Fields of ``data/holidays.yaml``, all required.
CALENDAR_FIELDS = ("years", "holidays", "working_weekends")
_SATURDAY = 5
# A deadline cannot lie further out than this; it also stops a runaway count.
_MAX_DAYS = 366


@dataclass(frozen=True)
class Deadline:
    """When an answer is due: the end (local midnight) of the last working day allowed.

    ``estimated`` is True when the count crossed a year the calendar does not cover.
    """

    due: datetime
    estimated: bool


@dataclass(frozen=True)
class WorkCalendar:
    """Holidays and worked weekends of the years in ``years``."""

    years: frozenset[int]
    holidays: frozenset[date]
    working_weekends: frozenset[date]

    def is_working_day(self, day: date) -> bool:
        """A weekday that is no holiday, or a weekend day worked instead of one."""
        if day in self.working_weekends:
            return True
        return day.weekday() < _SATURDAY and day not in self.holidays

    def deadline(self, received: datetime, days: int, tz: str | None = None) -> Deadline:
        """The deadline of an answer due ``days`` working days after ``received``.

        The day of receipt does not count: day 1 is the first working day after it, and the
        answer is due by the end of day ``days`` (local midnight in ``tz``, by default the
        display time zone).

        Raises
        ------
        InputError
            ``received`` is naive or ``days`` is not a positive whole number.
        """
        if not isinstance(received, datetime) or received.tzinfo is None:
            msg = "the time a request was received must be timezone-aware"
            raise InputError(msg)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= _MAX_DAYS:
            msg = f"a deadline counts 1..{_MAX_DAYS} working days, not {days!r}"
            raise InputError(msg)
        zone = ZoneInfo(tz or get_settings().display_tz)
        day = received.astimezone(zone).date()
        estimated = False
        left = days
        while left:
            day += timedelta(days=1)
            estimated = estimated or day.year not in self.years
            if self.is_working_day(day):
                left -= 1
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        return Deadline(due=end, estimated=estimated)


def load_work_calendar(path: Path | None = None) -> WorkCalendar:
    """Read and check ``data/holidays.yaml`` (or ``path``).

    Raises
    ------
    DataFileError
        The file cannot be read or is malformed (every problem listed).
    """
    path = get_settings().data_dir / "holidays.yaml" if path is None else Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        msg = f"cannot read the holiday calendar {path}: {exc}"
        raise DataFileError(msg) from exc
    return work_calendar_from_dict(data, origin=str(path))


def work_calendar_from_dict(data: Any, *, origin: str = "<dict>") -> WorkCalendar:
    """Check a parsed calendar: holidays and worked weekends inside the listed years, worked
    days on weekends only, no day both.

    Raises
    ------
    DataFileError
        Listing every problem.
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        data = {}
        problems.append("the calendar must be a mapping with " + ", ".join(CALENDAR_FIELDS))
    unknown = [str(k) for k in data if k not in CALENDAR_FIELDS]
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}")
    years_raw = data.get("years")
    if not isinstance(years_raw, list) or not all(
        isinstance(y, int) and not isinstance(y, bool) for y in years_raw
    ):
        problems.append("'years' must be a list of years")
        years_raw = []
    years = frozenset(years_raw)
    holidays = frozenset(_days(data.get("holidays"), "holidays", problems))
    worked = frozenset(_days(data.get("working_weekends"), "working_weekends", problems))
    for day in sorted(holidays | worked):
        if day.year not in years:
            problems.append(f"{day} lies in {day.year}, which 'years' does not list")
    for day in sorted(worked):
        if day.weekday() < _SATURDAY:
            problems.append(f"working_weekends: {day} is a weekday")
    for day in sorted(holidays & worked):
        problems.append(f"{day} is listed both as a holiday and as a worked weekend day")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        msg = f"{len(problems)} problem(s) in the holiday calendar {origin}:\n{lines}"
        raise DataFileError(msg)
    return WorkCalendar(years=years, holidays=holidays, working_weekends=worked)


def _days(raw: Any, name: str, problems: list[str]) -> Iterable[date]:
    if not isinstance(raw, list):
        problems.append(f"{name!r} must be a list of dates or [first, last] ranges")
        return []
    out: list[date] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, date) and not isinstance(entry, datetime):
            out.append(entry)
        elif (
            isinstance(entry, list)
            and len(entry) == 2
            and all(isinstance(d, date) and not isinstance(d, datetime) for d in entry)
            and entry[0] <= entry[1]
        ):
            first, last = entry
            out.extend(first + timedelta(days=n) for n in range((last - first).days + 1))
        else:
            problems.append(f"{name}[{i}]: {entry!r} is neither a date nor a [first, last] range")
    return out
