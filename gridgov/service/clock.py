"""Times that callers send: how far ahead of the server's clock they may run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gridgov.errors import InputError

#: A phone's or a vehicle's clock may run a little ahead; more than this is refused.
CLOCK_SKEW = timedelta(minutes=5)


def sent_time(value: datetime | None, now: datetime, what: str) -> datetime:
    """A time a caller sent, in UTC: ``now`` when none was sent.

    Raises
    ------
    InputError
        The time is naive, or lies more than :data:`CLOCK_SKEW` after ``now``.
    """
    if value is None:
        return now.astimezone(UTC)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = f"{what} must be a timezone-aware datetime, got {value!r}"
        raise InputError(msg)
    value = value.astimezone(UTC)
    if value > now + CLOCK_SKEW:
        msg = f"{what} {value.isoformat()} lies in the future"
        raise InputError(msg)
    return value
