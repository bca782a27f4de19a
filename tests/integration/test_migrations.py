"""Every service's version history on PostgreSQL, the processes mode's database."""

import pytest

from shared.db import create_engine
from tests.integration.conftest import base_env
from tests.migration_checks import MigrationChecks


class TestOnPostgreSQL(MigrationChecks):
    @pytest.fixture
    def database(self, databases):
        engines = []

        def new(name: str):
            engines.append(create_engine(databases.url(name)))
            return engines[-1]

        yield new
        for engine in engines:
            engine.dispose()

    @pytest.fixture
    def market_env(self, tmp_path, databases) -> dict:
        return base_env(tmp_path, databases)
