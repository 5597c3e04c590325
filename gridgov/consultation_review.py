"""Where the streets' consultation requests stand: what is overdue, and the report's figures.

Pure: the requests as :func:`gridgov.store.read_consultation_requests` gives them in, new
objects out. Supervision escalates street → district with the incidents' own rule
(:func:`gridgov.sla_clocks.supervision_level`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from gridgov.errors import InputError
from gridgov.sla_clocks import supervision_level

__all__ = [
    "DEPARTMENT_FIGURES",
    "STREET_FIGURES",
    "OverdueRequest",
    "consultation_figures",
    "list_overdue_requests",
]

#: What is overdue: the street's answer, or the department's decision on the answer.
OVERDUE_STAGES = ("answer", "adoption")
#: Columns of the per-street figures.
STREET_FIGURES = (
    "street_code",
    "requests",
    "answered",
    "answered_on_time",
    "on_time_rate",
    "opinions_decided",
    "opinions_adopted",
    "adopted_share",
    "acceptance_refusals",
)
#: Columns of the per-department figures.
DEPARTMENT_FIGURES = (
    "department",
    "requests",
    "requests_late",
    "opinions_decided",
    "opinions_adopted",
    "adopted_share",
)
#: Opinions the department must decide on (an agreement asks for nothing to be changed).
_NEEDS_DECISION = ("disagree", "conditional")
#: Adoptions that count as the department taking the street's opinion (fully or in part).
_TAKEN = ("adopted", "partly")


@dataclass(frozen=True)
class OverdueRequest:
    """A request whose answer (``stage="answer"``) or whose adoption decision
    (``stage="adoption"``) is overdue at the instant asked about; ``level`` is where its
    supervision belongs."""

    request_id: int
    consultation_id: int
    street_code: str
    department: str
    stage: str
    due: datetime
    overdue_by: timedelta
    level: str


def list_overdue_requests(
    requests: pd.DataFrame, at: datetime, *, district_after: float
) -> list[OverdueRequest]:
    """Return the overdue answers and adoption decisions at ``at``.

    An answer is overdue when the street has not answered by ``due_at`` (strictly after it);
    a decision on an objection or a conditional agreement when the department has not recorded
    its adoption by
    ``adoption_due`` (a column the caller adds: the answer's time plus the item's working
    days). The time allowed, for the escalation, is the span from sending (answering) to due.

    Returns
    -------
    list of OverdueRequest
        Largest ``overdue_by`` first, then request id.
    """
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise InputError("at must be a timezone-aware datetime")
    if not district_after > 0:
        raise InputError(f"district_after must be positive, got {district_after!r}")
    now = pd.Timestamp(at)
    found: list[OverdueRequest] = []
    for row in requests.to_dict("records"):
        if pd.isna(row["answered_at"]):
            stage, start, due = "answer", row["sent_at"], row["due_at"]
        elif (
            row["opinion"] in _NEEDS_DECISION
            and pd.isna(row["adopted_at"])
            and not pd.isna(row.get("adoption_due", pd.NaT))
        ):
            stage, start, due = "adoption", row["answered_at"], row["adoption_due"]
        else:
            continue
        due = pd.Timestamp(due)
        if now <= due:
            continue
        late = (now - due).to_pytimedelta()
        allowed = (due - pd.Timestamp(start)).to_pytimedelta()
        found.append(
            OverdueRequest(
                request_id=int(row["request_id"]),
                consultation_id=int(row["consultation_id"]),
                street_code=str(row["street_code"]),
                department=str(row["department"]),
                stage=stage,
                due=due.to_pydatetime(),
                overdue_by=late,
                level=supervision_level(
                    late.total_seconds(), allowed.total_seconds(), district_after
                ),
            )
        )
    found.sort(key=lambda o: (-o.overdue_by, o.request_id))
    return found


def consultation_figures(requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The report's figures per street and per department over the given requests.

    Per street: requests received, answered, answered on time (at or before the deadline) and
    that rate, opinions the department decided on and took (adopted fully or partly) and that
    share, acceptance refusals. Per department: requests sent, requests sent late (the
    consultation came after the stage its item was meant for), and the share of the street
    opinions it decided on that it took. A rate over nothing is NaN.
    """
    frame = requests.copy()
    frame["is_answered"] = frame["answered_at"].notna()
    frame["on_time"] = frame["is_answered"] & (frame["answered_at"] <= frame["due_at"])
    frame["decided"] = frame["adoption"].notna()
    frame["taken"] = frame["adoption"].isin(_TAKEN)
    frame["late_sent"] = frame["late"].fillna(False).astype(bool)
    streets = (
        frame.groupby("street_code", sort=True)
        .agg(
            requests=("request_id", "count"),
            answered=("is_answered", "sum"),
            answered_on_time=("on_time", "sum"),
            opinions_decided=("decided", "sum"),
            opinions_adopted=("taken", "sum"),
            acceptance_refusals=("refusals", "sum"),
        )
        .reset_index()
    )
    streets["on_time_rate"] = _rate(streets["answered_on_time"], streets["requests"])
    streets["adopted_share"] = _rate(streets["opinions_adopted"], streets["opinions_decided"])
    departments = (
        frame.groupby("department", sort=True)
        .agg(
            requests=("request_id", "count"),
            requests_late=("late_sent", "sum"),
            opinions_decided=("decided", "sum"),
            opinions_adopted=("taken", "sum"),
        )
        .reset_index()
    )
    departments["adopted_share"] = _rate(
        departments["opinions_adopted"], departments["opinions_decided"]
    )
    return (
        streets.reindex(columns=list(STREET_FIGURES)),
        departments.reindex(columns=list(DEPARTMENT_FIGURES)),
    )


def _rate(part: pd.Series, whole: pd.Series) -> pd.Series:
    return (part / whole.where(whole > 0)).astype(float)
