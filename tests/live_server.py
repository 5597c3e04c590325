"""A real uvicorn server in a background thread, for clients that need a socket (the
third-party Open311 client, schemathesis against the live OpenAPI, the browser)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, *, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 and yield its base URL; stopped on exit."""
    port = port or free_port()
    # Open event streams end when the server stops, as they do under `gridgov serve`.
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    # Wait for the socket, not for a fixed time: the server answers /health once it listens.
    for _ in range(400):
        try:
            if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.025)
    else:  # pragma: no cover - a broken environment
        server.should_exit = True
        raise RuntimeError(f"uvicorn did not start on {base}")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
