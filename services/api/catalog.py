"""Products: a seller, a price in minor units, and the digital file a buyer downloads."""

from flask import Blueprint, g, request
from pydantic import Field
from sqlalchemy import select

from services.api import files
from services.api.http import ApiError, Body, authenticated, is_admin, optional_user, page, paged, parse
from services.api.models import Product
from shared.contracts import Currency, ProductFileUploaded
from shared.db import transaction
from shared.outbox import publish
from shared.settings import get_settings
from shared.storage import LocalStorage

bp = Blueprint("catalog", __name__)


class NewProduct(Body):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    price_minor: int = Field(gt=0, le=10**12)
    currency: Currency


def product_json(p: Product) -> dict:
    return {"id": p.id, "seller_id": p.seller_id, "title": p.title, "description": p.description,
            "price_minor": p.price_minor, "currency": p.currency, "has_file": p.file_key is not None,
            "file_sha256": p.file_sha256,
            "status": p.status, "rejection_reason": p.rejection_reason}


@bp.post("/products")
@authenticated
def create_product():
    body = parse(NewProduct)
    with transaction("api") as session:
        product = Product(seller_id=g.user_id, **body.model_dump())
        session.add(product)
        session.flush()
        return product_json(product), 201


@bp.get("/products")
def list_products():
    """The approved catalog, a page at a time; `?mine=true` (authenticated) is the seller's own products,
    whatever their status."""
    limit, offset = page()
    mine = request.args.get("mine", "").lower() == "true"
    user_id = optional_user()
    if mine and user_id is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>): ?mine=true lists your products")
    condition = Product.seller_id == user_id if mine else Product.status == "approved"
    with transaction("api") as session:
        found, next_offset = paged(session, select(Product).where(condition).order_by(Product.id), limit, offset)
        return {"products": [product_json(p) for p in found], "next_offset": next_offset}


@bp.get("/products/<int:product_id>")
def get_product(product_id: int):
    """An approved product to anyone; a pending or rejected one only to its seller and admins."""
    user_id = optional_user()
    with transaction("api") as session:
        product = _product(session, product_id)
        if product.status != "approved" and product.seller_id != user_id and not is_admin(session, user_id):
            raise ApiError(404, f"product {product_id} does not exist")
        return product_json(product)


@bp.put("/products/<int:product_id>/file")
@authenticated
def upload_file(product_id: int):
    """Stream the product's file into storage under a content-addressed key; media learns of it by message.
    Whether the caller may upload at all is settled before a byte of the body is read."""
    storage = LocalStorage(get_settings().storage_dir)
    with transaction("api") as session:
        files.check_room(session, storage, _own_product(session, product_id))
    upload = files.receive(storage)
    try:
        with transaction("api") as session:
            product, replaced = files.store(session, storage, product_id, upload)
            publish(session, ProductFileUploaded(
                product_id=product_id, storage_key=product.file_key, filename=upload.filename,
                content_type=upload.content_type, size_bytes=upload.size, sha256=upload.sha256))
            body = product_json(product)
    except BaseException:
        upload.undo(storage)
        raise
    if replaced:
        with transaction("api") as session:
            files.delete_unless_referenced(session, storage, product_id, replaced)
    return body


def _own_product(session, product_id: int) -> Product:
    product = _product(session, product_id)
    if product.seller_id != g.user_id:
        raise ApiError(403, "only the product's seller can upload its file")
    return product


def _product(session, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise ApiError(404, f"product {product_id} does not exist")
    return product
