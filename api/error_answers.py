"""Every error a client can meet is mapped here, in one place, to an HTTP status and a body.

Native routes answer ``{"error": code, "message": text, "fields": [...]}``. Open311 routes
answer the GeoReport v2 error list ``[{"code": status, "description": text}]``, in JSON or XML
as the request's format asks. A route itself raises only 404 or 403 (``HTTPException``); every
domain error comes from the core or the store and is translated below. Nothing a client sees
ever holds a stack trace: an unexpected error is logged here with a reference, and the client
gets the reference only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gridgov.errors import (
    AssessmentWeightError,
    ConsultationError,
    CredentialRefusedError,
    CRSError,
    ForbiddenError,
    GridgovError,
    InputError,
    InvalidTransitionError,
    NotFoundError,
    OutsideDistrictError,
    StoreError,
    UnknownMatterError,
    UnsupportedMediaError,
)
from gridgov.text_rules import xml_text

log = logging.getLogger("gridgov.api")

#: Domain error → (HTTP status, error code). The first matching class wins, so subclasses
#: come before their bases.
ERROR_MAP: Sequence[tuple[type[GridgovError], int, str]] = (
    (CredentialRefusedError, 401, "unauthorized"),
    (NotFoundError, 404, "not_found"),
    (ForbiddenError, 403, "forbidden"),
    (InvalidTransitionError, 409, "invalid_transition"),
    (OutsideDistrictError, 422, "outside_district"),
    (UnknownMatterError, 422, "unknown_matter"),
    (CRSError, 422, "bad_coordinates"),
    (UnsupportedMediaError, 415, "unsupported_media"),
    (AssessmentWeightError, 422, "assessment_weight"),
    (ConsultationError, 409, "consultation_required"),
    (InputError, 422, "invalid_input"),
    # The database is down or not initialised: the service cannot answer now, try later.
    (StoreError, 503, "store_unavailable"),
    (GridgovError, 500, "internal"),
)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
}


def classify(exc: GridgovError) -> tuple[int, str]:
    """The HTTP status and error code of a domain error."""
    for cls, status, code in ERROR_MAP:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"  # pragma: no cover - GridgovError is the last entry


def _is_open311(request: Request) -> bool:
    return request.url.path.startswith("/open311/")


def _wants_xml(request: Request) -> bool:
    path = request.url.path
    return path.endswith(".xml") or request.query_params.get("format") == "xml"


def open311_error(request: Request, status: int, description: str) -> Response:
    """A GeoReport v2 error answer (``errors`` / ``error`` with ``code`` and ``description``)."""
    if _wants_xml(request):
        root = ET.Element("errors")
        item = ET.SubElement(root, "error")
        ET.SubElement(item, "code").text = str(status)
        ET.SubElement(item, "description").text = xml_text(description)
        body = b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="utf-8")
        return Response(body, status_code=status, media_type="text/xml; charset=utf-8")
    return JSONResponse([{"code": status, "description": description}], status_code=status)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    fields: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error answer for this request's API (native or Open311)."""
    if _is_open311(request):
        if fields:
            message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        response = open311_error(request, status, message)
    else:
        body: dict[str, Any] = {"error": code, "message": message}
        if fields is not None:
            body["fields"] = fields
        response = JSONResponse(body, status_code=status)
    if headers:
        response.headers.update(headers)
    return response


def _field_name(loc: Sequence[Any]) -> str:
    # ("body", "lat") → "lat"; ("query", "bbox") → "bbox"; nested parts joined by dots.
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def validation_fields(exc: RequestValidationError) -> list[dict[str, Any]]:
    """One entry per invalid field, naming it and saying what is wrong (no input echoed)."""
    out = []
    for error in exc.errors():
        out.append(
            {
                "field": _field_name(error.get("loc", ())),
                "in": str(error.get("loc", ("body",))[0]),
                "message": str(error.get("msg", "invalid")),
            }
        )
    return out


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GridgovError)
    status, code = classify(exc)
    if status == 500:
        return _internal(request, exc)
    return error_response(request, status, code, str(exc))


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields = validation_fields(exc)
    names = ", ".join(sorted({f["field"] for f in fields}))
    return error_response(request, 422, "invalid_input", f"invalid {names}", fields=fields)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(request, exc.status_code, code, message, headers=exc.headers)


def _internal(request: Request, exc: BaseException) -> Response:
    reference = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s on %s %s",
        reference,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        request, 500, "internal", f"internal error; quote reference {reference} to the operators"
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return _internal(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (done once by the app factory)."""
    app.add_exception_handler(GridgovError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    install_store_fault_handlers(app)


# --------------------------------------------------------------------------------------------
# the store down, hung or saturated: 503 with Retry-After, never a 500
# --------------------------------------------------------------------------------------------

#: What a client is told while the store cannot answer: no URL, no driver message (those are
#: logged for the operators).
STORE_UNAVAILABLE = "the store is unavailable; retry shortly"
#: Seconds a client is asked to wait before retrying.
RETRY_AFTER_S = 1


def store_unavailable(request: Request, exc: BaseException) -> Response:
    """The 503 answer for a store that is down, hung (a statement cut by its timeout) or out
    of free connections (the pool timeout)."""
    log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        request,
        503,
        "store_unavailable",
        STORE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _on_store_error(request: Request, exc: Exception) -> Response:
    return store_unavailable(request, exc)


async def _on_driver_error(request: Request, exc: Exception) -> Response:
    # A driver error that escaped translation: the connection's fault is the store's state;
    # anything else (a bug in a statement) stays an internal error.
    if isinstance(exc, SATimeoutError | OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return store_unavailable(request, exc)
    return _internal(request, exc)


def install_store_fault_handlers(app: FastAPI) -> None:
    """503 (with ``Retry-After``) for :class:`StoreError` and for the driver's connection and
    pool-timeout errors (the more specific handlers win over the catch-alls above)."""
    app.add_exception_handler(StoreError, _on_store_error)
    app.add_exception_handler(DBAPIError, _on_driver_error)
    app.add_exception_handler(SATimeoutError, _on_driver_error)
