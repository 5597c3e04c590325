"""The one settings class. Nothing else in the project reads ``os.environ``."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Five-powers floors (power 1): the street's evaluation carries at least half of a stationed
#: office's assessment and at least 30 % of its department's annual performance.
STREET_WEIGHT_FLOOR_OFFICE = 0.5
STREET_WEIGHT_FLOOR_DEPARTMENT = 0.3

#: The repository root (gridgov is installed editable, so ``data/`` sits beside the package).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime configuration, read from ``GRIDGOV_*`` environment variables or ``.env``."""

    model_config = SettingsConfigDict(env_prefix="GRIDGOV_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///gridgov.db",
        description="SQLAlchemy URL. SQLite (embedded, the default) or postgresql+psycopg://.",
    )
    database_replica_url: str | None = Field(
        default=None,
        description="A PostgreSQL streaming replica of database_url. When set, the live feed's "
        "first snapshot, reports and Open311 lists and analysis read from it, except for a "
        "caller whose own write it has not replayed yet (read-your-writes).",
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
    snap_tolerance_m: float = Field(
        default=1.0,
        ge=0,
        description="A point joins the nearest road and every other road whose distance is within "
        "this many metres of the nearest: the two directions of a road are often drawn as two "
        "ways that are not exact reverses, and both must serve the point.",
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
    auto_register: bool = Field(
        default=True,
        description="Register (立案) a valid report at once. When false a report stays "
        "'reported' until a dispatcher registers or rejects it.",
    )
    duplicate_radius_m: float = Field(
        default=250.0,
        gt=0,
        description="A report of the same matter this close to an open incident (FixMyStreet uses "
        "250 m) within duplicate_window_h is linked to it as a duplicate.",
    )
    duplicate_window_h: float = Field(
        default=72.0,
        gt=0,
        description="How long after an open incident was reported a new report can duplicate it.",
    )
    supervise_district_after: float = Field(
        default=1.0,
        gt=0,
        description="Supervision (督办) starts at the street when a deadline passes and escalates "
        "to the district once the stage is overdue by this multiple of its own deadline.",
    )
    street_weight_office: float = Field(
        default=0.5,
        description="Weight of the street's evaluation in a stationed office's assessment "
        f"(five-powers floor {STREET_WEIGHT_FLOOR_OFFICE}).",
    )
    street_weight_department: float = Field(
        default=0.3,
        description="Weight of the street's evaluation in a department's annual performance "
        f"(five-powers floor {STREET_WEIGHT_FLOOR_DEPARTMENT}).",
    )
    display_tz: str = Field(
        default="Asia/Shanghai", description="Time zone for display and report periods."
    )
    map_base: str = Field(
        default="roads",
        description="Base layer of the maps: roads (the stored road network, no tiles), none "
        "(polygons only), osm, tianditu or an intranet XYZ URL ({z}/{x}/{y}). Vector layers "
        "show whether or not tiles load; over tiles the roads are an overlay to switch on.",
    )
    tianditu_key: str | None = Field(
        default=None, description="Tianditu (天地图) key, for map_base=tianditu."
    )
    open311_jurisdiction: str | None = Field(
        default=None,
        description="Open311 jurisdiction_id this service answers for (default: the loaded "
        "district's code). A request naming another jurisdiction is refused (404).",
    )
    media_root: Path = Field(
        default=Path("media"),
        description="Folder of the evidence photos: one directory per incident, files named by "
        "their SHA-256 (a relative path is read from the working directory of `gridgov serve`).",
    )
    media_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="The largest upload (the photos of one event together, and their form), "
        "refused with 413 while the body streams in, before it is held.",
    )
    media_max_per_event: int = Field(
        default=3, ge=1, le=10, description="Photos one report, resolve or verify may carry."
    )
    api_workers: int = Field(
        default=2, ge=1, description="uvicorn worker processes of `gridgov serve`."
    )
    # 32 + 8 = 40: a process runs its blocking calls on anyio's 40 worker threads, so it never
    # needs more at once. With a pool of 20, 32 report clients on 2 workers made the pool
    # open and close 15-20 overflow sessions a second (bench/api_load.py: 97 reports/s with
    # it, 133 with a pool of 32 in the same run).
    db_pool_size: int = Field(
        default=32,
        ge=1,
        description="PostgreSQL connections each process keeps open (SQLAlchemy pool_size). "
        "Keep api_workers × (db_pool_size + db_max_overflow) below the server's "
        "max_connections (100 by default).",
    )
    db_max_overflow: int = Field(
        default=8,
        ge=0,
        description="PostgreSQL connections a process may open beyond db_pool_size under load "
        "(closed again when returned).",
    )
    db_connect_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="PostgreSQL: give up opening a connection after this many seconds (a server "
        "that is down or frozen answers 503 instead of hanging the request).",
    )
    db_statement_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Cancel a statement that runs longer (PostgreSQL's statement_timeout; SQLite "
        "interrupts it). A server that does not answer at all has its connection cut on the "
        "client side a second later. It bounds the CLI too: raise it for a very large load.",
    )
    db_pool_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a request waits for a free pooled connection before it answers "
        "503 (back-pressure instead of an ever longer queue).",
    )
    intake_turn_process: bool = Field(
        default=True,
        description="On PostgreSQL, each server process runs the intake's turn (a batch's "
        "snapshot, decisions and writes) in a child process of its own, so that the turn does "
        "not share the request threads' GIL; off: in the request process.",
    )
    turn_log: Path | None = Field(
        default=None,
        description="Diagnostics: append one JSON line per intake turn to this file (its "
        "reports, and the wall time of each phase in ms: the wait for the turn, taking the "
        "reports, the units' snapshot, the decisions, the preempting checks, the writes and "
        "the commit; with the turn thread's CPU time and, on Linux, its time queued for a "
        "core, per phase). Every process that takes turns appends to it; bench/api_load.py "
        "summarises it. Off by default.",
    )
    intake_batch_max: int = Field(
        default=64,
        ge=0,
        description="Reports that arrive while others are being stored are stored and "
        "dispatched together, at most this many in one transaction (0: one by one). Their "
        "decisions are the single path's, improved jointly where they competed for units.",
    )
    idempotency_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a request holds its Idempotency-Key: a retry arriving later than "
        "this after a crashed or lost request runs it again (resuming its stored incident) "
        "instead of being told 'still running' for ever.",
    )
    idempotency_ttl_h: float = Field(
        default=24.0,
        gt=0,
        description="How long an Idempotency-Key and its answer are kept (phones retry within "
        "minutes).",
    )
    idempotency_max_keys: int = Field(
        default=1_000_000,
        ge=1000,
        description="At most this many keys are kept; the oldest go first when there are more.",
    )
    idempotency_purge_every_s: float = Field(
        default=300.0,
        gt=0,
        description="Each API process purges expired Idempotency-Keys this often (no cron job).",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="The largest request body (bytes) the service reads (JSON and forms); a "
        "larger one is refused with 413 while it streams in, before authentication.",
    )
    rate_limit_window_s: float = Field(
        default=60.0, gt=0, description="The sliding window of the rate limits (seconds)."
    )
    rate_limit_auth_failures: int = Field(
        default=10,
        ge=0,
        description="Failed authentications (unknown, revoked or expired tokens and API keys) "
        "per client address and per secret within the window before 429 (0: no limit).",
    )
    rate_limit_writes_per_credential: int = Field(
        default=600,
        ge=0,
        description="Writes (POST, PUT, PATCH, DELETE) per credential within the window "
        "before 429 (0: no limit).",
    )
    rate_limit_writes_per_address: int = Field(
        default=1200,
        ge=0,
        description="Writes per client address within the window before 429 (0: no limit).",
    )
    trusted_proxies: list[str] = Field(
        default=[],
        description="Addresses or networks of reverse proxies in front of the service (JSON "
        'list, e.g. ["10.0.0.0/8"]): only from these is X-Forwarded-For taken as the client '
        "address for the rate limits.",
    )
    open311_cors_origins: list[str] = Field(
        default=["*"],
        description="Origins whose browser clients may GET and POST /open311 (JSON list; "
        '["*"]: any). No other path answers CORS.',
    )
    contact_retention_days: float = Field(
        default=180.0,
        ge=0,
        description="A reporter's contact details are erased this many days after the last of "
        "their incidents ended (closed, evaluated, rejected or cancelled).",
    )
    retention_sweep_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="How often the running service applies contact_retention_days (seconds; 0: "
        "never, leaving it to `gridgov privacy retention`).",
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
    require_browser: bool = Field(
        default=False,
        description="Fail instead of skip when the browser tests find no Chromium (set in CI).",
    )

    @field_validator("street_weight_office", "street_weight_department")
    @classmethod
    def _check_street_weight(cls, value: float, info: ValidationInfo) -> float:
        # Settings may raise the street's weight but never lower it below the reform's floor.
        floor, what = {
            "street_weight_office": (STREET_WEIGHT_FLOOR_OFFICE, "a stationed office's assessment"),
            "street_weight_department": (
                STREET_WEIGHT_FLOOR_DEPARTMENT,
                "a department's annual performance",
            ),
        }[str(info.field_name)]
        if not floor <= value <= 1.0:
            msg = (
                f"{info.field_name} = {value:g} is not allowed: the five-powers reform gives the "
                f"street's evaluation at least {floor:.0%} of {what}, so the weight must lie in "
                f"[{floor:g}, 1]"
            )
            raise ValueError(msg)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                msg = f"trusted_proxies: {item!r} is not an IP address or network"
                raise ValueError(msg) from None
        return value

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.yaml"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()
