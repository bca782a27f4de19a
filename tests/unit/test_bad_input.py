"""Inputs that once reached a 500: each now gets a 400 with a JSON body naming the problem."""

import hashlib
import hmac
import time

from shared.settings import get_settings


def test_an_id_too_large_for_the_database_is_a_400(system):
    token = system.user("buyer")["token"]
    for response in (system.call("POST", "/cart/items", {"product_id": 10**30}, token),
                     system.call("GET", f"/products/{10**30}")):
        assert response.status_code == 400
        assert response.json == {"error": "a number in the request is out of range"}


def test_a_stripe_signature_with_non_ascii_characters_is_a_400(system):
    header = f"t={int(time.time())},v1=\u00e9\u00e9"
    response = system.client.post("/webhooks/stripe", data=b"{}", headers={"Stripe-Signature": header})
    assert response.status_code == 400 and "signature" in response.json["error"]


def test_a_correctly_signed_body_that_is_not_utf8_is_a_400_and_stores_nothing(system):
    body = '{"id": "evt_1", "type": "payment_intent.succeeded"}'.encode("utf-16")
    ts = int(time.time())
    sig = hmac.new(get_settings().stripe_webhook_secret.encode(), f"{ts}.".encode() + body, hashlib.sha256)
    response = system.client.post("/webhooks/stripe", data=body,
                                  headers={"Stripe-Signature": f"t={ts},v1={sig.hexdigest()}"})
    assert response.status_code == 400 and "not JSON" in response.json["error"]
    mpesa = system.client.post(f"/webhooks/mpesa/{get_settings().mpesa_callback_secret}", data=body)
    assert mpesa.status_code == 400
    assert system.rows("api", "SELECT * FROM webhook_events") == []
