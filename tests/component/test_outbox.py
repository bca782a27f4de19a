"""The outbox sends after commit and never on rollback, the relay re-sends, the inbox absorbs repeats."""

import json
import logging
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dramatiq import Message

from services.market.cli import cli
from shared import outbox as outbox_module
from shared.contracts import PurchaseCompleted, PurchaseLine, envelope
from shared.db import engine_for, inbox, outbox, transaction
from shared.messaging import broker_for
from shared.outbox import consume, publish, publisher, purge, relay, send
from shared.settings import get_settings


def purchase(order_id: int = 1) -> PurchaseCompleted:
    return PurchaseCompleted(
        order_id=order_id, order_reference=f"ord_{order_id}", buyer_id=2, buyer_email="b@example.com",
        buyer_name="B", currency="USD", total_minor=700, provider="stripe", paid_at=datetime.now(UTC),
        lines=[PurchaseLine(product_id=3, seller_id=4, title="T", price_minor=700)])


def unsent(system) -> int:
    return len(system.rows("api", "SELECT id FROM outbox WHERE sent_at IS NULL"))


def test_a_published_event_leaves_once_per_subscriber_right_after_commit(system):
    with transaction("api") as session:
        publish(session, purchase())
        # Not visible outside the transaction yet (read outside any transaction: one would wait for this one).
        with closing(sqlite3.connect(engine_for("api").url.database)) as reader:
            assert reader.execute("SELECT count(*) FROM outbox").fetchone() == (0,)
    publisher.flush()
    rows = system.rows("api", "SELECT actor, sent_at FROM outbox")
    assert sorted(r["actor"] for r in rows) == ["api.on_purchase_completed", "billing.on_purchase_completed",
                                                "mailer.on_purchase_completed", "media.on_purchase_completed",
                                                "reports.on_purchase_completed"]
    assert all(r["sent_at"] is not None for r in rows)
    system.drain()
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2


def test_an_event_is_written_for_all_its_subscribers_in_one_statement(system):
    inserts = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT INTO outbox"):
            inserts.append(statement)

    sa.event.listen(engine_for("api"), "before_cursor_execute", count)
    try:
        with transaction("api") as session:
            publish(session, purchase())
    finally:
        sa.event.remove(engine_for("api"), "before_cursor_execute", count)
    assert len(inserts) == 1 and len(system.rows("api", "SELECT id FROM outbox")) == 5


def test_a_rolled_back_transaction_sends_nothing(system):
    with pytest.raises(RuntimeError), transaction("api") as session:
        publish(session, purchase())
        raise RuntimeError("the state change failed")
    system.drain()
    assert system.rows("api", "SELECT * FROM outbox") == []
    assert system.rows("billing", "SELECT * FROM inbox") == []


def test_the_relay_sends_what_a_crash_after_commit_left_unsent(system, monkeypatch):
    def broker_down(rows):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(outbox_module, "_enqueue", broker_down)
    with transaction("api") as session:
        publish(session, purchase())
    publisher.flush()
    assert unsent(system) == 5
    monkeypatch.undo()

    assert relay("api", older_than_s=0) == 5
    assert relay("api", older_than_s=0) == 0
    system.drain()
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2
    assert len(system.mails()) == 2


def test_the_relay_leaves_fresh_rows_to_the_after_commit_dispatch(system, monkeypatch):
    monkeypatch.setattr(outbox_module, "_enqueue", lambda rows: (_ for _ in ()).throw(ConnectionError()))
    with transaction("api") as session:
        publish(session, purchase())
    publisher.flush()
    monkeypatch.undo()
    assert relay("api", older_than_s=60) == 0
    assert unsent(system) == 5


def test_an_event_consumed_twice_has_its_effects_once_and_the_log_says_which_was_skipped(system, caplog):
    caplog.set_level(logging.INFO, logger="shared.outbox")
    calls = []
    raw = envelope(purchase())
    first = consume("billing", "test.consumer", raw, PurchaseCompleted, lambda s, e: calls.append(e.order_id))
    second = consume("billing", "test.consumer", raw, PurchaseCompleted, lambda s, e: calls.append(e.order_id))
    assert (first, second, calls) == (True, False, [1])
    assert [m for m in caplog.messages if m.startswith("test.consumer")] == [
        f"test.consumer handled event {raw['event_id']}.",
        f"test.consumer skipped event {raw['event_id']}: already handled (IntegrityError)."]


def test_a_failing_handler_leaves_no_inbox_row_so_the_retry_runs_it(system):
    raw = envelope(purchase())

    def broken(session, event):
        raise TimeoutError("database hiccup")

    with pytest.raises(TimeoutError):
        consume("billing", "test.consumer", raw, PurchaseCompleted, broken)
    assert consume("billing", "test.consumer", raw, PurchaseCompleted, lambda s, e: None) is True


def test_an_invalid_payload_fails_at_once_into_the_failed_jobs_store_and_the_cli_manages_it(system):
    broker = broker_for("billing")
    bad = {"event_id": "e1", "name": "purchase.completed", "version": 1, "occurred_at": "2026-01-01T00:00:00Z",
           "data": {"order_id": "not a number"}}
    broker.enqueue(Message(queue_name="billing.events", actor_name="billing.on_purchase_completed", args=(bad,),
                           kwargs={}, options={}))
    system.drain(fail_fast=False)

    stored = system.rows("billing", "SELECT actor, error FROM failed_jobs")
    assert len(stored) == 1 and "invalid purchase.completed payload" in stored[0]["error"]
    runner = CliRunner()
    listing = runner.invoke(cli, ["failed", "list", "billing"])
    assert listing.exit_code == 0 and "billing.on_purchase_completed" in listing.output
    assert "1 failed job(s) in billing." in listing.output

    retried = runner.invoke(cli, ["failed", "retry", "billing", "--all"])
    assert "Re-enqueued 1" in retried.output
    system.drain(fail_fast=False)
    assert len(system.rows("billing", "SELECT * FROM failed_jobs")) == 1  # it failed again, and was kept again

    assert runner.invoke(cli, ["failed", "retry", "billing"]).exit_code == 2
    assert runner.invoke(cli, ["failed", "forget", "billing", "x"]).exit_code == 2
    assert "Flushed 1" in runner.invoke(cli, ["failed", "flush", "billing"]).output
    assert system.rows("billing", "SELECT * FROM failed_jobs") == []




def test_purging_deletes_only_sent_outbox_rows_and_inbox_rows_past_their_keeping_time(system):
    with transaction("api") as session:
        publish(session, purchase())
    system.drain()
    with transaction("billing") as session:
        session.execute(sa.text("UPDATE inbox SET handled_at = '2000-01-01 00:00:00'"))
        session.execute(inbox.insert().values(consumer="billing.recent", event_id="e-recent"))  # kept
    with transaction("api") as session:
        session.execute(sa.text("UPDATE outbox SET sent_at = '2000-01-01 00:00:00' WHERE actor LIKE 'billing.%'"))
        session.execute(outbox.insert().values(id="left-unsent", service="api", queue="api.events",
                                               actor="api.nothing", payload={}))  # never sent: kept

    assert purge("api") == (1, 0)
    assert purge("billing")[1] == 1
    assert [r["consumer"] for r in system.rows("billing", "SELECT consumer FROM inbox")] == ["billing.recent"]
    assert [r["actor"] for r in system.rows("api", "SELECT actor FROM outbox ORDER BY actor")] == [
        "api.nothing", "api.on_purchase_completed", "mailer.on_purchase_completed", "media.on_purchase_completed",
        "reports.on_purchase_completed"]


def test_a_broker_no_worker_of_this_process_consumes_gets_nothing_and_the_rows_stay_unsent(system, monkeypatch,
                                                                                            caplog):
    # A command-line process's in-memory broker: a message put there would be lost, marked sent or not.
    monkeypatch.setattr(broker_for("billing"), "consumed_here", False)
    with transaction("api") as session:
        publish(session, purchase())
    publisher.flush()
    assert [r["actor"] for r in system.rows("api", "SELECT actor FROM outbox WHERE sent_at IS NULL")] == [
        "billing.on_purchase_completed"]
    assert relay("api", older_than_s=0) == 0  # the relay of such a process leaves it too, and stops
    assert not [m for m in caplog.messages if m.startswith("Outbox relay")]  # nothing sent, nothing to say
    assert broker_for("billing").queues["billing.events"].qsize() == 0

    monkeypatch.undo()  # the process that runs billing's workers
    assert relay("api", older_than_s=0) == 1
    system.drain()
    assert unsent(system) == 0 and len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2


@pytest.mark.parametrize(("purchases", "batch"), [(1, 2), (2, 5), (3, 5), (3, 4), (1, 500)])
def test_the_relay_sends_every_leftover_row_however_many_batches_it_takes(system, monkeypatch, caplog, purchases,
                                                                         batch):
    monkeypatch.setattr(outbox_module, "_enqueue", lambda rows: [])  # the broker takes nothing after commit
    for order_id in range(1, purchases + 1):
        with transaction("api") as session:
            publish(session, purchase(order_id))
    publisher.flush()
    monkeypatch.undo()
    calls, real, relaying = [], outbox_module._enqueue, threading.get_ident()

    def counted(rows):  # the relay's calls (this thread), not the publisher thread's for the consumers' events
        if threading.get_ident() == relaying:
            calls.append(len(rows))
        return real(rows)

    monkeypatch.setattr(outbox_module, "_enqueue", counted)

    assert relay("api", older_than_s=0, batch=batch) == 5 * purchases
    assert f"Outbox relay of api sent {5 * purchases} messages left unsent after commit." in caplog.messages
    assert unsent(system) == 0
    full, rest = divmod(5 * purchases, batch)
    assert calls == [batch] * full + ([rest] if rest else [0])  # a full batch is followed by one more look
    system.drain()
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2 * purchases


def test_the_relay_takes_the_rows_older_than_its_setting_unless_told_an_age(system, monkeypatch):
    monkeypatch.setattr(outbox_module, "_enqueue", lambda rows: [])
    with transaction("api") as session:
        publish(session, purchase())
    publisher.flush()
    monkeypatch.undo()

    assert relay("api") == 0  # 5 s by default: these are the after-commit dispatch's
    monkeypatch.setattr(get_settings(), "outbox_relay_after_s", 0)
    assert relay("api") == 5
    system.drain()


class Recorded:
    """Stands in for a broker's `enqueue`: records what it is given, refuses the payloads in `refuse`."""

    def __init__(self, refuse=()):
        self.seen, self.refuse = [], refuse

    def __call__(self, message, *, delay=None):
        if message.args[0] in self.refuse:
            raise ConnectionError("the broker refused it")
        self.seen.append((message.message_id, message.queue_name, message.actor_name, message.args, delay))


def test_a_row_leaves_as_one_message_named_by_its_id_for_its_actor_on_its_queue_declared_first_after_its_delay(
        system, monkeypatch):
    broker, recorded, queue = broker_for("billing"), Recorded(), f"billing.probe_{uuid.uuid4().hex}"  # a new queue
    monkeypatch.setattr(broker, "enqueue", recorded)
    with transaction("api") as session:
        send(session, "billing", queue, "billing.probe_actor", {"n": 1}, delay_ms=60_000)
        send(session, "billing", queue, "billing.probe_actor", {"n": 2})
    publisher.flush()

    first, second = (r["id"] for r in system.rows("api", "SELECT id FROM outbox ORDER BY created_at"))
    assert recorded.seen == [(first, queue, "billing.probe_actor", ({"n": 1},), 60_000),
                             (second, queue, "billing.probe_actor", ({"n": 2},), None)]
    assert queue in broker.queues and unsent(system) == 0


def test_a_message_the_broker_refuses_stays_unsent_and_does_not_hold_back_the_rest(system, monkeypatch, caplog):
    recorded = Recorded(refuse=[{"n": 1}])
    monkeypatch.setattr(broker_for("billing"), "enqueue", recorded)
    with transaction("api") as session:
        for n in range(3):
            send(session, "billing", "billing.events", "billing.probe", {"n": n})
    publisher.flush()

    assert [args for *_, args, _ in recorded.seen] == [({"n": 0},), ({"n": 2},)]
    [left] = system.rows("api", "SELECT id FROM outbox WHERE sent_at IS NULL")
    assert f"Could not send outbox message {left['id']} to billing; the relay tries again." in caplog.messages


def test_a_handlers_own_integrity_error_is_raised_not_taken_for_a_repeat(system):
    def duplicates(session, event):
        for _ in range(2):
            session.execute(inbox.insert().values(consumer="test.other", event_id="same"))

    raw = envelope(purchase())
    # Handled already, but by another consumer; and this consumer has handled another event.
    assert consume("billing", "test.another_consumer", raw, PurchaseCompleted, lambda s, e: None)
    assert consume("billing", "test.consumer", envelope(purchase(2)), PurchaseCompleted, lambda s, e: None)

    with pytest.raises(sa.exc.IntegrityError):
        consume("billing", "test.consumer", raw, PurchaseCompleted, duplicates)
    assert len(system.rows("billing", "SELECT * FROM inbox")) == 2


def test_an_event_published_under_a_given_id_reaches_every_subscriber_under_that_id(system):
    with transaction("api") as session:
        assert publish(session, purchase(), event_id="order-1-paid") == "order-1-paid"
    payloads = [r["payload"] for r in system.rows("api", "SELECT payload FROM outbox")]
    assert len(payloads) == 5 and all(json.loads(p)["event_id"] == "order-1-paid" for p in payloads)
    system.drain()


@pytest.fixture(params=["Asia/Kolkata", "America/Los_Angeles"])  # ahead of UTC (+5:30) and behind it (-8)
def zone(request, monkeypatch):
    """The machine's clock in another zone than UTC, as a container with TZ set has it."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_relay_and_the_purge_read_the_clock_in_utc_whatever_the_machines_zone(system, monkeypatch, zone):
    monkeypatch.setattr(outbox_module, "_enqueue", lambda rows: [])
    with transaction("api") as session:
        publish(session, purchase())
    publisher.flush()
    monkeypatch.setattr(outbox_module, "_enqueue", lambda rows: rows)  # taken, not sent: no worker runs it
    assert relay("api", older_than_s=60) == 0  # a minute old at the least: these are not
    assert relay("api", older_than_s=0) == 5  # rows written "in the future" would be left for later

    monkeypatch.setattr(get_settings(), "outbox_keep_hours", 1)
    monkeypatch.setattr(get_settings(), "inbox_keep_days", 0.1)
    with transaction("billing") as session:
        session.execute(inbox.insert().values(consumer="billing.recent", event_id="e-recent"))
    assert purge("api") == (0, 0) and purge("billing") == (0, 0)  # sent and handled just now: kept


def test_the_relay_sends_the_oldest_rows_first(system, monkeypatch):
    monkeypatch.setattr(outbox_module, "_enqueue", lambda rows: [])
    for order_id in (1, 2):
        with transaction("api") as session:
            publish(session, purchase(order_id))
    publisher.flush()
    with transaction("api") as session:  # order 2's rows were written first after all
        session.execute(sa.text("UPDATE outbox SET created_at = '2000-01-01 00:00:00' WHERE payload LIKE :second"),
                        {"second": '%"order_id": 2%'})
    batches = []
    monkeypatch.setattr(outbox_module, "_enqueue",
                        lambda rows: batches.append({row["payload"]["data"]["order_id"] for row in rows}) or rows)

    assert relay("api", older_than_s=0, batch=5) == 10
    assert batches == [{2}, {1}, set()]
