"""Database helpers: one engine per service, transactions, and the kernel's own tables.

The outbox, inbox and failed-jobs tables live in every service's own database; they
carry messages, never business data.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.settings import get_settings

log = logging.getLogger(__name__)
_AFTER_RELEASE = "after_release"
kernel_metadata = sa.MetaData()

outbox = sa.Table(
    "outbox",
    kernel_metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # becomes the Dramatiq message id
    sa.Column("service", sa.String(32), nullable=False),  # whose broker receives it
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Index("ix_outbox_unsent", "created_at", sqlite_where=sa.text("sent_at IS NULL"),
             postgresql_where=sa.text("sent_at IS NULL")),
)

inbox = sa.Table(
    "inbox",
    kernel_metadata,
    sa.Column("consumer", sa.String(128), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

failed_jobs = sa.Table(
    "failed_jobs",
    kernel_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("message_id", sa.String(36), nullable=False, unique=True),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("message", sa.JSON, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


class Base(DeclarativeBase):
    """Base for a service's models; each service subclasses it with its own MetaData."""

    __abstract__ = True
    if TYPE_CHECKING:
        __table__: ClassVar[sa.Table]  # every model here is mapped to a Table (SQLAlchemy says any FromClause)


@cache
def engine_for(service: str) -> sa.Engine:
    return create_engine(get_settings().database_url_for(service))


def create_engine(url: str | sa.URL) -> sa.Engine:
    """An engine as every service's is: SQLite with its pragmas and one writer at a time, PostgreSQL with its
    checks for dead connections."""
    settings = get_settings()
    url = make_url(url)
    # A thread holds at most one connection per database (see `after_release`), so the pool only has to
    # cover the process's threads; past that a request waits briefly, then fails instead of hanging.
    pool = {"pool_size": settings.db_pool_size, "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout_s}
    if url.get_backend_name() == "sqlite":
        if url.database:  # not an in-memory database
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, poolclass=sa.pool.QueuePool, **pool)
        event.listen(engine, "connect", _sqlite_connect)
        WriterTurn().attach(engine)
        return engine
    return sa.create_engine(url, **postgres_options(settings), **pool)


def postgres_options(settings) -> dict:
    """How a PostgreSQL engine finds out about dead connections: a ping at every checkout, or the first failure."""
    return {"pool_pre_ping": settings.db_pre_ping, "pool_recycle": settings.db_pool_recycle_s}


def _sqlite_connect(dbapi_connection, _record) -> None:
    # SQLAlchemy emits BEGIN itself (below): pysqlite's own would come only before the first write, so
    # a read-then-write transaction would not be atomic.
    dbapi_connection.isolation_level = None
    # WAL: committing is cheap, and readers outside any transaction (a sqlite3 shell) never wait for a writer.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class WriterTurn:
    """Every SQLite transaction is BEGIN IMMEDIATE: it takes the write lock at once, so transactions are
    serialised as if they had locked their rows FOR UPDATE (which SQLite ignores), and two read-then-write
    transactions cannot interleave. The threads of this process first queue for the turn on a lock of their
    own, given back once the COMMIT or ROLLBACK has run: SQLite's busy handler polls with growing sleeps, so
    under a burst some waiters would lose the race again and again (measured: 3.3 s instead of 0.6 s for the
    slowest of 100 concurrent webhooks). A thread holds at most one connection per database."""

    def __init__(self):
        self._lock, self._mine = threading.Lock(), threading.local()

    def attach(self, engine: sa.Engine) -> None:
        event.listen(engine, "begin", self._begin)
        dialect = engine.dialect
        for name in ("do_commit", "do_rollback"):
            setattr(dialect, name, self._then_give_back(getattr(dialect, name)))
        # A connection given back to the pool or dropped in the middle of a transaction gives the turn back too.
        event.listen(engine, "reset", lambda _dbapi, _record, _state: self.give_back())
        event.listen(engine, "invalidate", lambda _dbapi, _record, _exc: self.give_back())

    def _begin(self, connection) -> None:
        if getattr(self._mine, "held", False):
            raise RuntimeError("a transaction was opened inside another on the same SQLite database")
        if not self._lock.acquire(timeout=30):
            raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, TimeoutError("waited 30 s for the database"))
        self._mine.held = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self.give_back()
            raise

    def _then_give_back(self, finish):
        def finish_then_give_back(dbapi_connection) -> None:
            try:
                finish(dbapi_connection)
            finally:
                self.give_back()
        return finish_then_give_back

    def give_back(self) -> None:
        if getattr(self._mine, "held", False):
            self._mine.held = False
            self._lock.release()


@cache
def _sessions(service: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(service), expire_on_commit=False, info={"service": service})


@contextmanager
def transaction(service: str) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception; once it has committed and its
    connection is back in the pool, the callbacks registered with `after_release` run.
    Never open one inside another of the same service: on SQLite the inner one waits for the outer's lock."""
    session = _sessions(service)()
    try:
        with session.begin():
            yield session
    except BaseException:
        session.info.pop(_AFTER_RELEASE, None)  # nothing was committed, so nothing follows
        raise
    finally:
        session.close()
        _run_after_release(session)


def after_release(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once `session`'s transaction has committed and its connection is back in the pool.
    For an `after_commit` hook whose work needs a connection: taken there, it would be a second one held
    beside the session's own, and under concurrency every thread would wait for the pool."""
    session.info.setdefault(_AFTER_RELEASE, []).append(callback)


def _run_after_release(session: Session) -> None:
    for callback in session.info.pop(_AFTER_RELEASE, []):
        try:
            callback()
        except Exception:  # the transaction committed: its caller must not see it as failed
            log.exception("A callback after the %s transaction failed.", session.info.get("service"))


def insert_ignore(session: Session, table: sa.Table, **values) -> bool:
    """Insert a row unless one with the same key exists (even one a concurrent transaction is inserting);
    returns whether this call inserted it."""
    # Asked by RETURNING, not rowcount: psycopg 3 reports -1 for this statement even when it inserted.
    dialect = {"postgresql": postgresql, "sqlite": sqlite}[session.get_bind().dialect.name]
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing()
    return session.execute(statement.returning(*table.primary_key.columns)).first() is not None
