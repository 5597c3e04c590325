"""Times that callers send: the years they may name, and how far ahead of the server's clock
they may run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gridgov.errors import InputError

#: A phone's or a vehicle's clock may run a little ahead; more than this is refused.
CLOCK_SKEW = timedelta(minutes=5)
#: The years a sent time or a query bound may name. Outside them no record can lie, and
#: converting time zones near year 1 or 9999 would overflow.
YEARS = (1970, 2200)


def check_year(value: datetime, what: str) -> datetime:
    """Refuse a time outside :data:`YEARS` (checked before any time-zone arithmetic).

    Raises
    ------
    InputError
        Naming the field and the range.
    """
    if not YEARS[0] <= value.year < YEARS[1]:
        msg = f"{what} {value.isoformat()} is out of range (years {YEARS[0]} to {YEARS[1] - 1})"
        raise InputError(msg)
    return value


def sent_time(value: datetime | None, now: datetime, what: str) -> datetime:
    """A time a caller sent, in UTC: ``now`` when none was sent.

    Raises
    ------
    InputError
        The time is naive, out of :data:`YEARS`, or lies more than :data:`CLOCK_SKEW` after
        ``now``.
    """
    if value is None:
        return now.astimezone(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{what} must be a timezone-aware datetime, got {value!r}"
        raise InputError(msg)
    value = check_year(value, what).astimezone(UTC)
    if value > now + CLOCK_SKEW:
        msg = f"{what} {value.isoformat()} lies in the future"
        raise InputError(msg)
    return value
