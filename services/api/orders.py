"""The buyer's cart and checkout: an order that waits for the provider's webhook."""

import secrets
from typing import Literal

from flask import Blueprint, g
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.api.http import ApiError, Body, api, authenticated, parse
from services.api.models import CartItem, Order, OrderLine, Product, ProductStatus
from shared.db import insert_ignore, transaction

bp = Blueprint("orders", __name__)


class NewCartItem(Body):
    product_id: int


class Checkout(Body):
    provider: Literal["stripe", "paytm", "mpesa"]
    phone: str | None = Field(default=None, pattern=r"^2547\d{8}$")


class CartLine(BaseModel):
    product_id: int
    title: str
    price_minor: int
    currency: str


class Cart(BaseModel):
    items: list[CartLine]


class OrderLineOut(BaseModel):
    product_id: int
    title: str
    price_minor: int


class OrderOut(BaseModel):
    id: int
    reference: str
    status: str
    provider: str
    provider_checkout_id: str | None  # M-Pesa: the CheckoutRequestID its callback echoes
    total_minor: int
    currency: str
    paid_at: str | None
    lines: list[OrderLineOut]

    @classmethod
    def of(cls, o: Order) -> "OrderOut":
        return cls(id=o.id, reference=o.reference, status=o.status, provider=o.provider,
                   provider_checkout_id=o.provider_checkout_id, total_minor=o.total_minor, currency=o.currency,
                   paid_at=o.paid_at.isoformat() if o.paid_at else None,
                   lines=[OrderLineOut(product_id=ln.product_id, title=ln.title, price_minor=ln.price_minor)
                          for ln in o.lines])


@bp.get("/cart")
@api.operation({200: Cart}, auth=True, tags=["orders"])
@authenticated
def get_cart():
    """The buyer's cart."""
    with transaction("api") as session:
        return _cart_out(_cart(session))


@bp.post("/cart/items")
@api.operation({201: Cart}, body=NewCartItem, auth=True, errors=[404, 409], tags=["orders"])
@authenticated
def add_to_cart():
    """Put an approved product in the cart (adding it twice keeps one)."""
    body = parse(NewCartItem)
    with transaction("api") as session:
        product = session.get(Product, body.product_id)
        if product is None:
            raise ApiError(404, f"product {body.product_id} does not exist")
        if product.status != ProductStatus.APPROVED:
            raise ApiError(409, f"product {body.product_id} is not approved for sale (status: {product.status})")
        # Two adds of the same item at once: the second finds the first's row, not a constraint error.
        insert_ignore(session, CartItem.__table__, buyer_id=g.user_id, product_id=body.product_id)
        return _cart_out(_cart(session)), 201


@bp.delete("/cart/items/<int:product_id>")
@api.operation({200: Cart}, auth=True, errors=[404], tags=["orders"])
@authenticated
def remove_from_cart(product_id: int):
    """Take a product out of the cart (absent already: the same answer)."""
    with transaction("api") as session:
        item = session.get(CartItem, (g.user_id, product_id))
        if item is not None:
            session.delete(item)
            session.flush()
        return _cart_out(_cart(session))


@bp.post("/orders")
@api.operation({201: OrderOut}, body=Checkout, auth=True, errors=[409], tags=["orders"])
@authenticated
def checkout():
    """Freeze the cart into a pending order; the provider's webhook will mark it paid."""
    body = parse(Checkout)
    if body.provider == "mpesa" and not body.phone:
        raise ApiError(400, "M-Pesa checkout needs a phone number (2547XXXXXXXX)")
    with transaction("api") as session:
        items = _cart(session)
        if not items:
            raise ApiError(409, "the cart is empty")
        _lock_products(session, [i.product_id for i in items])
        withdrawn = [i.product_id for i in items if i.product.status != ProductStatus.APPROVED]
        if withdrawn:
            raise ApiError(409, f"products {withdrawn} are no longer for sale; remove them from the cart")
        currencies = {i.product.currency for i in items}
        if len(currencies) > 1:
            raise ApiError(409, f"the cart mixes currencies {sorted(currencies)}; check out one at a time")
        order = Order(reference=f"ord_{secrets.token_hex(12)}", buyer_id=g.user_id, provider=body.provider,
                      currency=currencies.pop(), total_minor=sum(i.product.price_minor for i in items),
                      lines=[OrderLine(product_id=i.product_id, seller_id=i.product.seller_id,
                                       title=i.product.title, price_minor=i.product.price_minor,
                                       file_key=i.product.file_key, file_sha256=i.product.file_sha256)
                             for i in items])
        if body.provider == "mpesa":
            # The STK push request to Daraja answers with this id; the callback must echo it.
            order.provider_checkout_id = f"ws_CO_{secrets.token_hex(10)}"
        session.add(order)
        session.flush()
        return OrderOut.of(order), 201


@bp.get("/orders/<int:order_id>")
@api.operation({200: OrderOut}, auth=True, errors=[404], tags=["orders"])
@authenticated
def get_order(order_id: int):
    """One of the buyer's orders, with its lines and whether it is paid."""
    with transaction("api") as session:
        order = session.get(Order, order_id)
        if order is None or order.buyer_id != g.user_id:
            raise ApiError(404, f"order {order_id} does not exist")
        return OrderOut.of(order)


def _lock_products(session, product_ids: list[int]) -> None:
    """Lock and re-read the products being bought, so that an upload replacing one of their files waits for
    this order's lines (which pin the file) or this order sees the product back in review."""
    session.execute(select(Product).where(Product.id.in_(product_ids)).order_by(Product.id).with_for_update()
                    .execution_options(populate_existing=True)).all()


def _cart(session) -> list[CartItem]:
    return list(session.scalars(select(CartItem).where(CartItem.buyer_id == g.user_id)
                                .order_by(CartItem.added_at, CartItem.product_id)))


def _cart_out(items: list[CartItem]) -> Cart:
    return Cart(items=[CartLine(product_id=i.product_id, title=i.product.title, price_minor=i.product.price_minor,
                                currency=i.product.currency) for i in items])
