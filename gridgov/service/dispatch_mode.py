"""A street's dispatch mode, and the one rule that decides whether a report is dispatched at once.

``auto`` (the default) dispatches every registered report at once; ``confirm`` leaves it in
the queue for a dispatcher to confirm or override the recommendation. With ``priority1_auto``
(the default) a priority-1 matter is dispatched at once in either mode. Commanders (of their
street) and administrators change it; the intake asks :func:`decide` for every report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridgov import store
from gridgov.errors import ForbiddenError, InputError
from gridgov.service.scope import MODE_SETTERS, Scope
from gridgov.store import Engine

#: The modes a street can be in.
MODES = ("auto", "confirm")


@dataclass(frozen=True)
class ModeDecision:
    """A street's mode and what it means for one report: dispatched at once or held."""

    street_code: str | None
    mode: str
    priority1_auto: bool
    at_once: bool

    @property
    def reason(self) -> str | None:
        """Why a report was held (None when it is dispatched at once)."""
        if self.at_once:
            return None
        return (
            f"waiting for a dispatcher's confirmation: street {self.street_code} is in confirm mode"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "street_code": self.street_code,
            "mode": self.mode,
            "priority1_auto": self.priority1_auto,
        }


def dispatched_at_once(mode: str, priority1_auto: bool, priority: int | None) -> bool:
    """The mode rule: ``auto`` dispatches at once; ``confirm`` holds every report but a
    priority-1 one when ``priority1_auto``."""
    return mode == "auto" or (priority1_auto and priority == 1)


def decide(engine: Engine, street_code: str | None, priority: int | None) -> ModeDecision:
    """Whether a report of ``priority`` located in ``street_code`` is dispatched at once."""
    return decide_from(
        street_code,
        ("auto", True) if street_code is None else store.read_street_mode(engine, street_code),
        priority,
    )


def decide_from(
    street_code: str | None, stored: tuple[str, bool], priority: int | None
) -> ModeDecision:
    """:func:`decide` from the street's mode as read already (``store.read_street_mode``'s
    answer): the micro-batched intake reads its streets' modes in its own transaction."""
    mode, p1 = stored
    return ModeDecision(street_code, mode, p1, dispatched_at_once(mode, p1, priority))


def set_mode(
    engine: Engine,
    scope: Scope,
    street_code: str,
    mode: str,
    *,
    priority1_auto: bool = True,
    actor: str,
    now: datetime | None = None,
) -> ModeDecision:
    """Set a street's mode (commanders: their own street; administrators: any).

    Raises
    ------
    ForbiddenError
        The caller may not set this street's mode.
    InputError
        An unknown mode.
    """
    if scope.role not in MODE_SETTERS or not scope.can_see_street(street_code):
        msg = f"the {scope.role} role may not set street {street_code}'s dispatch mode"
        raise ForbiddenError(msg)
    if mode not in MODES:
        msg = f"unknown dispatch mode {mode!r}; expected {' or '.join(MODES)}"
        raise InputError(msg)
    now = datetime.now(UTC) if now is None else now
    store.write_street_mode(engine, street_code, mode, priority1_auto, now=now, by=actor)
    return ModeDecision(street_code, mode, priority1_auto, mode == "auto")
