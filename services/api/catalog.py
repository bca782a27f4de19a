"""Products: a seller, a price in minor units, and the digital file a buyer downloads."""

from flask import Blueprint, g
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.api import files
from services.api.http import ApiError, Body, Page, api, authenticated, is_admin, optional_user, paged, parse, query
from services.api.models import Product, ProductStatus
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


class ProductOut(BaseModel):
    id: int
    seller_id: int
    title: str
    description: str
    price_minor: int
    currency: str
    has_file: bool
    file_sha256: str | None
    status: str
    rejection_reason: str | None

    @classmethod
    def of(cls, p: Product) -> "ProductOut":
        return cls(id=p.id, seller_id=p.seller_id, title=p.title, description=p.description,
                   price_minor=p.price_minor, currency=p.currency, has_file=p.file_key is not None,
                   file_sha256=p.file_sha256, status=p.status, rejection_reason=p.rejection_reason)


class FileUpload(BaseModel):
    file: bytes  # the product's file, as multipart/form-data


class ProductPage(BaseModel):
    products: list[ProductOut]
    next_offset: int | None


class Catalog(Page):
    mine: bool = False  # the caller's own products, whatever their status (needs a token)


@bp.post("/products")
@api.operation({201: ProductOut}, body=NewProduct, auth=True, tags=["catalog"])
@authenticated
def create_product():
    """Offer a product for sale; it is listed once an admin approves it."""
    body = parse(NewProduct)
    with transaction("api") as session:
        product = Product(seller_id=g.user_id, **body.model_dump())
        session.add(product)
        session.flush()
        return ProductOut.of(product), 201


@bp.get("/products")
@api.operation({200: ProductPage}, query=Catalog, tags=["catalog"])
def list_products():
    """The approved catalog, a page at a time; `?mine=true` (authenticated) is the seller's own products,
    whatever their status."""
    asked = query(Catalog)
    mine, limit, offset = asked.mine, asked.limit, asked.offset
    user_id = optional_user()
    if mine and user_id is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>): ?mine=true lists your products")
    condition = Product.seller_id == user_id if mine else Product.status == ProductStatus.APPROVED
    with transaction("api") as session:
        found, next_offset = paged(session, select(Product).where(condition).order_by(Product.id), limit, offset)
        return ProductPage(products=[ProductOut.of(p) for p in found], next_offset=next_offset)


@bp.get("/products/<int:product_id>")
@api.operation({200: ProductOut}, errors=[404], tags=["catalog"])
def get_product(product_id: int):
    """An approved product to anyone; a pending or rejected one only to its seller and admins."""
    user_id = optional_user()
    with transaction("api") as session:
        product = _product(session, product_id)
        if product.status != ProductStatus.APPROVED and product.seller_id != user_id and not is_admin(session, user_id):
            raise ApiError(404, f"product {product_id} does not exist")
        return ProductOut.of(product)


@bp.put("/products/<int:product_id>/file")
@api.operation({200: ProductOut}, form=FileUpload, auth=True, errors=[400, 403, 404, 409, 413], tags=["catalog"])
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
            assert product.file_key is not None  # the upload's key, just stored
            publish(session, ProductFileUploaded(
                product_id=product_id, storage_key=product.file_key, filename=upload.filename,
                content_type=upload.content_type, size_bytes=upload.size, sha256=upload.sha256))
            body = ProductOut.of(product)
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
