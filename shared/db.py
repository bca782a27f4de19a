"""Database helpers: one engine per service, transactions, and the kernel's own tables.

The outbox, inbox and failed-jobs tables live in every service's own database; they
carry messages, never business data.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from shared.settings import get_settings

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


@cache
def engine_for(service: str) -> sa.Engine:
    url = make_url(get_settings().database_url_for(service))
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the embedded mode's threads read while one writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@cache
def _sessions(service: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(service), expire_on_commit=False, info={"service": service})


@contextmanager
def transaction(service: str) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with _sessions(service).begin() as session:
        yield session


def migrate(service: str, metadata: sa.MetaData) -> None:
    """Create the service's database (PostgreSQL) and tables if missing; safe to run again."""
    engine = engine_for(service)
    if engine.url.get_backend_name() == "postgresql":
        _create_database(engine.url)
    kernel_metadata.create_all(engine)
    metadata.create_all(engine)


def _create_database(url) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database})
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()


def insert_ignore(session: Session, table: sa.Table, **values) -> bool:
    """Insert a row unless one with the same key exists (even one a concurrent transaction is inserting);
    returns whether this call inserted it."""
    dialect = {"postgresql": postgresql, "sqlite": sqlite}[session.get_bind().dialect.name]
    return session.execute(dialect.insert(table).values(**values).on_conflict_do_nothing()).rowcount == 1
