"""What to generate: the plan of a district's streets, communities and grid totals, from counts
or from an admin-unit table, and its checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from gridgov.crs import to_wgs84
from gridgov.errors import CRSError, DataFileError, InputError
from gridgov.model import Level

#: Communities generated for a street an admin table lists none for.
DEFAULT_GENERATED_COMMUNITIES = 6
#: Generated community numbers start above this, clear of a real table's numbering.
_GENERATED_COMMUNITY_BASE = 900
#: Grids per community, micro-grids per grid and streets per district: 3-digit numbers.
_MAX_SERIAL = 999
#: Columns an admin-unit table must have (``lon``/``lat`` are optional).
ADMIN_COLUMNS = ("level", "code", "name", "parent_code")


@dataclass(frozen=True)
class CommunitySpec:
    """A community to place: its code and name, and whether they are official or generated."""

    code: str
    name: str
    official: bool = True


@dataclass(frozen=True)
class StreetSpec:
    """A street to place, its communities, and an optional anchor point (same CRS as the roads)."""

    code: str
    name: str
    communities: tuple[CommunitySpec, ...]
    anchor: tuple[float, float] | None = None
    official: bool = True


@dataclass(frozen=True)
class HierarchyPlan:
    """What to generate: the district, its streets and communities, and grid/micro-grid totals."""

    district_code: str
    district_name: str
    streets: tuple[StreetSpec, ...]
    n_grids: int = 1000
    n_microgrids: int = 10000


def grid_name(community_name: str, number: int) -> str:
    """Name of a generated grid, e.g. ``青羊北路社区第3网格``."""
    return f"{community_name}第{number}网格"


def microgrid_name(grid_name_: str, number: int) -> str:
    """Name of a generated micro-grid, e.g. ``青羊北路社区第3网格-2微网格``."""
    return f"{grid_name_}-{number}微网格"


# --------------------------------------------------------------------------------------------
# plans: what to generate


def _is_count(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_digits(code: object, length: int) -> bool:
    return isinstance(code, str) and len(code) == length and code.isascii() and code.isdigit()


def _count_problems(communities: Sequence[int], n_grids: object, n_microgrids: object) -> list[str]:
    """Problems with the grid and micro-grid totals for streets holding ``communities`` each."""
    problems: list[str] = []
    n_comm = int(sum(communities))
    if not _is_count(n_grids):
        problems.append(f"n_grids must be an integer, got {n_grids!r}")
    elif int(n_grids) < max(n_comm, 1):  # type: ignore[call-overload]
        problems.append(
            f"n_grids ({n_grids}) must be at least the number of communities ({n_comm}): "
            "every community needs a grid"
        )
    elif int(n_grids) > _MAX_SERIAL * max(n_comm, 1):  # type: ignore[call-overload]
        problems.append(
            f"n_grids ({n_grids}) exceeds {_MAX_SERIAL} per community ({n_comm} communities): "
            "grid numbers have 3 digits"
        )
    if not _is_count(n_microgrids):
        problems.append(f"n_microgrids must be an integer, got {n_microgrids!r}")
    elif _is_count(n_grids):
        grids, micros = int(n_grids), int(n_microgrids)  # type: ignore[call-overload]
        if micros < grids:
            problems.append(
                f"n_microgrids ({micros}) must be at least n_grids ({grids}): "
                "every grid needs a micro-grid"
            )
        elif micros > _MAX_SERIAL * grids:
            problems.append(
                f"n_microgrids ({micros}) exceeds {_MAX_SERIAL} per grid ({grids} grids): "
                "micro-grid numbers have 3 digits"
            )
    return problems


def _raise_problems(problems: list[str], what: str, error: type[InputError] = InputError) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        msg = f"{len(problems)} problem(s) in the {what}:\n{lines}"
        raise error(msg)


def plan_from_counts(
    district_code: str,
    district_name: str,
    n_streets: int,
    communities_per_street: int | Sequence[int],
    n_grids: int,
    n_microgrids: int,
) -> HierarchyPlan:
    """A plan with generated streets and communities: codes numbered from 001, plain names.

    Parameters
    ----------
    district_code
        The district's 12-digit code, ending in ``000000`` (e.g. ``510106000000``).
    district_name
        The district's name.
    n_streets
        Number of streets, 1 to 999. Street ``i`` gets code ``district[:6] + f"{i:03d}" + "000"``
        and the name ``第{i}街道``.
    communities_per_street
        One number for every street, or one per street. Community ``j`` of street ``i`` gets code
        ``street[:9] + f"{j:03d}"`` and the name ``第{i}街道第{j}社区``.
    n_grids, n_microgrids
        Totals to aim for; ``communities <= n_grids <= n_microgrids``.

    Returns
    -------
    HierarchyPlan
        Every street and community has ``official=False`` (``name_source`` is ``generated``) and
        no anchor.

    Raises
    ------
    InputError
        Listing every problem with the arguments.
    """
    problems: list[str] = []
    code = district_code.strip() if isinstance(district_code, str) else district_code
    if not _is_digits(code, 12):
        problems.append(f"district code {district_code!r} is not 12 digits")
    elif not str(code).endswith("000000"):
        problems.append(
            f"district code {code} must end in 000000 (6 digits name the district, "
            "the street and community digits are zero)"
        )
    if not isinstance(district_name, str) or not district_name.strip():
        problems.append("the district name is empty")
    counts: list[int] = []
    if not _is_count(n_streets) or n_streets < 1:
        problems.append(f"n_streets must be an integer >= 1, got {n_streets!r}")
    elif n_streets > _MAX_SERIAL:
        problems.append(
            f"n_streets ({n_streets}) exceeds {_MAX_SERIAL}: street numbers have 3 digits"
        )
    else:
        per_street: list[object] = (
            [communities_per_street] * int(n_streets)
            if isinstance(communities_per_street, int | np.integer)
            else list(communities_per_street)
        )
        if len(per_street) != n_streets:
            problems.append(
                f"communities_per_street has {len(per_street)} numbers for {n_streets} streets"
            )
        for i, k in enumerate(per_street, start=1):
            if not _is_count(k) or not 1 <= int(k) <= _MAX_SERIAL:  # type: ignore[call-overload]
                problems.append(
                    f"street {i}: communities must be an integer from 1 to {_MAX_SERIAL}, got {k!r}"
                )
        if not problems:
            counts = [int(k) for k in per_street]  # type: ignore[call-overload]
    if counts:
        problems.extend(_count_problems(counts, n_grids, n_microgrids))
    _raise_problems(problems, "plan")
    streets = []
    for i, k in enumerate(counts, start=1):
        street_code = f"{str(code)[:6]}{i:03d}000"
        street_name = f"第{i}街道"
        comms = tuple(
            CommunitySpec(f"{street_code[:9]}{j:03d}", f"{street_name}第{j}社区", official=False)
            for j in range(1, k + 1)
        )
        streets.append(StreetSpec(street_code, street_name, comms, official=False))
    return HierarchyPlan(
        str(code), district_name.strip(), tuple(streets), int(n_grids), int(n_microgrids)
    )


def _code_text(value: object) -> str:
    """A code cell as text: integers and integral floats (from a spreadsheet) become digits."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def read_admin_table(path: str | Path) -> pd.DataFrame:
    """Read an admin-unit table (CSV, every column as text) like ``jinniu_admin_units.csv``.

    Raises
    ------
    DataFileError
        The file is missing or unreadable, or lacks one of ``level,code,name,parent_code``.
    """
    path = Path(path)
    try:
        admin = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        msg = f"cannot read {path}: {exc}"
        raise DataFileError(msg) from exc
    missing = set(ADMIN_COLUMNS) - set(admin.columns)
    if missing:
        msg = f"{path}: missing column(s) {sorted(missing)}"
        raise DataFileError(msg)
    return admin


def plan_from_admin_table(
    df: pd.DataFrame,
    n_grids: int,
    n_microgrids: int,
    *,
    generated_communities: int = DEFAULT_GENERATED_COMMUNITIES,
    crs: str | int = "wgs84",
    source: str = "admin table",
) -> HierarchyPlan:
    """A plan from a table of real districts, streets and communities.

    Parameters
    ----------
    df
        Columns ``level`` (``district``, ``street`` or ``community``), ``code`` (12 digits),
        ``name``, ``parent_code``; optional ``lon`` and ``lat`` give a street an anchor (where it
        is grown from). One district row; its ``parent_code`` is not checked. Streets and
        communities are placed in table order.
    n_grids, n_microgrids
        Totals to aim for.
    generated_communities
        Communities generated for a street the table lists none for: codes
        ``street[:9] + "901"``.. (the 9xx range stays clear of real numbering), names
        ``{street without 街道}第{i}社区（生成）``. 0 makes such a street an error.
    crs
        What ``lon``/``lat`` are (``wgs84``, ``gcj02``, ``bd09`` or an EPSG code).
    source
        Names the table in error messages (e.g. its path).

    Returns
    -------
    HierarchyPlan
        Official names and codes from the table; anchors in WGS84 (lon, lat).

    Raises
    ------
    DataFileError
        Listing every problem: missing columns, unknown levels, malformed or duplicate codes,
        no (or several) district rows, unknown parent codes, codes not under their parent's
        prefix, bad coordinates, impossible totals.
    """
    missing = [c for c in ADMIN_COLUMNS if c not in df.columns]
    if missing:
        found = ", ".join(str(c) for c in df.columns)
        msg = f"{source}: missing column(s) {', '.join(missing)} (found: {found})"
        raise DataFileError(msg)
    problems: list[str] = []
    has_lon, has_lat = "lon" in df.columns, "lat" in df.columns
    if has_lon != has_lat:
        problems.append("give both lon and lat columns, or neither")
    levels = [str(v).strip().lower() if not pd.isna(v) else "" for v in df["level"]]
    codes = [_code_text(v) for v in df["code"]]
    names = [str(v).strip() if not pd.isna(v) else "" for v in df["name"]]
    parents = [_code_text(v) for v in df["parent_code"]]
    known_levels = (Level.DISTRICT.value, Level.STREET.value, Level.COMMUNITY.value)
    for row, (level, code, name) in enumerate(zip(levels, codes, names, strict=True), start=1):
        if level not in known_levels:
            problems.append(
                f"row {row}: unknown level {level!r} (expected {', '.join(known_levels)})"
            )
        if not _is_digits(code, 12):
            problems.append(f"row {row}: code {code!r} is not 12 digits")
        if not name:
            problems.append(f"row {row}: empty name")
    rows_of: dict[str, list[int]] = {}
    for row, code in enumerate(codes, start=1):
        rows_of.setdefault(code, []).append(row)
    for code, rows in rows_of.items():
        if len(rows) > 1 and code:
            problems.append(f"duplicate code {code} in rows {rows}")
    district_rows = [i for i, level in enumerate(levels) if level == Level.DISTRICT.value]
    if not district_rows:
        problems.append("no district row")
    elif len(district_rows) > 1:
        problems.append(f"several district rows: {[i + 1 for i in district_rows]}")
    district = district_rows[0] if district_rows else None
    district_code = codes[district] if district is not None else ""
    street_rows = [i for i, level in enumerate(levels) if level == Level.STREET.value]
    street_codes = {codes[i] for i in street_rows}
    for i in street_rows:
        if district is not None and parents[i] != district_code:
            problems.append(
                f"row {i + 1}: street {codes[i]} has parent {parents[i]!r}, "
                f"not the district {district_code}"
            )
        elif district is not None and not (
            codes[i].startswith(district_code[:6]) and codes[i].endswith("000")
        ):
            problems.append(
                f"row {i + 1}: street code {codes[i]} must be {district_code[:6]}nnn000 "
                "(the district's 6 digits, a street number, 000)"
            )
    children: dict[str, list[int]] = {code: [] for code in street_codes}
    for i, level in enumerate(levels):
        if level != Level.COMMUNITY.value:
            continue
        if parents[i] not in street_codes:
            problems.append(
                f"row {i + 1}: community {codes[i]} has unknown parent street {parents[i]!r}"
            )
            continue
        children[parents[i]].append(i)
        if not codes[i].startswith(parents[i][:9]) or codes[i] == parents[i]:
            problems.append(
                f"row {i + 1}: community code {codes[i]} must start with its street's "
                f"9 digits {parents[i][:9]} and not end in 000"
            )
    if not street_rows:
        problems.append("no street rows")
    if not _is_count(generated_communities) or not 0 <= generated_communities <= 99:
        problems.append(
            f"generated_communities must be an integer from 0 to 99, got {generated_communities!r}"
        )
    elif generated_communities == 0:
        for i in street_rows:
            if not children[codes[i]]:
                problems.append(f"row {i + 1}: street {codes[i]} has no community")
    lon = lat = None
    if has_lon and has_lat:
        lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(float)
        lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(float)
        for i in street_rows:
            given = (not pd.isna(df["lon"].iloc[i]), not pd.isna(df["lat"].iloc[i]))
            if given[0] != given[1]:
                problems.append(f"row {i + 1}: give both lon and lat, or neither")
            elif given[0] and not (np.isfinite(lon[i]) and np.isfinite(lat[i])):
                problems.append(
                    f"row {i + 1}: lon/lat {df['lon'].iloc[i]!r}, {df['lat'].iloc[i]!r} "
                    "are not numbers"
                )
    per_street = [
        len(children[codes[i]]) or int(generated_communities)
        for i in street_rows
        if codes[i] in children
    ]
    problems.extend(_count_problems(per_street, n_grids, n_microgrids))
    _raise_problems(problems, source, DataFileError)

    anchors: dict[int, tuple[float, float]] = {}
    if lon is not None and lat is not None:
        placed = [i for i in street_rows if np.isfinite(lon[i]) and np.isfinite(lat[i])]
        if placed:
            try:
                wlon, wlat = to_wgs84(lon[placed], lat[placed], crs)
            except CRSError as exc:
                msg = f"{source}: street lon/lat: {exc}"
                raise DataFileError(msg) from exc
            anchors = {i: (float(x), float(y)) for i, x, y in zip(placed, wlon, wlat, strict=True)}
    streets = []
    for i in street_rows:
        comms = tuple(CommunitySpec(codes[c], names[c]) for c in children[codes[i]])
        if not comms:
            short = names[i].removesuffix("街道")
            comms = tuple(
                CommunitySpec(
                    f"{codes[i][:9]}{_GENERATED_COMMUNITY_BASE + k}",
                    f"{short}第{k}社区（生成）",
                    official=False,
                )
                for k in range(1, int(generated_communities) + 1)
            )
        streets.append(StreetSpec(codes[i], names[i], comms, anchors.get(i)))
    assert district is not None  # checked above; helps the type checker
    return HierarchyPlan(
        district_code, names[district], tuple(streets), int(n_grids), int(n_microgrids)
    )


def transform_anchors(
    plan: HierarchyPlan, transform: Callable[[float, float], tuple[float, float]]
) -> HierarchyPlan:
    """A copy of ``plan`` whose street anchors went through ``transform(x, y) -> (x, y)``.

    For example ``Transformer.from_crs("EPSG:4326", "EPSG:32648", always_xy=True).transform``
    turns WGS84 anchors into the metric ones :func:`generate_hierarchy` expects.
    """
    streets = []
    for street in plan.streets:
        anchor = street.anchor
        if anchor is not None:
            x, y = transform(*anchor)
            anchor = (float(x), float(y))
        streets.append(replace(street, anchor=anchor))
    return replace(plan, streets=tuple(streets))


def plan_problems(plan: HierarchyPlan) -> list[str]:
    """Everything wrong with a plan's codes, names and totals (empty when it can be generated).

    Checks: the district code is 12 digits ending in ``000000``; every street code is the
    district's 6 digits + 3 + ``000``; every community code starts with its street's 9 digits
    and does not end in ``000``; codes are unique; names are not empty; every street has a
    community; ``communities <= n_grids <= n_microgrids`` within the 3-digit numbering.
    """
    problems: list[str] = []
    dcode = plan.district_code
    if not _is_digits(dcode, 12) or not dcode.endswith("000000"):
        problems.append(f"district code {dcode!r} is not 12 digits ending in 000000")
    if not plan.district_name.strip():
        problems.append("the district name is empty")
    if not plan.streets:
        problems.append("the plan has no street")
    elif len(plan.streets) > _MAX_SERIAL:
        problems.append(f"{len(plan.streets)} streets: at most {_MAX_SERIAL}")
    seen: set[str] = {dcode}
    for street in plan.streets:
        scode = street.code
        if not (_is_digits(scode, 12) and scode.startswith(dcode[:6]) and scode.endswith("000")):
            problems.append(f"street code {scode!r} is not {dcode[:6]}nnn000")
        if scode in seen:
            problems.append(f"duplicate code {scode}")
        seen.add(scode)
        if not street.name.strip():
            problems.append(f"street {scode}: empty name")
        if not street.communities:
            problems.append(f"street {scode} has no community")
        for comm in street.communities:
            ccode = comm.code
            if not (_is_digits(ccode, 12) and ccode.startswith(scode[:9])) or ccode.endswith("000"):
                problems.append(f"community code {ccode!r} does not fit street {scode}")
            if ccode in seen:
                problems.append(f"duplicate code {ccode}")
            seen.add(ccode)
            if not comm.name.strip():
                problems.append(f"community {ccode}: empty name")
    problems.extend(
        _count_problems([len(s.communities) for s in plan.streets], plan.n_grids, plan.n_microgrids)
    )
    return problems
