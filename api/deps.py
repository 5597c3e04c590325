"""Shared route dependencies: the store and the dispatch context of the running app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from gridgov import store
from gridgov.dispatch import DispatchContext
from gridgov.settings import Settings


def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_context(engine: Annotated[Engine, Depends(get_engine)]) -> DispatchContext:
    # Built once per loaded dataset and cached by the store (rebuilt after a reload).
    return store.context_from_store(engine)


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ContextDep = Annotated[DispatchContext, Depends(get_context)]
