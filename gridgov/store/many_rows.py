"""Many rows updated in one statement: the batched writes of the intake and the Idempotency-Key.

psycopg's executemany sends one UPDATE a row (pipelined, but each is parsed, planned and run on
its own). On PostgreSQL :func:`update_rows` sends them as ONE ``UPDATE ... FROM unnest(...)``
whose arrays hold a column each; SQLite runs the rows one by one in the same transaction. Both
say which rows matched, so a caller whose row another writer changed meanwhile learns of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, bindparam, func, update
from sqlalchemy.dialects.postgresql import ARRAY

__all__ = ["RowsUpdate"]


class RowsUpdate:
    """``UPDATE table SET sets WHERE keys match [AND where]`` for many rows.

    ``keys`` and ``sets`` name columns of ``table``; ``fixed`` are values set on every row
    (constants); ``where`` adds conditions on the table's own columns. Built once, run with
    :meth:`run`.
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
        self.keys, self.sets = list(keys), list(sets)
        columns = [*self.keys, *self.sets]
        fixed = dict(fixed or {})
        # SQLite (and any other backend): one statement a row, with bound values.
        self._one = (
            update(table)
            .where(*(table.c[k] == bindparam(f"r_{k}") for k in self.keys), *where)
            .values({**{s: bindparam(f"r_{s}") for s in self.sets}, **fixed})
        )
        # PostgreSQL: the rows as arrays, one a column, unnested side by side.
        rows = (
            func.unnest(*(bindparam(f"a_{c}", type_=ARRAY(table.c[c].type)) for c in columns))
            .table_valued(*columns)
            .render_derived(name="r")
        )
        self._many = (
            update(table)
            .where(*(table.c[k] == rows.c[k] for k in self.keys), *where)
            .values({**{s: rows.c[s] for s in self.sets}, **fixed})
            .returning(*(table.c[k] for k in self.keys))
        )

    def run(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> set[tuple[Any, ...]]:
        """Update ``rows`` (dicts of the key and set columns, one a key); the keys matched."""
        if not rows:
            return set()
        if len({tuple(r[k] for k in self.keys) for r in rows}) != len(rows):
            msg = "RowsUpdate takes each key once"
            raise ValueError(msg)
        if connection.dialect.name == "postgresql":
            params = {f"a_{c}": [r[c] for r in rows] for c in [*self.keys, *self.sets]}
            return {tuple(r) for r in connection.execute(self._many, params)}
        matched: set[tuple[Any, ...]] = set()
        for r in rows:
            result = connection.execute(self._one, {f"r_{c}": v for c, v in r.items()})
            if result.rowcount:
                matched.add(tuple(r[k] for k in self.keys))
        return matched
