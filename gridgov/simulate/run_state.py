"""The workflow's parameters for a simulated run and the records the run keeps: one per
assignment of a unit and one per incident (see the package notes, "Workflow")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gridgov.dispatch import (
    Incident,
    Placement,
)
from gridgov.errors import InputError
from gridgov.workflow import Event, State

#: Default probability that the grid worker's verification fails (reopen: rework).
VERIFY_FAIL_RATE = 0.05
#: Default probability that a department returns a call instead of acknowledging it.
RETURN_RATE = 0.02
#: Default probability that the reporter of a closed incident evaluates it.
EVALUATE_RATE = 0.6
#: Default probability that an arrival is a second report of an open incident nearby.
DUPLICATE_RATE = 0.03
#: Default median minutes from a dispatch to the department's acknowledgement.
ACK_MEDIAN_MIN = 3.0
#: Log-sd of the lognormal acknowledgement delay.
ACK_SIGMA = 0.9
#: Median minutes (and log-sd) from the resolution to the grid worker's verification on site.
VERIFY_MEDIAN_MIN, VERIFY_SIGMA = 45.0, 0.6
#: Median minutes (and log-sd) from the closure to the reporter's evaluation.
EVALUATE_MEDIAN_MIN, EVALUATE_SIGMA = 240.0, 0.8
#: Shares of satisfied, basically satisfied and dissatisfied evaluations when the incident closed
#: within its resolve deadline, and when it closed late.
SATISFACTION_ON_TIME: tuple[float, float, float] = (0.75, 0.18, 0.07)
SATISFACTION_LATE: tuple[float, float, float] = (0.35, 0.35, 0.30)
#: Why a department returns a call (one is drawn at random).
RETURN_REASONS = (
    "not within this office's remit",
    "needs another department's enforcement powers",
    "the location given is not in this office's area",
)
#: Tries to place a duplicate report inside the district before reusing the original's point.
DUPLICATE_TRIES = 10


@dataclass(frozen=True)
class _Flow:
    """The workflow's parameters for one run (see the package notes, "Workflow")."""

    verify_fail_rate: float
    return_rate: float
    evaluate_rate: float
    duplicate_rate: float
    ack_median_min: float
    radius_m: float
    window_s: float


@dataclass(eq=False)
class _Slot:
    """One assignment of a unit to an incident (a row of the assignments table)."""

    incident_id: str
    kind: str
    role: str
    unit_id: str
    assigned_s: float
    reported_s: float  # when this round of dispatch began: the report, or the reopen
    travel_s: float
    service_s: float
    level: str
    rule: str
    over_max_travel: bool
    preempts: str | None
    end_s: float  # when the unit frees (or was taken away, or returned the incident)
    round: int = 1
    preempted: bool = False
    returned: bool = False
    arrived: bool = False  # the unit is physically on scene

    @property
    def wait_s(self) -> float:
        return self.assigned_s - self.reported_s

    @property
    def response_s(self) -> float:
        return self.wait_s + self.travel_s


@dataclass(eq=False)  # compared by identity: the queue holds the very objects
class _Case:
    """An incident's state during the run."""

    row: int
    incident: Incident
    priority: int
    kinds: tuple[str, ...]
    reported_s: float
    service_s: float
    missing: list[str]
    slots: dict[str, _Slot] = field(default_factory=dict)
    queued: bool = False
    preempted: int = 0
    dispatches: int = 0
    placement: Placement | None = None
    refused: str | None = None
    assigned_s: float | None = None
    # workflow
    events: list[Event] = field(default_factory=list)
    duplicate_of: str | None = None
    round: int = 1
    round_start_s: float = 0.0
    cycle: int = 0  # bumped whenever a dispatch cycle starts or ends: stale timers are skipped
    cycle_start_s: float = 0.0
    first_dispatch_s: float | None = None
    excluded_offices: set[str] = field(default_factory=set)
    exclusion_lifted: int = 0
    calls: int = 0
    acknowledged_on_time: int = 0
    returns: int = 0
    requeues: int = 0
    reopens: int = 0
    closed_on_time: bool | None = None

    @property
    def lead(self) -> str:
        return self.kinds[0]

    @property
    def state(self) -> State | None:
        return self.events[-1].to_state if self.events else None

    @property
    def street_code(self) -> str | None:
        return None if self.placement is None else self.placement.street_code

    @property
    def grid_code(self) -> str | None:
        return None if self.placement is None else self.placement.grid_code


def _flow(
    *,
    verify_fail_rate: float,
    return_rate: float,
    evaluate_rate: float,
    duplicate_rate: float,
    ack_median_min: float,
) -> _Flow:
    from gridgov.settings import get_settings

    rates = {
        "verify_fail_rate": verify_fail_rate,
        "return_rate": return_rate,
        "evaluate_rate": evaluate_rate,
        "duplicate_rate": duplicate_rate,
    }
    bad = [f"{k} = {v}" for k, v in rates.items() if not (math.isfinite(v) and 0 <= v <= 1)]
    if not (math.isfinite(ack_median_min) and ack_median_min > 0):
        bad.append(f"ack_median_min = {ack_median_min} (must be positive minutes)")
    if bad:
        msg = f"bad workflow parameters (rates are probabilities in [0, 1]): {'; '.join(bad)}"
        raise InputError(msg)
    settings = get_settings()
    return _Flow(
        verify_fail_rate=verify_fail_rate,
        return_rate=return_rate,
        evaluate_rate=evaluate_rate,
        duplicate_rate=duplicate_rate,
        ack_median_min=ack_median_min,
        radius_m=float(settings.duplicate_radius_m),
        window_s=float(settings.duplicate_window_h) * 3600.0,
    )
