"""The area hierarchy for maps (GeoJSON per level, per viewport) and point location."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import shapely
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import ContextDep, EngineDep
from api.schemas import Crs, parse_bbox, to_wgs84_point
from gridgov import store
from gridgov.areas import areas_geojson, tolerance_for_zoom
from gridgov.errors import OutsideDistrictError
from gridgov.model import Level

router = APIRouter(tags=["areas"])

LevelName = Literal["district", "street", "community", "grid", "microgrid"]


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[dict[str, Any]]
    matched: int = Field(description="Areas that matched the filter (before the limit).")
    truncated: bool = Field(description="More areas matched than were returned (see limit).")
    crs: str = Field(description="CRS of the coordinates (wgs84, gcj02 or bd09).")


@router.get(
    "/areas/{level}",
    response_model=FeatureCollection,
    responses={200: {"description": "GeoJSON (format=geojson) or the compact map form."}},
    summary="Areas of one level as GeoJSON, for a map viewport",
)
def list_areas(
    ctx: ContextDep,
    level: LevelName,
    bbox: Annotated[
        str | None,
        Query(
            description="west,south,east,north in `crs`: only areas intersecting it.",
            examples=["104.03,30.67,104.07,30.70"],
        ),
    ] = None,
    zoom: Annotated[
        float | None,
        Query(ge=0, le=22, description="Map zoom: geometry is simplified to half a pixel."),
    ] = None,
    crs: Crs = "wgs84",
    limit: Annotated[int, Query(ge=1, le=50_000)] = 20_000,
    format: Annotated[
        Literal["geojson", "compact"],
        Query(
            description="geojson, or compact: the smaller form the gridgov map pages draw "
            "(`gridgov.maps.area_layer_json`; WGS84 only)."
        ),
    ] = "geojson",
) -> Any:
    """Areas are public: they are the administrative and grid boundaries posted in each
    community. Micro-grids of a whole district are many, so ask by viewport."""
    box = parse_bbox(bbox, crs) if bbox is not None else None
    if format == "compact":
        return JSONResponse(_compact(ctx.gdf_areas, level, box, zoom, limit))
    return areas_geojson(ctx.gdf_areas, Level(level), bbox=box, zoom=zoom, crs=crs, limit=limit)


def _compact(
    gdf_areas: Any,
    level: str,
    box: tuple[float, float, float, float] | None,
    zoom: float | None,
    limit: int,
) -> dict[str, Any]:
    from gridgov.maps import area_layer_json

    gdf = gdf_areas[gdf_areas["level"].astype(str) == level]
    if box is not None:
        hits = gdf.sindex.query(shapely.box(*box), predicate="intersects")
        gdf = gdf.iloc[np.sort(hits)]
    gdf = gdf.iloc[:limit]
    tolerance = None
    if zoom is not None and len(gdf):
        tolerance = tolerance_for_zoom(zoom, float(np.mean(gdf.total_bounds[[1, 3]])))
    return area_layer_json(gdf, level, simplify_m=tolerance)


class AreaRef(BaseModel):
    code: str
    name: str
    generated: bool
    name_source: str | None = None


class Location(BaseModel):
    lon: float = Field(description="The point in WGS84.")
    lat: float
    district: AreaRef | None = None
    street: AreaRef | None = None
    community: AreaRef | None = None
    grid: AreaRef | None = None
    microgrid: AreaRef | None = None


@router.get("/locate", response_model=Location, summary="Which areas hold a point")
def locate(
    engine: EngineDep,
    lon: Annotated[float, Query(description="Longitude in `crs`.", examples=[104.05])],
    lat: Annotated[float, Query(description="Latitude in `crs`.", examples=[30.69])],
    crs: Crs = "wgs84",
) -> dict[str, Any]:
    wlon, wlat = to_wgs84_point(lon, lat, crs)
    try:
        found = store.locate_point(engine, wlon, wlat)
    except OutsideDistrictError:
        raise OutsideDistrictError(lon, lat, crs) from None
    return {"lon": wlon, "lat": wlat, **found}
