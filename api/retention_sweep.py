"""The retention rule run inside the service: no cron needed.

Each worker process sweeps at start and then every ``settings.retention_sweep_interval_s``
(:func:`gridgov.service.privacy.apply_retention`; erasing is idempotent, so several workers
sweeping is harmless). A failed sweep is logged by its error class and message (the store's
messages carry no statement parameters) and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI

from gridgov.service import privacy

__all__ = ["install_retention_sweep"]

log = logging.getLogger("gridgov.api.retention")


async def _sweep_forever(app: FastAPI) -> None:
    settings = app.state.settings
    while True:
        try:
            erased = await anyio.to_thread.run_sync(
                privacy.apply_retention, app.state.engine, settings
            )
            if erased:
                log.info("retention: erased the contacts of %d reporter(s)", len(erased))
        except Exception as exc:
            log.warning("retention sweep failed (%s): %s", type(exc).__name__, exc)
        await asyncio.sleep(settings.retention_sweep_interval_s)


def install_retention_sweep(app: FastAPI) -> None:
    """Run the sweep for the app's lifetime (around whatever lifespan it has already)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        task = None
        if app.state.settings.retention_sweep_interval_s > 0:
            task = asyncio.create_task(_sweep_forever(app))
        try:
            async with inner(application) as state:
                yield state
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app.router.lifespan_context = lifespan
