"""Paytm: the CHECKSUMHASH as Paytm's own library makes it, and the payment in a transaction notification."""

import base64
import hashlib
import hmac
import json
import secrets
from decimal import Decimal

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from services.api.payments.common import (
    Payment,
    Received,
    Strict,
    TextAmount,
    WebhookRejected,
    minor_units,
    read_as,
    stored_json,
)

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
    note = read_as(PaytmNotification, stored_json(payload), "Paytm notification")
    return Payment(note.ORDERID, minor_units(Decimal(note.TXNAMOUNT)), note.CURRENCY.upper(), note.TXNID,
                   note.STATUS == "TXN_SUCCESS", f"{note.STATUS}: {note.RESPMSG}".strip())


