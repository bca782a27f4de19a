"""Every service's version history on SQLite, the embedded mode's database."""

import os

import pytest

from services.market import registry
from shared.db import create_engine
from shared.settings import SERVICES
from tests.migration_checks import MigrationChecks, files, market, revisions


class TestOnSQLite(MigrationChecks):
    @pytest.fixture
    def database(self, tmp_path):
        engines = []

        def new(name: str):
            engines.append(create_engine(f"sqlite:///{tmp_path}/{name}.db"))
            return engines[-1]

        yield new
        for engine in engines:
            engine.dispose()

    @pytest.fixture
    def market_env(self, tmp_path) -> dict:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("MARKET_")},
                "MARKET_DATA_DIR": str(tmp_path / "data")}


def test_makemigration_writes_nothing_when_the_models_match_their_revisions(tmp_path):
    done = market({**os.environ, "MARKET_DATA_DIR": str(tmp_path)}, "makemigration", "media", "-m", "nothing new")

    assert done.returncode == 1
    assert "Error: the media models match its revisions: there is nothing to write" in done.stderr, done.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_history_is_one_line_of_numbered_revisions(service):
    # Two branches that each added a revision 0002 show up here: renumber the later one after the other.
    history = registry.history(service)
    numbers = [f"{n:04d}" for n in range(1, len(files(history)) + 1)]
    assert revisions(history) == numbers
    assert [name[:4] for name in files(history)] == numbers
