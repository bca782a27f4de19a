"""What every HTTP app of the system shares: JSON errors, bounded bodies, JSON that cannot crash the parser,
and security headers on every response."""

import json
import logging

import sqlalchemy as sa
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024  # routes that take more (uploads, campaigns) raise it for themselves

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
    for unavailable in (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError):
        app.register_error_handler(unavailable, _database_unavailable)
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
    return jsonify({"error": "the database is unavailable right now; try again shortly"}), 503, {"Retry-After": "5"}


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
