"""Payment providers' webhooks: verify what arrived (bytes in), and read the payment out of it.

Verification happens in the request, before anything is stored; reading the payment
happens later, in the api's actor, from the stored raw body.
"""

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from shared.web import json_loads


class WebhookRejected(Exception):
    """The request is not a genuine, well-formed provider notification."""


class InvalidPayment(ValueError):
    """A genuine notification whose payment cannot be read: rejecting it is final, retrying cannot help."""


class Strict(BaseModel):
    """A provider's object read by type, never converted (`bool` is not an int, "1999" not a number);
    fields we do not use are ignored, as providers add them freely."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=Strict)


def _json_number(value: object) -> object:
    # bool is an int in Python, and text would be converted by Decimal: neither is a number the provider sent.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    return value


Count = Annotated[int, Field(ge=0)]
# An amount in major units as a JSON number (read as Decimal, see _json_object): at most two decimals.
JsonAmount = Annotated[Decimal, BeforeValidator(_json_number), Field(strict=False, ge=0, decimal_places=2,
                                                                     max_digits=15)]
# A plain decimal string: no sign, exponent, spaces, Infinity/NaN or non-ASCII digits (which Decimal accepts).
TextAmount = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]


@dataclass(frozen=True)
class Received:
    event_id: str
    event_type: str
    payload: str


@dataclass(frozen=True)
class Payment:
    """What a notification says about a payment; `reference` is ours, echoed back by the provider."""

    reference: str
    amount_minor: int
    currency: str
    payment_id: str
    succeeded: bool
    detail: str = ""


# --- Stripe -------------------------------------------------------------------------------

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
    event = _json_object(body)
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
    event = _read(StripeEvent, _stored_json(payload), "Stripe event")
    if event.type == "payment_intent.succeeded":
        intent = _read(StripePaymentIntent, event.data.object, "Stripe payment_intent")
        return Payment((intent.metadata or {}).get("order_reference", ""), intent.amount_received,
                       intent.currency.upper(), intent.id, True)
    if event.type.startswith("checkout.session."):
        session = _read(StripeCheckoutSession, event.data.object, "Stripe checkout.session")
        if session.payment_status != "paid":
            return None
        if session.amount_total is None or session.currency is None:
            raise InvalidPayment("Stripe checkout.session: a paid session without amount_total or currency")
        reference = session.client_reference_id or (session.metadata or {}).get("order_reference", "")
        return Payment(reference, session.amount_total, session.currency.upper(),
                       session.payment_intent or session.id, True)
    return None


# --- Paytm --------------------------------------------------------------------------------

_PAYTM_IV = b"@@@@&&&&####$$$$"


def paytm_checksum_ok(params: dict[str, str], checksum: str, key: str) -> bool:
    """Paytm's checksum: AES-CBC(key, sha256(values sorted by key, '|'-joined, '|' salt) + salt)."""
    try:
        decryptor = _paytm_cipher(key).decryptor()
        padded = decryptor.update(base64.b64decode(checksum, validate=True)) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        decrypted = (unpadder.update(padded) + unpadder.finalize()).decode()
    except (ValueError, UnicodeDecodeError):
        return False
    return hmac.compare_digest(_paytm_hash(params, decrypted[-4:]), decrypted)


def paytm_sign(params: dict[str, str], key: str) -> str:
    """A checksum as Paytm makes one (for the demo and for local testing)."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(_paytm_hash(params, secrets.token_hex(2)).encode()) + padder.finalize()
    encryptor = _paytm_cipher(key).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def _paytm_cipher(key: str) -> Cipher:
    return Cipher(algorithms.AES(key.encode()), modes.CBC(_PAYTM_IV))


def _paytm_hash(params: dict[str, str], salt: str) -> str:
    values = "|".join("" if params[k] is None or params[k].lower() == "null" else params[k] for k in sorted(params))
    return hashlib.sha256(f"{values}|{salt}".encode()).hexdigest() + salt


def verify_paytm(form: dict[str, str], key: str) -> Received:
    params = {k: v for k, v in form.items() if k != "CHECKSUMHASH"}
    checksum = form.get("CHECKSUMHASH")
    if not checksum:
        raise WebhookRejected("missing CHECKSUMHASH")
    if not paytm_checksum_ok(params, checksum, key):
        raise WebhookRejected("invalid Paytm checksum")
    for field in ("ORDERID", "TXNID", "TXNAMOUNT", "STATUS"):
        if not params.get(field):
            raise WebhookRejected(f"Paytm notification without {field}")
    return Received(f"{params['TXNID']}:{params['STATUS']}", params["STATUS"], json.dumps(params, sort_keys=True))


class PaytmNotification(Strict):
    ORDERID: str
    TXNID: str
    TXNAMOUNT: TextAmount
    STATUS: str
    CURRENCY: str = "INR"
    RESPMSG: str = ""


def paytm_payment(payload: str) -> Payment:
    note = _read(PaytmNotification, _stored_json(payload), "Paytm notification")
    return Payment(note.ORDERID, _minor(Decimal(note.TXNAMOUNT)), note.CURRENCY.upper(), note.TXNID,
                   note.STATUS == "TXN_SUCCESS", f"{note.STATUS}: {note.RESPMSG}".strip())


# --- M-Pesa (Daraja STK push callback) ------------------------------------------------------

class MpesaItem(Strict):
    Name: str
    Value: Any = None


class MpesaMetadata(Strict):
    Item: list[MpesaItem]


class StkCallback(Strict):
    CheckoutRequestID: str
    ResultCode: int
    ResultDesc: str = ""
    CallbackMetadata: MpesaMetadata | None = None


class MpesaBody(Strict):
    stkCallback: StkCallback


class MpesaCallback(Strict):
    Body: MpesaBody


class MpesaPaid(Strict):
    """The items of a successful callback."""

    Amount: JsonAmount
    MpesaReceiptNumber: str = ""


def verify_mpesa(body: bytes) -> Received:
    """Daraja callbacks are unsigned: the secret in the URL and a known checkout id are the check, and
    anything malformed is refused here, before it is stored."""
    try:
        callback = _read(MpesaCallback, _json_object(body), "Daraja STK callback").Body.stkCallback
        _mpesa_payment(callback)
    except InvalidPayment as exc:
        raise WebhookRejected(str(exc)) from None
    return Received(callback.CheckoutRequestID, f"stk.result.{callback.ResultCode}", body.decode())


def mpesa_payment(payload: str) -> Payment:
    return _mpesa_payment(_read(MpesaCallback, _stored_json(payload), "Daraja STK callback").Body.stkCallback)


def _mpesa_payment(callback: StkCallback) -> Payment:
    if callback.ResultCode != 0:
        return Payment(callback.CheckoutRequestID, -1, "KES", "", False, callback.ResultDesc)
    items = {i.Name: i.Value for i in (callback.CallbackMetadata.Item if callback.CallbackMetadata else [])}
    paid = _read(MpesaPaid, items, "Daraja STK callback item")
    return Payment(callback.CheckoutRequestID, _minor(paid.Amount), "KES", paid.MpesaReceiptNumber, True,
                   callback.ResultDesc)


PAYMENT_READERS = {"stripe": stripe_payment, "paytm": paytm_payment, "mpesa": mpesa_payment}


def _json_object(body: bytes) -> dict:
    """The body as a JSON object; fractions are read as Decimal, exactly as sent."""
    try:
        value = json_loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:  # providers send UTF-8; anything else is refused
        raise WebhookRejected(f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WebhookRejected("body is not a JSON object")
    return value


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON value")


def _stored_json(payload: str) -> dict:
    """A stored body: it was read once at the edge, so failing now is final."""
    try:
        return _json_object(payload.encode())
    except WebhookRejected as exc:
        raise InvalidPayment(str(exc)) from None


def _read(model: type[M], value: object, what: str) -> M:
    """`value` as `model`, or an InvalidPayment naming each bad field."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidPayment(f"invalid {what}: {problems}") from None


def _minor(amount: Decimal) -> int:
    """25.50 -> 2550; the types above already allow at most two decimals."""
    return int(amount * 100)
