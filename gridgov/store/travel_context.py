"""The dispatch context of a store: its areas, catalogue and travel model, built once per
loaded dataset and cached per engine (a server builds it once); and the server process's heap
settled around it (:func:`settle_heap`)."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
from sqlalchemy import (
    Connection,
    Engine,
    func,
    select,
)

from gridgov import dispatch, forking
from gridgov.catalog import Catalog
from gridgov.errors import (
    InputError,
    StoreError,
)
from gridgov.network import build_network
from gridgov.roads import SPEEDS_KMH
from gridgov.store.district_read import read_catalog, read_roads, read_stored_areas
from gridgov.store.engine import read_statements, translate_errors
from gridgov.store.group_commit import group_of
from gridgov.store.models import (
    DATASETS,
)
from gridgov.straight_line import StraightLine
from gridgov.travel_model import TravelModel

_MAX_DATASET = select(func.max(DATASETS.c.id))


class _NoRoads(StraightLine):
    """The straight-line fallback, saying why it is used."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reason": "no road network is loaded in the store"}


@dataclass
class _Cached:
    version: Any
    catalog: Catalog | None
    ctx: dispatch.DispatchContext | None = None


_CACHE: weakref.WeakKeyDictionary[Engine, _Cached] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
# The contexts are plain data and stay (a forked child shares their memory); the lock is renewed.
forking.renew_globals_in_child(__name__, _CACHE_LOCK=threading.Lock)


def _dataset_version(engine: Engine, connection: Connection | None = None) -> Any:
    """Changes whenever a dataset (areas, offices, units, roads, matters) is loaded.

    Without a connection, the threads of this process that ask together share one read
    (:mod:`gridgov.store.group_commit`); each gets a version read after it asked.
    """
    if connection is not None:
        return connection.execute(_MAX_DATASET).scalar()
    with translate_errors(engine):
        return group_of(engine, "dataset-version", _versions).submit(None)


def _versions(engine: Engine, asks: Sequence[None]) -> list[Any]:
    with read_statements(engine).connect() as own:
        version = own.execute(_MAX_DATASET).scalar()
    return [version] * len(asks)


def store_context_version(engine: Engine, ctx: dispatch.DispatchContext) -> tuple[bool, Any]:
    """Whether ``ctx`` is the context :func:`context_from_store` keeps for ``engine`` with the
    store's own catalogue (another process that opens the store builds the same), and the
    dataset version it was built from."""
    with _CACHE_LOCK:
        cached = _CACHE.get(engine)
    if cached is None or cached.ctx is not ctx or cached.catalog is not None:
        return False, None
    return True, cached.version


def context_of_version(engine: Engine, version: Any) -> dispatch.DispatchContext:
    """:func:`context_from_store`'s context, without reading the version when the one kept was
    built from dataset ``version``: the caller's own context of that version was checked
    against the store already (the intake's turn process, asked by a request's process)."""
    with _CACHE_LOCK:
        kept = _kept(engine, version, None)
    return kept if kept is not None else context_from_store(engine)


def _kept(engine: Engine, version: Any, catalog: Catalog | None) -> dispatch.DispatchContext | None:
    """The context kept for ``engine`` when it was built from dataset ``version`` with
    ``catalog`` (None: the stored one); the caller holds ``_CACHE_LOCK``."""
    cached = _CACHE.get(engine)
    if (
        cached is not None
        and cached.ctx is not None
        and cached.version == version
        and cached.catalog is catalog
    ):
        return cached.ctx
    return None


def travel_from_store(engine: Engine) -> TravelModel:
    """The road network stored in ``engine``, or the straight-line fallback when none is.

    Raises
    ------
    InputError
        The stored roads cannot be built into a network (the message says why).
    """
    gdf_nodes, gdf_links = read_roads(engine)
    if gdf_links.empty:
        return _NoRoads()
    return build_network(gdf_nodes, _with_speeds(gdf_links))


def _with_speeds(gdf_links: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Links whose speed columns are complete: NULL speeds are taken from the road class."""
    speed_columns = [f"speed_{mode}_kmh" for mode in ("drive", "bike", "walk")]
    missing = gdf_links[speed_columns].isna()
    if not missing.any().any():
        return gdf_links
    if missing.all().all():
        # No speeds stored at all: the network maps road classes to speeds itself.
        return gdf_links.drop(columns=speed_columns)
    out = gdf_links.copy()
    unknown = sorted(set(out.loc[missing.any(axis=1), "road_class"].astype(str)) - set(SPEEDS_KMH))
    if unknown:
        msg = (
            f"stored road links have no speed and an unknown road class ({', '.join(unknown)}); "
            f"known classes: {', '.join(SPEEDS_KMH)}"
        )
        raise InputError(msg)
    for column in speed_columns:
        mode = column.split("_")[1]
        by_class = out["road_class"].map({c: v[mode] for c, v in SPEEDS_KMH.items()})
        out[column] = out[column].fillna(by_class)
    return out


def context_from_store(engine: Engine, catalog: Catalog | None = None) -> dispatch.DispatchContext:
    """The dispatch context of the district held in ``engine``, built once and then reused.

    The areas come from the store, the travel model from its roads
    (:func:`gridgov.network.build_network`), or the straight-line fallback when no roads are
    loaded (its ``describe()`` says so, and so every explanation does). The context is cached
    per engine and rebuilt only after a new dataset is loaded, so a server builds it once.

    Parameters
    ----------
    engine
        The store.
    catalog
        The matters catalogue; the stored one (:func:`~gridgov.store.read_catalog`) when None.

    Raises
    ------
    StoreError
        The store holds no areas.
    """
    version = _dataset_version(engine)
    with _CACHE_LOCK:
        kept = _kept(engine, version, catalog)
        if kept is not None:
            return kept
        gdf_areas = read_stored_areas(engine)
        if gdf_areas.empty:
            msg = "the store holds no areas; load a district first (`gridgov load`)"
            raise StoreError(msg)
        ctx = dispatch.build_context(
            gdf_areas,
            read_catalog(engine) if catalog is None else catalog,
            travel_from_store(engine),
        )
        _CACHE[engine] = _Cached(version=version, catalog=catalog, ctx=ctx)
    if gc.get_freeze_count() > 0:
        # A server process settled its heap at start (a test process does not): settle it
        # again around the new dataset, so that the old one's cycles can be collected and the
        # new one stays out of the full collections.
        settle_heap()
    return ctx


def settle_heap() -> int:
    """Collect once, then take every object still alive out of the cyclic garbage
    collector's full collections (``gc.freeze``); returns how many that is.

    A server process holds a few hundred thousand objects that live as long as it does: its
    modules, the dispatch context, the units' snapshot. A full collection walks all of them
    and finds nothing there. Under report load one ran every few seconds in each server
    process and its turn process, and stopped the process for 106-214 ms each time (with the
    turn held, when it struck the turn process); with them frozen it walks only what was
    allocated since, and takes 7-29 ms (docs/scaling.md, 2026-12-07). Called once a process
    has loaded its district (the server's warm-up, the turn process's start), and again after
    a reload (above). ``gc.unfreeze`` first, so that what an earlier call froze and has since
    become garbage is collected too.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
