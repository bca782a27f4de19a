"""Stripe webhooks as Stripe sends them: headers are made by the official `stripe` package."""

import hashlib
import hmac
import json
import time

import pytest
import stripe

from services.api.payments import WebhookRejected, verify_stripe
from shared.settings import get_settings
from tests.component.system import post_stripe, stripe_event, stripe_headers

WRONG_SECRET = "whsec_someone_elses_secret"


def post_raw(system, payload: str | bytes, headers: dict):
    return system.client.post("/webhooks/stripe", data=payload, headers=headers)


def nothing_stored_or_queued(system) -> None:
    assert system.rows("api", "SELECT * FROM webhook_events") == []
    assert system.rows("api", "SELECT * FROM outbox") == []


def order_status(system, sale) -> str:
    return system.call("GET", f"/orders/{sale['order']['id']}", token=sale["buyer"]["token"]).json["status"]


def only_event(system) -> dict:
    events = system.rows("api", "SELECT * FROM webhook_events")
    assert len(events) == 1, events
    return events[0]


# --- what Stripe's events do ---------------------------------------------------------------

def test_a_completed_checkout_session_marks_the_order_paid(system):
    sale = system.order()
    response = post_stripe(system, stripe_event(sale["order"], "checkout.session.completed"))
    assert response.status_code == 200 and response.json["status"] == "accepted"
    system.drain()

    assert order_status(system, sale) == "paid"
    assert only_event(system)["status"] == "processed"
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2


def test_a_completed_checkout_session_whose_payment_status_is_unpaid_does_not_mark_the_order_paid(system):
    sale = system.order()
    event = stripe_event(sale["order"], "checkout.session.completed")
    event["data"]["object"]["payment_status"] = "unpaid"
    assert post_stripe(system, event).status_code == 200
    system.drain()

    assert order_status(system, sale) == "pending"
    assert only_event(system)["status"] == "ignored"
    assert system.rows("billing", "SELECT * FROM ledger_entries") == []
    assert system.mails() == []


def test_a_delayed_checkout_payment_marks_the_order_paid_when_it_succeeds(system):
    sale = system.order()
    unpaid = stripe_event(sale["order"], "checkout.session.completed")
    unpaid["data"]["object"]["payment_status"] = "unpaid"
    post_stripe(system, unpaid)
    succeeded = stripe_event(sale["order"], "checkout.session.completed")
    succeeded["type"] = "checkout.session.async_payment_succeeded"
    assert post_stripe(system, succeeded).json["status"] == "accepted"
    system.drain()

    assert order_status(system, sale) == "paid"
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2


def test_a_header_with_several_v1_signatures_is_accepted_when_one_of_them_is_right(system):
    sale = system.order()
    payload = json.dumps(stripe_event(sale["order"]))
    timestamp = int(time.time())
    right = stripe.WebhookSignature.generate_signature_header(payload, get_settings().stripe_webhook_secret,
                                                              timestamp=timestamp).split("v1=")[1]
    wrong = stripe.WebhookSignature.generate_signature_header(payload, WRONG_SECRET,
                                                              timestamp=timestamp).split("v1=")[1]
    header = f"t={timestamp},v1={wrong},v1={right}"

    response = post_raw(system, payload, {"Stripe-Signature": header, "Content-Type": "application/json"})
    assert response.status_code == 200 and response.json["status"] == "accepted"
    system.drain()
    assert order_status(system, sale) == "paid"


# --- what is refused before anything is stored -----------------------------------------------

def test_a_forged_stripe_signature_is_refused_and_nothing_is_stored(system):
    sale = system.order()
    response = post_stripe(system, stripe_event(sale["order"]), secret=WRONG_SECRET)

    assert response.status_code == 400
    assert response.is_json and "signature" in response.json["error"]
    system.drain()
    nothing_stored_or_queued(system)
    assert order_status(system, sale) == "pending"


def test_a_signature_older_than_five_minutes_is_refused(system):
    sale = system.order()
    response = post_stripe(system, stripe_event(sale["order"]), timestamp=int(time.time()) - 301)

    assert response.status_code == 400 and "tolerance" in response.json["error"]
    nothing_stored_or_queued(system)


def test_a_signature_ten_minutes_in_the_future_is_refused_although_stripe_itself_would_accept_it(system):
    sale = system.order()
    payload = json.dumps(stripe_event(sale["order"]))
    headers = stripe_headers(payload, timestamp=int(time.time()) + 600)
    # Stripe's verifier only rejects timestamps that are too old.
    stripe.WebhookSignature.verify_header(payload, headers["Stripe-Signature"], get_settings().stripe_webhook_secret,
                                          tolerance=300)

    response = post_raw(system, payload, headers)
    assert response.status_code == 400 and "tolerance" in response.json["error"]
    nothing_stored_or_queued(system)


def test_a_request_without_a_stripe_signature_header_is_refused(system):
    sale = system.order()
    response = post_raw(system, json.dumps(stripe_event(sale["order"])), {"Content-Type": "application/json"})

    assert response.status_code == 400 and "missing" in response.json["error"]
    nothing_stored_or_queued(system)


def test_a_malformed_stripe_signature_header_is_refused(system):
    sale = system.order()
    response = post_raw(system, json.dumps(stripe_event(sale["order"])),
                        {"Stripe-Signature": "garbage", "Content-Type": "application/json"})

    assert response.status_code == 400 and "malformed" in response.json["error"]
    nothing_stored_or_queued(system)


@pytest.mark.parametrize("timestamp", ["\u00b2", "1\u00b9"])
def test_a_header_whose_timestamp_is_not_an_ascii_number_is_refused_as_malformed(system, timestamp):
    """str.isdigit() is true for superscript digits, which int() cannot read."""
    response = post_raw(system, json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}),
                        {"Stripe-Signature": f"t={timestamp},v1=abc", "Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.is_json and "malformed" in response.json["error"]
    nothing_stored_or_queued(system)


def test_a_correctly_signed_body_that_is_not_json_is_refused(system):
    payload = "this is not JSON"
    response = post_raw(system, payload, stripe_headers(payload))

    assert response.status_code == 400 and "JSON" in response.json["error"]
    nothing_stored_or_queued(system)


def test_a_correctly_signed_body_over_the_size_limit_is_refused_with_413(system):
    sale = system.order()
    event = stripe_event(sale["order"])
    event["padding"] = "x" * get_settings().webhook_max_bytes
    payload = json.dumps(event)
    assert len(payload) > 256 * 1024

    response = post_raw(system, payload, stripe_headers(payload))
    assert response.status_code == 413 and response.is_json and "error" in response.json
    system.drain()
    nothing_stored_or_queued(system)
    assert order_status(system, sale) == "pending"


def test_an_event_type_we_do_not_handle_is_acknowledged_as_ignored_and_not_stored(system):
    event = {"id": "evt_customer_1", "object": "event", "type": "customer.created",
             "data": {"object": {"id": "cus_1", "object": "customer"}}}
    response = post_stripe(system, event)

    assert response.status_code == 200 and response.json["status"] == "ignored"
    system.drain()
    nothing_stored_or_queued(system)


# --- what is accepted, then rejected by the worker --------------------------------------------

def test_an_amount_that_differs_from_the_order_total_is_rejected_after_acceptance(system):
    sale = system.order(price_minor=2500)
    response = post_stripe(system, stripe_event(sale["order"], amount=100))
    assert response.status_code == 200 and response.json["status"] == "accepted"
    system.drain()

    event = only_event(system)
    assert event["status"] == "rejected"
    assert "100" in event["detail"] and "2500" in event["detail"]
    assert order_status(system, sale) == "pending"
    assert system.rows("billing", "SELECT * FROM ledger_entries") == []
    assert system.mails() == []


def test_a_payment_for_an_unknown_order_reference_is_rejected(system):
    sale = system.order()
    order = dict(sale["order"], reference="ord_does_not_exist")
    assert post_stripe(system, stripe_event(order)).status_code == 200
    system.drain()

    event = only_event(system)
    assert event["status"] == "rejected" and "ord_does_not_exist" in event["detail"]
    assert order_status(system, sale) == "pending"
    assert system.rows("billing", "SELECT * FROM ledger_entries") == []


# --- agreement with the official stripe package -------------------------------------------------

def test_a_payload_our_endpoint_accepts_is_also_accepted_by_stripes_construct_event(system):
    sale = system.order()
    ours = stripe_event(sale["order"])
    payload = json.dumps(ours)
    headers = stripe_headers(payload)

    response = post_raw(system, payload, headers)
    assert response.status_code == 200 and response.json["event_id"] == ours["id"]

    event = stripe.Webhook.construct_event(payload, headers["Stripe-Signature"],
                                           get_settings().stripe_webhook_secret)
    assert (event.id, event.type) == (ours["id"], ours["type"])


def test_our_verifier_accepts_a_header_the_stripe_package_generated():
    secret = "whsec_round_trip"
    payload = json.dumps({"id": "evt_rt", "type": "payment_intent.succeeded"})
    now = time.time()
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=int(now))

    received = verify_stripe(payload.encode(), header, secret, 300, now)
    assert (received.event_id, received.event_type, received.payload) == ("evt_rt", "payment_intent.succeeded",
                                                                           payload)


@pytest.mark.parametrize("case", ["wrong secret", "altered body", "too old", "no v1 scheme"])
def test_our_verifier_rejects_what_stripes_verify_header_rejects(case):
    secret = "whsec_round_trip"
    payload = json.dumps({"id": "evt_rt", "type": "payment_intent.succeeded"})
    now = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=now)
    checked_secret, checked_payload = secret, payload
    if case == "wrong secret":
        checked_secret = WRONG_SECRET
    elif case == "altered body":
        checked_payload = payload.replace("evt_rt", "evt_xx")
    elif case == "too old":
        header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=now - 400)
    else:
        signature = hmac.new(secret.encode(), f"{now}.{payload}".encode(), hashlib.sha256).hexdigest()
        header = f"t={now},v0={signature}"

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(checked_payload, header, checked_secret, tolerance=300)
    with pytest.raises(WebhookRejected):
        verify_stripe(checked_payload.encode(), header, checked_secret, 300, now)
