"""Bad webhook bodies, one table: signed but malformed ones are rejected for good, the rest get a 4xx.

A signed body is the provider's word: it is stored, then marked rejected with its reason (never retried,
never a failed job). An unreadable or unsigned-and-malformed body is refused at the edge: nothing stored.
Either way no order is paid.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

import paytmchecksum
import pytest

from shared.settings import get_settings
from tests.component.system import stripe_event, stripe_headers

DEEP = "[" * 5000 + "]" * 5000
CURRENCY = {"stripe": "USD", "paytm": "INR", "mpesa": "KES"}


@dataclass(frozen=True)
class Case:
    provider: str
    body: Callable[[dict], object]  # order -> a JSON text (Stripe, M-Pesa) or the form fields (Paytm)
    status: int
    rejected_for: str | None  # a fragment of the stored event's detail; None: nothing may be stored


# --- how bodies are built -------------------------------------------------------------------

def checkout(**fields) -> Callable[[dict], str]:
    """A paid checkout.session.completed for the order, with `fields` of its session object replaced."""
    def build(order: dict) -> str:
        event = stripe_event(order, "checkout.session.completed")
        event["data"]["object"].update(fields)
        return json.dumps(event)
    return build


def intent(**fields) -> Callable[[dict], str]:
    """A payment_intent.succeeded for the order, with `fields` of its payment intent replaced."""
    def build(order: dict) -> str:
        event = stripe_event(order)
        event["data"]["object"].update(fields)
        return json.dumps(event)
    return build


def stripe_data(data) -> Callable[[dict], str]:
    def build(order: dict) -> str:
        return json.dumps(stripe_event(order) | {"data": data})
    return build


def stripe_raw(text: str) -> Callable[[dict], str]:
    return lambda order: text


def stripe_nested_in_object(order: dict) -> str:
    return json.dumps(stripe_event(order))[:-1] + ', "extra": ' + DEEP + "}"


def paytm(amount: str) -> Callable[[dict], dict]:
    def build(order: dict) -> dict:
        params = {"ORDERID": order["reference"], "TXNID": "20240101111212800110168", "TXNAMOUNT": amount,
                  "STATUS": "TXN_SUCCESS", "CURRENCY": "INR", "RESPMSG": "Txn Success"}
        return params | {"CHECKSUMHASH": paytmchecksum.generateSignature(dict(params),
                                                                          get_settings().paytm_merchant_key)}
    return build


MISSING = object()


def mpesa(result_code=0, amount=25.0, items=None) -> Callable[[dict], str]:
    """A Daraja STK callback for the order: `amount` is the Amount item's value (MISSING leaves the item
    out), `items` replaces the whole item list."""
    def build(order: dict) -> str:
        listed = [{"Name": "Amount", "Value": amount}] if amount is not MISSING else []
        listed.append({"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"})
        stk = {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": order["provider_checkout_id"],
               "ResultCode": result_code, "ResultDesc": "processed",
               "CallbackMetadata": {"Item": listed if items is None else items}}
        return json.dumps({"Body": {"stkCallback": stk}})
    return build


def mpesa_nested_in_object(order: dict) -> str:
    return '{"Body": {"stkCallback": ' + DEEP + "}}"


CASES = {
    # Stripe: signed, so a malformed payment is stored and rejected for good.
    "stripe amount_total is text": Case("stripe", checkout(amount_total="abc"), 200, "amount_total"),
    "stripe amount_total is null": Case("stripe", checkout(amount_total=None), 200, "amount_total"),
    "stripe amount_total is a list": Case("stripe", checkout(amount_total=[2500]), 200, "amount_total"),
    "stripe amount_total is digits in a string": Case("stripe", checkout(amount_total="2500"), 200,
                                                      "amount_total"),
    "stripe amount_total has a fraction": Case("stripe", checkout(amount_total=2500.7), 200, "amount_total"),
    "stripe amount_total is a boolean": Case("stripe", checkout(amount_total=True), 200, "amount_total"),
    "stripe amount_total is negative": Case("stripe", checkout(amount_total=-2500), 200, "amount_total"),
    "stripe amount_received is digits in a string": Case("stripe", intent(amount_received="2500"), 200,
                                                          "amount_received"),
    "stripe currency is a number": Case("stripe", intent(currency=840), 200, "currency"),
    "stripe client_reference_id is a number": Case("stripe", checkout(client_reference_id=7), 200,
                                                   "client_reference_id"),
    "stripe metadata is a string": Case("stripe", intent(metadata="ord_1"), 200, "metadata"),
    "stripe data is a list": Case("stripe", stripe_data([1, 2]), 200, "data"),
    "stripe data.object is a string": Case("stripe", stripe_data({"object": "pi_1"}), 200, "object"),
    "stripe body nested 5000 deep": Case("stripe", stripe_raw(DEEP), 400, None),
    "stripe object holding a value nested 5000 deep": Case("stripe", stripe_nested_in_object, 400, None),
    "stripe amount is Infinity": Case("stripe", intent(amount_received=float("inf")), 400, None),
    # Paytm: signed form fields; TXNAMOUNT is a plain decimal with at most two places.
    "paytm TXNAMOUNT Infinity": Case("paytm", paytm("Infinity"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT NaN": Case("paytm", paytm("NaN"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT with an exponent": Case("paytm", paytm("2.5E1"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT with a plus sign": Case("paytm", paytm("+25.00"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT negative": Case("paytm", paytm("-25.00"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT with spaces": Case("paytm", paytm(" 25.00 "), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT in full-width digits": Case("paytm", paytm("\uff12\uff15.00"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT with three decimals": Case("paytm", paytm("25.001"), 200, "TXNAMOUNT"),
    "paytm TXNAMOUNT with a decimal comma": Case("paytm", paytm("25,00"), 200, "TXNAMOUNT"),
    # M-Pesa: unsigned, so a malformed callback is refused at the edge.
    "mpesa ResultCode false": Case("mpesa", mpesa(result_code=False), 400, None),
    "mpesa ResultCode a string": Case("mpesa", mpesa(result_code="0"), 400, None),
    "mpesa ResultCode a float": Case("mpesa", mpesa(result_code=0.0), 400, None),
    "mpesa Amount true": Case("mpesa", mpesa(amount=True), 400, None),
    "mpesa Amount in a string": Case("mpesa", mpesa(amount="25.00"), 400, None),
    "mpesa Amount null": Case("mpesa", mpesa(amount=None), 400, None),
    "mpesa Amount with three decimals": Case("mpesa", mpesa(amount=25.001), 400, None),
    "mpesa Amount negative": Case("mpesa", mpesa(amount=-25), 400, None),
    "mpesa Amount Infinity": Case("mpesa", mpesa(amount=float("inf")), 400, None),
    "mpesa Amount missing from a success": Case("mpesa", mpesa(amount=MISSING), 400, None),
    "mpesa Item is an object": Case("mpesa", mpesa(items={"Name": "Amount", "Value": 25}), 400, None),
    "mpesa body nested 5000 deep": Case("mpesa", lambda order: DEEP, 400, None),
    "mpesa stkCallback nested 5000 deep": Case("mpesa", mpesa_nested_in_object, 400, None),
}


def post(system, provider: str, body):
    if provider == "stripe":
        return system.client.post("/webhooks/stripe", data=body, headers=stripe_headers(body))
    if provider == "paytm":
        return system.client.post("/webhooks/paytm", data=body, content_type="application/x-www-form-urlencoded")
    return system.client.post(f"/webhooks/mpesa/{get_settings().mpesa_callback_secret}", data=body,
                              content_type="application/json")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_webhook_pays_nothing_and_is_never_retried(system, case):
    sale = system.order(provider=case.provider, price_minor=2500, currency=CURRENCY[case.provider])

    response = post(system, case.provider, case.body(sale["order"]))
    assert response.status_code == case.status, response.get_data(as_text=True)
    assert response.is_json
    system.drain()

    events = system.rows("api", "SELECT status, detail FROM webhook_events")
    if case.rejected_for is None:
        assert events == []
        assert "error" in response.json
    else:
        assert [e["status"] for e in events] == ["rejected"]
        assert case.rejected_for in events[0]["detail"], events[0]["detail"]
    assert system.rows("api", "SELECT status FROM orders") == [{"status": "pending"}]
    assert system.rows("api", "SELECT * FROM failed_jobs") == []
    assert system.rows("billing", "SELECT * FROM ledger_entries") == []
