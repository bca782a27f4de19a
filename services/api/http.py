"""JSON errors, strict request parsing, tokens, rate limits and pages, shared by the api's blueprints."""

import hashlib
import ipaddress
import secrets
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, g, jsonify, request
from flask_limiter import Limiter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session

from services.api.models import ApiToken, User
from shared.db import transaction
from shared.openapi import Api
from shared.settings import get_settings

M = TypeVar("M", bound=BaseModel)

MAX_PAGE = 200

api = Api("Marketplace API", "Catalog, cart and checkout, payment webhooks, leads, campaigns, notifications and "
          "product review. Send `Authorization: Bearer <token>` (from POST /users or POST /tokens) where marked.")


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


class Body(BaseModel):
    """A request body: exact types (no "1999" for 1999, no true for 1), no unknown fields, no NUL characters
    (PostgreSQL cannot store them in text)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def no_nul(cls, data):
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters (\\u0000)")
        return data


def _has_nul(value) -> bool:
    # A loop, not recursion: a body nested as deep as the JSON parser allows must not exhaust the stack here.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        body = {"error": exc.message} | ({"details": exc.details} if exc.details else {})
        return jsonify(body), exc.status

    @app.errorhandler(OverflowError)
    def out_of_range(exc: Exception):
        # An id too large for a route's number reaches the database driver before any other check.
        return jsonify({"error": "a number in the request is out of range"}), 400

    @app.errorhandler(DataError)
    def unstorable(exc: Exception):
        return jsonify({"error": "a value in the request is out of range or cannot be stored"}), 400


def json_object() -> dict:
    """The request body as a JSON object, or a 4xx saying what is wrong with it."""
    if not request.is_json:
        raise ApiError(415, "send a JSON object with Content-Type: application/json")
    try:
        body = current_app.json.loads(request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def parse(model: type[M], body: dict | None = None) -> M:
    """The JSON body validated against `model`, or a 400 naming each bad field."""
    try:
        return model.model_validate(json_object() if body is None else body)
    except ValidationError as exc:
        raise ApiError(400, "invalid request body", problems(exc)) from None


def problems(exc: ValidationError, limit: int = 20) -> list[dict]:
    """Each validation error as {"field", "problem"}; a long list is cut after `limit`."""
    found = [{"field": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()]
    if len(found) > limit:
        found[limit:] = [{"field": "", "problem": f"and {len(found) - limit} more"}]
    return found


# --- tokens -------------------------------------------------------------------------------

def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, user_id: int) -> dict:
    """A new bearer token for the user (shown once; only its hash is stored) and when it expires."""
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(hours=get_settings().token_ttl_hours)
    session.add(ApiToken(user_id=user_id, token_hash=hash_token(token), expires_at=expires_at))
    return {"token": token, "token_expires_at": expires_at.isoformat()}


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _user_of(token: str) -> int | None:
    with transaction("api") as session:
        return session.scalar(sa.select(ApiToken.user_id).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None),
            ApiToken.expires_at > datetime.now(UTC)))


def authenticated(view):
    """Require `Authorization: Bearer <token>` of a live token; sets g.user_id."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        token = _bearer()
        if token is None:
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
        g.user_id = _user_of(token)
        if g.user_id is None:
            raise ApiError(401, "unknown, expired or revoked token: sign in again (POST /tokens)")
        return view(*args, **kwargs)

    return wrapper


def optional_user() -> int | None:
    """The caller's user id when a live token is sent, else None (anonymous); a bad token is still a 401."""
    token = _bearer()
    if token is None:
        return None
    user_id = _user_of(token)
    if user_id is None:
        raise ApiError(401, "unknown, expired or revoked token: sign in again (POST /tokens)")
    return user_id


def revoke(token_hash: str) -> None:
    with transaction("api") as session:
        session.execute(sa.update(ApiToken).where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
                        .values(revoked_at=datetime.now(UTC)))


def current_token_hash() -> str:
    return hash_token(_bearer() or "")


def is_admin(session: Session, user_id: int | None) -> bool:
    return user_id is not None and bool(session.scalar(sa.select(User.is_admin).where(User.id == user_id)))


# --- rate limits --------------------------------------------------------------------------

def client_address() -> str:
    """The client's address, an IPv6 client as its /64: one subscriber gets a whole /64 and could otherwise
    start each try from a fresh address."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else address


def user_or_address() -> str:
    """The signed-in user (whichever of their tokens is sent: signing in again does not reset the count)."""
    token = _bearer()
    user_id = _user_of(token) if token else None
    return f"user:{user_id}" if user_id is not None else client_address()


def sign_in_email() -> str:
    """The account a sign-in is for, so that guesses spread over many addresses still count against it."""
    try:
        body = current_app.json.loads(request.get_data(cache=True))
    except (ValueError, UnicodeDecodeError):
        body = None
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str):
        return client_address()
    return f"email:{hashlib.sha256(email.strip().lower().encode()).hexdigest()}"


limiter = Limiter(client_address, headers_enabled=True, swallow_errors=True, in_memory_fallback_enabled=True)


def rate_limited(setting: str, key=None):
    """Limit a view by the setting `rate_limit_<setting>`, per client address unless `key` says otherwise."""
    return limiter.limit(lambda: getattr(get_settings(), f"rate_limit_{setting}"), key_func=key,
                         error_message=f"too many {setting.replace('_', ' ')} requests; try again later")


def init_limiter(app: Flask) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = get_settings().rate_limit_redis_url or "memory://"
    limiter.init_app(app)


# --- pages --------------------------------------------------------------------------------

class Page(BaseModel):
    """`?limit=` and `?offset=` of a list; other query parameters are a list's own (see its operation)."""

    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=10**9)


def query(model: type[M]) -> M:
    """The query string validated against `model`, or a 400 naming each bad parameter."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise ApiError(400, "invalid query parameters", problems(exc)) from None


def paged(session: Session, query, limit: int, offset: int) -> tuple[list, int | None]:
    """One page of `query` and the offset of the next page (None on the last)."""
    rows = list(session.scalars(query.limit(limit + 1).offset(offset)))
    return rows[:limit], (offset + limit if len(rows) > limit else None)
