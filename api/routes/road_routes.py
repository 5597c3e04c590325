"""The stored road network for maps: the roads of a viewport, simplified for the zoom."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import EngineDep
from api.schemas import parse_bbox
from gridgov import maps, store

router = APIRouter(tags=["roads"])


class RoadCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[dict[str, Any]]
    segments: int = Field(description="Road segments in the box (before merging).")


@router.get(
    "/roads",
    response_model=RoadCollection,
    responses={200: {"description": "GeoJSON (format=geojson) or the compact map form."}},
    summary="The road network in a map viewport, by class, simplified for the zoom",
)
def list_roads(
    engine: EngineDep,
    bbox: Annotated[
        str,
        Query(
            description="west,south,east,north in WGS84: only roads meeting the box.",
            examples=["104.03,30.67,104.07,30.70"],
        ),
    ],
    zoom: Annotated[
        float | None,
        Query(
            ge=0,
            le=22,
            description="Map zoom: lines simplified to half a pixel; classes that show only "
            "deeper (minor OSM roads) left out.",
        ),
    ] = None,
    format: Annotated[
        Literal["geojson", "compact"],
        Query(
            description="geojson, or compact: the form the gridgov map pages draw "
            "(`gridgov.maps.road_layer_json`)."
        ),
    ] = "geojson",
) -> Any:
    """Roads are public like the areas: the same street map is posted in every community.
    Lines of one class and name are merged where they meet; a two-way road is one line."""
    box = parse_bbox(bbox, "wgs84")
    data = maps.road_layer_json(store.read_road_lines(engine, box), zoom=zoom)
    if format == "compact":
        return JSONResponse(data)
    features = []
    for class_index, name, parts in data["features"]:
        road_class = data["classes"][class_index]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "MultiLineString", "coordinates": parts},
                "properties": {
                    "road_class": road_class["id"],
                    "road_name": name or None,
                    "class_zh": road_class["zh"],
                    "class_en": road_class["en"],
                    "colour": road_class["colour"],
                    "weight": road_class["weight"],
                },
            }
        )
    return {"type": "FeatureCollection", "features": features, "segments": data["segments"]}
