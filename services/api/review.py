"""Product review: an admin approves or rejects a product; the seller is told in the app and by email."""

from typing import Annotated, cast

import sqlalchemy as sa
from flask import Blueprint, g, request, send_file
from pydantic import StringConstraints
from sqlalchemy.orm import Session

from services.api import files
from services.api.catalog import ProductOut, ProductPage
from services.api.http import ApiError, Body, Page, api, authenticated, is_admin, paged, parse, query
from services.api.models import PRODUCT, Notification, Product, ProductStatus, User
from shared.contracts import ProductApproved, ProductRejected
from shared.db import transaction
from shared.outbox import publish
from shared.settings import get_settings
from shared.storage import LocalStorage

bp = Blueprint("review", __name__)


class Rejection(Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class Approval(Body):
    # The version the admin reviewed (GET /admin/products/<id>/file): a file swapped since is not approved.
    file_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None


class ReviewQueue(Page):
    status: ProductStatus = ProductStatus.PENDING


@bp.get("/admin/products")
@api.operation({200: ProductPage}, query=ReviewQueue, auth=True, errors=[403], tags=["review"])
@authenticated
def review_queue():
    """Products awaiting review (`?status=` pending, the default, rejected or approved), oldest first."""
    asked = query(ReviewQueue)
    status, limit, offset = asked.status, asked.limit, asked.offset
    with transaction("api") as session:
        _require_admin(session)
        found, next_offset = paged(session, sa.select(Product).where(Product.status == status).order_by(Product.id),
                                   limit, offset)
        return ProductPage(products=[ProductOut.of(p) for p in found], next_offset=next_offset)


@bp.get("/admin/products/<int:product_id>/file")
@api.operation({200: None}, auth=True, errors=[403, 404], tags=["review"])
@authenticated
def review_file(product_id: int):
    """The product's current file, for an admin to review; never rendered by the browser."""
    with transaction("api") as session:
        _require_admin(session)
        product = session.get(Product, product_id)
        if product is None or product.file_key is None:
            raise ApiError(404, f"product {product_id} has no file")
    assert product.file_sha256 is not None  # written with its file_key
    path = LocalStorage(get_settings().storage_dir).path(product.file_key)
    return send_file(path, mimetype="application/octet-stream", as_attachment=True,
                     download_name=f"product-{product_id}-{product.file_sha256[:12]}")


@bp.post("/admin/products/<int:product_id>/approve")
@api.operation({200: ProductOut}, body=Approval, auth=True, errors=[403, 404, 409], tags=["review"])
@authenticated
def approve(product_id: int):
    """Approve; with `file_sha256`, only if the product's file is still the version reviewed."""
    with transaction("api") as session:
        _require_admin(session)
        approval = parse(Approval) if request.content_length else Approval()
        product, seller = _decide(session, product_id, ProductStatus.APPROVED,
                                  reviewed_sha256=approval.file_sha256)
        files.pin_unpinned_lines(session, product)
        notify(session, seller.id, "product_approved", f'Your product "{product.title}" was approved',
               "It is now listed in the catalog.", {"product_id": product.id})
        publish(session, ProductApproved(product_id=product.id, title=product.title, seller_id=seller.id,
                                         seller_email=seller.email, seller_name=seller.name,
                                         file_key=product.file_key, file_sha256=product.file_sha256))
        return ProductOut.of(product)


@bp.post("/admin/products/<int:product_id>/reject")
@api.operation({200: ProductOut}, body=Rejection, auth=True, errors=[403, 404, 409], tags=["review"])
@authenticated
def reject(product_id: int):
    """Reject, with the reason the seller is told."""
    with transaction("api") as session:
        _require_admin(session)
        body = parse(Rejection)
        product, seller = _decide(session, product_id, ProductStatus.REJECTED, body.reason)
        notify(session, seller.id, "product_rejected", f'Your product "{product.title}" was rejected',
               f"Reason: {body.reason}", {"product_id": product.id, "reason": body.reason})
        publish(session, ProductRejected(product_id=product.id, title=product.title, seller_id=seller.id,
                                         seller_email=seller.email, seller_name=seller.name, reason=body.reason))
        return ProductOut.of(product)


def _require_admin(session: Session) -> None:
    if not is_admin(session, g.user_id):
        raise ApiError(403, "only an admin can review products")


def _decide(session: Session, product_id: int, decision: ProductStatus, reason: str | None = None,
            reviewed_sha256: str | None = None) -> tuple[Product, User]:
    """Record the decision in one conditional update, so that of concurrent equal decisions exactly one takes
    effect (and notifies the seller), and an approval of a reviewed version holds only for that version;
    403 unless the caller is an admin, 404 if unknown, 409 if already made or the file changed."""
    _require_admin(session)
    unchanged = [Product.file_sha256 == reviewed_sha256] if reviewed_sha256 else []
    changed = cast(sa.CursorResult, session.execute(
        sa.update(Product).where(Product.id == product_id, Product.status.in_(PRODUCT.sources(decision)), *unchanged)
        .values(status=decision, rejection_reason=reason).execution_options(synchronize_session=False))).rowcount
    product = session.get(Product, product_id, populate_existing=True)
    if product is None:
        raise ApiError(404, f"product {product_id} does not exist")
    if not changed and product.status == decision:
        raise ApiError(409, f"product {product_id} is already {decision}")
    if not changed:
        raise ApiError(409, f"product {product_id}'s file is no longer the version you reviewed "
                            f"(now {product.file_sha256 or 'none'}); review it again")
    seller = session.get(User, product.seller_id)
    assert seller is not None  # the product's seller (users are never deleted)
    return product, seller


def notify(session: Session, user_id: int, kind: str, title: str, body: str, data: dict) -> None:
    """Write an in-app notification (the database channel) in the caller's transaction."""
    session.add(Notification(user_id=user_id, kind=kind, title=title[:300], body=body, data=data))
