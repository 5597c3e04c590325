"""Consultations in the store. Power 1: a department consults the street in writing before moving
an office head, and the street gives its opinion (on the consultation's row). Powers 2 and 4: a
plan, project or decision with a footprint, one request per street asked, and an append-only
record of what followed: residents' suggestions, the street's answer, the department's adoption
of it, the street's acceptance of the project, supervisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from gridgov.errors import (
    ConsultationError,
    InputError,
    NotFoundError,
)
from gridgov.store.engine import begin_write, translate_errors
from gridgov.store.event_log import _aware, _frame, _local
from gridgov.store.models import (
    ADOPTIONS,
    CONSULTATION_EVENTS,
    CONSULTATION_REQUESTS,
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
        # The same append-only record as powers 2 and 4 (the row keeps the opinion for reads).
        _append(
            connection,
            int(consultation_id),
            None,
            "register",
            consulted_at.astimezone(UTC),
            values["recorded_by"],
            street_code=street_code,
        )
    return int(consultation_id)


def check_opinion(opinion: str, opinion_text: str | None, problems: list[str]) -> None:
    """The one rule on a street's opinion, for every kind of consultation: one of
    :data:`OPINIONS`, with its text unless the street simply agrees."""
    if opinion not in OPINIONS:
        problems.append(f"opinion {opinion!r} must be one of {', '.join(OPINIONS)}")
    if opinion in ("disagree", "conditional") and not (opinion_text and opinion_text.strip()):
        problems.append(f"a {opinion} opinion needs its text")


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
    check_opinion(opinion, opinion_text, problems)
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
        _append(
            connection,
            consultation_id,
            None,
            "respond",
            opinion_at.astimezone(UTC),
            f"street:{row.street_code}",
            street_code=row.street_code,
            opinion=opinion,
            text=opinion_text,
        )


def read_consultations(
    engine: Engine,
    office_id: str | None = None,
    street_code: str | None = None,
    department: str | None = None,
) -> pd.DataFrame:
    """Read the appointment consultations (power 1), oldest first, optionally filtered.

    Returns
    -------
    pandas.DataFrame
        :data:`CONSULTATION_COLUMNS`, times in UTC (``opinion`` None while unanswered).
    """
    stmt = (
        select(*[CONSULTATIONS.c[c] for c in CONSULTATION_COLUMNS])
        .where(CONSULTATIONS.c.kind == "appointment")
        .order_by(CONSULTATIONS.c.consulted_at, CONSULTATIONS.c.consultation_id)
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


# ------------------------------------------------------------------------------------------------
# powers 2 and 4: footprinted consultations, their requests and their append-only record
# ------------------------------------------------------------------------------------------------

#: Columns of :func:`read_consultation_requests`: the request, its consultation, and where it
#: stands (from its events: the latest acceptance, the one answer and adoption).
REQUEST_COLUMNS = (
    "request_id",
    "consultation_id",
    "kind",
    "item_code",
    "stage",
    "late",
    "title",
    "department",
    "street_code",
    "community_codes",
    "direct",
    "sent_at",
    "due_at",
    "due_estimated",
    "answered_at",
    "opinion",
    "opinion_text",
    "adopted_at",
    "adoption",
    "adoption_reason",
    "accepted_at",
    "accepted",
    "acceptance_reason",
    "refusals",
    "suggestions",
)
#: Columns of :func:`read_consultation_events`.
CONSULTATION_EVENT_COLUMNS = (
    "event_id",
    "consultation_id",
    "request_id",
    "at",
    "action",
    "actor",
    "street_code",
    "community_code",
    "opinion",
    "adoption",
    "accepted",
    "level",
    "text",
    "data",
)
_FOOTPRINT_COLUMNS = (
    "consultation_id",
    "kind",
    "item_code",
    "stage",
    "late",
    "title",
    "letter",
    "department",
    "consulted_at",
    "recorded_by",
    "buffer_m",
    "footprint",
)


def store_footprint_consultation(
    engine: Engine,
    *,
    kind: str,
    item_code: str,
    stage: str,
    late: bool,
    title: str,
    letter: str,
    department: str,
    footprint: BaseGeometry,
    buffer_m: float,
    registered_at: datetime,
    recorded_by: str,
    requests: Sequence[Mapping[str, Any]],
) -> int:
    """Store a registered plan, project or decision with the requests routed from its
    footprint and its ``register`` event, in one transaction (the rules are the service's).

    ``requests`` hold ``street_code``, ``community_codes``, ``direct``, ``due_at`` and
    ``due_estimated``; each is sent at ``registered_at``.

    Returns
    -------
    int
        The consultation id.
    """
    at = _aware(registered_at, "registered_at").astimezone(UTC)
    with translate_errors(engine), begin_write(engine) as connection:
        consultation_id = int(
            connection.execute(
                insert(CONSULTATIONS)
                .values(
                    kind=kind,
                    item_code=item_code,
                    stage=stage,
                    late=late,
                    title=title,
                    letter=letter,
                    department=department,
                    footprint=footprint,
                    buffer_m=buffer_m,
                    consulted_at=at,
                    recorded_by=recorded_by,
                )
                .returning(CONSULTATIONS.c.consultation_id)
            ).scalar_one()
        )
        for request in requests:
            connection.execute(
                insert(CONSULTATION_REQUESTS).values(
                    consultation_id=consultation_id,
                    street_code=request["street_code"],
                    community_codes=list(request["community_codes"]),
                    direct=bool(request["direct"]),
                    sent_at=at,
                    due_at=request["due_at"],
                    due_estimated=bool(request["due_estimated"]),
                )
            )
        _append(
            connection,
            consultation_id,
            None,
            "register",
            at,
            recorded_by,
            data={"streets": [r["street_code"] for r in requests]},
        )
    return consultation_id


def _append(
    connection: Connection,
    consultation_id: int,
    request_id: int | None,
    action: str,
    at: datetime,
    actor: str,
    **values: Any,
) -> None:
    values.setdefault("data", {})
    connection.execute(
        insert(CONSULTATION_EVENTS).values(
            consultation_id=consultation_id,
            request_id=request_id,
            action=action,
            at=at,
            actor=actor,
            **values,
        )
    )


def _locked_request(connection: Connection, request_id: int) -> Any:
    row = connection.execute(
        select(CONSULTATION_REQUESTS, CONSULTATIONS.c.department, CONSULTATIONS.c.item_code)
        .join(
            CONSULTATIONS,
            CONSULTATIONS.c.consultation_id == CONSULTATION_REQUESTS.c.consultation_id,
        )
        .where(CONSULTATION_REQUESTS.c.request_id == request_id)
        .with_for_update(of=CONSULTATION_REQUESTS)
    ).first()
    if row is None:
        msg = f"no consultation request {request_id} in the store"
        raise NotFoundError(msg)
    return row


def _request_events(connection: Connection, request_id: int, action: str) -> list[Any]:
    return list(
        connection.execute(
            select(CONSULTATION_EVENTS)
            .where(
                CONSULTATION_EVENTS.c.request_id == request_id,
                CONSULTATION_EVENTS.c.action == action,
            )
            .order_by(CONSULTATION_EVENTS.c.event_id)
        ).all()
    )


def read_request(engine: Engine, request_id: int) -> dict[str, Any]:
    """One request as :func:`read_consultation_requests` gives it.

    Raises
    ------
    NotFoundError
        No such request.
    """
    frame = read_consultation_requests(engine, request_id=request_id)
    if frame.empty:
        msg = f"no consultation request {request_id} in the store"
        raise NotFoundError(msg)
    return dict(frame.iloc[0])


def record_request_answer(
    engine: Engine,
    request_id: int,
    *,
    opinion: str,
    text: str | None,
    at: datetime,
    actor: str,
    attachments: Sequence[str] = (),
) -> None:
    """Record the street's answer to a request (once): agree, conditional or disagree.

    Raises
    ------
    NotFoundError
        No such request.
    ConsultationError
        The street answered already.
    InputError
        An unknown opinion, a missing text, an answer before the request was sent.
    """
    problems: list[str] = []
    check_opinion(opinion, text, problems)
    at = _aware(at, "at").astimezone(UTC)
    if problems:
        raise InputError("cannot record the street's answer: " + "; ".join(problems))
    with translate_errors(engine), begin_write(engine) as connection:
        row = _locked_request(connection, request_id)
        done = _request_events(connection, request_id, "respond")
        if done:
            msg = (
                f"street {row.street_code} answered request {request_id} already "
                f"({done[0].opinion} on {_local(done[0].at)})"
            )
            raise ConsultationError(msg)
        if at < row.sent_at:
            msg = (
                f"the answer ({_local(at)}) cannot come before the request ({_local(row.sent_at)})"
            )
            raise InputError(msg)
        _append(
            connection,
            row.consultation_id,
            request_id,
            "respond",
            at,
            actor,
            street_code=row.street_code,
            opinion=opinion,
            text=(text or "").strip() or None,
            data={"attachments": [str(a) for a in attachments]},
        )


def record_adoption(
    engine: Engine,
    request_id: int,
    *,
    adoption: str,
    reason: str | None,
    at: datetime,
    actor: str,
) -> None:
    """Record how the proposing department took a street's opinion (once): adopted, partly or
    not_adopted, with its reason (required unless adopted).

    Raises
    ------
    NotFoundError
        No such request.
    ConsultationError
        The street has not answered yet, or the adoption was recorded already.
    InputError
        An unknown adoption, a missing reason, a time before the answer.
    """
    problems: list[str] = []
    if adoption not in ADOPTIONS:
        problems.append(f"adoption {adoption!r} must be one of {', '.join(ADOPTIONS)}")
    if adoption in ("partly", "not_adopted") and not (reason and reason.strip()):
        problems.append(f"{adoption} needs the department's reason")
    at = _aware(at, "at").astimezone(UTC)
    if problems:
        raise InputError("cannot record the adoption: " + "; ".join(problems))
    with translate_errors(engine), begin_write(engine) as connection:
        row = _locked_request(connection, request_id)
        answers = _request_events(connection, request_id, "respond")
        if not answers:
            msg = f"street {row.street_code} has not answered request {request_id} yet"
            raise ConsultationError(msg)
        done = _request_events(connection, request_id, "adopt")
        if done:
            msg = f"the adoption of request {request_id} was recorded already ({done[0].adoption})"
            raise ConsultationError(msg)
        if at < answers[0].at:
            msg = f"the adoption ({_local(at)}) cannot come before the answer"
            raise InputError(msg)
        _append(
            connection,
            row.consultation_id,
            request_id,
            "adopt",
            at,
            actor,
            street_code=row.street_code,
            adoption=adoption,
            text=(reason or "").strip() or None,
        )


def record_acceptance(
    engine: Engine,
    request_id: int,
    *,
    accepted: bool,
    reason: str | None,
    at: datetime,
    actor: str,
) -> None:
    """Record the street's sign-off (or refusal, with its reasons) of a project's acceptance.
    A refusal may be followed by a later sign-off once the project is put right; nothing
    follows a sign-off.

    Raises
    ------
    NotFoundError
        No such request.
    ConsultationError
        The street signed off already.
    InputError
        A refusal without reasons, a time before the request.
    """
    at = _aware(at, "at").astimezone(UTC)
    if not accepted and not (reason and reason.strip()):
        raise InputError("a refusal of acceptance needs its reasons")
    with translate_errors(engine), begin_write(engine) as connection:
        row = _locked_request(connection, request_id)
        if any(e.accepted for e in _request_events(connection, request_id, "accept")):
            msg = (
                f"street {row.street_code} signed off the acceptance of request {request_id} "
                "already"
            )
            raise ConsultationError(msg)
        if at < row.sent_at:
            raise InputError("the acceptance cannot come before the request")
        _append(
            connection,
            row.consultation_id,
            request_id,
            "accept",
            at,
            actor,
            street_code=row.street_code,
            accepted=bool(accepted),
            text=(reason or "").strip() or None,
        )


def record_suggestion(
    engine: Engine,
    targets: Sequence[tuple[int, int]],
    *,
    lon: float,
    lat: float,
    community_code: str | None,
    text: str,
    at: datetime,
    actor: str,
) -> None:
    """Attach a resident's suggestion (no personal data: its text and place) to each
    ``(consultation_id, request_id)`` in ``targets``, in one transaction."""
    at = _aware(at, "at").astimezone(UTC)
    with translate_errors(engine), begin_write(engine) as connection:
        for consultation_id, request_id in targets:
            street = connection.execute(
                select(CONSULTATION_REQUESTS.c.street_code).where(
                    CONSULTATION_REQUESTS.c.request_id == request_id
                )
            ).scalar_one()
            _append(
                connection,
                consultation_id,
                request_id,
                "suggest",
                at,
                actor,
                street_code=street,
                community_code=community_code,
                text=text,
                data={"lon": float(lon), "lat": float(lat)},
            )


def record_request_supervision(
    engine: Engine, items: Sequence[Mapping[str, Any]], at: datetime
) -> int:
    """Append a ``supervise`` event per item (``request_id``, ``consultation_id``,
    ``street_code``, ``stage``, ``level``, ``reason``) not already supervised at that stage and
    level; returns how many were recorded."""
    at = _aware(at, "at").astimezone(UTC)
    recorded = 0
    with translate_errors(engine), begin_write(engine) as connection:
        for item in items:
            done = connection.execute(
                select(func.count()).where(
                    CONSULTATION_EVENTS.c.request_id == item["request_id"],
                    CONSULTATION_EVENTS.c.action == "supervise",
                    CONSULTATION_EVENTS.c.level == item["level"],
                    CONSULTATION_EVENTS.c.text == item["stage"],
                )
            ).scalar_one()
            if done:
                continue
            _append(
                connection,
                item["consultation_id"],
                item["request_id"],
                "supervise",
                at,
                "system",
                street_code=item["street_code"],
                level=item["level"],
                text=item["stage"],
                data={"reason": item["reason"]},
            )
            recorded += 1
    return recorded


def read_consultation_events(
    engine: Engine, consultation_id: int | None = None, action: str | None = None
) -> pd.DataFrame:
    """The append-only record of the footprinted consultations, in order."""
    stmt = select(*[CONSULTATION_EVENTS.c[c] for c in CONSULTATION_EVENT_COLUMNS]).order_by(
        CONSULTATION_EVENTS.c.event_id
    )
    if consultation_id is not None:
        stmt = stmt.where(CONSULTATION_EVENTS.c.consultation_id == consultation_id)
    if action is not None:
        stmt = stmt.where(CONSULTATION_EVENTS.c.action == action)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return _frame(rows, CONSULTATION_EVENT_COLUMNS, ["at"])


def read_footprint_consultations(
    engine: Engine, consultation_id: int | None = None, department: str | None = None
) -> gpd.GeoDataFrame:
    """The planning and decision consultations with their footprints (WGS84), oldest first."""
    stmt = (
        select(*[CONSULTATIONS.c[c] for c in _FOOTPRINT_COLUMNS])
        .where(CONSULTATIONS.c.kind != "appointment")
        .order_by(CONSULTATIONS.c.consultation_id)
    )
    if consultation_id is not None:
        stmt = stmt.where(CONSULTATIONS.c.consultation_id == consultation_id)
    if department is not None:
        stmt = stmt.where(CONSULTATIONS.c.department == department)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(_FOOTPRINT_COLUMNS))
    frame["consulted_at"] = pd.to_datetime(frame["consulted_at"], utc=True)
    return gpd.GeoDataFrame(frame, geometry="footprint", crs="EPSG:4326")


def read_consultation_requests(
    engine: Engine,
    *,
    consultation_id: int | None = None,
    request_id: int | None = None,
    street_code: str | None = None,
    department: str | None = None,
) -> pd.DataFrame:
    """The requests with their consultation and where each stands (:data:`REQUEST_COLUMNS`),
    by request id; times in UTC."""
    c, r = CONSULTATIONS.c, CONSULTATION_REQUESTS.c
    stmt = (
        select(
            r.request_id,
            r.consultation_id,
            c.kind,
            c.item_code,
            c.stage,
            c.late,
            c.title,
            c.department,
            r.street_code,
            r.community_codes,
            r.direct,
            r.sent_at,
            r.due_at,
            r.due_estimated,
        )
        .join(CONSULTATIONS, c.consultation_id == r.consultation_id)
        .order_by(r.request_id)
    )
    filters = {
        r.consultation_id: consultation_id,
        r.request_id: request_id,
        r.street_code: street_code,
        c.department: department,
    }
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(column == value)
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
        ids = [row.request_id for row in rows]
        events = (
            connection.execute(
                select(CONSULTATION_EVENTS)
                .where(CONSULTATION_EVENTS.c.request_id.in_(ids))
                .order_by(CONSULTATION_EVENTS.c.event_id)
            ).all()
            if ids
            else []
        )
    by_request: dict[int, list[Any]] = {}
    for event in events:
        by_request.setdefault(event.request_id, []).append(event)
    records = []
    for row in rows:
        record = dict(row._mapping)
        record.update(_standing(by_request.get(row.request_id, [])))
        records.append(record)
    frame = pd.DataFrame(records, columns=list(REQUEST_COLUMNS))
    for name in ("sent_at", "due_at", "answered_at", "adopted_at", "accepted_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def _standing(events: Sequence[Any]) -> dict[str, Any]:
    """Where a request stands, from its events (first answer and adoption; last acceptance)."""
    out: dict[str, Any] = dict.fromkeys(
        (
            "answered_at",
            "opinion",
            "opinion_text",
            "adopted_at",
            "adoption",
            "adoption_reason",
            "accepted_at",
            "accepted",
            "acceptance_reason",
        )
    )
    out["refusals"] = 0
    out["suggestions"] = 0
    for e in events:
        if e.action == "respond" and out["answered_at"] is None:
            out.update(answered_at=e.at, opinion=e.opinion, opinion_text=e.text)
        elif e.action == "adopt" and out["adopted_at"] is None:
            out.update(adopted_at=e.at, adoption=e.adoption, adoption_reason=e.text)
        elif e.action == "accept":
            out.update(accepted_at=e.at, accepted=bool(e.accepted), acceptance_reason=e.text)
            out["refusals"] += 0 if e.accepted else 1
        elif e.action == "suggest":
            out["suggestions"] += 1
    return out
