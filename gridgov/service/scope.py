"""Who sees and may do what, over which part of the district: one :class:`Scope` per caller.

This module is the one place that turns a role into visibility. Every native route, the live
feed and Open311 ask the caller's scope; none of them tests a role itself.

The roles (a credential carries its role and the area it is issued for):

- **admin**: everything, district-wide; acts as the widest workflow role (dispatcher).
- **analyst**: reads everything district-wide, changes nothing.
- **commander**, **dispatcher**: their street: its incidents, the units it commands, its
  assessment; they report inside their street.
- **grid_worker**: the incidents of its grid and the units of its street; reports in its grid.
- **unit**: the incidents it is or was assigned to, and itself; reports inside its street.
- **citizen**: files Open311 requests anywhere in the district; reads no native incident.
- **department**: a stationed department (by its name): registers consultations of the streets
  (powers 2 and 4), reads its own, and records how it took each street's opinion.
- **public** (no credential): Open311 reads only.

A credential that lacks the field its role is scoped by (a street, a grid, a unit) sees
nothing rather than everything: its filters name :data:`NOTHING`, which matches no code.
Service requests (Open311 reads) are public in every scope: privacy there is a matter of which
fields are shown, not of which requests.

The module is pure: no web framework, no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gridgov.errors import ForbiddenError
from gridgov.workflow import Role

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ASSESSORS",
    "BATCH_DISPATCHERS",
    "CHOOSERS",
    "CONSULTATION_ADOPTERS",
    "CONSULTATION_ANSWERERS",
    "CONSULTATION_READERS",
    "CONSULTATION_REGISTRARS",
    "DISTRICT_ROLES",
    "MODE_SETTERS",
    "NOTHING",
    "OPEN311_SOURCE",
    "OPERATOR",
    "POSITION_SENDERS",
    "PUBLIC",
    "PUBLIC_COARSE_DECIMALS",
    "READERS",
    "REPORTERS",
    "STATUS_SETTERS",
    "STREET_ROLES",
    "Scope",
    "scope_for",
]

#: Roles that see the whole district.
DISTRICT_ROLES = frozenset({"admin", "analyst"})
#: Roles scoped to one street (incidents and units).
STREET_ROLES = frozenset({"commander", "dispatcher"})
#: Roles that read incidents within their scope (besides the district-wide ones).
_INCIDENT_ROLES = STREET_ROLES | {"grid_worker", "unit"}
# Which roles may call each kind of route; the caller's Scope then says over which area.
#: Read incidents, units and the live feed (staff and units; not citizens).
READERS = frozenset({"admin", "commander", "dispatcher", "unit", "grid_worker", "analyst"})
#: Report incidents and take workflow actions (every staff role but the analyst).
REPORTERS = READERS - {"analyst"}
#: Dispatch the queued incidents of their scope in one batch.
BATCH_DISPATCHERS = frozenset({"admin", "commander", "dispatcher"})
#: Confirm or override a recommendation, release, reassign and add units (their scope's).
CHOOSERS = BATCH_DISPATCHERS
#: Set a street's dispatch mode (commanders their own street; administrators any).
MODE_SETTERS = frozenset({"admin", "commander"})
#: Set a unit's status (a unit its own).
STATUS_SETTERS = frozenset({"admin", "commander", "dispatcher", "unit"})
#: Send a unit's AVL position fix (a unit its own).
POSITION_SENDERS = frozenset({"admin", "dispatcher", "unit"})
#: Read the five-powers assessment (commanders and dispatchers: their street's).
ASSESSORS = frozenset({"admin", "analyst", "commander", "dispatcher"})
#: Read consultations of the streets (streets theirs, departments their own, the district all).
CONSULTATION_READERS = frozenset({"admin", "analyst", "commander", "dispatcher", "department"})
#: Register a plan, project or decision for consultation.
CONSULTATION_REGISTRARS = frozenset({"admin", "department"})
#: Answer a request and sign off (or refuse) an acceptance, for their street.
CONSULTATION_ANSWERERS = frozenset({"admin", "commander", "dispatcher"})
#: Record how a street's opinion was taken, for their own department.
CONSULTATION_ADOPTERS = frozenset({"admin", "department"})
#: ``incidents.source`` of the requests citizens file through Open311 (published by them).
OPEN311_SOURCE = "open311"
#: Decimal places of a staff-reported incident's position in a public read (about 1 km).
PUBLIC_COARSE_DECIMALS = 2
#: Matches no area, unit or street code (they are digits and dashes).
NOTHING = "~none~"
#: The workflow role each API role acts as (:mod:`gridgov.workflow` checks it per action).
_WORKFLOW_ROLES = {
    # An administrator may take every action; the dispatcher role is the widest.
    "admin": Role.DISPATCHER,
    "commander": Role.COMMANDER,
    "dispatcher": Role.DISPATCHER,
    "unit": Role.UNIT,
    "grid_worker": Role.GRID_WORKER,
    "citizen": Role.REPORTER,
}
#: Staff who record a reporter's evaluation on the reporter's behalf (a phone call back).
_EVALUATION_RECORDERS = frozenset({"admin", "commander", "dispatcher"})


class _Credential(Protocol):
    """What :func:`scope_for` reads of a credential (:class:`gridgov.store.Credential`)."""

    @property
    def role(self) -> str: ...
    @property
    def street_code(self) -> str | None: ...
    @property
    def grid_code(self) -> str | None: ...
    @property
    def unit_id(self) -> str | None: ...


@dataclass(frozen=True)
class Scope:
    """What one caller may see and do.

    Attributes
    ----------
    role
        The API role (``admin``, ``commander``, ... ``citizen``, or ``public``).
    street_code, grid_code, unit_id
        The area (or unit) the credential is issued for; None when the role has none.
    district_wide
        Whether the caller reads the whole district.
    department
        The department a ``department`` credential is issued for.
    """

    role: str
    street_code: str | None
    grid_code: str | None
    unit_id: str | None
    district_wide: bool
    department: str | None = None

    # ----------------------------------------------------------------------------------------
    # incidents
    # ----------------------------------------------------------------------------------------

    @property
    def reads_incidents(self) -> bool:
        """Whether the role reads incidents at all (in its scope)."""
        return self.district_wide or self.role in _INCIDENT_ROLES

    def incident_filters(self) -> dict[str, Any]:
        """Keyword filters for the store's incident queries (``street_code``, ``grid_code`` or
        ``unit_id``, the last meaning "ever assigned to this unit"); empty: the district.

        Raises
        ------
        ForbiddenError
            The role reads no incidents (citizens, the public).
        """
        if self.district_wide:
            return {}
        if self.role in STREET_ROLES:
            return {"street_code": self.street_code or NOTHING}
        if self.role == "grid_worker":
            return {"grid_code": self.grid_code or NOTHING}
        if self.role == "unit":
            return {"unit_id": self.unit_id or NOTHING}
        msg = f"the {self.role} role reads no incidents here"
        raise ForbiddenError(msg)

    def can_see_incident(
        self, street_code: str | None, grid_code: str | None, unit_ids: Iterable[str] = ()
    ) -> bool:
        """Whether an incident located in ``street_code``/``grid_code`` and assigned (ever) to
        ``unit_ids`` is in scope: the same rule as :meth:`incident_filters`, for one row."""
        if not self.reads_incidents:
            return False
        wanted = self.incident_filters()
        if "street_code" in wanted:
            return street_code is not None and street_code == wanted["street_code"]
        if "grid_code" in wanted:
            return grid_code is not None and grid_code == wanted["grid_code"]
        if "unit_id" in wanted:
            return wanted["unit_id"] in set(unit_ids)
        return True

    def street_filter(self, requested: str | None) -> dict[str, Any] | None:
        """The incident filters narrowed to a street the caller asked for, or None when that
        street lies outside the scope (its incidents are invisible: an empty answer)."""
        filters = self.incident_filters()
        if requested is None:
            return filters
        if "street_code" in filters and filters["street_code"] != requested:
            return None
        return {**filters, "street_code": requested}

    # ----------------------------------------------------------------------------------------
    # units and streets
    # ----------------------------------------------------------------------------------------

    def can_see_street(self, street_code: str | None) -> bool:
        """Whether the caller's scope covers a street (the street it is issued for; units and
        grid workers: their own street)."""
        if self.district_wide:
            return True
        return street_code is not None and street_code == self.street_code

    def unit_filters(self) -> dict[str, Any]:
        """Keyword filters for the store's unit reads (``street_code`` or ``unit_id``); empty:
        every unit. A unit sees itself; commanders, dispatchers and grid workers the units
        their street commands; other roles none."""
        if self.district_wide:
            return {}
        if self.role == "unit":
            return {"unit_id": self.unit_id or NOTHING}
        if self.role in STREET_ROLES or self.role == "grid_worker":
            return {"street_code": self.street_code or NOTHING}
        return {"street_code": NOTHING}

    def can_see_unit(self, unit_id: str, street_code: str | None) -> bool:
        """Whether a unit commanded by ``street_code`` is in scope (the rule of
        :meth:`unit_filters`, for one row)."""
        wanted = self.unit_filters()
        if "unit_id" in wanted:
            return unit_id == wanted["unit_id"]
        if "street_code" in wanted:
            return street_code is not None and street_code == wanted["street_code"]
        return True

    def assessment_street(self, requested: str | None) -> str | None:
        """The street whose assessment the caller gets: any (or the district, None) for
        district-wide roles, its own street otherwise."""
        return requested if self.district_wide else (self.street_code or NOTHING)

    # ----------------------------------------------------------------------------------------
    # reports and actions
    # ----------------------------------------------------------------------------------------

    def check_report(self, street_code: str | None, grid_code: str | None) -> None:
        """Refuse a report located outside what the caller may report in.

        Admins and citizens report anywhere in the district; grid workers in their grid;
        commanders, dispatchers and units in their street.

        Raises
        ------
        ForbiddenError
            The point lies outside, or the role files no reports (analysts, the public).
        """
        if self.role in ("admin", "citizen"):
            return
        if self.role == "grid_worker":
            if grid_code is None or grid_code != self.grid_code:
                msg = f"a grid worker reports in its own grid ({self.grid_code})"
                raise ForbiddenError(msg)
            return
        if self.role in STREET_ROLES or self.role == "unit":
            if street_code is None or street_code != self.street_code:
                msg = f"the point lies outside your street ({self.street_code})"
                raise ForbiddenError(msg)
            return
        msg = f"the {self.role} role files no reports"
        raise ForbiddenError(msg)

    def reads_contacts(self, street_code: str | None) -> bool:
        """Whether the caller may read the contact details of the reporter of an incident
        located in ``street_code``: only that street's dispatcher, who calls reporters back.
        No other role needs them (admins erase them by CLI on request, never read them
        here); every read is audited (:mod:`gridgov.service.privacy`)."""
        return (
            self.role == "dispatcher"
            and street_code is not None
            and street_code == self.street_code
        )

    @property
    def workflow_role(self) -> Role:
        """The workflow role the caller acts as (:data:`gridgov.workflow.ALLOWED_ROLES`)."""
        return _WORKFLOW_ROLES.get(self.role, Role.SYSTEM)

    @property
    def records_evaluations(self) -> bool:
        """Whether the caller records a reporter's evaluation on the reporter's behalf (staff
        taking it by phone: the event is the system's, naming who recorded it)."""
        return self.role in _EVALUATION_RECORDERS

    @property
    def acting_unit(self) -> str | None:
        """The unit a caller acts as (a unit token), which must be assigned to the incident
        it acts on; None for every other role."""
        return self.unit_id if self.role == "unit" else None

    # ----------------------------------------------------------------------------------------
    # consultations of the streets (powers 2 and 4)
    # ----------------------------------------------------------------------------------------

    def consultation_filters(self) -> dict[str, Any]:
        """Filters of the consultation requests a caller reads: the district all, a street the
        requests addressed to it, a department its own (``street_code`` or ``department``).

        Raises
        ------
        ForbiddenError
            The role reads no consultations.
        """
        if self.district_wide:
            return {}
        if self.role in STREET_ROLES:
            return {"street_code": self.street_code or NOTHING}
        if self.role == "department":
            return {"department": self.department or NOTHING}
        msg = f"the {self.role} role reads no consultations"
        raise ForbiddenError(msg)

    def can_see_request(self, street_code: str, department: str) -> bool:
        """Whether one request (to ``street_code``, from ``department``) is in scope."""
        if self.role not in CONSULTATION_READERS:
            return False
        wanted = self.consultation_filters()
        if "street_code" in wanted:
            return street_code == wanted["street_code"]
        if "department" in wanted:
            return department == wanted["department"]
        return True

    def check_answer(self, street_code: str) -> None:
        """Refuse an answer or acceptance for a street not the caller's (admins: any).

        Raises
        ------
        ForbiddenError
            Another street's request, or a role that answers none.
        """
        if self.role == "admin":
            return
        if self.role in STREET_ROLES and street_code == self.street_code:
            return
        msg = f"only street {street_code}'s commanders and dispatchers answer its requests"
        raise ForbiddenError(msg)

    def check_department(self, department: str) -> None:
        """Refuse a department's act (registering, adopting) by anyone but that department
        (admins: any).

        Raises
        ------
        ForbiddenError
            Another department, or a role that is no department.
        """
        if self.role == "admin":
            return
        if self.role == "department" and department == self.department:
            return
        msg = f"only the department {department!r} acts on its own consultations"
        raise ForbiddenError(msg)

    # ----------------------------------------------------------------------------------------
    # Open311
    # ----------------------------------------------------------------------------------------

    def service_request_filters(self) -> dict[str, Any]:
        """Filters of Open311 reads: none, for every caller. Service requests are public; what
        protects reporters is that a GET shows no personal field, and what protects staff
        reports is :meth:`shows_request_in_full`."""
        return {}

    def shows_request_in_full(self, source: str | None) -> bool:
        """Whether an Open311 read shows a service request's description and exact position.

        A citizen who files through Open311 publishes the request; an incident reported by
        staff (dispatchers, grid workers, units: a raid, a fire, a complaint taken by phone)
        was never published, so the public gets it without its description and media, and
        with its position rounded to :data:`PUBLIC_COARSE_DECIMALS` decimals (about 1 km).
        Staff read incidents in full through the native API.
        """
        return self.role not in ("public", "citizen") or source == OPEN311_SOURCE


#: The scope of a caller without a credential (Open311 reads).
PUBLIC = Scope("public", None, None, None, district_wide=False)
#: The command line's scope: whoever can open the store administers the district.
OPERATOR = Scope("admin", None, None, None, district_wide=True)


def scope_for(credential: _Credential | None) -> Scope:
    """The scope of a credential (None: the public). The one role → visibility rule."""
    if credential is None:
        return PUBLIC
    role = credential.role
    return Scope(
        role=role,
        street_code=credential.street_code,
        grid_code=credential.grid_code,
        unit_id=credential.unit_id,
        district_wide=role in DISTRICT_ROLES,
        # Only department credentials carry one; older credential-like objects have none.
        department=getattr(credential, "department", None),
    )
