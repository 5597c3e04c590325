"""Who is asking, and what they may see and do.

Staff and units present ``Authorization: Bearer gg_...`` tokens; citizens' Open311 apps present
an ``api_key``. Both are issued by ``gridgov token issue`` and stored hashed
(:mod:`gridgov.store.access`).

The roles:

- **admin**: everything, district-wide.
- **commander**, **dispatcher**: their street: its incidents, units and workflow actions.
- **unit**: itself: its status and position, and the incidents it is (or was) assigned to.
- **grid_worker**: reports in its grid, and verifies or reopens the incidents there.
- **analyst**: reads everything, changes nothing.
- **citizen**: files and follows Open311 requests.

A record outside a caller's scope answers 404, exactly as a record that does not exist, so a
dispatcher of one street cannot even learn that another street's incident exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gridgov import store
from gridgov.store import Credential
from gridgov.workflow import Role

__all__ = [
    "ALL_ROLES",
    "READ_ROLES",
    "Principal",
    "current_principal",
    "not_found",
    "require",
]

ALL_ROLES = ("admin", "commander", "dispatcher", "unit", "grid_worker", "analyst")
#: Roles that read incidents (each within its scope).
READ_ROLES = ALL_ROLES
#: The workflow role each API role acts as (gridgov.workflow checks it against the action).
WORKFLOW_ROLE = {
    # An administrator may take every action; the dispatcher role is the widest.
    "admin": Role.DISPATCHER,
    "commander": Role.COMMANDER,
    "dispatcher": Role.DISPATCHER,
    "unit": Role.UNIT,
    "grid_worker": Role.GRID_WORKER,
    "citizen": Role.REPORTER,
}

_bearer = HTTPBearer(auto_error=False, description="A token from `gridgov token issue`.")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    credential: Credential

    @property
    def role(self) -> str:
        return self.credential.role

    @property
    def actor(self) -> str:
        """How events name this caller: the unit id for a unit, the credential otherwise."""
        c = self.credential
        if c.role == "unit" and c.unit_id:
            return c.unit_id
        return f"{c.role}:{c.credential_id}"

    @property
    def workflow_role(self) -> Role:
        return WORKFLOW_ROLE.get(self.role, Role.SYSTEM)

    @property
    def district_wide(self) -> bool:
        return self.role in ("admin", "analyst")

    def sees_street(self, street_code: str | None) -> bool:
        """Whether the caller's scope covers a street (units and grid workers: their own)."""
        return self.district_wide or (
            street_code is not None and street_code == self.credential.street_code
        )

    def sees_incident(self, row: Any, unit_ids: Iterable[str] = ()) -> bool:
        """Whether the caller may see an incident (``row`` has street_code and grid_code;
        ``unit_ids`` are the units ever assigned to it)."""
        c = self.credential
        if self.district_wide:
            return True
        if c.role in ("commander", "dispatcher"):
            return row.street_code is not None and row.street_code == c.street_code
        if c.role == "grid_worker":
            return row.grid_code is not None and row.grid_code == c.grid_code
        if c.role == "unit":
            return c.unit_id in set(unit_ids)
        return False


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
        raise HTTPException(401, "the token is unknown, revoked or expired", headers=challenge)
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
