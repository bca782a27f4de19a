"""Reading the payment out of a stored notification, provider by provider: what it says, or a final refusal that
names what was wrong (the operator reads it on the stored event)."""

import json

import pytest

from services.api.payments import InvalidPayment, Payment, mpesa_payment, paytm_payment, stripe_payment
from services.api.payments.common import read_as
from services.api.payments.paytm import PaytmNotification
from tests.unit.test_webhooks_mpesa import callback

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
