"""What every HTTP app shares (shared/web.py): JSON errors, 503 when the database is unavailable."""

import pytest
import sqlalchemy as sa
from flask import Flask

from shared.web import harden

UNAVAILABLE = [sa.exc.OperationalError("SELECT 1", None, ConnectionRefusedError("connection refused")),
               sa.exc.InterfaceError("SELECT 1", None, Exception("connection closed")),
               sa.exc.TimeoutError("QueuePool limit of size 20 overflow 10 reached")]


@pytest.mark.parametrize("error", UNAVAILABLE, ids=lambda e: type(e).__name__)
def test_a_database_that_is_down_or_saturated_is_a_503_with_retry_after_not_a_500(error):
    app = harden(Flask(__name__))

    @app.get("/work")
    def work():
        raise error

    response = app.test_client().get("/work")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "database is unavailable" in response.json["error"]
