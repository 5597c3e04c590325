"""Consultations of the streets on plans, projects and decisions (powers 2 and 4).

The one application path the CLI and the API share: register (the catalogue item, the
footprint's routing to streets and communities, working-day deadlines), answer, adopt,
accept, attach residents' suggestions, supervise what is overdue and count the report's
figures. The caller's :class:`~gridgov.service.scope.Scope` says who may do what; the store
keeps the append-only record and its per-request rules (one answer, one adoption).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from gridgov import store
from gridgov.consultation_items import ConsultationCatalog, load_consultation_catalog
from gridgov.consultation_review import (
    OverdueRequest,
    consultation_figures,
    list_overdue_requests,
)
from gridgov.errors import ConsultationError, ForbiddenError, InputError, NotFoundError
from gridgov.footprints import buffer_metres, route_footprint
from gridgov.service.scope import (
    CONSULTATION_REGISTRARS,
    Scope,
)
from gridgov.settings import get_settings
from gridgov.store import Engine
from gridgov.workdays import WorkCalendar, load_work_calendar
from gridgov.workflow import SUPERVISE_LEVELS

__all__ = [
    "Registered",
    "accept",
    "adopt",
    "calendar",
    "catalogue",
    "figures",
    "overdue",
    "register",
    "requests_in_scope",
    "respond",
    "suggest",
    "suggestions_by_community",
    "supervise",
]


@lru_cache(maxsize=1)
def catalogue() -> ConsultationCatalog:
    """The consultation items catalogue (``data/consultation.yaml``), read once."""
    return load_consultation_catalog()


@lru_cache(maxsize=1)
def calendar() -> WorkCalendar:
    """The working-day calendar (``data/holidays.yaml``), read once."""
    return load_work_calendar()


@dataclass(frozen=True)
class Registered:
    """A registered consultation: its id, whether it came late, and the streets asked."""

    consultation_id: int
    late: bool
    streets: tuple[str, ...]


def register(
    engine: Engine,
    scope: Scope,
    *,
    item_code: str,
    stage: str,
    title: str,
    letter: str,
    department: str,
    footprint: BaseGeometry,
    buffer_m: float,
    at: datetime,
    actor: str,
) -> Registered:
    """Register a plan, project or decision and send a request to every street its footprint
    (grown by ``buffer_m`` metres) reaches, each due in the item's working days.

    Raises
    ------
    ForbiddenError
        The caller registers for another department, or registers nothing.
    InputError
        An unknown item or stage, empty texts, a footprint that reaches no street.
    """
    if scope.role not in CONSULTATION_REGISTRARS:
        msg = f"the {scope.role} role registers no consultations"
        raise ForbiddenError(msg)
    problems = [
        f"{name} must be a non-empty text"
        for name, value in (("title", title), ("letter", letter), ("department", department))
        if not (isinstance(value, str) and value.strip())
    ]
    if problems:
        raise InputError("cannot register the consultation: " + "; ".join(problems))
    scope.check_department(department.strip())
    item = catalogue().get(item_code)
    late = catalogue().is_late(item, stage)
    areas = pd.concat(
        [store.read_stored_areas(engine, "street"), store.read_stored_areas(engine, "community")],
        ignore_index=True,
    )
    routed = route_footprint(footprint, areas, buffer_m)
    if not routed:
        msg = "the footprint (with its buffer) reaches no street of the loaded district"
        raise InputError(msg)
    due = calendar().deadline(at, item.response_days)
    consultation_id = store.store_footprint_consultation(
        engine,
        kind="planning" if item.power == 2 else "decision",
        item_code=item.code,
        stage=stage,
        late=late,
        title=title.strip(),
        letter=letter.strip(),
        department=department.strip(),
        footprint=footprint,
        buffer_m=float(buffer_m),
        registered_at=at,
        recorded_by=actor,
        requests=[
            {
                "street_code": r.street_code,
                "community_codes": r.community_codes,
                "direct": r.direct,
                "due_at": due.due,
                "due_estimated": due.estimated,
            }
            for r in routed
        ],
    )
    return Registered(consultation_id, late, tuple(r.street_code for r in routed))


def requests_in_scope(
    engine: Engine, scope: Scope, consultation_id: int | None = None
) -> pd.DataFrame:
    """The requests the caller sees (:meth:`Scope.consultation_filters`)."""
    return store.read_consultation_requests(
        engine, consultation_id=consultation_id, **scope.consultation_filters()
    )


def _visible_request(engine: Engine, scope: Scope, request_id: int) -> dict[str, Any]:
    request = store.read_request(engine, request_id)
    if not scope.can_see_request(request["street_code"], request["department"]):
        # Outside the scope reads as not there at all.
        msg = f"no consultation request {request_id} in the store"
        raise NotFoundError(msg)
    return request


def respond(
    engine: Engine,
    scope: Scope,
    request_id: int,
    *,
    opinion: str,
    text: str | None,
    at: datetime,
    actor: str,
    attachments: Sequence[str] = (),
) -> None:
    """The street answers a request: agree, conditional (agree with conditions) or disagree
    (object), with its text; only that street's commanders and dispatchers (or an admin)."""
    request = _visible_request(engine, scope, request_id)
    scope.check_answer(request["street_code"])
    store.record_request_answer(
        engine, request_id, opinion=opinion, text=text, at=at, actor=actor, attachments=attachments
    )


def adopt(
    engine: Engine,
    scope: Scope,
    request_id: int,
    *,
    adoption: str,
    reason: str | None,
    at: datetime,
    actor: str,
) -> None:
    """The proposing department records how it took the street's opinion."""
    request = _visible_request(engine, scope, request_id)
    scope.check_department(request["department"])
    store.record_adoption(engine, request_id, adoption=adoption, reason=reason, at=at, actor=actor)


def accept(
    engine: Engine,
    scope: Scope,
    request_id: int,
    *,
    accepted: bool,
    reason: str | None,
    at: datetime,
    actor: str,
) -> None:
    """The street signs off (or refuses, with reasons) the acceptance of a project whose item
    gives it a say in acceptance."""
    request = _visible_request(engine, scope, request_id)
    scope.check_answer(request["street_code"])
    item = catalogue().get(request["item_code"])
    if not item.acceptance:
        msg = f"item {item.code} ({item.en}) gives the street no say in acceptance"
        raise ConsultationError(msg)
    store.record_acceptance(
        engine, request_id, accepted=accepted, reason=reason, at=at, actor=actor
    )


def suggest(
    engine: Engine,
    scope: Scope,
    *,
    lon: float,
    lat: float,
    text: str,
    at: datetime,
    actor: str,
) -> list[int]:
    """Attach a resident's suggestion to every open consultation whose footprint (with its
    buffer) contains the point and whose request to the point's street is still unanswered.

    Returns
    -------
    list of int
        The consultations it was attached to.

    Raises
    ------
    OutsideDistrictError
        The point lies outside the district.
    ForbiddenError
        The caller may not report at that point (:meth:`Scope.check_report`).
    ConsultationError
        No open consultation covers the point (nothing is stored).
    """
    if not (isinstance(text, str) and text.strip()):
        raise InputError("a suggestion needs its text")
    place = store.locate_point(engine, lon, lat)
    street = (place.get("street") or {}).get("code")
    community = (place.get("community") or {}).get("code")
    grid = (place.get("grid") or {}).get("code")
    scope.check_report(street, grid)
    point = shapely.Point(lon, lat)
    open_requests = store.read_consultation_requests(engine, street_code=street)
    open_requests = open_requests[open_requests["answered_at"].isna()]
    targets: list[tuple[int, int]] = []
    if not open_requests.empty:
        footprints = store.read_footprint_consultations(engine)
        footprints = footprints[
            footprints["consultation_id"].isin(open_requests["consultation_id"])
        ]
        for row in footprints.to_dict("records"):
            if buffer_metres(row["footprint"], row["buffer_m"] or 0.0).covers(point):
                cid = int(row["consultation_id"])
                request = open_requests[open_requests["consultation_id"] == cid]
                targets.append((cid, int(request["request_id"].iloc[0])))
    if not targets:
        msg = (
            f"no open consultation covers ({lon:.6f}, {lat:.6f}); the suggestion was not "
            "attached (report an incident instead if something needs doing)"
        )
        raise ConsultationError(msg)
    store.record_suggestion(
        engine,
        targets,
        lon=lon,
        lat=lat,
        community_code=community,
        text=text.strip(),
        at=at,
        actor=actor,
    )
    return [c for c, _ in targets]


def suggestions_by_community(
    engine: Engine, consultation_id: int, streets: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The residents' suggestions on a consultation, counted per community (of ``streets``
    only, when given), with their texts: what the street sums up in its opinion."""
    events = store.read_consultation_events(engine, consultation_id, action="suggest")
    if streets is not None:
        events = events[events["street_code"].isin(list(streets))]
    out = []
    for (street, community), group in events.groupby(
        ["street_code", events["community_code"].fillna("")], sort=True
    ):
        out.append(
            {
                "street_code": street,
                "community_code": community or None,
                "count": len(group),
                "texts": group["text"].tolist(),
            }
        )
    return out


def _with_adoption_due(requests: pd.DataFrame) -> pd.DataFrame:
    """The requests with ``adoption_due``: the item's working days after the street's answer."""
    frame = requests.copy()
    dues: list[Any] = []
    for row in frame.to_dict("records"):
        if pd.isna(row["answered_at"]):
            dues.append(pd.NaT)
            continue
        days = catalogue().get(str(row["item_code"])).response_days
        dues.append(calendar().deadline(pd.Timestamp(row["answered_at"]).to_pydatetime(), days).due)
    frame["adoption_due"] = pd.to_datetime(
        pd.Series(dues, index=frame.index, dtype=object), utc=True
    )
    return frame


def overdue(engine: Engine, at: datetime) -> list[OverdueRequest]:
    """The overdue answers and adoption decisions at ``at`` (nothing is written)."""
    requests = _with_adoption_due(store.read_consultation_requests(engine))
    return list_overdue_requests(
        requests, at, district_after=get_settings().supervise_district_after
    )


def supervise(engine: Engine, at: datetime) -> list[OverdueRequest]:
    """Record a supervision event per overdue item and level reached (street first, then the
    district), once each; returns what is overdue."""
    items = overdue(engine, at)
    planned = [
        {
            "request_id": o.request_id,
            "consultation_id": o.consultation_id,
            "street_code": o.street_code,
            "stage": o.stage,
            "level": level,
            "reason": f"{o.stage} overdue since {o.due.isoformat()}",
        }
        for o in items
        for level in SUPERVISE_LEVELS[: SUPERVISE_LEVELS.index(o.level) + 1]
    ]
    store.record_request_supervision(engine, planned, at)
    return items


def figures(
    engine: Engine, since: datetime | None = None, until: datetime | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The report's figures (:func:`gridgov.consultation_review.consultation_figures`) over
    the requests sent in ``[since, until)``."""
    requests = store.read_consultation_requests(engine)
    if since is not None:
        requests = requests[requests["sent_at"] >= pd.Timestamp(since)]
    if until is not None:
        requests = requests[requests["sent_at"] < pd.Timestamp(until)]
    return consultation_figures(requests)
