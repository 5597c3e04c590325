"""Liveness (the process answers) and readiness (the store answers and holds a district)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import EngineDep
from gridgov import __version__, store

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    backend: str | None = None
    detail: str | None = None


@router.get("/health", response_model=Health, summary="Liveness")
def live() -> Health:
    """The process is up. It does not touch the database (see ``/health/ready``)."""
    return Health(status="ok", version=__version__)


@router.get(
    "/health/ready",
    response_model=Health,
    summary="Readiness: the database answers and holds a district",
    responses={503: {"model": Health, "description": "The database is down or empty."}},
)
def ready(engine: EngineDep) -> Health | JSONResponse:
    backend = store.detect_backend(engine)
    try:
        store.ping(engine)
        loaded = store.is_initialised(engine) and sum(store.summarize(engine)["areas"].values()) > 0
    except Exception as exc:
        body = Health(
            status="unavailable",
            version=__version__,
            backend=backend,
            detail=f"database unreachable: {type(exc).__name__}",
        )
        return JSONResponse(body.model_dump(), status_code=503)
    if not loaded:
        body = Health(
            status="unavailable",
            version=__version__,
            backend=backend,
            detail="the store holds no district; run `gridgov load`",
        )
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", version=__version__, backend=backend)
