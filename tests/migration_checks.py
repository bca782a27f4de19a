"""What every service's version history must do, on SQLite and on PostgreSQL alike.

Each tier runs these checks on its own kind of database: a subclass gives the fixture `database`, a function that
returns an engine on a new, empty database for the name it is given, and `market_env`, the environment under which
`market` uses new, empty databases.
"""

import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from services.market import registry
from shared.migrations import ENVIRONMENT, History, NothingToRevise, SchemaDrift, describe, differences, revise, upgrade
from shared.settings import SERVICES

ROOT = Path(__file__).resolve().parents[1]
# One value per Python type, so that every foreign key of a row finds the row it points at.
VALUES = {int: 1, str: "v1", bool: True, float: 1.5, object: {"k": "v"}, date: date(2024, 1, 2),  # object: JSON
          datetime: datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}


def revisions(history: History) -> list[str]:
    """The history's revisions, oldest first."""
    scripts = ScriptDirectory(str(ENVIRONMENT), version_locations=[str(history.versions)])
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def files(history: History) -> list[str]:
    return sorted(path.stem for path in history.versions.glob("[0-9]*.py"))


def reflected(conn: sa.Connection) -> sa.MetaData:
    metadata = sa.MetaData()
    metadata.reflect(conn, only=lambda name, _: name != "alembic_version")
    return metadata


def rows(engine: sa.Engine) -> dict[str, list[dict]]:
    with engine.connect() as conn:
        return {table.name: [dict(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))
                             .mappings()] for table in reflected(conn).sorted_tables}


def fill(engine: sa.Engine) -> None:
    """Write a row into every table that has none."""
    with engine.begin() as conn:
        for table in reflected(conn).sorted_tables:  # the tables rows point at first
            if conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0:
                conn.execute(table.insert().values({c.name: VALUES[c.type.python_type] for c in table.columns}))


def assert_kept(before: dict[str, list[dict]], after: dict[str, list[dict]], revision: str) -> None:
    for table, old in before.items():
        assert table in after, f"revision {revision} dropped table {table} and its rows"
        kept = set(old[0]) & set(after[table][0]) if after[table] else set(old[0])  # the columns still there
        assert [{k: row[k] for k in kept} for row in after[table]] == [{k: row[k] for k in kept} for row in old], (
            f"revision {revision} changed the rows of {table}")


def upgrade_revision_by_revision(history: History, engine: sa.Engine) -> None:
    """From an empty database through every revision, one at a time: before each step a row goes into every table
    without one, and after it every row written so far must still be there, unchanged."""
    before: dict[str, list[dict]] = {}
    for revision in [*revisions(history), "heads"]:
        upgrade(history, engine, revision)
        assert_kept(before, rows(engine), revision)
        fill(engine)
        before = rows(engine)


def assert_models_match(history: History, engine: sa.Engine) -> None:
    upgrade(history, engine)
    with engine.connect() as conn:
        assert [describe(d) for d in differences(conn, history.tables)] == [], (
            f"the {history.service} models and migrations disagree: `market makemigration {history.service}`")


def made_before_migrations(history: History, engine: sa.Engine) -> None:
    """The database as `create_all` made it before migrations: the first revision's tables, no alembic_version."""
    upgrade(history, engine, revisions(history)[0])
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))


def market(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


class MigrationChecks:
    """The checks; a subclass per kind of database gives the fixtures `database` and `market_env`."""

    @pytest.mark.parametrize("service", SERVICES)
    def test_every_revision_keeps_the_rows_written_before_it(self, service, database):
        upgrade_revision_by_revision(registry.history(service), database(service))

    @pytest.mark.parametrize("service", SERVICES)
    def test_the_newest_revision_builds_exactly_the_tables_the_models_declare(self, service, database):
        assert_models_match(registry.history(service), database(service))

    @pytest.mark.parametrize("service", SERVICES)
    def test_a_database_made_before_migrations_is_adopted_at_the_first_revision_then_upgraded(self, service,
                                                                                               database):
        history, engine = registry.history(service), database(service)
        made_before_migrations(history, engine)
        fill(engine)
        before = rows(engine)

        migrated = upgrade(history, engine)

        assert migrated.adopted == revisions(history)[0]
        assert migrated.applied == files(history)[1:]
        assert_kept(before, rows(engine), "head")
        assert_models_match(history, engine)

    def test_a_database_made_by_another_version_is_refused_naming_what_differs(self, database):
        history, engine = registry.history("api"), database("api")
        made_before_migrations(history, engine)
        with engine.begin() as conn:  # the users table as an earlier version made it
            conn.execute(sa.text("ALTER TABLE users DROP COLUMN is_admin"))
            conn.execute(sa.text("ALTER TABLE users ADD COLUMN token_hash VARCHAR(64) NOT NULL DEFAULT ''"))

        with pytest.raises(SchemaDrift) as refused:
            upgrade(history, engine)

        assert "column users.is_admin missing; column users.token_hash unknown to this code" in str(refused.value)
        assert "alembic_version" not in sa.inspect(engine).get_table_names()  # nothing was stamped

    def test_a_new_revision_builds_what_the_models_gained_with_defaults_every_database_takes(self, database,
                                                                                              tmp_path):
        shutil.copytree(registry.history("api").versions, tmp_path / "versions")
        metadata = sa.MetaData()
        for table in registry.metadata("api").sorted_tables:
            table.to_metadata(metadata)
        users = metadata.tables["users"]  # which other tables point at: SQLite copies it with their rows in place
        users.append_column(sa.Column("newsletter", sa.Boolean, nullable=False, server_default=sa.false()))
        users.c.name.type = sa.String(200)
        history, engine = History("api", metadata, tmp_path / "versions"), database("api")

        path = revise(history, "users may want the newsletter", engine.url)

        assert path.name == f"{len(revisions(history)):04d}_users_may_want_the_newsletter.py"
        assert "server_default=sa.false()" in path.read_text()  # not SQLite's 0, which PostgreSQL refuses
        upgrade_revision_by_revision(history, engine)
        assert_models_match(history, engine)
        with pytest.raises(NothingToRevise):
            revise(history, "nothing new", engine.url)

    def test_market_migrate_says_what_it_applied_then_that_each_database_is_up_to_date(self, market_env):
        first, again, billing = (market(market_env, *args) for args in (["migrate"], ["migrate"],
                                                                          ["migrate", "billing"]))

        assert first.returncode == again.returncode == billing.returncode == 0, first.stderr + again.stderr
        histories = [registry.history(service) for service in SERVICES]
        assert first.stdout.splitlines() == [f"{h.service}: {', '.join(files(h))} applied" for h in histories]
        assert again.stdout.splitlines() == [f"{h.service}: up to date at {revisions(h)[-1]}" for h in histories]
        assert billing.stdout.splitlines() == [f"billing: up to date at {revisions(histories[1])[-1]}"]

