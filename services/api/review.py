"""Product review: an admin approves or rejects a product; the seller is told in the app and by email."""

from typing import Annotated

import sqlalchemy as sa
from flask import Blueprint, g
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from services.api import files
from services.api.catalog import product_json
from services.api.http import ApiError, Body, authenticated, parse
from services.api.models import Notification, Product, User
from shared.contracts import ProductApproved, ProductRejected
from shared.db import transaction
from shared.outbox import publish

bp = Blueprint("review", __name__)


class Rejection(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


@bp.post("/admin/products/<int:product_id>/approve")
@authenticated
def approve(product_id: int):
    with transaction("api") as session:
        product, seller = _decide(session, product_id, "approved")
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
        product, seller = _decide(session, product_id, "rejected", body.reason)
        notify(session, seller.id, "product_rejected", f'Your product "{product.title}" was rejected',
               f"Reason: {body.reason}", {"product_id": product.id, "reason": body.reason})
        publish(session, ProductRejected(product_id=product.id, title=product.title, seller_id=seller.id,
                                         seller_email=seller.email, seller_name=seller.name, reason=body.reason))
        return product_json(product)


def _require_admin(session: Session) -> None:
    if not session.get(User, g.user_id).is_admin:
        raise ApiError(403, "only an admin can review products")


def _decide(session: Session, product_id: int, decision: str, reason: str | None = None) -> tuple[Product, User]:
    """Record the decision in one conditional update, so that of concurrent equal decisions exactly one takes
    effect (and notifies the seller); 403 unless the caller is an admin, 404 if unknown, 409 if already made."""
    _require_admin(session)
    changed = session.execute(
        sa.update(Product).where(Product.id == product_id, Product.status != decision)
        .values(status=decision, rejection_reason=reason).execution_options(synchronize_session=False)).rowcount
    product = session.get(Product, product_id, populate_existing=True)
    if product is None:
        raise ApiError(404, f"product {product_id} does not exist")
    if not changed:
        raise ApiError(409, f"product {product_id} is already {decision}")
    return product, session.get(User, product.seller_id)


def notify(session: Session, user_id: int, kind: str, title: str, body: str, data: dict) -> None:
    """Write an in-app notification (the database channel) in the caller's transaction."""
    session.add(Notification(user_id=user_id, kind=kind, title=title[:300], body=body, data=data))
