"""Many rows written in one statement: the batched writes of the intake and the Idempotency-Key.

psycopg's executemany sends one UPDATE a row (pipelined, but each is parsed, planned and run on
its own). On PostgreSQL :class:`RowsUpdate` sends them as ONE ``UPDATE ... FROM unnest(...)``
whose arrays hold a column each; SQLite runs the rows one by one in the same transaction. Both
say which rows matched, so a caller whose row another writer changed meanwhile learns of it.

:class:`RowsInsert` does the same for INSERTs. A multi-row ``VALUES`` (SQLAlchemy's
insertmanyvalues) is a new statement text for every number of rows, which psycopg parses anew
on each run (it keeps only short texts) and PostgreSQL parses and plans anew; the text of
``INSERT ... SELECT ... FROM unnest(...)`` is the same for any number of rows, so psycopg
converts it once and prepares it on the server after a few runs.

A read that matches a list of values (ids, codes) can do the same with :func:`any_of`: ONE
bound array, ``column = ANY(...)``, where ``column IN (...)`` is a new statement text for every
length of the list, which psycopg never prepares and PostgreSQL parses and plans each time.

The arrays go in psycopg's binary format (:class:`_BinaryArray`). In the text format psycopg
quotes and escapes every item in Python, and the server parses the literal back: an
Idempotency-Key's answer (kilobytes of bytea, sent as hex and then escaped again) cost five
times as much per statement as the same bytes sent binary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeGuard

from psycopg import adapters
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Connection,
    Float,
    Row,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import UserDefinedType

from gridgov.store.models import GeometryType

__all__ = ["RowsInsert", "RowsUpdate", "any_of"]


class RowsUpdate:
    """``UPDATE table SET sets WHERE keys match [AND where]`` for many rows.

    ``keys`` and ``sets`` name columns of ``table``; ``fixed`` are values set on every row
    (constants); ``where`` adds conditions on the table's own columns. Built once, run with
    :meth:`run` (or :meth:`write`, when the caller needs no answer).
    """

    def __init__(
        self,
        table: Table,
        *,
        keys: Sequence[str],
        sets: Sequence[str],
        fixed: dict[str, Any] | None = None,
        where: Sequence[ColumnElement[bool]] = (),
    ) -> None:
        self._table = table
        self.keys, self.sets = list(keys), list(sets)
        self._columns = columns = [*self.keys, *self.sets]
        fixed = dict(fixed or {})
        # SQLite (and any other backend): one statement a row, with bound values.
        self._one = (
            update(table)
            .where(*(table.c[k] == bindparam(f"r_{k}") for k in self.keys), *where)
            .values({**{s: bindparam(f"r_{s}") for s in self.sets}, **fixed})
        )
        # PostgreSQL: the rows as arrays, one a column, unnested side by side.
        rows = (
            func.unnest(*(_array_param(table, c) for c in columns))
            .table_valued(*columns)
            .render_derived(name="r")
        )
        blind = (
            update(table)
            .where(*(table.c[k] == rows.c[k] for k in self.keys), *where)
            .values({**{s: rows.c[s] for s in self.sets}, **fixed})
        )
        self._blind = blind
        self._many = blind.returning(*(table.c[k] for k in self.keys))

    def _check(self, rows: Sequence[dict[str, Any]]) -> None:
        if len({tuple(r[k] for k in self.keys) for r in rows}) != len(rows):
            msg = "RowsUpdate takes each key once"
            raise ValueError(msg)

    def run(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> set[tuple[Any, ...]]:
        """Update ``rows`` (dicts of the key and set columns, one a key); the keys matched."""
        if not rows:
            return set()
        self._check(rows)
        if connection.dialect.name == "postgresql":
            params = _arrays(connection, self._table, self._columns, rows)
            return {tuple(r) for r in connection.execute(self._many, params)}
        matched: set[tuple[Any, ...]] = set()
        for r in rows:
            result = connection.execute(self._one, {f"r_{c}": v for c, v in r.items()})
            if result.rowcount:
                matched.add(tuple(r[k] for k in self.keys))
        return matched

    def write(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Update ``rows`` without reading back which matched: a statement that returns
        nothing, so it may go in :func:`gridgov.store.engine.sent_together`."""
        if rows and connection.dialect.name == "postgresql":
            self._check(rows)
            connection.execute(self._blind, _arrays(connection, self._table, self._columns, rows))
        else:
            self.run(connection, rows)


class RowsInsert:
    """``INSERT INTO table (columns)`` of many rows, optionally ``ON CONFLICT (conflict) DO
    NOTHING`` and ``RETURNING returning``. Built once, run with :meth:`run`.

    Every row gives exactly ``columns`` (the others take their defaults). On PostgreSQL the
    rows go as one array a column, unnested in the rows' order (``WITH ORDINALITY``, ordered
    by it), so they are inserted, and a serial column is numbered, in that order. Elsewhere it
    is SQLAlchemy's INSERT of many rows.
    """

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        *,
        returning: Sequence[str] = (),
        conflict: Sequence[str] = (),
    ) -> None:
        self._table = table
        self.columns = list(columns)
        self._names = frozenset(self.columns)
        # A JSON column's values go as ONE JSON array, not an array of JSON texts: psycopg
        # escapes every quote of every item of a text array (in Python), which cost more than
        # the rest of the statement. Its items join the rows by their position.
        self._json = [c for c in self.columns if isinstance(table.c[c].type, JSON)]
        self._plain = plain = [c for c in self.columns if c not in self._json]
        if not plain or _ORDINAL in self.columns:
            msg = f"RowsInsert needs a column that is not JSON, and none called {_ORDINAL}"
            raise ValueError(msg)
        rows = (
            func.unnest(*(_array_param(table, c) for c in plain))
            .table_valued(*plain, with_ordinality=_ORDINAL)
            .render_derived(name="r")
        )
        source: Any = rows
        values: dict[str, Any] = {c: rows.c[c] for c in plain}
        for c in self._json:
            items = (
                func.json_array_elements(bindparam(f"j_{c}", type_=JSON()))
                .table_valued("value", with_ordinality=_ORDINAL)
                .render_derived(name=f"j_{c}")
            )
            source = source.join(items, items.c[_ORDINAL] == rows.c[_ORDINAL])
            values[c] = items.c.value
        ordered = (
            select(*(values[c] for c in self.columns))
            .select_from(source)
            .order_by(rows.c[_ORDINAL])
        )
        many: Any = pg_insert(table).from_select(self.columns, ordered)
        one: Any = sqlite_insert(table) if conflict else insert(table)
        if conflict:
            many = many.on_conflict_do_nothing(index_elements=[table.c[c] for c in conflict])
            one = one.on_conflict_do_nothing(index_elements=[table.c[c] for c in conflict])
        if returning:
            many = many.returning(*(table.c[c] for c in returning))
            one = one.returning(*(table.c[c] for c in returning), sort_by_parameter_order=True)
        self._many, self._one, self._returns = many, one, bool(returning)

    def run(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> list[Row[Any]]:
        """Insert ``rows``; the rows RETURNING gave (none without ``returning``). A row that
        ``ON CONFLICT DO NOTHING`` skipped returns nothing."""
        if not rows:
            return []
        for r in rows:
            if r.keys() != self._names:
                msg = f"RowsInsert takes the columns {sorted(self._names)}, got {sorted(r)}"
                raise ValueError(msg)
        if connection.dialect.name == "postgresql":
            params: dict[str, Any] = _arrays(connection, self._table, self._plain, rows)
            params.update({f"j_{c}": [r[c] for r in rows] for c in self._json})
            result = connection.execute(self._many, params)
        else:
            result = connection.execute(self._one, list(rows))
        return list(result.all()) if self._returns else []


#: The rows' position, as the unnest names it (no column of the store has this name).
_ORDINAL = "row_ordinal"


class _BinaryArray(list[Any]):
    """One column's values, which psycopg sends as an array in its binary format (registered
    below for this class alone: every other list keeps psycopg's default)."""


adapters.register_dumper(_BinaryArray, ListBinaryDumper)


class _AsArray(UserDefinedType[Any]):
    """A bound list that goes to psycopg as one binary array, as given: a batch's column
    (its items processed by :func:`_arrays`) or a list of plain values (:func:`any_of`). The
    statement casts it to the array type it needs."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "UNKNOWN"  # never rendered: the value is always inside a CAST

    def bind_processor(self, dialect: Any) -> Any:
        def process(value: Any) -> Any:
            if value is None or isinstance(value, _BinaryArray):
                return value
            return _BinaryArray(value)

        return process


_AS_ARRAY = _AsArray()


def _array_param(table: Table, column: str) -> ColumnElement[Any]:
    """The bound array of one column's values, cast to the column's array type. A geometry
    column's goes as text (hex EWKB, which PostGIS casts to geometry on assignment): PostGIS
    separates a geometry array's items by ':', so a geometry array literal of several items
    does not parse."""
    item = table.c[column].type
    return cast(
        bindparam(f"a_{column}", type_=_AS_ARRAY),
        ARRAY(Text() if _is_geometry(item) else item),
    )


def _arrays(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[dict[str, Any]]
) -> dict[str, list[Any]]:
    """Each column's values, processed as SQLAlchemy would bind each one, as an array."""
    dialect = connection.dialect
    out: dict[str, list[Any]] = {}
    for c in columns:
        values = [r[c] for r in rows]
        item = table.c[c].type
        if _is_geometry(item):
            values = [item.process_bind_param(v, dialect) for v in values]
        else:
            process = item.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                values = [process(v) for v in values]
            if isinstance(item, Float):  # 3 and 2.5: one type to the column, two to psycopg
                values = [float(v) if isinstance(v, int) else v for v in values]
        out[f"a_{c}"] = _BinaryArray(values)
    return out


class _AnyOf(ColumnElement[bool]):
    """``column IN (the list bound as name)``: see :func:`any_of`."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison already: no "= 1" where booleans are ints
    # What its cache key is made of (SQLAlchemy caches the statements that hold it).
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it an instance attribute)
        ("array", InternalTraversal.dp_clauseelement),
        ("expanded", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.array = column == any_(cast(bindparam(name, type_=_AS_ARRAY), ARRAY(column.type)))
        self.expanded = column.in_(bindparam(name, expanding=True))


@compiles(_AnyOf)
def _expanded(element: _AnyOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.expanded, **kw))


@compiles(_AnyOf, "postgresql")
def _array(element: _AnyOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.array, **kw))


def any_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """Whether ``column`` is one of the plain values (ids, codes) of the list bound as
    ``name``, in ONE statement text for any length of the list: ``column = ANY(array)`` on
    PostgreSQL (one binary array), ``column IN (...)`` elsewhere. An empty list matches
    nothing.

    Only for tables whose size stays the same between loads (units, street modes,
    credentials). Once psycopg prepares the statement, PostgreSQL may keep one plan for any
    values, and a plan made while a table was small goes on scanning it whole as it grows: the
    lock of a batch's incidents took 6 times as long under load, the read of their latest
    events 11 times. Forcing a plan for each run cost more than it saved. Reads of a growing
    table keep ``IN``, planned for each run's own values.
    """
    return _AnyOf(column, name)


def _is_geometry(item: Any) -> TypeGuard[GeometryType]:
    return isinstance(item, GeometryType)
