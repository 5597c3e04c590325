"""Reporting periods: a month, a quarter or a year, as ``[start, end)`` in the display zone.

Assessment, workload and coverage reports all count over one of these; :meth:`Period.parse`
reads the forms the CLI and the API take (``2026-10``, ``2026-Q4``, ``2026``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from gridgov.errors import InputError
from gridgov.settings import get_settings

__all__ = ["Period"]

_MONTH = re.compile(r"(\d{4})-(\d{1,2})")
_QUARTER = re.compile(r"(\d{4})-[Qq]([1-4])")
_YEAR = re.compile(r"(\d{4})")


@dataclass(frozen=True)
class Period:
    """A reporting period ``[start, end)``: a month, a quarter or a year in the display zone.

    Build it with :meth:`parse`; ``start`` and ``end`` are timezone-aware.
    """

    label: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            msg = f"period {self.label}: start and end must be timezone-aware"
            raise InputError(msg)
        if not self.start < self.end:
            msg = f"period {self.label}: start {self.start} is not before end {self.end}"
            raise InputError(msg)

    @classmethod
    def parse(cls, text: str, tz: str | None = None) -> Period:
        """Parse ``"2026-10"`` (a month), ``"2026-Q4"`` (a quarter) or ``"2026"`` (a year).

        Parameters
        ----------
        text
            The period.
        tz
            The time zone its bounds are midnights of; defaults to ``settings.display_tz``
            (Asia/Shanghai), where the street's month begins.

        Raises
        ------
        InputError
            If ``text`` is none of these forms or names an impossible month.
        """
        zone = _zone(get_settings().display_tz if tz is None else tz)
        raw = str(text).strip()
        if m := _MONTH.fullmatch(raw):
            year, month = int(m.group(1)), int(m.group(2))
            if not 1 <= month <= 12:
                msg = f"period {text!r}: month {month} is not between 1 and 12"
                raise InputError(msg)
            first, months, label = month, 1, f"{year:04d}-{month:02d}"
        elif m := _QUARTER.fullmatch(raw):
            year, quarter = int(m.group(1)), int(m.group(2))
            first, months, label = 3 * quarter - 2, 3, f"{year:04d}-Q{quarter}"
        elif _YEAR.fullmatch(raw):
            year, first, months, label = int(raw), 1, 12, f"{int(raw):04d}"
        else:
            msg = (
                f"cannot read the period {text!r}: expected a month (2026-10), a quarter "
                "(2026-Q4) or a year (2026)"
            )
            raise InputError(msg)
        end_year, end_month = divmod(first - 1 + months, 12)
        start = datetime(year, first, 1, tzinfo=zone)
        end = datetime(year + end_year, end_month + 1, 1, tzinfo=zone)
        return cls(label=label, start=start, end=end)

    def __str__(self) -> str:
        return self.label

    def contains(self, at: datetime) -> bool:
        """Whether ``at`` (aware) lies in ``[start, end)``."""
        return self.start <= at < self.end

    @property
    def start_utc(self) -> pd.Timestamp:
        return pd.Timestamp(self.start).tz_convert("UTC")

    @property
    def end_utc(self) -> pd.Timestamp:
        return pd.Timestamp(self.end).tz_convert("UTC")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f"unknown time zone {name!r}"
        raise InputError(msg) from None
