"""API credentials, stored beside the district.

Credentials are opaque: ``gg_<id>_<secret>``. The id finds the row, and only the SHA-256 of the
secret is kept, so a leaked database holds no usable token. (The Idempotency-Key record is
:mod:`gridgov.store.idempotency_rows`.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from gridgov.errors import InputError, NotFoundError
from gridgov.store.engine import begin_write, read_statements, translate_errors
from gridgov.store.group_commit import group_of
from gridgov.store.many_rows import any_of
from gridgov.store.models import (
    API_ROLES,
    AREAS,
    CREDENTIAL_KINDS,
    CREDENTIALS,
    UNITS,
)

__all__ = [
    "CREDENTIAL_COLUMNS",
    "Credential",
    "credential_is_live",
    "issue_credential",
    "list_credentials",
    "resolve_credential",
    "revoke_credential",
]

CREDENTIAL_COLUMNS = [
    "credential_id",
    "kind",
    "role",
    "street_code",
    "unit_id",
    "grid_code",
    "department",
    "label",
    "created_at",
    "expires_at",
    "revoked_at",
]

_PREFIX = "gg"
_ID_SHAPE = re.compile(r"[0-9a-f]{1,32}")


@dataclass(frozen=True)
class Credential:
    """Who a request comes from, and the part of the district they may touch."""

    credential_id: str
    kind: str
    role: str
    street_code: str | None = None
    unit_id: str | None = None
    grid_code: str | None = None
    label: str = ""
    department: str | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _area_level(engine: Engine, code: str) -> str | None:
    with translate_errors(engine), engine.connect() as connection:
        return connection.execute(select(AREAS.c.level).where(AREAS.c.code == code)).scalar()


def issue_credential(
    engine: Engine,
    role: str,
    *,
    label: str,
    kind: str = "token",
    street_code: str | None = None,
    unit_id: str | None = None,
    grid_code: str | None = None,
    department: str | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> tuple[Credential, str]:
    """Issue a credential and return it with its secret, which is shown this once only.

    Each role needs its scope: commanders and dispatchers a street, a unit its unit id, a grid
    worker a grid (its street follows from the grid), a department its name (as its offices
    and consultations name it). Citizens hold API keys; every other role holds tokens.

    Raises
    ------
    InputError
        An unknown role, a missing or unknown scope, or a kind that does not suit the role.
    """
    if role not in API_ROLES:
        msg = f"unknown role {role!r}; expected one of {', '.join(API_ROLES)}"
        raise InputError(msg)
    if kind not in CREDENTIAL_KINDS:
        msg = f"unknown credential kind {kind!r}; expected one of {', '.join(CREDENTIAL_KINDS)}"
        raise InputError(msg)
    if (kind == "api_key") != (role == "citizen"):
        msg = "citizens' apps hold API keys and every other role a token"
        raise InputError(msg)
    if not label.strip():
        raise InputError("a credential needs a label saying who holds it")
    if role in ("commander", "dispatcher"):
        if not street_code or _area_level(engine, street_code) != "street":
            msg = f"a {role} is scoped to a street: give a street code (got {street_code!r})"
            raise InputError(msg)
    elif role == "unit":
        with translate_errors(engine), engine.connect() as connection:
            street = connection.execute(
                select(UNITS.c.street_code).where(UNITS.c.unit_id == unit_id)
            ).scalar()
        if street is None:
            msg = f"a unit token is scoped to its unit: no unit {unit_id!r} in the store"
            raise InputError(msg)
        street_code = street
    elif role == "department":
        if not (department and department.strip()):
            raise InputError("a department token is scoped to its department: give its name")
        department = department.strip()
    elif role == "grid_worker":
        if not grid_code or _area_level(engine, grid_code) != "grid":
            msg = f"a grid worker is scoped to a grid: give a grid code (got {grid_code!r})"
            raise InputError(msg)
        # grid → community → street, through the hierarchy's parent codes.
        with translate_errors(engine), engine.connect() as connection:
            community = connection.execute(
                select(AREAS.c.parent_code).where(AREAS.c.code == grid_code)
            ).scalar()
            street_code = connection.execute(
                select(AREAS.c.parent_code).where(AREAS.c.code == community)
            ).scalar()
    credential_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row: dict[str, Any] = {
        "credential_id": credential_id,
        "kind": kind,
        "secret_sha256": _digest(secret),
        "role": role,
        "street_code": street_code
        if role in ("commander", "dispatcher", "unit", "grid_worker")
        else None,
        "unit_id": unit_id if role == "unit" else None,
        "grid_code": grid_code if role == "grid_worker" else None,
        "department": department if role == "department" else None,
        "label": label,
        "created_at": now or datetime.now(UTC),
        "expires_at": expires_at,
        "revoked_at": None,
    }
    with translate_errors(engine), begin_write(engine) as connection:
        connection.execute(insert(CREDENTIALS).values(**row))
    credential = Credential(
        credential_id=credential_id,
        kind=kind,
        role=role,
        street_code=row["street_code"],
        unit_id=row["unit_id"],
        grid_code=row["grid_code"],
        label=label,
        department=row["department"],
    )
    return credential, f"{_PREFIX}_{credential_id}_{secret}"


def credential_is_live(
    column: Callable[[str], Any], credential_id: Any, now: Any
) -> ColumnElement[bool]:
    """The validity rule, its one owner: the credential ``credential_id`` exists, is not
    revoked and has not expired at ``now``.

    ``column`` gives the credentials table's columns by name: the table's own
    (:func:`resolve_credential`), or a statement's alias that checks the caller inside the
    write itself (:func:`gridgov.store.position_fixes.store_fixes`). The secret's digest is
    compared apart, in constant time.
    """
    expires = column("expires_at")
    return and_(
        column("credential_id") == credential_id,
        column("revoked_at").is_(None),
        or_(expires.is_(None), expires > now),
    )


def resolve_credential(
    engine: Engine, presented: str, *, now: datetime | None = None
) -> Credential | None:
    """The live credential a presented secret belongs to, or None (unknown, revoked, expired)."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX:
        return None
    credential_id, secret = parts[1], parts[2]
    if not _ID_SHAPE.fullmatch(credential_id):
        # Not an id this store issues (secrets.token_hex): no query, and nothing a hostile
        # caller sends (a NUL, kilobytes) reaches a read that other callers share.
        return None
    row = _live_row(engine, credential_id, now)
    if row is None:
        return None
    # Compare digests in constant time so response timing says nothing about the secret.
    if not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        return None
    return Credential(
        credential_id=row.credential_id,
        kind=row.kind,
        role=row.role,
        street_code=row.street_code,
        unit_id=row.unit_id,
        grid_code=row.grid_code,
        label=row.label,
        department=row.department,
    )


def credential_live(engine: Engine, credential_id: str, *, now: datetime | None = None) -> bool:
    """Whether the credential ``credential_id`` is still live (not revoked, not expired): for a
    caller this process resolved before, whose statement cannot check it itself."""
    return _live_row(engine, credential_id, now) is not None


def _live_row(engine: Engine, credential_id: str, now: datetime | None) -> Any:
    """The credential's row when it is live (:func:`credential_is_live`), else None.

    Without ``now`` (checked now), the threads of this process that ask together share one
    read (:mod:`gridgov.store.group_commit`), made after each of them asked.
    """
    with translate_errors(engine):
        if now is None:
            return group_of(engine, "credential", _live_rows).submit(credential_id)
        return _live_rows(engine, [credential_id], now)[0]


#: The rule (:func:`credential_is_live`) for the credentials of a list, each row checked
#: against its own id; built once (every request with a token runs it).
_LIVE_ROWS = select(CREDENTIALS).where(
    any_of(CREDENTIALS.c.credential_id, "b_ids"),
    credential_is_live(
        CREDENTIALS.c.__getitem__,
        CREDENTIALS.c.credential_id,
        bindparam("b_now", type_=CREDENTIALS.c.expires_at.type),
    ),
)


def _live_rows(
    engine: Engine, credential_ids: Sequence[str], now: datetime | None = None
) -> list[Any]:
    """The live row of each credential of ``credential_ids`` (None for one not live)."""
    with read_statements(engine).connect() as connection:
        rows = connection.execute(
            _LIVE_ROWS, {"b_ids": sorted(set(credential_ids)), "b_now": now or datetime.now(UTC)}
        )
        found = {row.credential_id: row for row in rows}
    return [found.get(c) for c in credential_ids]


def revoke_credential(engine: Engine, credential_id: str, *, now: datetime | None = None) -> None:
    """Revoke a credential at once (it stays listed, with its revocation time).

    Raises
    ------
    NotFoundError
        No such credential.
    """
    with translate_errors(engine), begin_write(engine) as connection:
        result = connection.execute(
            update(CREDENTIALS)
            .where(CREDENTIALS.c.credential_id == credential_id)
            .values(revoked_at=now or datetime.now(UTC))
        )
    if not result.rowcount:
        msg = f"no credential {credential_id!r}"
        raise NotFoundError(msg)


def list_credentials(engine: Engine) -> pd.DataFrame:
    """Every credential (never its secret or digest), oldest first."""
    stmt = select(*[CREDENTIALS.c[c] for c in CREDENTIAL_COLUMNS]).order_by(
        CREDENTIALS.c.created_at, CREDENTIALS.c.credential_id
    )
    with translate_errors(engine), engine.connect() as connection:
        rows = connection.execute(stmt).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=CREDENTIAL_COLUMNS)
