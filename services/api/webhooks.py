"""Payment webhooks: verify, store the raw event once, answer at once; an actor does the rest."""

import hmac
import logging
import time

from flask import Blueprint, request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.api.http import ApiError, api
from services.api.models import Order, OrderStatus, WebhookEvent
from services.api.payments import STRIPE_EVENTS, Received, WebhookRejected, verify_mpesa, verify_paytm, verify_stripe
from services.api.payments.mpesa import MpesaCallback
from services.api.payments.paytm import PaytmNotification
from services.api.payments.stripe import StripeEvent
from shared.db import transaction
from shared.outbox import insert_and_send
from shared.settings import get_settings

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)


class Acknowledged(BaseModel):
    status: str  # accepted, duplicate (stored before: nothing done) or ignored (a type that needs no action)
    event_id: str | None = Field(default=None, exclude_if=lambda value: value is None)  # accepted, duplicate
    reason: str | None = Field(default=None, exclude_if=lambda value: value is None)  # ignored


class MpesaAcknowledged(Acknowledged):
    ResultCode: int
    ResultDesc: str


class PaytmForm(PaytmNotification):
    CHECKSUMHASH: str


@bp.post("/stripe")
@api.operation({200: Acknowledged}, body=StripeEvent, errors=[400, 411], tags=["webhooks"])
def stripe():
    """A Stripe event, signed in the `Stripe-Signature` header with the endpoint's secret."""
    settings = get_settings()
    received = _verified(lambda: verify_stripe(_body(), request.headers.get("Stripe-Signature"),
                                               settings.stripe_webhook_secret, settings.stripe_tolerance_seconds,
                                               time.time()))
    if received.event_type not in STRIPE_EVENTS:
        return Acknowledged(status="ignored", reason=f"{received.event_type} needs no action")
    return _store("stripe", received)


@bp.post("/paytm")
@api.operation({200: Acknowledged}, form=PaytmForm, errors=[400, 411, 413], tags=["webhooks"])
def paytm():
    """A Paytm payment notification (form fields), signed by its CHECKSUMHASH."""
    _body()  # enforces the size limit before the form is parsed
    received = _verified(lambda: verify_paytm(request.form.to_dict(), get_settings().paytm_merchant_key))
    return _store("paytm", received)


@bp.post("/mpesa/<secret>")
@api.operation({200: MpesaAcknowledged}, body=MpesaCallback, errors=[400, 404, 411], tags=["webhooks"])
def mpesa(secret: str):
    """An M-Pesa STK push callback, at the secret URL given to Daraja; it answers in Daraja's own shape."""
    if not hmac.compare_digest(secret.encode(), get_settings().mpesa_callback_secret.encode()):
        raise ApiError(404, "unknown callback URL")
    received = _verified(lambda: verify_mpesa(_body()))
    with transaction("api") as session:
        pending = session.scalar(select(Order.id).where(Order.provider_checkout_id == received.event_id,
                                                        Order.status == OrderStatus.PENDING))
        seen = session.scalar(select(WebhookEvent.id).where(WebhookEvent.provider == "mpesa",
                                                            WebhookEvent.event_id == received.event_id))
    if pending is None and seen is None:
        raise ApiError(404, f"no pending checkout request {received.event_id}")
    return MpesaAcknowledged(**_store("mpesa", received).model_dump(), ResultCode=0, ResultDesc="Accepted")


def _body() -> bytes:
    limit = get_settings().webhook_max_bytes
    if request.content_length is None:
        raise ApiError(411, "a Content-Length header is required")
    if request.content_length > limit:
        raise ApiError(413, f"webhook body larger than {limit} bytes")
    return request.get_data(cache=True)


def _verified(verify) -> Received:
    try:
        return verify()
    except WebhookRejected as exc:
        # The rule, not the path: the M-Pesa path holds the callback secret.
        assert request.url_rule is not None  # the request reached a view through its rule
        log.warning("Rejected a %s webhook: %s.", request.url_rule.rule, exc)
        raise ApiError(400, str(exc)) from None


def _store(provider: str, received: Received) -> Acknowledged:
    """Store once per (provider, event id) and queue processing in the same commit."""
    # A plain INSERT rather than the ORM's unit of work, which was a quarter of a webhook's CPU.
    values = {"provider": provider, "event_id": received.event_id, "event_type": received.event_type,
              "payload": received.payload}
    try:
        stored_id = insert_and_send("api", WebhookEvent.__table__, values, "webhook_event_id", "api.webhooks",
                                    "api.process_webhook")
    except IntegrityError:
        log.info("Duplicate %s webhook %s acknowledged; nothing done.", provider, received.event_id)
        return Acknowledged(status="duplicate", event_id=received.event_id)
    log.info("Stored %s webhook %s as #%s.", provider, received.event_id, stored_id)
    return Acknowledged(status="accepted", event_id=received.event_id)
