"""A burst of distinct webhooks against the embedded system served by a real threaded server."""

import http.client
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tests.component.system import stripe_event, stripe_headers

BURST = 100


def pending_orders(system, count: int) -> list[dict]:
    """`count` buyers, each with one pending Stripe order for the same approved product."""
    seller = system.user("seller")
    product = system.call("POST", "/products", {"title": "Burst Book", "price_minor": 1500, "currency": "USD"},
                          seller["token"]).json
    system.approve(product["id"])
    orders = []
    for n in range(count):
        buyer = system.user(f"buyer{n}")
        system.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])
        response = system.call("POST", "/orders", {"provider": "stripe"}, buyer["token"])
        assert response.status_code == 201, response.json
        orders.append({"order": response.json, "buyer": buyer})
    return orders


def post_at_once(port: int, bodies: list[str]) -> list[int]:
    """POST every body to /webhooks/stripe from its own thread, all released together; the status codes."""
    start = threading.Barrier(len(bodies))

    def post(body: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start.wait(timeout=60)
        connection.request("POST", "/webhooks/stripe", body, stripe_headers(body))
        status = connection.getresponse().status
        connection.close()
        return status

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def paid_count(system, order_ids: list[int]) -> int:
    rows = system.rows("api", "SELECT status FROM orders WHERE id IN ({})".format(",".join(map(str, order_ids))))
    return sum(r["status"] == "paid" for r in rows)


def test_a_burst_of_a_hundred_distinct_webhooks_is_answered_and_pays_every_order(system, served, caplog):
    sales = pending_orders(system, BURST)
    bodies = [json.dumps(stripe_event(s["order"])) for s in sales]
    caplog.set_level(logging.WARNING)

    statuses = post_at_once(served, bodies)

    assert sorted(set(statuses)) == [200], statuses
    ids = [s["order"]["id"] for s in sales]
    deadline = time.monotonic() + 60
    while paid_count(system, ids) < BURST and time.monotonic() < deadline:
        time.sleep(0.1)
    assert paid_count(system, ids) == BURST
    system.drain()
    problems = [r.getMessage() for r in caplog.records if r.exc_info or "QueuePool" in r.getMessage()]
    assert problems == []
    assert system.rows("api", "SELECT * FROM failed_jobs") == []
