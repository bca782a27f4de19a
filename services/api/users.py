"""Users and their API tokens."""

from flask import Blueprint, g
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy.exc import IntegrityError

from services.api.http import ApiError, authenticated, new_token, parse
from services.api.models import User
from shared.db import transaction

bp = Blueprint("users", __name__)


class NewUser(BaseModel):
    email: EmailStr
    name: str = Field(min_length=1, max_length=120)


@bp.post("/users")
def register():
    body = parse(NewUser)
    token, token_hash = new_token()
    try:
        with transaction("api") as session:
            user = User(email=body.email.lower(), name=body.name, token_hash=token_hash)
            session.add(user)
            session.flush()
    except IntegrityError:
        raise ApiError(409, f"a user with email {body.email} already exists") from None
    return {"id": user.id, "email": user.email, "name": user.name, "token": token}, 201


@bp.get("/me")
@authenticated
def me():
    with transaction("api") as session:
        user = session.get(User, g.user_id)
        return {"id": user.id, "email": user.email, "name": user.name}
