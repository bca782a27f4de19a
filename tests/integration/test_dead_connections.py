"""A pooled PostgreSQL connection that died (the server restarted) costs a request at most one 503 with
Retry-After, with the checkout ping or without it; the next request is served."""

import pytest
import sqlalchemy as sa
from flask import Flask

from shared.db import postgres_options
from shared.settings import Settings
from shared.web import harden
from tests.integration.conftest import PG


def app_on(engine: sa.Engine) -> Flask:
    """A hardened app whose one view runs a transaction on `engine`, as every api view does."""
    app = harden(Flask(__name__))

    @app.get("/ready")
    def ready():
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"status": "ok"}

    return app


def admin(sql: str, **params) -> list:
    engine = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        result = conn.execute(sa.text(sql), params)
        return result.all() if result.returns_rows else []


def kill_connections(database: str) -> int:
    """What a restart does to a pool: the server ends every session of `database`; returns how many."""
    return len(admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d", d=database))


@pytest.mark.parametrize("pre_ping", [True, False], ids=["pre-ping", "no-pre-ping"])
def test_a_request_that_meets_a_dead_connection_is_a_503_at_worst_and_the_next_is_served(databases, pre_ping):
    name = f"{databases.prefix}_api"
    admin(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(databases.url("api"), pool_size=4,
                              **postgres_options(Settings(db_pre_ping=pre_ping)))
    client = app_on(engine).test_client()
    try:
        held = [engine.connect() for _ in range(3)]
        for conn in held:  # the pool holds three open connections now, all about to die
            conn.close()
        assert kill_connections(name) == 3
        first, second = client.get("/ready"), client.get("/ready")
    finally:
        engine.dispose()

    if pre_ping:
        assert first.status_code == 200
    else:
        assert first.status_code == 503 and first.headers["Retry-After"] == "5"
    assert second.status_code == 200  # the failure dropped the other two dead connections as well
