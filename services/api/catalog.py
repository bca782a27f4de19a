"""Products: a seller, a price in minor units, and the digital file a buyer downloads."""

from flask import Blueprint, g, request
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.api import files
from services.api.http import ApiError, authenticated, parse
from services.api.models import Product
from shared.contracts import Currency, ProductFileUploaded
from shared.db import transaction
from shared.outbox import publish
from shared.settings import get_settings
from shared.storage import LocalStorage

bp = Blueprint("catalog", __name__)


class NewProduct(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    price_minor: int = Field(gt=0, le=10**12)
    currency: Currency


def product_json(p: Product) -> dict:
    return {"id": p.id, "seller_id": p.seller_id, "title": p.title, "description": p.description,
            "price_minor": p.price_minor, "currency": p.currency, "has_file": p.file_key is not None,
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
    """The approved catalog; `?mine=true` (authenticated) is the seller's own products, whatever their status."""
    if request.args.get("mine", "").lower() == "true":
        return _my_products()
    return _products(Product.status == "approved")


@authenticated
def _my_products():
    return _products(Product.seller_id == g.user_id)


def _products(condition) -> dict:
    with transaction("api") as session:
        found = session.scalars(select(Product).where(condition).order_by(Product.id))
        return {"products": [product_json(p) for p in found]}


@bp.get("/products/<int:product_id>")
def get_product(product_id: int):
    with transaction("api") as session:
        return product_json(_product(session, product_id))


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
        storage.delete(replaced)
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
