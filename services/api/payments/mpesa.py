"""M-Pesa: Daraja's STK push callback (unsigned: the secret URL and a known checkout id are the check)."""

from typing import Any

from services.api.payments.common import (
    InvalidPayment,
    JsonAmount,
    Payment,
    Received,
    Strict,
    WebhookRejected,
    json_object,
    minor_units,
    read_as,
    stored_json,
)


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
        callback = read_as(MpesaCallback, json_object(body), "Daraja STK callback").Body.stkCallback
        _mpesa_payment(callback)
    except InvalidPayment as exc:
        raise WebhookRejected(str(exc)) from None
    return Received(callback.CheckoutRequestID, f"stk.result.{callback.ResultCode}", body.decode())


def mpesa_payment(payload: str) -> Payment:
    return _mpesa_payment(read_as(MpesaCallback, stored_json(payload), "Daraja STK callback").Body.stkCallback)


def _mpesa_payment(callback: StkCallback) -> Payment:
    if callback.ResultCode != 0:
        return Payment(callback.CheckoutRequestID, -1, "KES", "", False, callback.ResultDesc)
    items = {i.Name: i.Value for i in (callback.CallbackMetadata.Item if callback.CallbackMetadata else [])}
    paid = read_as(MpesaPaid, items, "Daraja STK callback item")
    return Payment(callback.CheckoutRequestID, minor_units(paid.Amount), "KES", paid.MpesaReceiptNumber, True,
                   callback.ResultDesc)


