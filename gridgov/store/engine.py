"""Engines, backend detection, migrations and the translation of driver errors to StoreError."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import BigInteger, Engine, create_engine, event, inspect, literal_column, text
from sqlalchemy.engine import URL, Connection, ExceptionContext, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as SATimeoutError

from gridgov import forking
from gridgov.dispatch.records import json_text
from gridgov.errors import StoreError
from gridgov.settings import get_settings
from gridgov.store.models import Base, GeometryType
from gridgov.store.statement_guard import guard_engine, guarded_call

T = TypeVar("T")

Backend = Literal["sqlite", "postgresql"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_INIT_HINT = "run `gridgov init` to create the schema"
#: Execution option marking a connection whose transactions write (see :func:`begin_write`).
_WRITE_OPTION = "gridgov_write"
_WRITER = "_gridgov_writer"
_READER = "_gridgov_reader"
#: How long a SQLite writer waits for another one before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def detect_backend(url_or_engine: str | URL | Engine | Connection) -> Backend:
    """Return which of the two supported backends a URL or engine points at.

    Raises
    ------
    StoreError
        If the URL is malformed or names a database gridgov does not support.
    """
    if isinstance(url_or_engine, Engine | Connection):
        name = url_or_engine.dialect.name
    else:
        try:
            name = make_url(url_or_engine).get_backend_name()
        except ArgumentError as exc:
            msg = f"not a database URL: {url_or_engine!s} ({exc})"
            raise StoreError(msg) from exc
    if name == "sqlite":
        return "sqlite"
    if name == "postgresql":
        return "postgresql"
    msg = f"unsupported database backend {name!r}: use sqlite:/// or postgresql+psycopg://"
    raise StoreError(msg)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # pysqlite opens transactions lazily and never for DDL; taking control of BEGIN makes a
    # load (and a migration) one real transaction, so a failure leaves nothing half-written.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        # Readers (the API) must not block the dispatcher's writes; WAL lets them run together.
        cursor.execute("PRAGMA journal_mode = WAL")
        # Writers queue behind each other (BEGIN IMMEDIATE waits this long for the lock).
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A writer takes SQLite's single write lock at BEGIN, before it reads anything: two
    # dispatchers can then never both see a unit available and both take it, and a deferred
    # transaction can never fail half-way when upgrading its read lock (SQLITE_BUSY_SNAPSHOT).
    # Readers keep a plain BEGIN, so WAL lets them run beside the writer.
    if connection.get_execution_options().get(_WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: committed on success, rolled back on any error.

    On SQLite it begins with ``BEGIN IMMEDIATE``, so writers are serialised from their first
    statement (waiting up to :data:`SQLITE_BUSY_TIMEOUT_MS` for each other). On PostgreSQL it
    is an ordinary READ COMMITTED transaction; callers lock the rows they change.
    """
    with _writer(engine).begin() as connection:
        yield connection


def _writer(engine: Engine) -> Engine:
    # The engine with the write option, made once per engine: making one is a good share of a
    # one-row write's own cost (a position fix).
    writer: Engine | None = engine.__dict__.get(_WRITER)
    if writer is None:
        writer = engine.__dict__[_WRITER] = engine.execution_options(**{_WRITE_OPTION: True})
    return writer


def read_statements(engine: Engine) -> Engine:
    """``engine`` for reads that need no transaction: on PostgreSQL each statement runs on its
    own (autocommit), which under READ COMMITTED sees what a read-only transaction's statement
    would (a snapshot of its own); on SQLite, ``engine`` itself.

    A read-only transaction only adds a BEGIN and a ROLLBACK (two round trips), and psycopg
    drops every statement it prepared on the connection at each ROLLBACK: a statement run
    again and again (the wall's poll, the dispatcher's unit snapshot) was parsed and planned
    every time. See :func:`at_or_above` for the other half of planning such a statement once."""
    if engine.dialect.name != "postgresql":
        return engine
    reader: Engine | None = engine.__dict__.get(_READER)
    if reader is None:
        reader = engine.__dict__[_READER] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return reader


def at_or_above(column: Any, low: Any) -> list[Any]:
    """``column >= low`` for a prepared statement that runs again and again, as two clauses:
    that one and an upper bound that excludes nothing (the largest bigint).

    PostgreSQL keeps a prepared statement's generic plan (planned once per connection) only
    when it is estimated no dearer than planning each time. For ``column >= $1`` alone it
    guesses a third of the table and so planned the statement at every run (for the wall's
    poll, 0.2-0.3 ms, most of its cost); for a range with both bounds it guesses 0.5 %: an
    index range, planned once."""
    return [column >= low, column <= literal_column(str(2**63 - 1), BigInteger)]


#: PostgreSQL's "try again" answers: serialization failure and deadlock detected.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})
#: Times :func:`write_transaction` runs its work before giving up on such answers.
_WRITE_ROUNDS = 5


def write_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` in one write transaction (:func:`begin_write`) and return its result.

    Everything ``work`` writes commits together, or nothing does. When PostgreSQL gives the
    transaction up (a deadlock or a serialisation failure) the whole of ``work`` runs again
    in a new transaction, a few times at most.
    """
    for round_ in range(1, _WRITE_ROUNDS + 1):
        try:
            with translate_errors(engine), begin_write(engine) as connection:
                return work(connection)
        except DBAPIError as exc:
            if (
                getattr(exc.orig, "sqlstate", None) not in RETRY_SQLSTATES
                or round_ == _WRITE_ROUNDS
            ):
                raise
    raise AssertionError  # pragma: no cover - the loop returns or raises


@contextmanager
def sent_together(connection: Connection) -> Iterator[None]:
    """Send the block's statements without waiting for each one's answer (PostgreSQL).

    They go in psycopg's pipeline mode, and the block ends with ONE round trip that reads every
    answer, instead of one round trip a statement. So no statement of the block may read its
    result (no RETURNING, no SELECT), and the rows it writes must not depend on another's
    answer. The intake's turn, held by one transaction at a time across every process, writes
    its decisions this way (:func:`gridgov.store.decision_rows.write_decisions`).

    The first statement that fails is raised as SQLAlchemy raises a failed statement (an
    IntegrityError, an OperationalError..., with the server's DETAIL left out): at the end of
    the block, or at a later statement of it that found the failure (whose SQL the error then
    shows). The statements after it were not run, and the caller's transaction is rolled back
    as after any failed statement. The end of the block is bounded by the statement timeout, as
    every call to the server is (:mod:`gridgov.store.statement_guard`). On SQLite the
    statements simply run one by one.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    raw: Any = connection.connection.driver_connection
    try:
        with guarded_call(raw, get_settings().db_statement_timeout_s), raw.pipeline():
            yield
    except psycopg.Error as exc:
        if exc.args and "DETAIL:" in str(exc.args[0]):
            exc.args = (_without_detail(exc.args[0]), *exc.args[1:])
        lost = bool(raw.broken or raw.closed)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            None,
            None,
            exc,
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=connection.dialect,
        ) from exc


def create_engine_from_url(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine configured for gridgov's two backends.

    SQLite gets foreign keys, WAL and explicit transactions (DDL included); PostgreSQL uses
    psycopg 3 with ``pool_pre_ping`` so a restarted server does not poison the pool, and a pool
    of ``settings.db_pool_size`` connections (+ ``db_max_overflow``).

    Parameters
    ----------
    url
        ``sqlite:///path.db`` or ``postgresql+psycopg://user@host/db``. A plain
        ``postgresql://`` URL is switched to the psycopg 3 driver.
    **kwargs
        Passed on to :func:`sqlalchemy.create_engine`.

    Returns
    -------
    Engine
    """
    backend = detect_backend(url)
    sa_url = make_url(url)
    settings = get_settings()
    # A frozen or unreachable server must not hold a request for ever: a waiting request
    # answers 503 after the pool timeout, and a statement is cut after the statement timeout.
    # (An in-memory SQLite database has a pool without a queue, hence no timeout to set.)
    if backend == "postgresql" or sa_url.database not in (None, "", ":memory:"):
        kwargs.setdefault("pool_timeout", settings.db_pool_timeout_s)
    # A failed statement's message must not carry its parameters into logs or answers: they
    # can hold reporters' personal data.
    kwargs.setdefault("hide_parameters", True)
    # JSON columns written by one rule on both backends (enums, numpy values, inf as null).
    kwargs.setdefault("json_serializer", json_text)
    try:
        if backend == "postgresql":
            if sa_url.drivername == "postgresql":
                sa_url = sa_url.set(drivername="postgresql+psycopg")
            kwargs.setdefault("pool_pre_ping", True)
            # SQLAlchemy's default pool (5 + 10) is smaller than the API's thread pool: under
            # load, overflow connections were opened and closed for nearly every request.
            kwargs.setdefault("pool_size", settings.db_pool_size)
            kwargs.setdefault("max_overflow", settings.db_max_overflow)
            sa_url = _with_pg_timeouts(sa_url, settings.db_statement_timeout_s)
            connect_args = dict(kwargs.pop("connect_args", {}))
            connect_args.setdefault("connect_timeout", max(1, round(settings.db_connect_timeout_s)))
            engine = create_engine(sa_url, connect_args=connect_args, **kwargs)
            # Many rows inserted at once go as one INSERT with many VALUES, not one INSERT a
            # row (psycopg's executemany): the dataset loads and the history import. The
            # intake's batches use RowsInsert (gridgov.store.many_rows), whose text does not
            # depend on the number of rows.
            engine.dialect.use_insertmanyvalues_wo_returning = True
        else:
            engine = create_engine(sa_url, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        msg = f"cannot create an engine for {sa_url.render_as_string(hide_password=True)}: {exc}"
        raise StoreError(msg) from exc
    guard_engine(engine, settings.db_statement_timeout_s)
    forking.run_in_child(engine, "forget pool", _forget_pool_in_child)
    event.listen(engine, "handle_error", _redact_driver_detail)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


#: Pools a forked child took from its engines, kept so that nothing of theirs is closed there.
_PARENTS_POOLS: list[Any] = []


def _forget_pool_in_child(engine: Engine) -> None:
    # Two processes on one connection interleave their messages. The child gets a new pool; the
    # parent's connections stay open for the parent (a SQLite connection closed here would
    # touch the file's shared state, so none is even collected).
    _PARENTS_POOLS.append(engine.pool)
    engine.dispose(close=False)


def _with_pg_timeouts(sa_url: URL, statement_timeout_s: float) -> URL:
    """The URL with PostgreSQL's statement_timeout added to its ``options`` (kept beside any
    the URL carries already, such as a search_path)."""
    options = sa_url.query.get("options", "")
    if isinstance(options, tuple):
        options = " ".join(options)
    if "statement_timeout" in options:
        return sa_url
    timeout = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
    return sa_url.update_query_dict({"options": f"{options} {timeout}".strip()})


def _without_detail(message: object) -> str:
    return "\n".join(
        line for line in str(message).splitlines() if not line.lstrip().startswith("DETAIL:")
    )


def _redact_driver_detail(context: ExceptionContext) -> None:
    """Drop PostgreSQL's DETAIL from a failed statement's messages, as the error is raised.

    The server's DETAIL repeats the values of the row or key that failed ("Failing row
    contains (...)", "Key (...)=(...)"), which can be a reporter's contact details; with the
    parameters hidden (``hide_parameters``) nothing of a statement's values reaches a message,
    a log line or an answer. The error's class, SQLSTATE and primary message stay.
    """
    for exc in (context.original_exception, context.sqlalchemy_exception):
        if exc is not None and exc.args and "DETAIL:" in str(exc.args[0]):
            exc.args = (_without_detail(exc.args[0]), *exc.args[1:])


def open_store(url: str | URL) -> Engine:
    """Open an existing store: like :func:`create_engine_from_url`, but a SQLite file that is
    not there is an error instead of a new empty file left behind by a typo.

    Raises
    ------
    StoreError
        The SQLite file does not exist (the message says to run ``gridgov init``).
    """
    sa_url = make_url(url)
    if detect_backend(url) == "sqlite":
        database = sa_url.database or ""
        on_disk = database not in ("", ":memory:") and not database.startswith("file:")
        if on_disk and not Path(database).exists():
            msg = (
                f"no database at {Path(database).resolve()}; run `gridgov init` to create it, "
                "or point GRIDGOV_DATABASE_URL (or --url) at the right one"
            )
            raise StoreError(msg)
    return create_engine_from_url(url)


def _describe(engine: Engine | Connection) -> str:
    return engine.engine.url.render_as_string(hide_password=True)


def _is_missing_table(exc: DBAPIError) -> bool:
    if getattr(exc.orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return "no such table" in str(exc.orig)


@contextmanager
def translate_errors(engine: Engine | Connection) -> Iterator[None]:
    """Turn driver errors a user can cause into :class:`StoreError` with a helpful message."""
    try:
        yield
    except SATimeoutError as exc:
        msg = f"no free connection to the database at {_describe(engine)}: {exc}"
        raise StoreError(msg) from exc
    except DBAPIError as exc:
        if _is_missing_table(exc):
            msg = f"the store at {_describe(engine)} is not initialised; {_INIT_HINT}"
            raise StoreError(msg) from exc
        if isinstance(exc, OperationalError) or exc.connection_invalidated:
            msg = f"cannot use the database at {_describe(engine)}: {exc.orig}"
            raise StoreError(msg) from exc
        raise


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    # env.py takes this connection instead of reading a URL from anywhere else.
    cfg.attributes["connection"] = connection
    return cfg


def init_db(url: str | URL | Engine) -> None:
    """Create or upgrade the schema to the newest migration. Safe to run again.

    Parameters
    ----------
    url
        A database URL or an engine from :func:`create_engine_from_url`.

    Raises
    ------
    StoreError
        If the database cannot be reached or migrated.
    """
    engine = url if isinstance(url, Engine) else create_engine_from_url(url)
    try:
        with translate_errors(engine), begin_write(engine) as connection:
            command.upgrade(_alembic_config(connection), "head")
    finally:
        if engine is not url:
            engine.dispose()


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: ignore objects that exist only on the other backend or belong to PostGIS."""
    if type_ == "table" and reflected and compare_to is None:
        # PostGIS and TIGER ship their own tables in the same database; they are not ours.
        return name in Base.metadata.tables
    return True


def compare_type(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Alembic type comparison that understands :class:`GeometryType` on both backends."""
    if isinstance(metadata_type, GeometryType):
        if context.dialect.name != "postgresql":
            return inspected_type.__class__.__name__ not in {"BLOB", "LargeBinary", "_Binary"}
        geometry_type = getattr(inspected_type, "geometry_type", None)
        srid = getattr(inspected_type, "srid", None)
        return not (geometry_type == metadata_type.geometry_type and srid == metadata_type.srid)
    return None  # let Alembic decide


def schema_diff(engine: Engine) -> list[Any]:
    """List the differences between the models and the database schema (empty when in step).

    Indexes that exist only on the other backend (the PostGIS GIST ones on SQLite) are expected
    and left out.
    """
    with translate_errors(engine), engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": compare_type, "include_object": include_object},
        )
        diffs = compare_metadata(context, Base.metadata)
    if detect_backend(engine) != "postgresql":
        diffs = [d for d in diffs if not _is_pg_only_index(d)]
    return list(diffs)


def _is_pg_only_index(diff: Any) -> bool:
    if not (isinstance(diff, tuple) and diff and diff[0] == "add_index"):
        return False
    return bool(diff[1].name and str(diff[1].name).endswith("_gist"))


def ping(engine: Engine) -> None:
    """Ask the database to answer one trivial statement; its driver's error when it cannot
    (a readiness check reports which)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def is_initialised(engine: Engine) -> bool:
    """Whether the schema exists (the ``areas`` table is the sign)."""
    with translate_errors(engine), engine.connect() as connection:
        return bool(inspect(connection).has_table("areas"))
