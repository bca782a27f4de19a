"""A Stripe-paid order travels through every service, once."""

from tests.component.system import post_stripe, stripe_event


def test_a_signed_stripe_payment_reaches_every_service(system):
    sale = system.order(titles=("Field Guide", "Atlas"))
    order = sale["order"]

    response = post_stripe(system, stripe_event(order))
    assert response.status_code == 200 and response.json["status"] == "accepted"
    system.drain()

    paid = system.call("GET", f"/orders/{order['id']}", token=sale["buyer"]["token"]).json
    assert paid["status"] == "paid"
    assert system.call("GET", "/cart", token=sale["buyer"]["token"]).json["items"] == []
    ledger = system.rows("billing", "SELECT account, amount_minor FROM ledger_entries ORDER BY id")
    assert sum(e["amount_minor"] for e in ledger) == order["total_minor"] == 5000
    balances = {b["account"]: b["balance_minor"] for b in system.rows("billing", "SELECT * FROM balances")}
    assert balances == {f"seller:{sale['seller']['id']}": 4500, "platform:fees": 500}
    assert len(system.rows("reports", "SELECT * FROM sales")) == 2
    grants = system.rows("media", "SELECT * FROM download_grants")
    assert {g["title"] for g in grants} == {"Field Guide", "Atlas"}
    subjects = sorted(m["Subject"] for m in system.mails())
    assert subjects == [f"Order {order['reference']} confirmed: 50.00 USD",
                        f"Your downloads for order {order['id']} are ready"]


def test_a_repeated_webhook_changes_nothing(system):
    sale = system.order()
    event = stripe_event(sale["order"])
    first = post_stripe(system, event)
    system.drain()
    second = post_stripe(system, event)
    system.drain()

    assert (first.json["status"], second.json["status"]) == ("accepted", "duplicate")
    assert len(system.rows("api", "SELECT * FROM webhook_events")) == 1
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2
    assert len(system.mails()) == 2
