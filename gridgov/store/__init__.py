"""Storage: one schema on two backends (SQLite embedded, PostGIS in production).

Persistence only: the application steps between a request and these rows (intake, unit state,
dispatch commit, workflow actions) are :mod:`gridgov.service`'s. Everything the rest of gridgov
needs from a database is re-exported here:

- loading the district (one transaction per load): :mod:`~.district_load`; reading it back
  and a summary of the store: :mod:`~.district_read`;
- locating points in the stored areas, units near a point, road lines in a box:
  :mod:`~.spatial_queries`;
- the whole district as one GeoPackage (export and load): :mod:`~.geopackage_io`;
- the dispatch context of a store (areas, catalogue, travel model), and the heap settled
  around it: :mod:`~.travel_context`;
- incidents stored with their first events, and read back: :mod:`~.incident_rows`;
- the units as dispatch sees them: :mod:`~.unit_snapshot`; unit state: :mod:`~.unit_rows`;
- decisions committed atomically with the units' availability: :mod:`~.dispatch_rows`; a
  dispatcher's own choices, unit changes and street dispatch modes: :mod:`~.choice_rows`;
- the workflow's transitions, event log, notices and supervision: :mod:`~.event_log`;
- history imports: :mod:`~.history_import`; consultations: :mod:`~.consultation_rows`;
- API credentials: :mod:`gridgov.store.access`; Idempotency-Keys (claims with a lease, the
  incident each stored, the answer): :mod:`~.idempotency_rows`.
"""

from sqlalchemy import Connection, Engine

from gridgov.store.access import (
    CREDENTIAL_COLUMNS,
    Credential,
    credential_live,
    issue_credential,
    list_credentials,
    resolve_credential,
    revoke_credential,
)
from gridgov.store.choice_rows import (
    CHOICE_COLUMNS,
    UnitsTakenError,
    change_units,
    commit_choice,
    dispatch_times,
    options_stored,
    read_choices,
    read_street_mode,
    unit_jobs,
    write_street_mode,
)
from gridgov.store.consultation_rows import (
    CONSULTATION_COLUMNS,
    CONSULTATION_EVENT_COLUMNS,
    REQUEST_COLUMNS,
    check_head_move,
    read_consultation_events,
    read_consultation_requests,
    read_consultations,
    read_footprint_consultations,
    read_request,
    record_acceptance,
    record_adoption,
    record_consultation,
    record_request_answer,
    record_request_supervision,
    record_street_opinion,
    record_suggestion,
    store_footprint_consultation,
)
from gridgov.store.dispatch_rows import (
    ASSIGNMENT_COLUMNS,
    available_pool,
    commit_batch,
    decide_stored,
    dispatch_reported,
    dispatch_stored,
    dispatch_within,
    read_assignments,
    read_dispatch,
)
from gridgov.store.district_load import (
    load_areas,
    load_district,
    load_matters,
    load_offices,
    load_roads,
    load_units,
)
from gridgov.store.district_read import (
    read_catalog,
    read_matters,
    read_offices,
    read_roads,
    read_stored_areas,
    read_units,
    summarize,
)
from gridgov.store.engine import (
    Backend,
    begin_write,
    create_engine_from_url,
    detect_backend,
    init_db,
    is_initialised,
    open_store,
    ping,
    schema_diff,
    write_transaction,
)
from gridgov.store.event_log import (
    NOTICE_COLUMNS,
    apply_action,
    list_overdue_stored,
    read_events,
    read_notices,
    record_action,
    supervise_stored,
)
from gridgov.store.geopackage_io import export_geopackage, is_export, load_files
from gridgov.store.history_import import import_history
from gridgov.store.idempotency_rows import (
    KeyClaim,
    KeyHeld,
    Replay,
    claim_idempotency,
    claim_with_record,
    finish_idempotency,
    link_idempotency,
    purge_idempotency,
    release_idempotency,
)
from gridgov.store.incident_rows import (
    INCIDENT_COLUMNS,
    StoredIncident,
    create_incident,
    create_incidents,
    query_incidents,
    read_incidents,
)
from gridgov.store.intake_rows import (
    DispatchedBatch,
    StoredBatch,
    TurnBatch,
    dispatch_batch,
    store_batch,
)
from gridgov.store.journal import SYSTEM_ACTOR
from gridgov.store.position_fixes import FixIn, FixResult, store_fixes
from gridgov.store.spatial_queries import (
    locate_many,
    locate_point,
    nearest_units,
    read_road_lines,
    units_within,
)
from gridgov.store.travel_context import (
    context_from_store,
    context_of_version,
    settle_heap,
    store_context_version,
    travel_from_store,
)
from gridgov.store.unit_rows import release_unit, set_unit_status, update_unit_position

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "CHOICE_COLUMNS",
    "CONSULTATION_COLUMNS",
    "CONSULTATION_EVENT_COLUMNS",
    "CREDENTIAL_COLUMNS",
    "INCIDENT_COLUMNS",
    "NOTICE_COLUMNS",
    "REQUEST_COLUMNS",
    "SYSTEM_ACTOR",
    "Backend",
    "Connection",
    "Credential",
    "DispatchedBatch",
    "Engine",
    "FixIn",
    "FixResult",
    "KeyClaim",
    "KeyHeld",
    "Replay",
    "StoredBatch",
    "StoredIncident",
    "TurnBatch",
    "UnitsTakenError",
    "apply_action",
    "available_pool",
    "begin_write",
    "change_units",
    "check_head_move",
    "claim_idempotency",
    "claim_with_record",
    "commit_batch",
    "commit_choice",
    "context_from_store",
    "context_of_version",
    "create_engine_from_url",
    "create_incident",
    "create_incidents",
    "credential_live",
    "decide_stored",
    "detect_backend",
    "dispatch_batch",
    "dispatch_reported",
    "dispatch_stored",
    "dispatch_times",
    "dispatch_within",
    "export_geopackage",
    "finish_idempotency",
    "import_history",
    "init_db",
    "is_export",
    "is_initialised",
    "issue_credential",
    "link_idempotency",
    "list_credentials",
    "list_overdue_stored",
    "load_areas",
    "load_district",
    "load_files",
    "load_matters",
    "load_offices",
    "load_roads",
    "load_units",
    "locate_many",
    "locate_point",
    "nearest_units",
    "open_store",
    "options_stored",
    "ping",
    "purge_idempotency",
    "query_incidents",
    "read_assignments",
    "read_catalog",
    "read_choices",
    "read_consultation_events",
    "read_consultation_requests",
    "read_consultations",
    "read_dispatch",
    "read_events",
    "read_footprint_consultations",
    "read_incidents",
    "read_matters",
    "read_notices",
    "read_offices",
    "read_request",
    "read_road_lines",
    "read_roads",
    "read_stored_areas",
    "read_street_mode",
    "read_units",
    "record_acceptance",
    "record_action",
    "record_adoption",
    "record_consultation",
    "record_request_answer",
    "record_request_supervision",
    "record_street_opinion",
    "record_suggestion",
    "release_idempotency",
    "release_unit",
    "resolve_credential",
    "revoke_credential",
    "schema_diff",
    "set_unit_status",
    "settle_heap",
    "store_batch",
    "store_context_version",
    "store_fixes",
    "store_footprint_consultation",
    "summarize",
    "supervise_stored",
    "travel_from_store",
    "unit_jobs",
    "units_within",
    "update_unit_position",
    "write_street_mode",
    "write_transaction",
]
