"""JSON errors, request validation and token auth shared by the api's blueprints."""

import hashlib
import secrets
from functools import wraps
from typing import TypeVar

from flask import Flask, g, jsonify, request
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from services.api.models import User
from shared.db import transaction

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


def register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        body = {"error": exc.message} | ({"details": exc.details} if exc.details else {})
        return jsonify(body), exc.status

    @app.errorhandler(DataError)
    @app.errorhandler(OverflowError)
    def out_of_range(exc: Exception):
        # An id or amount too large for its column reaches the database before any other check.
        return jsonify({"error": "a number in the request is out of range"}), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"error": exc.description or exc.name}), exc.code


def parse(model: type[M]) -> M:
    """The JSON body validated against `model`, or a 400 naming each bad field."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        details = [{"field": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()]
        raise ApiError(400, "invalid request body", details) from None


def new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticated(view):
    """Require `Authorization: Bearer <token>`; sets g.user_id."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
        with transaction("api") as session:
            user_id = session.query(User.id).filter_by(token_hash=hash_token(token)).scalar()
        if user_id is None:
            raise ApiError(401, "unknown token")
        g.user_id = user_id
        return view(*args, **kwargs)

    return wrapper
