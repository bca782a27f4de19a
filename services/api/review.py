"""Product review: an admin approves or rejects a product; the seller is told in the app and by email."""

from typing import Annotated

from flask import Blueprint, g
from pydantic import BaseModel, StringConstraints
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api import files
from services.api.catalog import product_json
from services.api.http import ApiError, authenticated, new_token, parse
from services.api.models import Notification, Product, User
from services.api.users import NewUser
from shared.contracts import ProductApproved, ProductRejected
from shared.db import transaction
from shared.outbox import publish

bp = Blueprint("review", __name__)


class Rejection(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


@bp.post("/admin/products/<int:product_id>/approve")
@authenticated
def approve(product_id: int):
    with transaction("api") as session:
        product, seller = _reviewable(session, product_id, "approved")
        product.status, product.rejection_reason = "approved", None
        files.pin_unpinned_lines(session, product)
        notify(session, seller.id, "product_approved", f'Your product "{product.title}" was approved',
               "It is now listed in the catalog.", {"product_id": product.id})
        publish(session, ProductApproved(product_id=product.id, title=product.title, seller_id=seller.id,
                                         seller_email=seller.email, seller_name=seller.name,
                                         file_key=product.file_key, file_sha256=product.file_sha256))
        return product_json(product)


@bp.post("/admin/products/<int:product_id>/reject")
@authenticated
def reject(product_id: int):
    with transaction("api") as session:
        _require_admin(session)
        body = parse(Rejection)
        product, seller = _reviewable(session, product_id, "rejected")
        product.status, product.rejection_reason = "rejected", body.reason
        notify(session, seller.id, "product_rejected", f'Your product "{product.title}" was rejected',
               f"Reason: {body.reason}", {"product_id": product.id, "reason": body.reason})
        publish(session, ProductRejected(product_id=product.id, title=product.title, seller_id=seller.id,
                                         seller_email=seller.email, seller_name=seller.name, reason=body.reason))
        return product_json(product)


def _require_admin(session: Session) -> None:
    if not session.get(User, g.user_id).is_admin:
        raise ApiError(403, "only an admin can review products")


def _reviewable(session: Session, product_id: int, decision: str) -> tuple[Product, User]:
    """The product, locked, and its seller; 403 unless the caller is an admin, 409 if already `decision`."""
    _require_admin(session)
    product = session.get(Product, product_id, with_for_update=True)
    if product is None:
        raise ApiError(404, f"product {product_id} does not exist")
    if product.status == decision:
        raise ApiError(409, f"product {product_id} is already {decision}")
    return product, session.get(User, product.seller_id)


def notify(session: Session, user_id: int, kind: str, title: str, body: str, data: dict) -> None:
    """Write an in-app notification (the database channel) in the caller's transaction."""
    session.add(Notification(user_id=user_id, kind=kind, title=title[:300], body=body, data=data))


def create_admin(email: str, name: str) -> tuple[int, str]:
    """Create an admin, or make an existing user one, with a new token: returns the user id and the token.
    Promoting replaces the user's token, so whoever registered that email before cannot act as the admin
    with the token they held. Raises ValueError for an invalid email or name."""
    valid = NewUser(email=email.strip(), name=name.strip())
    token, token_hash = new_token()
    with transaction("api") as session:
        user = session.scalars(select(User).where(User.email == valid.email.lower()).with_for_update()).first()
        if user is not None:
            user.is_admin, user.token_hash = True, token_hash
            return user.id, token
        user = User(email=valid.email.lower(), name=valid.name, token_hash=token_hash, is_admin=True)
        session.add(user)
        session.flush()
        return user.id, token
