"""Stripe: the Stripe-Signature header, and the payment in payment_intent and checkout.session events."""

import hashlib
import hmac
import re
from typing import Any

from services.api.payments.common import (
    Count,
    InvalidPayment,
    Payment,
    Received,
    Strict,
    WebhookRejected,
    json_object,
    read_as,
    stored_json,
)

# checkout.session.completed with payment_status "unpaid" (a delayed method) needs no action yet:
# checkout.session.async_payment_succeeded follows when the money arrives.
STRIPE_EVENTS = ("payment_intent.succeeded", "checkout.session.completed", "checkout.session.async_payment_succeeded")


def verify_stripe(body: bytes, header: str | None, secret: str, tolerance: int, now: float) -> Received:
    """Check `Stripe-Signature` as Stripe documents it, rejecting old and future timestamps alike."""
    if not header:
        raise WebhookRejected("missing Stripe-Signature header")
    pairs = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [v for k, v in pairs if k.strip() == "t"]
    signatures = [v.strip() for k, v in pairs if k.strip() == "v1"]
    if len(timestamps) != 1 or not re.fullmatch(r"[0-9]{1,12}", timestamps[0].strip()) or not signatures:
        raise WebhookRejected("malformed Stripe-Signature header")
    timestamp = int(timestamps[0])
    if abs(now - timestamp) > tolerance:
        raise WebhookRejected("Stripe-Signature timestamp outside the tolerance window")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in signatures):
        raise WebhookRejected("no valid v1 signature in Stripe-Signature")
    event = json_object(body)
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookRejected("Stripe event without id or type")
    return Received(event["id"], event["type"], body.decode())


class StripeData(Strict):
    object: dict[str, Any]


class StripeEvent(Strict):
    id: str
    type: str
    data: StripeData


class StripePaymentIntent(Strict):
    id: str
    amount_received: Count
    currency: str
    metadata: dict[str, str] | None = None


class StripeCheckoutSession(Strict):
    id: str
    payment_status: str
    amount_total: Count | None = None
    currency: str | None = None
    client_reference_id: str | None = None
    payment_intent: str | None = None
    metadata: dict[str, str] | None = None


def stripe_payment(payload: str) -> Payment | None:
    """The payment in a Stripe event, or None for event types we do not act on."""
    event = read_as(StripeEvent, stored_json(payload), "Stripe event")
    if event.type == "payment_intent.succeeded":
        intent = read_as(StripePaymentIntent, event.data.object, "Stripe payment_intent")
        return Payment((intent.metadata or {}).get("order_reference", ""), intent.amount_received,
                       intent.currency.upper(), intent.id, True)
    if event.type.startswith("checkout.session."):
        session = read_as(StripeCheckoutSession, event.data.object, "Stripe checkout.session")
        if session.payment_status != "paid":
            return None
        if session.amount_total is None or session.currency is None:
            raise InvalidPayment("Stripe checkout.session: a paid session without amount_total or currency")
        reference = session.client_reference_id or (session.metadata or {}).get("order_reference", "")
        return Payment(reference, session.amount_total, session.currency.upper(),
                       session.payment_intent or session.id, True)
    return None


