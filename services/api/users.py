"""Users, signing in and out: bearer tokens that expire and can be revoked."""

from typing import Annotated

import sqlalchemy as sa
from flask import Blueprint, g
from pydantic import BaseModel, EmailStr, StringConstraints
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from services.api.http import (
    ApiError,
    Body,
    api,
    authenticated,
    current_token_hash,
    issue_token,
    parse,
    rate_limited,
    revoke,
    sign_in_email,
)
from services.api.models import ApiToken, User
from shared.db import transaction

bp = Blueprint("users", __name__)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
Password = Annotated[str, StringConstraints(min_length=10, max_length=200)]
# Checked when the email is unknown, so that a wrong email takes as long as a wrong password.
_NO_USER = generate_password_hash("no such user")


class NewUser(Body):
    email: EmailStr
    name: Name
    password: Password


class NewAdmin(Body):
    email: EmailStr
    name: Name


class SignIn(Body):
    email: EmailStr
    password: Annotated[str, StringConstraints(max_length=200)]


class Token(BaseModel):
    id: int  # the user's
    token: str  # shown once: send it as `Authorization: Bearer <token>`
    token_expires_at: str


class Registered(Token):
    email: str
    name: str


class Me(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool


class SignedOut(BaseModel):
    status: str


@bp.post("/users")
@api.operation({201: Registered}, body=NewUser, errors=[400, 409, 429], tags=["users"])
@rate_limited("register")
def register():
    """Register; answers the user and a first token."""
    body = parse(NewUser)
    try:
        with transaction("api") as session:
            user = User(email=body.email.lower(), name=body.name, password_hash=generate_password_hash(body.password))
            session.add(user)
            session.flush()
            token = issue_token(session, user.id)
    except IntegrityError:
        raise ApiError(409, f"a user with email {body.email} already exists") from None
    return Registered(id=user.id, email=user.email, name=user.name, **token), 201


@bp.post("/tokens")
@api.operation({201: Token}, body=SignIn, errors=[400, 401, 429], tags=["users"])
@rate_limited("sign_in")
@rate_limited("sign_in", key=sign_in_email)
def sign_in():
    """Email and password for a new token; the same answer whether the email or the password is wrong."""
    body = parse(SignIn)
    with transaction("api") as session:
        user = session.scalars(sa.select(User).where(User.email == body.email.lower())).first()
        password_hash = user.password_hash if user is not None else None
        matches = check_password_hash(password_hash if password_hash is not None else _NO_USER, body.password)
        if user is None or password_hash is None or not matches:
            raise ApiError(401, "wrong email or password")
        return Token(id=user.id, **issue_token(session, user.id)), 201


@bp.post("/logout")
@api.operation({200: SignedOut}, auth=True, tags=["users"])
@authenticated
def logout():
    """Revoke the token this request carries."""
    revoke(current_token_hash())
    return SignedOut(status="signed out")


@bp.get("/me")
@api.operation({200: Me}, auth=True, tags=["users"])
@authenticated
def me():
    """The signed-in user."""
    with transaction("api") as session:
        user = session.get(User, g.user_id)
        assert user is not None  # a live token's (users are never deleted)
        return Me(id=user.id, email=user.email, name=user.name, is_admin=user.is_admin)


def create_admin(email: str, name: str) -> tuple[int, str]:
    """Create an admin, or make an existing user one, with a new token: returns the user id and the token.
    Promoting revokes the user's other tokens, so whoever registered that email before cannot act as the
    admin with a token they held. Raises ValueError for an invalid email or name."""
    valid = NewAdmin(email=email.strip(), name=name.strip())
    with transaction("api") as session:
        user = session.scalars(sa.select(User).where(User.email == valid.email.lower()).with_for_update()).first()
        if user is None:
            user = User(email=valid.email.lower(), name=valid.name, is_admin=True)
            session.add(user)
            session.flush()
        else:
            user.is_admin = True
            session.execute(sa.update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                            .values(revoked_at=sa.func.now()))
        return user.id, issue_token(session, user.id)["token"]
