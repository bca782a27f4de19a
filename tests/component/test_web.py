"""What every HTTP app shares (shared/web.py): JSON errors, 503 when the database or a broker is unavailable."""

import dramatiq
import pika.exceptions
import pytest
import redis.exceptions
import sqlalchemy as sa
from flask import Flask

from shared.settings import SERVICES
from shared.web import harden

UNAVAILABLE = [sa.exc.OperationalError("SELECT 1", None, ConnectionRefusedError("connection refused")),
               sa.exc.InterfaceError("SELECT 1", None, Exception("connection closed")),
               sa.exc.TimeoutError("QueuePool limit of size 20 overflow 10 reached")]


def answer_to(error: Exception):
    """What a hardened app answers when a view raises `error`."""
    app = harden(Flask(__name__))

    @app.get("/work")
    def work():
        raise error

    return app.test_client().get("/work")


@pytest.mark.parametrize("error", UNAVAILABLE, ids=lambda e: type(e).__name__)
def test_a_database_that_is_down_or_saturated_is_a_503_with_retry_after_not_a_500(error):
    response = answer_to(error)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "database is unavailable" in response.json["error"]


BROKER_DOWN = [dramatiq.errors.ConnectionClosed(ConnectionRefusedError("connection refused")),
               redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
               redis.exceptions.TimeoutError("Timeout reading from socket"),
               pika.exceptions.AMQPConnectionError("connection refused")]


@pytest.mark.parametrize("error", BROKER_DOWN, ids=lambda e: type(e).__name__)
def test_a_broker_that_is_down_is_a_503_with_retry_after_not_a_500(error):
    response = answer_to(error)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "broker is unavailable" in response.json["error"]


def test_media_has_healthz_and_readyz_and_its_readiness_checks_its_database(system):
    from services.media.web import create_app

    client = create_app().test_client()
    assert client.get("/healthz").json["status"] == "ok"
    assert client.get("/readyz").json["checks"] == {"database": "ok"}


def test_the_api_is_ready_when_its_database_and_every_broker_it_publishes_to_answer(system):
    body = system.client.get("/readyz").json
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok"} | {f"broker of {s}": "ok" for s in SERVICES}
