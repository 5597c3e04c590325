"""Large answers and explanations compressed with LZ4 instead of PostgreSQL's default (pglz).

Every report stores its answer (``idempotency.body``, ~9 KB of JSON with the decision) and its
dispatch's explanation (``dispatches.explanation``, ~9 KB), both compressed on the way into the
table. pglz took ~41 µs a value on this machine and LZ4 ~6.5 µs for sizes within 10 % of each
other (2,000 values of 7 KB each). Values stored before keep their compression; SQLite stores
them as they are.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# (table, column): the values a report writes that are large enough to be compressed.
_COLUMNS = (("idempotency", "body"), ("dispatches", "explanation"))


def _lz4_available() -> bool:
    # A server built without LZ4 offers only pglz: the migration then changes nothing.
    bind = op.get_bind()
    found = bind.exec_driver_sql(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return bool(found)


def _set(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql" or not _lz4_available():
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {method}")


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("default")
