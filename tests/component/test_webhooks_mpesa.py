"""M-Pesa (Daraja STK push) callbacks: unsigned, so the secret URL and a known checkout id are the check."""

import json

import pytest

from shared.settings import get_settings


def callback(checkout_id: str, result_code: int = 0, amount: float = 25.0) -> dict:
    stk = {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": checkout_id, "ResultCode": result_code,
           "ResultDesc": "The service request is processed successfully." if result_code == 0
           else "Request cancelled by user"}
    if result_code == 0:
        stk["CallbackMetadata"] = {"Item": [{"Name": "Amount", "Value": amount},
                                            {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
                                            {"Name": "PhoneNumber", "Value": 254712345678}]}
    return {"Body": {"stkCallback": stk}}


def post_mpesa(system, body, secret: str | None = None):
    secret = get_settings().mpesa_callback_secret if secret is None else secret
    data = body if isinstance(body, str) else json.dumps(body)
    return system.client.post(f"/webhooks/mpesa/{secret}", data=data, content_type="application/json")


def mpesa_sale(system) -> dict:
    return system.order(provider="mpesa", price_minor=2500, currency="KES")


def order_status(system, sale) -> str:
    return system.call("GET", f"/orders/{sale['order']['id']}", token=sale["buyer"]["token"]).json["status"]


def nothing_stored(system) -> None:
    assert system.rows("api", "SELECT * FROM webhook_events") == []
    assert system.rows("api", "SELECT * FROM outbox") == []


def test_a_callback_to_the_wrong_secret_url_is_answered_404_json(system):
    sale = mpesa_sale(system)
    response = post_mpesa(system, callback(sale["order"]["provider_checkout_id"]), secret="guessed-secret")

    assert response.status_code == 404 and response.is_json and "error" in response.json
    system.drain()
    nothing_stored(system)
    assert order_status(system, sale) == "pending"


def test_a_callback_for_an_unknown_checkout_request_is_answered_404_and_not_stored(system):
    sale = mpesa_sale(system)
    response = post_mpesa(system, callback("ws_CO_unknown"))

    assert response.status_code == 404 and "ws_CO_unknown" in response.json["error"]
    system.drain()
    nothing_stored(system)
    assert order_status(system, sale) == "pending"


def test_a_genuine_callback_pays_the_order_and_answers_daraja_with_result_code_zero(system):
    sale = mpesa_sale(system)
    order = sale["order"]
    assert order["provider_checkout_id"].startswith("ws_CO_")

    response = post_mpesa(system, callback(order["provider_checkout_id"]))
    assert response.status_code == 200
    assert response.json["ResultCode"] == 0 and response.json["status"] == "accepted"
    system.drain()

    assert order_status(system, sale) == "paid"
    assert sum(e["amount_minor"] for e in system.rows("billing", "SELECT * FROM ledger_entries")) == 2500
    assert len(system.mails()) == 2
    paid = system.rows("api", "SELECT provider_payment_id FROM orders WHERE id = :id", id=order["id"])
    assert paid == [{"provider_payment_id": "NLJ7RT61SV"}]


def test_a_callback_for_a_payment_the_user_cancelled_marks_the_order_failed(system):
    sale = mpesa_sale(system)

    response = post_mpesa(system, callback(sale["order"]["provider_checkout_id"], result_code=1032))
    assert response.status_code == 200 and response.json["ResultCode"] == 0
    system.drain()

    assert order_status(system, sale) == "failed"
    assert system.rows("billing", "SELECT * FROM ledger_entries") == []
    assert system.mails() == []


def test_a_callback_whose_amount_differs_from_the_order_is_rejected(system):
    sale = mpesa_sale(system)
    assert post_mpesa(system, callback(sale["order"]["provider_checkout_id"], amount=1.0)).status_code == 200
    system.drain()

    [event] = system.rows("api", "SELECT * FROM webhook_events")
    assert event["status"] == "rejected" and "100" in event["detail"] and "2500" in event["detail"]
    assert order_status(system, sale) == "pending"


def test_the_same_callback_twice_is_a_duplicate_and_takes_effect_once(system):
    sale = mpesa_sale(system)
    body = callback(sale["order"]["provider_checkout_id"])

    first = post_mpesa(system, body)
    system.drain()
    second = post_mpesa(system, body)
    system.drain()

    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json["status"], second.json["status"]) == ("accepted", "duplicate")
    assert len(system.rows("api", "SELECT * FROM webhook_events")) == 1
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2
    assert len(system.mails()) == 2


@pytest.mark.parametrize("body", [{"Body": {}}, {"Result": {"ResultCode": 0}}, {"Body": {"stkCallback": "x"}},
                                  [1, 2], "not json"])
def test_a_body_without_body_stkcallback_is_refused_with_400(system, body):
    response = post_mpesa(system, body)

    assert response.status_code == 400 and response.is_json and "error" in response.json
    nothing_stored(system)


@pytest.mark.parametrize("body", [{"Body": "x"}, {"Body": []}, {"Body": None}])
def test_a_body_whose_body_member_is_not_an_object_is_refused_with_400(system, body):
    response = post_mpesa(system, body)

    assert response.status_code == 400 and response.is_json and "error" in response.json
    nothing_stored(system)
