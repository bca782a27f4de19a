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
from decimal import Decimal, InvalidOperation

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class WebhookRejected(Exception):
    """The request is not a genuine, well-formed provider notification."""


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


def stripe_payment(payload: str) -> Payment | None:
    """The payment in a Stripe event, or None for event types we do not act on."""
    event = json.loads(payload)
    obj = event.get("data", {}).get("object", {})
    metadata = obj.get("metadata") or {}
    if event["type"] == "payment_intent.succeeded":
        return Payment(metadata.get("order_reference", ""), int(obj.get("amount_received", -1)),
                       str(obj.get("currency", "")).upper(), str(obj.get("id", "")), True)
    if event["type"].startswith("checkout.session.") and obj.get("payment_status") == "paid":
        reference = obj.get("client_reference_id") or metadata.get("order_reference", "")
        return Payment(reference, int(obj.get("amount_total", -1)), str(obj.get("currency", "")).upper(),
                       str(obj.get("payment_intent") or obj.get("id", "")), True)
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


def paytm_payment(payload: str) -> Payment:
    params = json.loads(payload)
    return Payment(params["ORDERID"], _minor(params["TXNAMOUNT"]), params.get("CURRENCY", "INR").upper(),
                   params["TXNID"], params["STATUS"] == "TXN_SUCCESS",
                   f"{params['STATUS']}: {params.get('RESPMSG', '')}".strip())


# --- M-Pesa (Daraja STK push callback) ------------------------------------------------------

def verify_mpesa(body: bytes) -> Received:
    """Daraja callbacks are unsigned: the secret in the URL and a known checkout id are the check."""
    outer = _json_object(body).get("Body")
    callback = outer.get("stkCallback") if isinstance(outer, dict) else None
    if not isinstance(callback, dict) or not isinstance(callback.get("CheckoutRequestID"), str):
        raise WebhookRejected("not a Daraja STK callback (Body.stkCallback.CheckoutRequestID missing)")
    if not isinstance(callback.get("ResultCode"), int):
        raise WebhookRejected("Daraja STK callback without an integer ResultCode")
    return Received(callback["CheckoutRequestID"], f"stk.result.{callback['ResultCode']}", body.decode())


def mpesa_payment(payload: str) -> Payment:
    callback = json.loads(payload)["Body"]["stkCallback"]
    items = {i.get("Name"): i.get("Value") for i in (callback.get("CallbackMetadata") or {}).get("Item", [])}
    succeeded = callback["ResultCode"] == 0
    amount = _minor(str(items["Amount"])) if succeeded and "Amount" in items else -1
    return Payment(callback["CheckoutRequestID"], amount, "KES", str(items.get("MpesaReceiptNumber", "")),
                   succeeded, str(callback.get("ResultDesc", "")))


PAYMENT_READERS = {"stripe": stripe_payment, "paytm": paytm_payment, "mpesa": mpesa_payment}


def _json_object(body: bytes) -> dict:
    try:
        value = json.loads(body.decode("utf-8"))  # providers send UTF-8; anything else is refused
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookRejected(f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WebhookRejected("body is not a JSON object")
    return value


def _minor(amount: str) -> int:
    """'100.50' -> 10050; amounts with more than two decimals are refused, never rounded."""
    try:
        value = Decimal(amount) * 100
    except InvalidOperation:
        return -1
    return int(value) if value == value.to_integral_value() and value >= 0 else -1
