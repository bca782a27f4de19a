"""How often a failing message is retried: its actor's max_retries for a failure, longer for an outage."""

import dramatiq
import pika.exceptions
import pytest
import redis.exceptions
import sqlalchemy as sa

from services.market import registry
from shared.messaging import OUTAGE_RETRIES, retries_left

DATABASE_DOWN = sa.exc.OperationalError("SELECT 1", None, ConnectionRefusedError("connection refused"))


@pytest.mark.parametrize(("exception", "max_retries", "retries", "retried"), [
    (ValueError("a bug"), 2, 1, True),
    (ValueError("a bug"), 2, 2, False),
    (DATABASE_DOWN, 2, 2, True),  # a PostgreSQL restart outlasts two retries 10-20 s apart
    (DATABASE_DOWN, 2, OUTAGE_RETRIES - 1, True),
    (DATABASE_DOWN, 2, OUTAGE_RETRIES, False),  # an outage that never ends still ends in failed jobs
    (sa.exc.TimeoutError("pool exhausted"), 0, 0, True),
    (sa.exc.InterfaceError("SELECT 1", None, OSError("closed")), 0, 5, True),
    (dramatiq.errors.ConnectionClosed(OSError("reset")), 2, 5, True),
    (redis.exceptions.ConnectionError("refused"), 2, 5, True),
    (pika.exceptions.AMQPConnectionError("refused"), 2, 5, True),
    (DATABASE_DOWN, 20, 15, True),  # an actor's own budget, when larger, still counts
])
def test_an_outage_is_retried_longer_than_a_failure(exception, max_retries, retries, retried):
    assert retries_left(max_retries, retries, exception) is retried


@pytest.mark.parametrize("service", ["api", "billing", "mailer", "media", "reports"])
def test_every_actor_retries_an_outage_past_its_max_retries_and_reads_max_retries_when_a_message_fails(service):
    broker = registry.load_actors(service)
    for name in broker.get_declared_actors():
        options = broker.get_actor(name).options
        declared = options["max_retries"]
        assert options["retry_when"](declared, DATABASE_DOWN), name
        assert not options["retry_when"](declared, ValueError("a bug")), name
        options["max_retries"] = declared + 1  # as a test or an operator might change it: the predicate follows
        try:
            assert options["retry_when"](declared, ValueError("a bug")), name
        finally:
            options["max_retries"] = declared

