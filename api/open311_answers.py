"""How every Open311 resource answers: JSON or XML by its extension, the spec's field errors.

Shared by the filing side (:mod:`api.open311`) and the reading side (:mod:`api.open311_lists`):
the answer rendered in the format the resource's extension asks for, the OpenAPI examples of
both formats, W3C datetimes, a validation error that names each bad field, the one
jurisdiction this service answers for, and how the spec fields without a column of their own
are kept in a stored description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Path, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from api.deps import ContextDep, SettingsDep
from gridgov.dispatch import DispatchContext
from gridgov.service.scope import OPEN311_SOURCE
from gridgov.settings import Settings
from gridgov.text_rules import xml_text

#: ``incidents.source`` of requests filed here (only these have tokens).
SOURCE = OPEN311_SOURCE
#: Starts each spec field appended to a stored description (``[Open311] name: value``).
EXTRA_PREFIX = "[Open311] "
_XML_MEDIA = "text/xml; charset=utf-8"

Format = Literal["json", "xml"]
FormatPath = Annotated[
    Format, Path(alias="format", description="Answer format: the resource's extension.")
]


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

# Tags of the items of a list-valued element, as the spec's XML examples name them.
_ITEM_TAGS = {
    "endpoints": "endpoint",
    "formats": "format",
    "attributes": "attribute",
    "values": "value",
    "extensions": "extension",
}


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _fill(ET.SubElement(element, key), item)
    elif isinstance(value, list | tuple):
        tag = _ITEM_TAGS.get(element.tag, "item")
        for item in value:
            _fill(ET.SubElement(element, tag), item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = xml_text(str(value))


def render(
    fmt: Format, payload: Any, root: str, item: str | None = None, status: int = 200
) -> Response:
    """The answer in ``fmt``: a list of ``item`` elements under ``root``, or ``root`` itself."""
    if fmt == "json":
        return JSONResponse(payload, status_code=status)
    element = ET.Element(root)
    if item is None:
        _fill(element, payload)
    else:
        for entry in payload:
            _fill(ET.SubElement(element, item), entry)
    body = b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(element, encoding="utf-8")
    return Response(body, status_code=status, media_type=_XML_MEDIA)


def openapi_responses(example: Any, xml_example: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {
                "application/json": {"example": example},
                "text/xml": {"schema": {"type": "string"}, "example": xml_example},
            }
        }
    }


def w3c(when: datetime | None, tz: ZoneInfo) -> str | None:
    return None if when is None else when.astimezone(tz).isoformat(timespec="seconds")


def invalid(problems: Sequence[tuple[str, str, str]]) -> RequestValidationError:
    """A validation error naming each field: ``(where, field, message)`` triples."""
    return RequestValidationError(
        [
            {"loc": (where, name), "msg": message, "type": "value_error"}
            for where, name, message in problems
        ]
    )


# --------------------------------------------------------------------------------------------
# jurisdiction
# --------------------------------------------------------------------------------------------


def jurisdiction_of(ctx: DispatchContext, settings: Settings) -> str | None:
    """The jurisdiction_id this service answers for: the setting, else the district's code."""
    if settings.open311_jurisdiction:
        return settings.open311_jurisdiction
    gdf = ctx.gdf_areas
    codes = gdf.loc[gdf["level"].astype(str) == "district", "code"]
    return str(codes.iloc[0]) if len(codes) else None


def check_jurisdiction(ctx: DispatchContext, settings: Settings, given: str | None) -> None:
    # Absent is fine: this service answers for one jurisdiction only.
    if given is None or given == "":
        return
    ours = jurisdiction_of(ctx, settings)
    if given != ours:
        raise HTTPException(
            404, f"unknown jurisdiction_id {given!r}; this service answers for {ours!r}"
        )


def jurisdiction_query(
    ctx: ContextDep,
    settings: SettingsDep,
    jurisdiction_id: Annotated[
        str | None,
        Query(
            description="Optional; when given it must be this service's jurisdiction (the "
            "district code by default).",
            examples=["510106000000"],
        ),
    ] = None,
) -> None:
    check_jurisdiction(ctx, settings, jurisdiction_id)


Jurisdiction = Annotated[None, Depends(jurisdiction_query)]
