"""The one role → visibility rule (gridgov.service.scope), without a store or a web app."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gridgov.errors import ForbiddenError
from gridgov.service.scope import NOTHING, PUBLIC, Scope, scope_for
from gridgov.store import Credential
from gridgov.workflow import Role

STREET = "510106024000"
OTHER = "510106025000"
GRID = "510106024001001"
OTHER_GRID = "510106025001001"


def cred(role: str, **scope: str) -> Credential:
    return Credential("c0", "api_key" if role == "citizen" else "token", role, **scope)


@pytest.mark.parametrize(
    ("credential", "filters"),
    [
        (cred("admin"), {}),
        (cred("analyst"), {}),
        (cred("commander", street_code=STREET), {"street_code": STREET}),
        (cred("dispatcher", street_code=STREET), {"street_code": STREET}),
        (cred("grid_worker", grid_code=GRID, street_code=STREET), {"grid_code": GRID}),
        (cred("unit", unit_id="U1", street_code=STREET), {"unit_id": "U1"}),
    ],
)
def test_incident_filters_per_role(credential: Credential, filters: dict[str, str]) -> None:
    assert scope_for(credential).incident_filters() == filters


@pytest.mark.parametrize("credential", [cred("citizen"), None])
def test_citizens_and_the_public_read_no_native_incidents(credential: Credential | None) -> None:
    scope = scope_for(credential)
    assert not scope.reads_incidents
    with pytest.raises(ForbiddenError, match="reads no incidents"):
        scope.incident_filters()
    assert not scope.can_see_incident(STREET, GRID, ["U1"])


@pytest.mark.parametrize("role", ["commander", "dispatcher", "grid_worker", "unit"])
def test_a_credential_without_its_scope_field_sees_nothing(role: str) -> None:
    scope = scope_for(cred(role))
    assert set(scope.incident_filters().values()) == {NOTHING}
    assert not scope.can_see_incident(STREET, GRID, ["U1"])
    assert not scope.can_see_unit("U1", STREET)
    assert not scope.can_see_street(STREET)


def test_can_see_incident_follows_the_filters() -> None:
    dispatcher = scope_for(cred("dispatcher", street_code=STREET))
    assert dispatcher.can_see_incident(STREET, GRID)
    assert not dispatcher.can_see_incident(OTHER, OTHER_GRID)
    assert not dispatcher.can_see_incident(None, None)
    worker = scope_for(cred("grid_worker", grid_code=GRID, street_code=STREET))
    assert worker.can_see_incident(STREET, GRID)
    assert not worker.can_see_incident(STREET, "510106024001002")
    unit = scope_for(cred("unit", unit_id="U1", street_code=STREET))
    assert unit.can_see_incident(OTHER, OTHER_GRID, ["U9", "U1"])
    assert not unit.can_see_incident(STREET, GRID, ["U2"])
    assert scope_for(cred("analyst")).can_see_incident(None, None)


def test_street_filter_narrows_or_hides() -> None:
    dispatcher = scope_for(cred("dispatcher", street_code=STREET))
    assert dispatcher.street_filter(None) == {"street_code": STREET}
    assert dispatcher.street_filter(STREET) == {"street_code": STREET}
    assert dispatcher.street_filter(OTHER) is None
    admin = scope_for(cred("admin"))
    assert admin.street_filter(OTHER) == {"street_code": OTHER}
    unit = scope_for(cred("unit", unit_id="U1", street_code=STREET))
    assert unit.street_filter(OTHER) == {"unit_id": "U1", "street_code": OTHER}


def test_units_and_streets_in_scope() -> None:
    admin = scope_for(cred("admin"))
    assert admin.unit_filters() == {}
    assert admin.can_see_unit("U9", OTHER) and admin.can_see_street(OTHER)
    for role, extra in (
        ("commander", {}),
        ("dispatcher", {}),
        ("grid_worker", {"grid_code": GRID}),
    ):
        scope = scope_for(cred(role, street_code=STREET, **extra))
        assert scope.unit_filters() == {"street_code": STREET}, role
        assert scope.can_see_unit("U9", STREET)
        assert not scope.can_see_unit("U9", OTHER)
        assert scope.can_see_street(STREET) and not scope.can_see_street(OTHER)
    unit = scope_for(cred("unit", unit_id="U1", street_code=STREET))
    assert unit.unit_filters() == {"unit_id": "U1"}
    assert unit.can_see_unit("U1", STREET) and not unit.can_see_unit("U2", STREET)
    assert scope_for(cred("citizen")).unit_filters() == {"street_code": NOTHING}


def test_assessment_street() -> None:
    assert scope_for(cred("analyst")).assessment_street(OTHER) == OTHER
    assert scope_for(cred("admin")).assessment_street(None) is None
    commander = scope_for(cred("commander", street_code=STREET))
    assert commander.assessment_street(OTHER) == STREET
    assert commander.assessment_street(None) == STREET


@pytest.mark.parametrize(
    ("credential", "inside", "outside"),
    [
        (cred("admin"), (OTHER, OTHER_GRID), None),
        (cred("citizen"), (OTHER, OTHER_GRID), None),
        (cred("dispatcher", street_code=STREET), (STREET, GRID), (OTHER, OTHER_GRID)),
        (cred("commander", street_code=STREET), (STREET, GRID), (OTHER, OTHER_GRID)),
        (cred("unit", unit_id="U1", street_code=STREET), (STREET, GRID), (OTHER, GRID)),
        (
            cred("grid_worker", grid_code=GRID, street_code=STREET),
            (STREET, GRID),
            (STREET, "510106024001002"),
        ),
    ],
)
def test_check_report(
    credential: Credential,
    inside: tuple[str, str],
    outside: tuple[str, str] | None,
) -> None:
    scope = scope_for(credential)
    scope.check_report(*inside)
    if outside is not None:
        with pytest.raises(ForbiddenError):
            scope.check_report(*outside)
        with pytest.raises(ForbiddenError):
            scope.check_report(None, None)


@pytest.mark.parametrize("credential", [cred("analyst"), None])
def test_readers_file_no_reports(credential: Credential | None) -> None:
    with pytest.raises(ForbiddenError, match="files no reports"):
        scope_for(credential).check_report(STREET, GRID)


def test_actions() -> None:
    assert scope_for(cred("admin")).workflow_role is Role.DISPATCHER
    assert scope_for(cred("commander", street_code=STREET)).workflow_role is Role.COMMANDER
    assert scope_for(cred("citizen")).workflow_role is Role.REPORTER
    assert scope_for(cred("analyst")).workflow_role is Role.SYSTEM
    assert scope_for(cred("dispatcher", street_code=STREET)).records_evaluations
    assert not scope_for(cred("grid_worker", grid_code=GRID)).records_evaluations
    assert scope_for(cred("unit", unit_id="U1", street_code=STREET)).acting_unit == "U1"
    assert scope_for(cred("dispatcher", street_code=STREET)).acting_unit is None


def test_scope_takes_any_credential_like_object_and_the_public() -> None:
    class Caller:
        role = "dispatcher"
        street_code = STREET
        grid_code = None
        unit_id = None

    scope = scope_for(Caller())
    assert scope == Scope("dispatcher", STREET, None, None, district_wide=False)
    assert scope_for(None) is PUBLIC
    assert PUBLIC.service_request_filters() == {}
    assert scope_for(cred("analyst")).district_wide


def test_the_scope_module_is_pure() -> None:
    import gridgov.service.scope as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"fastapi", "sqlalchemy", "geoalchemy2", "starlette", "api"}


def test_forbidden_is_a_403() -> None:
    from api.error_answers import classify

    assert classify(ForbiddenError("outside")) == (403, "forbidden")


def test_route_gates() -> None:
    from gridgov.service import scope as module

    gates = (
        module.READERS,
        module.REPORTERS,
        module.BATCH_DISPATCHERS,
        module.STATUS_SETTERS,
        module.POSITION_SENDERS,
        module.ASSESSORS,
    )
    # Citizens reach only Open311; analysts read and change nothing.
    assert all("citizen" not in gate for gate in gates)
    assert {g for g in gates if "analyst" in g} == {module.READERS, module.ASSESSORS}
    assert all(gate <= module.READERS for gate in gates)
