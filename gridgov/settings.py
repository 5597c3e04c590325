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
