"""The api's background work as plain functions: (session, ...) -> effect."""

import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.api.models import ORDER, WEBHOOK, CartItem, Order, OrderStatus, User, WebhookEvent, WebhookStatus
from services.api.payments import PAYMENT_READERS, InvalidPayment
from shared.contracts import PurchaseCompleted, PurchaseLine
from shared.messaging import PermanentError
from shared.outbox import publish

log = logging.getLogger(__name__)


def process_webhook(session: Session, webhook_event_id: int) -> None:
    """Turn a stored notification into a paid order; safe twice: a processed event is left alone."""
    event = session.get(WebhookEvent, webhook_event_id, with_for_update=True)
    if event is None:
        raise PermanentError(f"webhook event {webhook_event_id} does not exist")
    if event.status != WebhookStatus.RECEIVED:
        return
    event.processed_at = datetime.now(UTC)
    try:
        payment = PAYMENT_READERS[event.provider](event.payload)
    except InvalidPayment as exc:  # the provider signed it: sending it again would not change it
        return _reject(event, str(exc))
    if payment is None:
        event.status, event.detail = WEBHOOK(event.status, WebhookStatus.IGNORED), f"{event.event_type} needs no action"
        return
    column = Order.provider_checkout_id if event.provider == "mpesa" else Order.reference
    order = session.scalars(sa.select(Order).where(column == payment.reference).with_for_update()).first()
    problem = _mismatch(order, payment, event.provider)
    if problem:
        return _reject(event, problem)
    assert order is not None  # else `_mismatch` names the problem
    event.status = WEBHOOK(event.status, WebhookStatus.PROCESSED)
    if order.status == OrderStatus.PAID:
        event.detail = "order already paid"
    elif not payment.succeeded:
        order.status, event.detail = ORDER(order.status, OrderStatus.FAILED), f"payment failed: {payment.detail}"
    else:
        _mark_paid(session, order, payment.payment_id)
        event.detail = f"order {order.id} paid"


def _reject(event: WebhookEvent, problem: str) -> None:
    event.status, event.detail = WEBHOOK(event.status, WebhookStatus.REJECTED), problem
    log.warning("Webhook %s/%s rejected: %s.", event.provider, event.event_id, problem)


def _mismatch(order: Order | None, payment, provider: str) -> str | None:
    if order is None:
        return f"no order with reference {payment.reference!r}"
    if order.provider != provider:
        return f"order {order.id} is paid through {order.provider}, not {provider}"
    if payment.succeeded and (payment.amount_minor, payment.currency) != (order.total_minor, order.currency):
        return (f"amount {payment.amount_minor} {payment.currency} does not match order {order.id}'s "
                f"{order.total_minor} {order.currency}")
    return None


def _mark_paid(session: Session, order: Order, payment_id: str) -> None:
    order.status = ORDER(order.status, OrderStatus.PAID)
    order.provider_payment_id, order.paid_at = payment_id, datetime.now(UTC)
    buyer = session.get(User, order.buyer_id)
    assert buyer is not None  # the order's buyer (users are never deleted)
    event_id = publish(session, PurchaseCompleted(
        order_id=order.id, order_reference=order.reference, buyer_id=buyer.id, buyer_email=buyer.email,
        buyer_name=buyer.name, currency=order.currency, total_minor=order.total_minor, provider=order.provider,
        paid_at=order.paid_at,
        lines=[PurchaseLine(product_id=ln.product_id, seller_id=ln.seller_id, title=ln.title,
                            price_minor=ln.price_minor, file_key=ln.file_key, file_sha256=ln.file_sha256)
               for ln in order.lines],
    ))
    log.info("Order %s paid; purchase.completed %s written to the outbox.", order.id, event_id)


def clear_cart(session: Session, event: PurchaseCompleted) -> None:
    """Remove the purchased products from the buyer's cart; deleting twice deletes nothing more."""
    session.execute(sa.delete(CartItem).where(
        CartItem.buyer_id == event.buyer_id, CartItem.product_id.in_([ln.product_id for ln in event.lines])))
