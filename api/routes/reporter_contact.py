"""A reporter's contact details, for the street's dispatcher who calls them back.

The one route that returns personal data. Who may read it is
:meth:`gridgov.service.scope.Scope.reads_contacts`; every read is recorded in the privacy log
(:func:`gridgov.service.privacy.reporter_contact`). Nothing else the API answers (incidents,
events, the live feed, Open311) carries a contact: they name the reporter by an opaque id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from api.auth import Principal, require
from api.deps import EngineDep
from gridgov.service import privacy
from gridgov.service.scope import READERS

router = APIRouter(prefix="/incidents", tags=["incidents"])

Reader = Annotated[Principal, Depends(require(*READERS))]


class ReporterContact(BaseModel):
    incident_id: str
    reporter_id: str = Field(description="The opaque id events and notices name them by.")
    contact: str | None = Field(
        description="What the reporter gave (email, phone, name...); null once erased."
    )
    erased_at: datetime | None


@router.get(
    "/{incident_id}/reporter",
    response_model=ReporterContact,
    summary="The reporter's contact details (the street's dispatcher only; audited)",
    responses={
        403: {"description": "The caller sees the incident but may not read contacts."},
        404: {"description": "No such incident in the caller's scope, or no reporter."},
    },
)
def get_reporter_contact(
    incident_id: Annotated[str, Path(max_length=64)], principal: Reader, engine: EngineDep
) -> ReporterContact:
    found = privacy.reporter_contact(engine, principal.scope, incident_id, actor=principal.actor)
    return ReporterContact(
        incident_id=incident_id,
        reporter_id=found.reporter_id,
        contact=found.contact,
        erased_at=found.erased_at,
    )
