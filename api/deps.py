"""Shared route dependencies: the store and the dispatch context of the running app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from gridgov import store
from gridgov.dispatch import DispatchContext
from gridgov.settings import Settings


# Async, since FastAPI runs a plain function dependency in a worker thread: a hop per request
# for a lookup of the app's state.
async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_read_engine(request: Request) -> Engine:
    # Declared after the principal in a route's parameters: the rule needs to know the caller.
    from api.replica_reads import read_engine

    return read_engine(request)


def get_context(engine: Annotated[Engine, Depends(get_engine)]) -> DispatchContext:
    # Built once per loaded dataset and cached by the store (rebuilt after a reload).
    return store.context_from_store(engine)


EngineDep = Annotated[Engine, Depends(get_engine)]
#: The engine of reads a streaming replica may answer (api/replica_reads.py).
ReadEngineDep = Annotated[Engine, Depends(get_read_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ContextDep = Annotated[DispatchContext, Depends(get_context)]
