"""Committed outbox rows leave from the process's publisher thread, in batches, and before the process exits."""

import subprocess
import sys
import textwrap
import threading

import pytest

from shared import outbox as outbox_module
from shared import publisher as publisher_module
from shared.db import transaction
from shared.outbox import publish, publisher
from shared.publisher import BATCH, Publisher
from shared.settings import get_settings
from tests.component.test_outbox import purchase, unsent
from tests.support import wait_until


class HeldBroker:
    """Stands in front of the real `_enqueue`: records each call's thread and row ids, and holds it until opened."""

    def __init__(self, real):
        self.real, self.gate, self.calls = real, threading.Event(), []

    def __call__(self, rows):
        self.calls.append((threading.get_ident(), {row["id"] for row in rows}))
        assert self.gate.wait(timeout=20), "the test never opened the gate"
        return self.real(rows)


@pytest.fixture
def held(system, monkeypatch) -> HeldBroker:
    """The broker held closed; the relay (a periodic task of the embedded workers) leaves the rows to the publisher
    however slowly the test runs, so that every call seen is the publisher thread's."""
    monkeypatch.setattr(get_settings(), "outbox_relay_after_s", 3600)
    held = HeldBroker(outbox_module._enqueue)
    monkeypatch.setattr(outbox_module, "_enqueue", held)
    return held


def test_a_commit_returns_before_its_messages_are_published_and_another_thread_publishes_them(system, held):
    with transaction("api") as session:
        publish(session, purchase())

    assert unsent(system) == 5  # the commit did not wait for the broker
    held.gate.set()
    publisher.flush()
    assert unsent(system) == 0
    assert held.calls and threading.get_ident() not in {thread for thread, _ in held.calls}
    system.drain()
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2


def test_rows_committed_while_the_publisher_is_busy_leave_in_one_batch(system, held):
    for order_id in range(1, 21):
        with transaction("api") as session:
            publish(session, purchase(order_id))
    ours = {row["id"] for row in system.rows("api", "SELECT id FROM outbox")}
    held.gate.set()
    publisher.flush()

    # The first call took what was there when the thread woke; all the rest waited, and left together.
    # (Calls carrying no row of ours, such as another service's rows, are not this test's business.)
    batches = [ids & ours for _, ids in held.calls if ids & ours]
    assert len(ours) == 100 and len(batches) == 2
    assert batches[0] | batches[1] == ours and not batches[0] & batches[1]
    assert unsent(system) == 0
    system.drain()


def test_a_short_lived_process_sends_its_rows_before_it_exits(tmp_path):
    sent = tmp_path / "sent"
    script = textwrap.dedent(f"""
        import time
        from shared.publisher import Publisher

        def slow_send(owner, rows):
            time.sleep(0.3)  # a broker that takes its time to confirm
            open({str(sent)!r}, "a").write(f"{{owner}}:{{len(rows)}}\\n")

        Publisher(slow_send, lambda: []).submit("api", [{{"id": "a"}}, {{"id": "b"}}])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert sent.read_text() == "api:2\n"


def test_the_publisher_sends_at_most_a_batch_at_a_time_one_owner_at_a_time_in_its_named_daemon_thread():
    calls = []

    def send(owner, rows):
        thread = threading.current_thread()
        assert thread.daemon  # a process never waits for it to end (it flushes at exit instead)
        calls.append((thread.name, owner, len(rows), rows[0]["n"]))

    publisher = Publisher(send, lambda: [])
    publisher.submit("api", [{"n": n} for n in range(BATCH * 2 + 1)])
    publisher.submit("billing", [{"n": 0}])
    publisher.flush(20)
    assert publisher.flush(5) is False  # all sent: nothing left to wait for
    assert calls == [("outbox-publisher", "api", BATCH, 0), ("outbox-publisher", "api", BATCH, BATCH),
                     ("outbox-publisher", "api", 1, 2 * BATCH), ("outbox-publisher", "billing", 1, 0)]


def test_a_send_that_fails_leaves_its_rows_to_the_relay_and_the_publisher_goes_on(caplog):
    sent = []

    def send(owner, rows):
        if rows[0]["n"] == 0:
            raise ConnectionError("the database is down")
        sent.append(rows[0]["n"])

    publisher = Publisher(send, lambda: [])
    publisher.submit("api", [{"n": 0}])
    publisher.flush(10)
    publisher.submit("api", [{"n": 1}])
    publisher.flush(10)
    assert sent == [1]
    assert "Sending 1 outbox messages of api failed; the relay will send them." in caplog.messages


def test_a_flush_that_runs_out_of_time_says_how_many_rows_are_left_to_the_relay(system, held, caplog):
    with transaction("api") as session:
        publish(session, purchase())
    wait_until("the first rows to be in flight", lambda: held.calls)
    with transaction("api") as session:
        publish(session, purchase(2))

    assert publisher.flush(0.2) is True  # there was work: 5 rows in flight, 5 waiting behind them
    assert "The outbox publisher still had 10 rows after 0 s; the relay will send them." in caplog.messages
    held.gate.set()
    assert publisher.flush() is True and unsent(system) == 0
    system.drain()


def test_an_idle_publisher_answers_its_brokers_and_still_sends_what_comes_later():
    sent, idle = [], []
    publisher = Publisher(lambda owner, rows: sent.append(rows[0]["n"]), lambda: idle.append(1) or [])
    assert publisher.flush(5) is False  # a new publisher has nothing to wait for

    publisher.submit("api", [{"n": 1}])
    publisher.flush(10)
    count = len(idle)
    wait_until("the publisher to idle twice", lambda: len(idle) >= count + 2, timeout=20, interval=0.05)
    publisher.submit("api", [{"n": 2}])
    publisher.flush(10)
    assert sent == [1, 2] and publisher.flush(0) is False  # nothing pending, nothing in flight


def test_a_flush_out_of_time_with_rows_only_in_flight_says_so(caplog):
    started, release = threading.Event(), threading.Event()
    publisher = Publisher(lambda owner, rows: started.set() or release.wait(10), lambda: [])
    publisher.submit("api", [{"n": 1}])
    assert started.wait(10)  # taken: in flight, nothing pending
    try:
        assert publisher.flush(0.1) is True
    finally:
        release.set()
    assert "The outbox publisher still had 1 rows after 0 s; the relay will send them." in caplog.messages


def test_a_process_waits_at_exit_for_its_rows_to_leave(monkeypatch):
    at_exit, sent = [], []
    monkeypatch.setattr(publisher_module.atexit, "register", lambda fn, *args: at_exit.append((fn, args)))
    release = threading.Event()
    publisher = Publisher(lambda owner, rows: release.wait(10) and sent.append(len(rows)), lambda: [])
    publisher.submit("api", [{"n": 1}, {"n": 2}])

    [(flush, args)] = at_exit
    assert args == (publisher_module.EXIT_FLUSH_S,)
    release.set()
    flush(*args)
    assert sent == [2]
