"""The one settings class. Nothing else in the project reads ``os.environ``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root (gridgov is installed editable, so ``data/`` sits beside the package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime configuration, read from ``GRIDGOV_*`` environment variables or ``.env``."""

    model_config = SettingsConfigDict(env_prefix="GRIDGOV_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///gridgov.db",
        description="SQLAlchemy URL. SQLite (embedded, the default) or postgresql+psycopg://.",
    )
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="Reference data folder.")
    storage_crs: str = Field(default="EPSG:4326", description="CRS of everything stored.")
    metric_crs: str = Field(
        default="EPSG:32648", description="Projected CRS for distances and areas (UTM 48N)."
    )
    detour_factor: float = Field(
        default=1.3, gt=1.0, description="Straight line → road distance when no network is loaded."
    )
    access_speed_kmh: dict[str, float] = Field(
        default={"drive": 10.0, "bike": 10.0, "walk": 4.5},
        description="Speed (km/h) per travel mode on the off-network leg between a point and the "
        "road it snaps to (parking, gates, courtyards).",
    )
    # 2.5 km because the reference roads are the main roads only: every point of the reference
    # district lies within about 2 km of one, and the access leg covers the unmapped side streets.
    # With a full OSM network a few hundred metres is the better value.
    max_snap_m: float = Field(
        default=2_500.0,
        gt=0,
        description="A point farther than this from every usable road is not dispatched over the "
        "network: the incident is refused, a unit is left out, and the explanation says so.",
    )
    position_max_age_min: float = Field(
        default=15.0,
        gt=0,
        description="An AVL position older than this is stale: the unit falls back to its office's "
        "position, as CAD systems do, and the explanation records it.",
    )
    preempt_min_priority: int = Field(
        default=3,
        ge=2,
        le=4,
        description="A priority-1 matter may preempt a unit busy on a matter of this priority or "
        "lower (priority numbers at or above this value).",
    )
    reference_seed: int = Field(default=20261127, description="Seed of the reference generator.")
    test_postgis_url: str = Field(
        default="postgresql+psycopg://gridgov:gridgov@127.0.0.1:5432/gridgov_test",
        description="PostGIS database the test suite uses (created if missing).",
    )
    require_postgis: bool = Field(
        default=False,
        description="Fail instead of skip when the PostGIS tests cannot connect (set in CI).",
    )

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.yaml"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
