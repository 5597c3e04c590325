"""Liveness (the process answers) and readiness (the store answers, within a second, and holds a
district)."""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine

from gridgov import __version__, store

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    version: str
    backend: str | None = None
    detail: str | None = None


@router.get("/health", response_model=Health, summary="Liveness")
async def live() -> Health:
    """The process is up. It does not touch the database (see ``/health/ready``), and runs on
    the event loop rather than a worker thread, so it answers even when every thread waits
    on a hung database."""
    return Health(status="ok", version=__version__)


#: How long readiness waits for the store before it says "not ready".
READY_TIMEOUT_S = 1.0
#: Readiness checks get their own threads: they must not queue behind requests stuck on a
#: hung database, and at most a few of them may be stuck themselves.
_READY_THREADS = anyio.CapacityLimiter(4)


@router.get(
    "/health/ready",
    response_model=Health,
    summary="Readiness: the database answers and holds a district",
    responses={503: {"model": Health, "description": "The database is down, hung or empty."}},
)
async def ready(request: Request) -> Health | JSONResponse:
    """Ready when the store answers within a second and holds a district; 503 otherwise."""
    engine = request.app.state.engine
    backend = store.detect_backend(engine)
    try:
        with anyio.fail_after(READY_TIMEOUT_S):
            loaded = await anyio.to_thread.run_sync(
                _loaded, engine, limiter=_READY_THREADS, abandon_on_cancel=True
            )
    except TimeoutError:
        return _unavailable(backend, f"database did not answer within {READY_TIMEOUT_S:g} s")
    except Exception as exc:
        return _unavailable(backend, f"database unreachable: {type(exc).__name__}")
    if not loaded:
        return _unavailable(backend, "the store holds no district; run `gridgov load`")
    return Health(status="ok", version=__version__, backend=backend)


def _loaded(engine: Engine) -> bool:
    store.ping(engine)
    return store.is_initialised(engine) and sum(store.summarize(engine)["areas"].values()) > 0


def _unavailable(backend: str, detail: str) -> JSONResponse:
    body = Health(status="unavailable", version=__version__, backend=backend, detail=detail)
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
