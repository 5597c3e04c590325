"""Who is asking, and what they may see and do.

Staff and units present ``Authorization: Bearer gg_...`` tokens; citizens' Open311 apps present
an ``api_key``. Both are issued by ``gridgov token issue`` and stored hashed
(:mod:`gridgov.store.access`).

What each role sees and may do over which area is decided in one place,
:mod:`gridgov.service.scope`: every caller carries its :class:`~gridgov.service.scope.Scope`
(``principal.scope``), and routes ask it.

A record outside a caller's scope answers 404, exactly as a record that does not exist, so a
dispatcher of one street cannot even learn that another street's incident exists.

The hottest requests (a unit's position fix, every few seconds from every unit; the wall's poll,
every second from every display) look their caller up in no query of their own:
:func:`require_checked_in_statement` takes a token this process has resolved before from a small
cache, and the route's one statement checks the credential live
(:func:`gridgov.store.access.credential_is_live`, the same rule as every lookup), so a revoked
token is refused at once on every worker and host.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from api.rate_limits import note_failed_auth
from gridgov import store
from gridgov.service.scope import Scope, scope_for
from gridgov.store import Credential
from gridgov.workflow import Role

__all__ = [
    "Principal",
    "current_principal",
    "not_found",
    "refused",
    "remember_resolved",
    "require",
    "require_checked_in_statement",
]

_bearer = HTTPBearer(auto_error=False, description="A token from `gridgov token issue`.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_REFUSED = "the token is unknown, revoked or expired"
#: Tokens a process remembers for :func:`require_checked_in_statement` (a district's units and
#: staff fit many times over); beyond it the least recently used are forgotten.
_KNOWN_TOKENS = 20_000


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, with its scope (what it sees and may do, and where)."""

    credential: Credential
    scope: Scope = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", scope_for(self.credential))

    @property
    def role(self) -> str:
        return self.credential.role

    @property
    def actor(self) -> str:
        """How events name this caller: the unit id for a unit, the credential otherwise."""
        return self.scope.acting_unit or f"{self.role}:{self.credential.credential_id}"

    @property
    def workflow_role(self) -> Role:
        """The workflow role the caller acts as (its scope's)."""
        return self.scope.workflow_role


def not_found(what: str, key: str) -> HTTPException:
    """The answer for a record that does not exist *or* lies outside the caller's scope."""
    return HTTPException(status_code=404, detail=f"no {what} {key!r}")


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a native API route; 401 without a valid bearer token."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", headers=_CHALLENGE)
    presented = credentials.credentials
    credential = resolved_before(request.scope, presented)
    if credential is _UNRESOLVED:
        credential = await run_in_threadpool(
            store.resolve_credential, request.app.state.engine, presented
        )
    if credential is None or credential.kind != "token":
        note_failed_auth(request, presented)
        raise HTTPException(401, _REFUSED, headers=_CHALLENGE)
    # Who wrote, for the replica's read-your-writes rule (api/replica_reads.py).
    request.state.caller = credential.credential_id
    return Principal(credential)


#: The state key under which a request keeps the credential its secret resolved to.
_RESOLVED = "resolved_credential"
_UNRESOLVED: Any = object()


def remember_resolved(
    scope: MutableMapping[str, Any], presented: str, found: Credential | None
) -> None:
    """Keep what ``presented`` resolved to for the rest of this request, so that the route's
    authentication does not look the same secret up again (the Idempotency-Key's namespace
    resolves it first)."""
    scope.setdefault("state", {})[_RESOLVED] = (presented, found)


def resolved_before(scope: MutableMapping[str, Any], presented: str) -> Any:
    """What ``presented`` resolved to earlier in this request, or ``_UNRESOLVED``."""
    kept = scope.get("state", {}).get(_RESOLVED)
    if kept is None or kept[0] != presented:
        return _UNRESOLVED
    return kept[1]


def _allowed(principal: Principal, allowed: frozenset[str]) -> Principal:
    if principal.role not in allowed:
        listed = ", ".join(sorted(allowed))
        raise HTTPException(403, f"the {principal.role} role may not do this (only {listed})")
    return principal


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    # Async: FastAPI runs a plain function dependency in a worker thread, a hop for nothing.
    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return _allowed(principal, allowed)

    return dependency


def _token_key(presented: str) -> bytes:
    # The cache holds digests, never secrets.
    return hashlib.sha256(presented.encode()).digest()


def _known_tokens(request: Request) -> OrderedDict[bytes, Principal]:
    state = request.app.state
    known: OrderedDict[bytes, Principal] | None = getattr(state, "known_tokens", None)
    if known is None:
        known = state.known_tokens = OrderedDict()
    return known


def require_checked_in_statement(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency like :func:`require`, for a route whose one statement checks the caller's
    credential live itself: it must pass ``principal.credential.credential_id`` to that
    statement and answer :func:`refused` when the statement refuses it.

    A token resolved before in this process comes from a cache, with no query; any other goes
    through :func:`current_principal` (the same answers: 401, 403). Only the live tokens of
    allowed roles are cached, so a cached token never answers 403 in place of a 401.
    """
    allowed = frozenset(roles)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required", headers=_CHALLENGE)
        known = _known_tokens(request)
        key = _token_key(credentials.credentials)
        principal = known.get(key)
        if principal is None or principal.role not in allowed:
            found = await current_principal(request, credentials)
            principal = _allowed(found, allowed)
            known[key] = principal
            while len(known) > _KNOWN_TOKENS:
                known.popitem(last=False)
        else:
            known.move_to_end(key)
            request.state.caller = principal.credential.credential_id
        return principal

    return dependency


def refused(request: Request) -> HTTPException:
    """The 401 for a caller whose write found its credential no longer live (revoked or expired
    since this process cached it): forgotten here, and counted as a failed authentication."""
    presented = get_authorization_scheme_param(request.headers.get("authorization"))[1]
    _known_tokens(request).pop(_token_key(presented), None)
    note_failed_auth(request, presented)
    return HTTPException(401, _REFUSED, headers=_CHALLENGE)
