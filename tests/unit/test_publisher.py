"""Committed outbox rows leave from the process's publisher thread, in batches, and before the process exits."""

import subprocess
import sys
import textwrap
import threading

from shared import outbox as outbox_module
from shared.db import transaction
from shared.outbox import publish, publisher
from tests.unit.test_outbox import purchase, unsent


class HeldBroker:
    """Stands in front of the real `_enqueue`: records each call's thread and row ids, and holds it until opened."""

    def __init__(self, real):
        self.real, self.gate, self.calls = real, threading.Event(), []

    def __call__(self, rows):
        self.calls.append((threading.get_ident(), {row["id"] for row in rows}))
        assert self.gate.wait(timeout=20), "the test never opened the gate"
        return self.real(rows)


def test_a_commit_returns_before_its_messages_are_published_and_another_thread_publishes_them(system, monkeypatch):
    held = HeldBroker(outbox_module._enqueue)
    monkeypatch.setattr(outbox_module, "_enqueue", held)
    with transaction("api") as session:
        publish(session, purchase())

    assert unsent(system) == 5  # the commit did not wait for the broker
    held.gate.set()
    publisher.flush()
    assert unsent(system) == 0
    assert held.calls and threading.get_ident() not in {thread for thread, _ in held.calls}
    system.drain()
    assert len(system.rows("billing", "SELECT * FROM ledger_entries")) == 2


def test_rows_committed_while_the_publisher_is_busy_leave_in_one_batch(system, monkeypatch):
    held = HeldBroker(outbox_module._enqueue)
    monkeypatch.setattr(outbox_module, "_enqueue", held)
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
