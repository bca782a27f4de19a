"""Schema migrations: each service's database has its own Alembic version history.

A service keeps its revision files in its own folder (`services/<name>/migrations/`); the environment (`env.py`)
and the template of a new revision here serve them all. A database made before migrations existed (its tables
there, no `alembic_version`) is adopted: stamped at the first revision when its tables are that revision's,
refused otherwise.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory

from shared.db import kernel_metadata

ENVIRONMENT = Path(__file__).parent
_LOCK = 7_346_219  # the PostgreSQL advisory lock that makes a second `market migrate` wait for the first


class SchemaDrift(RuntimeError):
    """The database's tables were made by another version of the code than this one."""


class NothingToRevise(RuntimeError):
    """The models declare nothing the revisions do not already build."""


@dataclass(frozen=True)
class History:
    """A service's version history: where its revision files are, and the tables they must build."""

    service: str
    metadata: sa.MetaData  # the service's own tables; every database also holds the kernel's
    versions: Path

    @property
    def tables(self) -> list[sa.MetaData]:
        return [kernel_metadata, self.metadata]


@dataclass
class Migrated:
    """What `upgrade` did to one database."""

    service: str
    adopted: str | None = None  # the revision a database made before migrations was stamped at
    applied: list[str] = field(default_factory=list)  # revision files, oldest first
    current: str | None = None

    def __str__(self) -> str:
        done = [f"tables made before migrations adopted at {self.adopted}"] if self.adopted else []
        done.append(f"{', '.join(self.applied)} applied" if self.applied else f"up to date at {self.current}")
        return f"{self.service}: {'; '.join(done)}"


def upgrade(history: History, engine: sa.Engine, target: str = "heads") -> Migrated:
    """Bring the service's database to `target` (creating a PostgreSQL database if missing), in one transaction."""
    if engine.url.get_backend_name() == "postgresql":
        _create_database(engine.url)
    outcome = Migrated(history.service)
    with _migrating(engine) as connection:
        config = _config(history, connection)
        if not _revision(connection) and _holds_tables_of(connection, history):
            outcome.adopted = _adopt(history, config, connection)
        command.upgrade(config, target)
        outcome.applied = [Path(step.up_revision.path).stem for step in config.attributes["applied"]
                           if step.is_upgrade and not step.is_stamp]
        outcome.current = _revision(connection)
    return outcome


def revise(history: History, message: str, url: sa.URL) -> Path:
    """Write the service's next revision: what its models declare and its revisions do not yet build, found by
    comparing the models with a scratch database of `url`'s kind brought to the newest revision."""
    with _scratch(url) as engine, _migrating(engine) as connection:
        config = _config(history, connection)
        command.upgrade(config, "heads")
        if not differences(connection, history.tables):
            raise NothingToRevise(f"the {history.service} models match its revisions: there is nothing to write")
        number = len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1
        script = command.revision(config, message, autogenerate=True, rev_id=f"{number:04d}")
    assert isinstance(script, Script)  # one history has one head, so one revision is written
    return Path(script.path)


def differences(connection: sa.Connection, tables: sa.MetaData | list[sa.MetaData]) -> list:
    """What autogenerate would change in the database to match `tables` (Alembic's diff directives)."""
    # Alembic compares a list of MetaData too (as its `target_metadata` may be), though annotated with one
    return compare_metadata(MigrationContext.configure(connection), tables)  # type: ignore[arg-type]


def describe(diff) -> str:
    """One of `differences`' directives as words: `add_column users.is_admin` is "column users.is_admin missing"."""
    if isinstance(diff, list):  # the modifications of one column
        return ", ".join(describe(change) for change in diff)
    kind, *args = diff
    action, _, what = kind.partition("_")
    if action == "modify":  # (schema, table, column, details, found, wanted)
        return f"column {args[1]}.{args[2]} has {what} {args[4]!r}, this code {args[5]!r}"
    found = args[-1]
    table = found if isinstance(found, sa.Table) else found.table
    name = found.name or "(" + ", ".join(c.name for c in getattr(found, "columns", ())) + ")"
    where = "" if found is table else f"{table.name}."
    return f"{what} {where}{name} {'missing' if action == 'add' else 'unknown to this code'}"


def render_item(kind: str, item, _context) -> str | Literal[False]:
    """Write a server default as the portable expression the model gives (`sa.func.now()`, `sa.false()`), not as
    the SQL of the database compared against: SQLite's `0` for false is refused by PostgreSQL for a boolean."""
    arg = getattr(item, "arg", None) if kind == "server_default" else None
    if isinstance(arg, sa.sql.elements.True_ | sa.sql.elements.False_):
        return f"sa.{str(arg).lower()}()"
    if isinstance(arg, sa.sql.functions.FunctionElement) and not arg.clauses.clauses:
        return f"sa.func.{arg.name}()"
    return False


def _adopt(history: History, config: Config, connection: sa.Connection) -> str:
    first = ScriptDirectory.from_config(config).get_base()
    assert first is not None  # a service's history starts with its 0001 revision file
    with _scratch(connection.engine.url) as engine, _migrating(engine) as blank:
        command.upgrade(_config(history, blank), first)
        expected = sa.MetaData()
        expected.reflect(blank, only=lambda name, _: name != "alembic_version")
    problems = differences(connection, expected)
    if problems:
        raise SchemaDrift(
            f"the {history.service} database ({connection.engine.url.render_as_string(hide_password=True)}) was made "
            f"before migrations by another version of this code, and its tables are not those of revision {first}: "
            f"{'; '.join(describe(p) for p in problems)}. Start a development data folder afresh (delete it, e.g. "
            "`rm -r var`), or alter the tables by hand until they match, then run `market migrate` again.")
    command.stamp(config, first)
    return first


def _config(history: History, connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ENVIRONMENT))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(history.versions))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    # A new revision file is tidied as the rest of the code is (ruff is a development dependency).
    config.set_section_option("post_write_hooks", "hooks", "format fix")
    for hook, options in (("format", "format --quiet REVISION_SCRIPT_FILENAME"),
                          ("fix", "check --fix --quiet REVISION_SCRIPT_FILENAME")):
        config.set_section_option("post_write_hooks", f"{hook}.type", "module")
        config.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
        config.set_section_option("post_write_hooks", f"{hook}.options", options)
    config.attributes.update(connection=connection, metadata=history.tables, applied=[])
    return config


def _revision(connection: sa.Connection) -> str | None:
    return ", ".join(MigrationContext.configure(connection).get_current_heads()) or None


def _holds_tables_of(connection: sa.Connection, history: History) -> bool:
    ours = {name for metadata in history.tables for name in metadata.tables}
    return bool(ours & set(sa.inspect(connection).get_table_names()))


@contextmanager
def _migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction for the whole upgrade, which a concurrent one waits for. On SQLite, where a batch operation
    copies a table and drops the old one, foreign keys are off meanwhile and checked before the commit."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        assert connection.connection.driver_connection is not None  # a connection just opened holds its driver's
        pragma = connection.connection.driver_connection.execute if sqlite else None
        if pragma:
            pragma("PRAGMA foreign_keys=OFF")  # outside the transaction, where SQLite ignores it
        try:
            with connection.begin():
                if not sqlite:
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
                yield connection
                if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").first()):
                    raise RuntimeError(f"a migration left a row of {broken[0]} pointing at no row of {broken[2]}")
        finally:
            if pragma:
                pragma("PRAGMA foreign_keys=ON")


@contextmanager
def _scratch(url: sa.URL) -> Iterator[sa.Engine]:
    """An empty database of `url`'s kind, gone afterwards."""
    scratch = None
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    else:
        assert url.database is not None  # a PostgreSQL URL names the service's database
        scratch = url.set(database=f"{url.database[:40]}_scratch_{uuid.uuid4().hex[:8]}")
        _create_database(scratch)
        engine = sa.create_engine(scratch, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
        if scratch:
            _administer(scratch, f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)')


def _create_database(url: sa.URL) -> None:
    _administer(url, f'CREATE DATABASE "{url.database}"', unless="SELECT 1 FROM pg_database WHERE datname = :n")


def _administer(url: sa.URL, statement: str, unless: str | None = None) -> None:
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            if not (unless and conn.scalar(sa.text(unless), {"n": url.database})):
                conn.execute(sa.text(statement))
    finally:
        admin.dispose()
