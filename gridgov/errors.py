"""One exception hierarchy. Every error a user can cause is a ``GridgovError``."""

from __future__ import annotations

from dataclasses import dataclass


class GridgovError(Exception):
    """Base of every gridgov error."""


class ConfigError(GridgovError):
    """The settings or an environment is unusable."""


class InputError(GridgovError):
    """Input from a user, a file or a client is invalid. Nothing was changed."""


class CRSError(InputError):
    """An unknown coordinate reference system, or coordinates impossible in the declared one."""


class DataFileError(InputError):
    """A data file is missing, unreadable, or lacks required columns."""


class OutsideDistrictError(InputError):
    """A point lies outside every area of the loaded district."""

    def __init__(self, lon: float, lat: float, crs: str = "wgs84") -> None:
        self.lon, self.lat, self.crs = lon, lat, crs
        msg = f"point ({lon:.6f}, {lat:.6f}) [{crs}] lies outside the loaded district"
        super().__init__(msg)


class UnknownMatterError(InputError):
    """A matter (Open311 service) code is not in the catalogue."""

    def __init__(self, code: str, suggestions: tuple[str, ...] = ()) -> None:
        self.code = code
        self.suggestions = suggestions
        msg = f"unknown matter code {code!r}"
        if suggestions:
            msg += f"; did you mean {', '.join(suggestions)}?"
        super().__init__(msg)


class CatalogError(GridgovError):
    """The matters catalogue is malformed; ``problems`` holds every finding."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        self.problems = problems
        super().__init__(message)


class GenerationError(GridgovError):
    """The area generator could not build a valid hierarchy for this boundary, roads and plan."""


class NotFoundError(GridgovError):
    """A requested record does not exist."""


class CredentialRefusedError(GridgovError):
    """The credential a request presented is unknown, revoked or expired, found so by the
    statement that checks it itself (a fix, a poll). Nothing was changed."""

    def __init__(self, message: str = "the credential is unknown, revoked or expired") -> None:
        super().__init__(message)


class ForbiddenError(GridgovError):
    """The caller's role or scope does not allow this (a report outside its street or grid,
    a role that reads no incidents). Nothing was changed."""


class UnsupportedMediaError(InputError):
    """An upload that is not a photo of an accepted format (JPEG, PNG, WebP), judged by its
    content, never its file name."""


class InvalidTransitionError(InputError):
    """A workflow action that the incident's state does not allow (or a role that may not take it).

    Nothing was changed. ``state`` is the incident's state (None before its first event),
    ``action`` the refused action and ``allowed`` the actions its state allows.
    """

    def __init__(
        self,
        message: str,
        *,
        incident_id: str | None = None,
        state: str | None = None,
        action: str | None = None,
        allowed: tuple[str, ...] = (),
    ) -> None:
        self.incident_id, self.state = incident_id, state
        self.action, self.allowed = action, allowed
        super().__init__(message)


class AssessmentWeightError(InputError):
    """Assessment weights that break the five-powers floors (or do not add up)."""


class ConsultationError(InputError):
    """An office head's move without the required written consultation of the street."""


class StoreError(GridgovError):
    """The database cannot do what was asked (not initialised, wrong backend, ...)."""


@dataclass(frozen=True)
class Problem:
    """One validation finding: which area, what is wrong, and where (a WGS84 point)."""

    kind: str
    code: str
    message: str
    lon: float | None = None
    lat: float | None = None

    def __str__(self) -> str:
        where = f" at ({self.lon:.6f}, {self.lat:.6f})" if self.lon is not None else ""
        return f"[{self.kind}] {self.code}: {self.message}{where}"


class ValidationError(InputError):
    """A dataset failed validation; ``problems`` holds every finding, not just the first."""

    what = "the data"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {self.what}:\n{lines}")


class AreaValidationError(ValidationError):
    """An area hierarchy failed validation."""

    what = "the area hierarchy"


class UnitValidationError(ValidationError):
    """Offices or units failed validation (against each other and the areas)."""

    what = "the offices and units"
