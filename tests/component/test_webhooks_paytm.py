"""Paytm notifications as Paytm posts them: form fields signed by the official `paytmchecksum` package."""

import paytmchecksum
import pytest

from services.api.payments import paytm_checksum_ok, paytm_sign
from shared.settings import get_settings

FORM = "application/x-www-form-urlencoded"


def key() -> str:
    return get_settings().paytm_merchant_key


def notification(order: dict, status: str = "TXN_SUCCESS", amount: str = "25.00", txn: str = "20240101111212800110168",
                 **extra: str) -> dict[str, str]:
    params = {"ORDERID": order["reference"], "TXNID": txn, "TXNAMOUNT": amount, "STATUS": status,
              "CURRENCY": "INR", "RESPMSG": "Txn Success" if status == "TXN_SUCCESS" else "Txn Failure"} | extra
    return params | {"CHECKSUMHASH": paytmchecksum.generateSignature(dict(params), key())}


def post_paytm(system, form: dict[str, str]):
    return system.client.post("/webhooks/paytm", data=form, content_type=FORM)


def paytm_sale(system) -> dict:
    return system.order(provider="paytm", price_minor=2500, currency="INR")


def order_status(system, sale) -> str:
    return system.call("GET", f"/orders/{sale['order']['id']}", token=sale["buyer"]["token"]).json["status"]


def nothing_stored(system) -> None:
    assert system.rows("api", "SELECT * FROM webhook_events") == []
    assert system.rows("api", "SELECT * FROM outbox") == []


def test_a_genuine_paytm_notification_pays_the_order_through_every_service(system):
    sale = paytm_sale(system)
    order = sale["order"]

    response = post_paytm(system, notification(order))
    assert response.status_code == 200 and response.json["status"] == "accepted"
    system.drain()

    assert order_status(system, sale) == "paid"
    ledger = system.rows("billing", "SELECT account, amount_minor FROM ledger_entries")
    assert sum(e["amount_minor"] for e in ledger) == 2500 and len(ledger) == 2
    balances = {b["account"]: b["balance_minor"] for b in system.rows("billing", "SELECT * FROM balances")}
    assert balances == {f"seller:{sale['seller']['id']}": 2250, "platform:fees": 250}
    subjects = sorted(m["Subject"] for m in system.mails())
    assert subjects == [f"Order {order['reference']} confirmed: 25.00 INR",
                        f"Your downloads for order {order['id']} are ready"]
    event = system.rows("api", "SELECT * FROM webhook_events")
    assert [(e["provider"], e["status"]) for e in event] == [("paytm", "processed")]


def test_a_notification_whose_amount_was_changed_after_signing_is_refused(system):
    sale = paytm_sale(system)
    form = notification(sale["order"]) | {"TXNAMOUNT": "1.00"}

    response = post_paytm(system, form)
    assert response.status_code == 400 and "checksum" in response.json["error"]
    system.drain()
    nothing_stored(system)
    assert order_status(system, sale) == "pending"


def test_a_notification_without_a_checksumhash_is_refused(system):
    sale = paytm_sale(system)
    form = notification(sale["order"])
    del form["CHECKSUMHASH"]

    response = post_paytm(system, form)
    assert response.status_code == 400 and "CHECKSUMHASH" in response.json["error"]
    nothing_stored(system)


@pytest.mark.parametrize("checksum", ["garbage", "Z2FyYmFnZQ==", "A" * 64, "!!!not base64!!!"])
def test_a_notification_with_a_garbage_checksum_is_refused(system, checksum):
    sale = paytm_sale(system)
    form = notification(sale["order"]) | {"CHECKSUMHASH": checksum}

    response = post_paytm(system, form)
    assert response.status_code == 400 and response.is_json and "checksum" in response.json["error"]
    nothing_stored(system)


def test_a_checksum_made_with_another_merchant_key_is_refused(system):
    sale = paytm_sale(system)
    params = {k: v for k, v in notification(sale["order"]).items() if k != "CHECKSUMHASH"}
    form = params | {"CHECKSUMHASH": paytmchecksum.generateSignature(dict(params), "otherMerchantKey")}

    assert post_paytm(system, form).status_code == 400
    nothing_stored(system)


def test_a_failed_paytm_transaction_marks_the_order_failed_and_books_nothing(system):
    sale = paytm_sale(system)

    response = post_paytm(system, notification(sale["order"], status="TXN_FAILURE"))
    assert response.status_code == 200 and response.json["status"] == "accepted"
    system.drain()

    assert order_status(system, sale) == "failed"
    assert system.rows("billing", "SELECT * FROM ledger_entries") == []
    assert system.mails() == []


def test_the_same_paytm_notification_twice_is_a_duplicate_and_takes_effect_once(system):
    sale = paytm_sale(system)
    form = notification(sale["order"])

    first = post_paytm(system, form)
    system.drain()
    second = post_paytm(system, form)
    system.drain()

    assert (first.json["status"], second.json["status"]) == ("accepted", "duplicate")
    assert len(system.rows("api", "SELECT * FROM webhook_events")) == 1
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2
    assert len(system.mails()) == 2


def test_our_paytm_sign_output_verifies_with_the_official_package():
    params = {"ORDERID": "ord_1", "TXNID": "T1", "TXNAMOUNT": "25.00", "STATUS": "TXN_SUCCESS", "MID": "null"}
    checksum = paytm_sign(params, key())

    assert paytmchecksum.verifySignature(dict(params), key(), checksum) is True
    assert paytmchecksum.verifySignature(dict(params, TXNAMOUNT="26.00"), key(), checksum) is False


def test_a_checksum_from_the_official_package_verifies_with_ours():
    params = {"ORDERID": "ord_1", "TXNID": "T1", "TXNAMOUNT": "25.00", "STATUS": "TXN_SUCCESS", "MID": "null"}
    checksum = paytmchecksum.generateSignature(dict(params), key())

    assert paytm_checksum_ok(params, checksum, key()) is True
    assert paytm_checksum_ok(dict(params, STATUS="TXN_FAILURE"), checksum, key()) is False
