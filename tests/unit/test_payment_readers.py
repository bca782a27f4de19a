"""Reading the payment out of a stored notification, provider by provider: what it says, or a final refusal that
names what was wrong (the operator reads it on the stored event)."""

import hashlib
import hmac
import json

import paytmchecksum
import pytest

from services.api.payments import (
    InvalidPayment,
    Payment,
    Received,
    WebhookRejected,
    mpesa_payment,
    paytm_checksum_ok,
    paytm_payment,
    paytm_sign,
    stripe_payment,
    verify_mpesa,
    verify_paytm,
    verify_stripe,
)
from services.api.payments.common import read_as
from services.api.payments.paytm import PaytmNotification
from tests.component.test_webhooks_mpesa import callback

PAYTM = {"ORDERID": "ord_1", "TXNID": "T1", "TXNAMOUNT": "25.50", "STATUS": "TXN_SUCCESS", "RESPMSG": "ok"}

READ = [
    (mpesa_payment, callback("ws_CO_1", amount=25.5),
     Payment("ws_CO_1", 2550, "KES", "NLJ7RT61SV", True, "The service request is processed successfully.")),
    (mpesa_payment, callback("ws_CO_2", result_code=1032),
     Payment("ws_CO_2", -1, "KES", "", False, "Request cancelled by user")),
    (paytm_payment, PAYTM, Payment("ord_1", 2550, "INR", "T1", True, "TXN_SUCCESS: ok")),
    (paytm_payment, PAYTM | {"STATUS": "TXN_FAILURE", "CURRENCY": "inr", "RESPMSG": ""},
     Payment("ord_1", 2550, "INR", "T1", False, "TXN_FAILURE:")),
]


@pytest.mark.parametrize(("read", "body", "payment"), READ)
def test_a_stored_notification_reads_as_its_payment(read, body, payment):
    assert read(json.dumps(body)) == payment


REFUSED = [
    (mpesa_payment, {"Body": {}}, "invalid Daraja STK callback: Body.stkCallback: Field required"),
    (mpesa_payment, callback("ws_CO_3", amount="25"),
     "invalid Daraja STK callback item: Amount: Value error, must be a JSON number"),
    (paytm_payment, {k: v for k, v in PAYTM.items() if k != "TXNID"},
     "invalid Paytm notification: TXNID: Field required"),
    (paytm_payment, PAYTM | {"TXNAMOUNT": "1e3"}, "invalid Paytm notification: TXNAMOUNT: String should match pattern"),
    (stripe_payment, {"id": "evt_1", "type": "payment_intent.succeeded"}, "invalid Stripe event: data: Field required"),
    (paytm_payment, {k: v for k, v in PAYTM.items() if k != "TXNID"} | {"TXNAMOUNT": 25.5},
     "invalid Paytm notification: TXNID: Field required; TXNAMOUNT: Input should be a valid string"),
    (stripe_payment, [], "body is not a JSON object"),
    (stripe_payment, "{", "body is not JSON: Expecting property name"),
    (stripe_payment, '{"amount": NaN}', "body is not JSON: NaN is not a JSON value"),
]


@pytest.mark.parametrize(("read", "body", "reason"), REFUSED)
def test_a_stored_notification_that_cannot_be_read_is_refused_for_good_saying_why(read, body, reason):
    with pytest.raises(InvalidPayment) as refused:
        read(body if isinstance(body, str) else json.dumps(body))
    assert str(refused.value).startswith(reason)


def test_a_value_that_is_not_an_object_at_all_is_named_as_the_body():
    with pytest.raises(InvalidPayment, match="^invalid Paytm notification: body: Input should be a valid dictionary"):
        read_as(PaytmNotification, ["ORDERID"], "Paytm notification")


# --- Stripe-Signature, checked on the raw body ------------------------------------------------------

SECRET, NOW, TOLERANCE = "whsec_test", 1_700_000_000, 300
EVENT = b'{"id": "evt_1", "type": "payment_intent.succeeded"}'


def signed(timestamp: int = NOW, body: bytes = EVENT, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_a_genuine_stripe_event_is_received_with_its_id_type_and_body():
    received = verify_stripe(EVENT, f"t={NOW},v1={signed()}", SECRET, TOLERANCE, NOW)
    assert received == Received("evt_1", "payment_intent.succeeded", EVENT.decode())


MISSING, MALFORMED = "missing Stripe-Signature header", "malformed Stripe-Signature header"
OUTSIDE = "Stripe-Signature timestamp outside the tolerance window"
UNSIGNED = "no valid v1 signature in Stripe-Signature"
HEADERS = [
    (f"t={NOW},v1={signed()}", None),
    (f" t = {NOW} , v1 = {signed()} ", None),  # spaces around the parts are allowed, as Stripe's library allows
    (f"t={NOW},v1={'0' * 64},v1={signed()},v0=old", None),  # any v1 may match (a secret being rolled)
    (f"t={NOW - TOLERANCE},v1={signed(NOW - TOLERANCE)}", None),  # at the edge of the window, both sides
    (f"t={NOW + TOLERANCE},v1={signed(NOW + TOLERANCE)}", None),
    (None, MISSING),
    ("", MISSING),
    (f"v1={signed()}", MALFORMED),
    (f"t={NOW},t={NOW},v1={signed()}", MALFORMED),
    (f"t=x{NOW},v1={signed()}", MALFORMED),
    (f"t=1{NOW:012d},v1={signed()}", MALFORMED),  # 13 digits
    (f"t={NOW}=1,v1={signed()}", MALFORMED),  # an "=" in a value belongs to the value
    (f"t={NOW}", MALFORMED),
    (f"t={NOW},v0={signed()}", MALFORMED),
    (f"t={NOW - TOLERANCE - 1},v1={signed(NOW - TOLERANCE - 1)}", OUTSIDE),
    (f"t={NOW + TOLERANCE + 1},v1={signed(NOW + TOLERANCE + 1)}", OUTSIDE),
    (f"t={NOW},v1={signed(secret='whsec_other')}", UNSIGNED),
    (f"t={NOW},v1={signed(NOW - 1)}", UNSIGNED),  # signed for another timestamp
    (f"t={NOW},v1={signed(body=EVENT + b' ')}", UNSIGNED),
    (f"t={NOW},v1={signed()}=", UNSIGNED),
]


@pytest.mark.parametrize(("header", "refusal"), HEADERS)
def test_the_stripe_signature_header_is_checked_as_stripe_documents_it(header, refusal):
    if refusal is None:
        assert verify_stripe(EVENT, header, SECRET, TOLERANCE, NOW).event_id == "evt_1"
    else:
        with pytest.raises(WebhookRejected) as refused:
            verify_stripe(EVENT, header, SECRET, TOLERANCE, NOW)
        assert str(refused.value) == refusal


@pytest.mark.parametrize("body", [b'{"type": "x"}', b'{"id": "evt_1"}', b'{"id": 1, "type": "x"}',
                                  b'{"id": "evt_1", "type": ["x"]}'])
def test_a_signed_stripe_body_without_a_string_id_and_type_is_refused(body):
    with pytest.raises(WebhookRejected) as refused:
        verify_stripe(body, f"t={NOW},v1={signed(body=body)}", SECRET, TOLERANCE, NOW)
    assert str(refused.value) == "Stripe event without id or type"


# --- the payment in a Stripe event ------------------------------------------------------------------

def event(kind: str, **data) -> str:
    return json.dumps({"id": "evt_1", "type": kind, "data": {"object": data}})


SESSION = {"id": "cs_1", "payment_status": "paid", "amount_total": 1999, "currency": "usd"}
STRIPE = [
    (event("payment_intent.succeeded", id="pi_1", amount_received=1999, currency="usd",
           metadata={"order_reference": "ord_1"}), Payment("ord_1", 1999, "USD", "pi_1", True)),
    (event("payment_intent.succeeded", id="pi_1", amount_received=0, currency="eur"),
     Payment("", 0, "EUR", "pi_1", True)),
    (event("checkout.session.completed", **SESSION, client_reference_id="ord_2", payment_intent="pi_2",
           metadata={"order_reference": "ignored"}), Payment("ord_2", 1999, "USD", "pi_2", True)),
    (event("checkout.session.async_payment_succeeded", **SESSION, metadata={"order_reference": "ord_3"}),
     Payment("ord_3", 1999, "USD", "cs_1", True)),
    (event("checkout.session.completed", **SESSION), Payment("", 1999, "USD", "cs_1", True)),
    (event("checkout.session.completed", **SESSION | {"payment_status": "unpaid"}), None),
    (event("charge.refunded", id="ch_1"), None),
]


@pytest.mark.parametrize(("payload", "payment"), STRIPE)
def test_a_stripe_event_reads_as_its_payment_or_none_when_there_is_nothing_to_do(payload, payment):
    assert stripe_payment(payload) == payment


@pytest.mark.parametrize(("payload", "reason"), [
    (event("checkout.session.completed", **SESSION | {"amount_total": None}),
     "Stripe checkout.session: a paid session without amount_total or currency"),
    (event("checkout.session.completed", **SESSION | {"currency": None}),
     "Stripe checkout.session: a paid session without amount_total or currency"),
    (event("checkout.session.completed", id="cs_1"), "invalid Stripe checkout.session: payment_status: Field required"),
    (event("payment_intent.succeeded", id="pi_1", amount_received=-1, currency="usd"),
     "invalid Stripe payment_intent: amount_received: Input should be greater than or equal to 0"),
    (event("payment_intent.succeeded", id="pi_1", amount_received=True, currency="usd"),
     "invalid Stripe payment_intent: amount_received: Input should be a valid integer"),
])
def test_a_stripe_event_whose_payment_cannot_be_read_is_refused_for_good(payload, reason):
    with pytest.raises(InvalidPayment) as refused:
        stripe_payment(payload)
    assert str(refused.value).startswith(reason)


# --- Paytm's CHECKSUMHASH, made by Paytm's own package -------------------------------------------------

KEY = "unitTestKey12345"
FORM = {"ORDERID": "ord_1", "TXNID": "T1", "TXNAMOUNT": "25.50", "STATUS": "TXN_SUCCESS", "MID": "m1",
        "BANKNAME": "null", "GATEWAYNAME": "NULL"}


def paytm_signed(form: dict, key: str = KEY) -> dict:
    return form | {"CHECKSUMHASH": paytmchecksum.generateSignature(dict(form), key)}


def test_a_genuine_paytm_notification_is_received_by_transaction_and_status_with_its_fields_sorted():
    received = verify_paytm(paytm_signed(FORM), KEY)
    assert received == Received("T1:TXN_SUCCESS", "TXN_SUCCESS", json.dumps(FORM, sort_keys=True))


GENUINE = paytm_signed(FORM)
PAYTM_REFUSED = [
    ({k: v for k, v in paytm_signed(FORM).items() if k != "CHECKSUMHASH"}, "missing CHECKSUMHASH"),
    (paytm_signed(FORM) | {"CHECKSUMHASH": ""}, "missing CHECKSUMHASH"),
    (paytm_signed(FORM) | {"TXNAMOUNT": "26.50"}, "invalid Paytm checksum"),
    (paytm_signed(FORM, key="otherMerchantKey"), "invalid Paytm checksum"),
    (paytm_signed(FORM) | {"CHECKSUMHASH": "not base64!"}, "invalid Paytm checksum"),
    (paytm_signed(FORM) | {"CHECKSUMHASH": "QUJD"}, "invalid Paytm checksum"),  # base64, not a whole AES block
    (GENUINE | {"CHECKSUMHASH": GENUINE["CHECKSUMHASH"][:8] + "!" + GENUINE["CHECKSUMHASH"][8:]},
     "invalid Paytm checksum"),  # a genuine checksum with a stray character: base64 is read strictly
    *[(paytm_signed(FORM | {field: ""}), f"Paytm notification without {field}")
      for field in ("ORDERID", "TXNID", "TXNAMOUNT", "STATUS")],
    *[(paytm_signed({k: v for k, v in FORM.items() if k != field}), f"Paytm notification without {field}")
      for field in ("ORDERID", "TXNID", "TXNAMOUNT", "STATUS")],
]


@pytest.mark.parametrize(("form", "refusal"), PAYTM_REFUSED)
def test_a_paytm_notification_is_refused_unless_its_checksum_and_fields_are_all_there(form, refusal):
    with pytest.raises(WebhookRejected) as refused:
        verify_paytm(form, KEY)
    assert str(refused.value) == refusal


def test_our_paytm_checksum_is_the_one_paytms_package_verifies_null_values_and_all():
    checksum = paytm_sign(dict(FORM), KEY)
    assert paytmchecksum.verifySignature(dict(FORM), KEY, checksum) is True
    assert paytm_checksum_ok(dict(FORM), checksum, KEY) is True
    assert paytm_checksum_ok(FORM | {"BANKNAME": "Bank"}, checksum, KEY) is False
    assert paytm_checksum_ok(dict(FORM), checksum, "otherMerchantKey") is False


# --- M-Pesa's callback, unsigned: refused here when malformed ----------------------------------------

@pytest.mark.parametrize(("body", "received"), [
    (callback("ws_CO_1"), ("ws_CO_1", "stk.result.0")),
    (callback("ws_CO_2", result_code=1032), ("ws_CO_2", "stk.result.1032")),
])
def test_a_well_formed_mpesa_callback_is_received_by_checkout_id_and_result_code(body, received):
    raw = json.dumps(body).encode()
    assert verify_mpesa(raw) == Received(*received, raw.decode())


@pytest.mark.parametrize(("body", "refusal"), [
    (b"[]", "body is not a JSON object"),
    (json.dumps({"Body": {}}).encode(), "invalid Daraja STK callback: Body.stkCallback: Field required"),
    (json.dumps(callback("ws_CO_3", amount=True)).encode(),
     "invalid Daraja STK callback item: Amount: Value error, must be a JSON number"),
    (json.dumps(callback("ws_CO_4", amount=-1)).encode(), "invalid Daraja STK callback item: Amount: Input should be"),
    (json.dumps({"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_5", "ResultCode": 0}}}).encode(),
     "invalid Daraja STK callback item: Amount: Field required"),  # paid, but without its metadata
])
def test_a_malformed_mpesa_callback_is_refused_before_it_is_stored(body, refusal):
    with pytest.raises(WebhookRejected) as refused:
        verify_mpesa(body)
    assert str(refused.value).startswith(refusal)
