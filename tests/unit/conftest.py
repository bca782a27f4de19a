"""The unit tier: pure code, no database and no broker. Tests that need either are in tests/component (the whole
system in this process, on stub brokers and SQLite) or tests/integration (real servers and processes)."""

import pytest

import shared.db
import shared.messaging


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise AssertionError(f"the unit tier has no {what}: a test that needs one belongs in tests/component")

    return refuse


@pytest.fixture(autouse=True)
def no_database_and_no_broker(monkeypatch):
    monkeypatch.setattr(shared.db, "engine_for", _refuse("database"))
    monkeypatch.setattr(shared.messaging, "broker_for", _refuse("broker"))
