"""What every HTTP app of the system shares: JSON errors, bounded bodies, JSON that cannot crash the parser,
security headers on every response, 503 when a dependency is down, and the /healthz and /readyz probes."""

import json
import logging
from collections.abc import Iterable

import sqlalchemy as sa
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.db import transaction
from shared.messaging import BROKER_UNAVAILABLE, DATABASE_UNAVAILABLE, ping_brokers
from shared.openapi import Api
from shared.settings import get_settings

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024  # routes that take more (uploads, campaigns) raise it for themselves
RETRY_AFTER_S = "5"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # answers carry tokens and private data; a route may choose otherwise
}


def json_loads(text: str | bytes, **kwargs):
    """json.loads, except that nesting deep enough to exhaust the stack is a ValueError like any bad JSON
    (Python's json raises RecursionError, which nothing expects)."""
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class JsonProvider(DefaultJSONProvider):
    """Flask's JSON, reading with `json_loads`."""

    sort_keys = False

    def loads(self, s, **kwargs):
        return json_loads(s, **kwargs)


def harden(app: Flask) -> Flask:
    """JSON errors for every HTTP error, a small body limit, strict JSON and security headers."""
    app.json = JsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    for unavailable in DATABASE_UNAVAILABLE:
        app.register_error_handler(unavailable, _database_unavailable)
    for broker_down in BROKER_UNAVAILABLE:
        app.register_error_handler(broker_down, _broker_unavailable)
    app.after_request(_security_headers)
    return app


def http_error(exc: HTTPException):
    """An HTTP error as `{"error": ...}`, keeping the headers it carries (Allow, Retry-After)."""
    response = jsonify({"error": exc.description or exc.name})
    for name, value in exc.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response, exc.code


def _too_large(_exc: RequestEntityTooLarge):
    return jsonify({"error": f"request body too large: at most {request.max_content_length} bytes here"}), 413


def _database_unavailable(exc: Exception):
    """The database is down, restarting, or every connection is busy: the client should come back shortly
    (payment providers retry a 503), not read a 500 as a bug."""
    log.warning("Answered 503: the database is unavailable (%s).", type(exc).__name__)
    return _unavailable("the database is unavailable right now; try again shortly")


def _broker_unavailable(exc: Exception):
    """A message broker (RabbitMQ or Redis) is down: the same answer as a database that is down."""
    log.warning("Answered 503: a message broker is unavailable (%s).", type(exc).__name__)
    return _unavailable("a message broker is unavailable right now; try again shortly")


def _unavailable(message: str, **body):
    return jsonify({"error": message, **body}), 503, {"Retry-After": RETRY_AFTER_S}


class Alive(BaseModel):
    status: str
    service: str
    database: str  # a fingerprint of the database settings (no secret in it), for `market demo` to compare


class Ready(BaseModel):
    status: str
    service: str
    checks: dict[str, str]  # "ok", or "down (<error>)", by dependency


def add_probes(app: Flask, api: Api, service: str, publishes_to: Iterable[str]) -> None:
    """`/healthz`: the process answers (nothing else is checked, so a restart cannot cure a database that is
    down); `/readyz`: the service's database and the brokers it publishes to answer, else 503 naming them."""
    @app.get("/healthz")
    @api.operation({200: Alive}, tags=["probes"])
    def healthz():
        """Alive: the process answers."""
        # The fingerprint is configuration, not a check: `market demo` compares it with its own.
        return Alive(status="ok", service=service, database=get_settings().database_fingerprint(service))

    @app.get("/readyz")
    @api.operation({200: Ready}, tags=["probes"])
    def readyz():
        """Ready: the database and the brokers it publishes to answer (else 503 naming what is down)."""
        checks = {"database": _ping_database(service), **ping_brokers(publishes_to)}
        down = [name for name, state in checks.items() if state != "ok"]
        if down:
            log.warning("Not ready: %s down.", ", ".join(down))
            return _unavailable(f"not ready: {', '.join(down)} unavailable", down=down, checks=checks)
        return Ready(status="ok", service=service, checks=checks)


def _ping_database(service: str) -> str:
    try:
        with transaction(service) as session:
            session.execute(sa.text("SELECT 1"))
    except DATABASE_UNAVAILABLE as exc:
        return f"down ({type(exc).__name__})"
    return "ok"


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
