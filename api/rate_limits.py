"""Rate limits: failed authentication and writes, per credential and per client address.

- **Failed authentication**: a request presenting a bearer token or an Open311 ``api_key``
  that is unknown, revoked or expired counts against its client address and against that
  secret (by digest). After ``settings.rate_limit_auth_failures`` within
  ``settings.rate_limit_window_s`` the address (and the secret) get 429 until the oldest
  failure leaves the window: guessing keys costs time.
- **Writes** (POST, PUT, PATCH, DELETE): at most ``settings.rate_limit_writes_per_credential``
  per presented credential and ``settings.rate_limit_writes_per_address`` per client address
  within the window.

Every 429 carries ``Retry-After`` (whole seconds). A limit of 0 turns that limit off. The
client address is the socket's peer, unless that peer is one of ``settings.trusted_proxies``:
then it is the nearest address in ``X-Forwarded-For`` that is not a trusted proxy (a client
cannot forge its way past a proxy that appends the real peer). Counts live in each worker
process (sliding windows in memory), so with N workers an address may reach N times a limit
at worst; the limits are against floods and guessing, not exact quotas.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections import deque
from collections.abc import MutableMapping
from typing import Any

from fastapi import Request
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Receive, Scope, Send

from api.error_answers import error_response

__all__ = ["RateLimitMiddleware", "client_address", "note_failed_auth"]

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FAILED = "gridgov_failed_auth"
#: Paths never limited: a load balancer's health checks.
_EXEMPT = ("/health",)


def _digest(secret: str | bytes) -> str:
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(raw).hexdigest()[:24]


def note_failed_auth(request: Request, secret: str) -> None:
    """Record, for the rate limiter, that this request presented a secret that failed."""
    request.scope.setdefault("state", {})[_FAILED] = _digest(secret)


def _networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _trusted(address: str, networks: list[Any]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(scope: Scope, trusted_proxies: list[str]) -> str:
    """The client's address: the peer, or behind a trusted proxy its forwarded address."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if not trusted_proxies:
        return peer
    networks = _networks(trusted_proxies)
    if not _trusted(peer, networks):
        return peer
    forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for")
    hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
    # Walk back from the nearest hop: the first one that is not our own proxy is the client.
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return peer


class _Windows:
    """Sliding windows of event times per key."""

    def __init__(self) -> None:
        self._events: dict[str, deque[float]] = {}

    def _live(self, key: str, now: float, window: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - window:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def wait(self, key: str, limit: int, now: float, window: float) -> float:
        """Seconds until ``key`` may go again (0: now)."""
        events = self._live(key, now, window)
        if limit <= 0 or len(events) < limit:
            return 0.0
        return events[len(events) - limit] + window - now

    def add(self, key: str, now: float) -> None:
        self._events.setdefault(key, deque()).append(now)


class RateLimitMiddleware:
    """Pure ASGI middleware; install it outermost (before bodies are read or keys checked)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.failures = _Windows()
        self.writes = _Windows()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(_EXEMPT):
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.settings
        window = float(settings.rate_limit_window_s)
        now = time.monotonic()
        address = "addr:" + client_address(scope, list(settings.trusted_proxies))
        auth = dict(scope["headers"]).get(b"authorization")
        credential = None if auth is None else "cred:" + _digest(auth.split(b" ", 1)[-1].strip())
        keys = [address] if credential is None else [address, credential]
        limit = int(settings.rate_limit_auth_failures)
        wait = max(self.failures.wait(k, limit, now, window) for k in keys)
        what = "failed authentications"
        if not wait and scope["method"] in _WRITES:
            wait = max(
                self.writes.wait(address, int(settings.rate_limit_writes_per_address), now, window),
                0.0
                if credential is None
                else self.writes.wait(
                    credential, int(settings.rate_limit_writes_per_credential), now, window
                ),
            )
            what = "writes"
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            response = error_response(
                StarletteRequest(scope),
                429,
                "too_many_requests",
                f"too many {what} from this client; retry in {seconds} s",
                headers={"retry-after": str(seconds)},
            )
            await response(scope, receive, send)
            return
        if scope["method"] in _WRITES:
            for key in keys:
                self.writes.add(key, now)
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send)
        finally:
            failed = state.get(_FAILED)
            if failed is not None:
                self.failures.add(address, now)
                self.failures.add("cred:" + failed, now)
