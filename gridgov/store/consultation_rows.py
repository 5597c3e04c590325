"""The appointment consultations of power 1 in the store: a department consults the street in
writing before moving an office head, and the street gives its opinion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, func, insert, select, update

from gridgov.errors import (
    ConsultationError,
    InputError,
    NotFoundError,
)
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.event_log import _aware, _frame, _local
from gridgov.store.models import (
    CONSULTATIONS,
    OFFICES,
    OPINIONS,
)

#: Columns of :func:`read_consultations`.
CONSULTATION_COLUMNS = (
    "consultation_id",
    "office_id",
    "department",
    "street_code",
    "head_name",
    "proposed_move",
    "consulted_at",
    "letter",
    "opinion",
    "opinion_text",
    "opinion_at",
    "recorded_by",
)


def _text(value: Any, what: str, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{what} must be a non-empty text")
        return ""
    return value.strip()


def record_consultation(
    engine: Engine,
    *,
    office_id: str,
    head_name: str,
    proposed_move: str,
    letter: str,
    consulted_at: datetime,
    recorded_by: str,
    department: str | None = None,
    street_code: str | None = None,
) -> int:
    """Record a department's written consultation of the street before moving an office head.

    Parameters
    ----------
    office_id
        The stationed office whose head would move.
    head_name
        The head concerned.
    proposed_move
        What the department proposes (transfer, promotion, removal...).
    letter
        The department's written consultation (the letter's text).
    consulted_at
        When the street received it (timezone-aware).
    recorded_by
        Who recorded it.
    department, street_code
        Default to the stored office's.

    Returns
    -------
    int
        The consultation id.

    Raises
    ------
    InputError
        A missing text, a naive time, or an office the store does not hold with no
        department / street given.
    """
    problems: list[str] = []
    values = {
        "office_id": _text(office_id, "office_id", problems),
        "head_name": _text(head_name, "head_name", problems),
        "proposed_move": _text(proposed_move, "proposed_move", problems),
        "letter": _text(letter, "letter (the written consultation)", problems),
        "recorded_by": _text(recorded_by, "recorded_by", problems),
    }
    if not isinstance(consulted_at, datetime) or consulted_at.tzinfo is None:
        problems.append("consulted_at must be a timezone-aware datetime")
    with translate_errors(engine), begin_write(engine) as connection:
        office = connection.execute(
            select(OFFICES.c.department, OFFICES.c.street_code).where(
                OFFICES.c.office_id == office_id
            )
        ).first()
        department = department or (None if office is None else office.department)
        street_code = street_code or (None if office is None else office.street_code)
        if not department or not street_code:
            problems.append(
                f"office {office_id!r} is not in the store: give its department and street_code"
            )
        if problems:
            msg = "cannot record the consultation: " + "; ".join(problems)
            raise InputError(msg)
        consultation_id = connection.execute(
            insert(CONSULTATIONS)
            .values(
                **values,
                department=department,
                street_code=street_code,
                consulted_at=consulted_at.astimezone(UTC),
            )
            .returning(CONSULTATIONS.c.consultation_id)
        ).scalar_one()
    return int(consultation_id)


def record_street_opinion(
    engine: Engine,
    consultation_id: int,
    *,
    opinion: str,
    opinion_at: datetime,
    opinion_text: str | None = None,
) -> None:
    """Record the street's opinion on a consultation (once).

    Parameters
    ----------
    consultation_id
        The consultation (:func:`record_consultation`).
    opinion
        ``agree``, ``disagree`` or ``conditional``.
    opinion_at
        When the street gave it (timezone-aware, not before the consultation).
    opinion_text
        The street's written opinion (required for ``disagree`` and ``conditional``).

    Raises
    ------
    NotFoundError
        No such consultation.
    ConsultationError
        It was answered already.
    InputError
        An unknown opinion, a missing text, or a bad time.
    """
    problems: list[str] = []
    if opinion not in OPINIONS:
        problems.append(f"opinion {opinion!r} must be one of {', '.join(OPINIONS)}")
    if opinion in ("disagree", "conditional") and not (opinion_text and opinion_text.strip()):
        problems.append(f"a {opinion} opinion needs its text (opinion_text)")
    if not isinstance(opinion_at, datetime) or opinion_at.tzinfo is None:
        problems.append("opinion_at must be a timezone-aware datetime")
    if problems:
        msg = "cannot record the street's opinion: " + "; ".join(problems)
        raise InputError(msg)
    with translate_errors(engine), begin_write(engine) as connection:
        row = connection.execute(
            select(CONSULTATIONS)
            .where(CONSULTATIONS.c.consultation_id == consultation_id)
            .with_for_update()
        ).first()
        if row is None:
            msg = f"no consultation {consultation_id} in the store"
            raise NotFoundError(msg)
        if row.opinion is not None:
            msg = (
                f"consultation {consultation_id} was answered already ({row.opinion} on "
                f"{_local(row.opinion_at)}); a new consultation is needed for a new opinion"
            )
            raise ConsultationError(msg)
        if opinion_at.astimezone(UTC) < row.consulted_at:
            msg = (
                f"the opinion ({_local(opinion_at)}) cannot come before the consultation "
                f"({_local(row.consulted_at)})"
            )
            raise InputError(msg)
        connection.execute(
            update(CONSULTATIONS)
            .where(CONSULTATIONS.c.consultation_id == consultation_id)
            .values(
                opinion=opinion,
                opinion_text=opinion_text,
                opinion_at=opinion_at.astimezone(UTC),
            )
        )


def read_consultations(
    engine: Engine,
    office_id: str | None = None,
    street_code: str | None = None,
    department: str | None = None,
) -> pd.DataFrame:
    """Read consultations, oldest first, optionally filtered.

    Returns
    -------
    pandas.DataFrame
        :data:`CONSULTATION_COLUMNS`, times in UTC (``opinion`` None while unanswered).
    """
    stmt = select(*[CONSULTATIONS.c[c] for c in CONSULTATION_COLUMNS]).order_by(
        CONSULTATIONS.c.consulted_at, CONSULTATIONS.c.consultation_id
    )
    filters = {"office_id": office_id, "street_code": street_code, "department": department}
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(CONSULTATIONS.c[column] == value)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return _frame(rows, CONSULTATION_COLUMNS, ["consulted_at", "opinion_at"])


def check_head_move(engine: Engine, office_id: str, at: datetime) -> dict[str, Any]:
    """Check that an office head may be moved at ``at``: the street was consulted in writing
    and its opinion was recorded at or before ``at``.

    Returns
    -------
    dict
        The latest such consultation (:data:`CONSULTATION_COLUMNS`).

    Raises
    ------
    ConsultationError
        No consultation of the street about this office, or none answered by ``at``.
    """
    at = _aware(at, "at")
    with translate_errors(engine), engine.connect() as connection:
        answered = connection.execute(
            select(*[CONSULTATIONS.c[c] for c in CONSULTATION_COLUMNS])
            .where(
                and_(
                    CONSULTATIONS.c.office_id == office_id,
                    CONSULTATIONS.c.opinion.is_not(None),
                    CONSULTATIONS.c.opinion_at <= at,
                )
            )
            .order_by(CONSULTATIONS.c.opinion_at.desc(), CONSULTATIONS.c.consultation_id.desc())
            .limit(1)
        ).first()
        if answered is not None:
            return dict(answered._mapping)
        pending = connection.execute(
            select(func.count()).where(
                CONSULTATIONS.c.office_id == office_id, CONSULTATIONS.c.consulted_at <= at
            )
        ).scalar_one()
    why = (
        f"the street has not given its opinion on the {pending} consultation(s) about it yet"
        if pending
        else "the department has not consulted the street in writing"
    )
    msg = (
        f"the head of office {office_id} cannot be moved on {_local(at)}: {why}. The five-powers "
        "reform requires the department's written consultation of the street and the street's "
        "opinion before an office head is moved"
    )
    raise ConsultationError(msg)
