"""Who is asking, and what they may see and do.

Staff and units present ``Authorization: Bearer gg_...`` tokens; citizens' Open311 apps present
an ``api_key``. Both are issued by ``gridgov token issue`` and stored hashed
(:mod:`gridgov.store.access`).

What each role sees and may do over which area is decided in one place,
:mod:`gridgov.service.scope`: every caller carries its :class:`~gridgov.service.scope.Scope`
(``principal.scope``), and routes ask it.

A record outside a caller's scope answers 404, exactly as a record that does not exist, so a
dispatcher of one street cannot even learn that another street's incident exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.rate_limits import note_failed_auth
from gridgov import store
from gridgov.service.scope import Scope, scope_for
from gridgov.store import Credential
from gridgov.workflow import Role

__all__ = [
    "Principal",
    "current_principal",
    "not_found",
    "require",
]

_bearer = HTTPBearer(auto_error=False, description="A token from `gridgov token issue`.")


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


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of a native API route; 401 without a valid bearer token."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required", headers=challenge)
    credential = store.resolve_credential(request.app.state.engine, credentials.credentials)
    if credential is None or credential.kind != "token":
        note_failed_auth(request, credentials.credentials)
        raise HTTPException(401, "the token is unknown, revoked or expired", headers=challenge)
    # Who wrote, for the replica's read-your-writes rule (api/replica_reads.py).
    request.state.caller = credential.credential_id
    return Principal(credential)


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency: the caller, who must hold one of ``roles`` (403 otherwise)."""
    allowed = frozenset(roles)

    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role not in allowed:
            listed = ", ".join(sorted(allowed))
            raise HTTPException(403, f"the {principal.role} role may not do this (only {listed})")
        return principal

    return dependency
