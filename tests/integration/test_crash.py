"""kill -9 a consumer in the middle of a batch; after a restart every purchase counts exactly once."""

import time
from datetime import UTC, datetime

import pytest
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from shared.contracts import PurchaseCompleted, PurchaseLine, envelope
from tests.integration.conftest import AMQP, REDIS, base_env, clean_brokers, wait_until

BATCH = 1500
PRICE = 1000


def purchase(order_id: int) -> dict:
    return envelope(PurchaseCompleted(
        order_id=order_id, order_reference=f"ord_{order_id}", buyer_id=order_id, buyer_email="b@example.com",
        buyer_name="B", currency="USD", total_minor=PRICE, provider="stripe", paid_at=datetime.now(UTC),
        lines=[PurchaseLine(product_id=1, seller_id=order_id % 7, title="Guide", price_minor=PRICE)]))


@pytest.mark.parametrize("broker_kind", ["rabbitmq", "redis"])
def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(broker_kind, tmp_path, databases, processes):
    clean_brokers(redis_db=6)
    url = AMQP if broker_kind == "rabbitmq" else f"{REDIS}/6"
    processes.env = base_env(tmp_path, databases, MARKET_BILLING_BROKER_URL=url)
    processes.run("migrate")
    broker = RabbitmqBroker(url=url, confirm_delivery=True) if broker_kind == "rabbitmq" else RedisBroker(url=url)
    broker.declare_queue("billing.events")
    for order_id in range(1, BATCH + 1):
        broker.enqueue(Message(queue_name="billing.events", actor_name="billing.on_purchase_completed",
                               args=(purchase(order_id),), kwargs={}, options={}))
    broker.close()

    count = "SELECT count(*) AS n FROM purchase_lines"
    processes.start("worker-billing", "worker", "billing", "--threads", "8")
    done_at_kill = wait_until("the worker to be part-way through the batch",
                              lambda: (n := databases.rows("billing", count)[0]["n"]) >= 100 and n, timeout=60,
                              interval=0.01)
    processes.kill("worker-billing")
    assert done_at_kill < BATCH, "the batch finished before the kill; make it larger"

    started = time.monotonic()
    processes.start("worker-billing-restarted", "worker", "billing", "--threads", "8")
    wait_until("every purchase to be recorded", lambda: databases.rows("billing", count)[0]["n"] == BATCH,
               timeout=120)
    recovered_in = time.monotonic() - started
    print(f"{broker_kind}: killed at {done_at_kill}/{BATCH}; all {BATCH} recorded {recovered_in:.1f} s after restart")

    lines = databases.rows("billing", "SELECT order_id, count(*) AS n FROM purchase_lines GROUP BY order_id")
    assert sorted(r["order_id"] for r in lines) == list(range(1, BATCH + 1))
    assert {r["n"] for r in lines} == {1}
    entries = databases.rows("billing", "SELECT count(*) AS n, sum(amount_minor) AS total FROM ledger_entries")
    assert entries == [{"n": 2 * BATCH, "total": BATCH * PRICE}]
    balances = databases.rows("billing", "SELECT sum(balance_minor) AS total FROM balances")
    assert balances == [{"total": BATCH * PRICE}], "a redelivered purchase moved a balance twice"
    assert databases.rows("billing", "SELECT count(*) AS n FROM inbox") == [{"n": BATCH}]
