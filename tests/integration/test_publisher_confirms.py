"""Outbox rows leave for RabbitMQ as one confirmed batch: every row a message Dramatiq consumes, none marked sent
that the broker did not take."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import uuid
from urllib.parse import unquote, urlsplit

import dramatiq
import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from shared.publisher import publish_confirmed
from tests.integration.conftest import AMQP, ROOT, base_env

ACTOR = "api.confirms_probe"


def outbox_script(queue: str, count: int, delayed: int) -> str:
    """A process that commits `count` outbox rows in one transaction (the last `delayed` of them with a delay),
    lets its publisher send them, and prints which rows were marked sent and which were not."""
    return textwrap.dedent(f"""
        import json
        import sqlalchemy as sa
        from shared import observability
        from services.market import registry
        from shared.db import outbox, transaction
        from shared.outbox import publisher, send

        observability.setup("probe")
        registry.migrate("api")
        with transaction("api") as session:
            for n in range({count}):
                send(session, "api", {queue!r}, {ACTOR!r}, {{"n": n}}, delay_ms=200 if n >= {count - delayed} else None)
        publisher.flush()
        with transaction("api") as session:
            rows = session.execute(sa.select(outbox.c.id, outbox.c.sent_at)).all()
        print(json.dumps({{"sent": [r.id for r in rows if r.sent_at],
                          "unsent": [r.id for r in rows if not r.sent_at]}}))
    """)


def run_outbox(tmp_path, databases, queue: str, count: int, delayed: int = 0) -> dict:
    env = base_env(tmp_path, databases, MARKET_DATABASE_URL=f"sqlite:///{tmp_path}/{{service}}.db")
    done = subprocess.run([sys.executable, "-c", outbox_script(queue, count, delayed)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def channel():
    """A plain channel on the test vhost, to count, read and delete the test's queues."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    yield connection.channel()
    connection.close()


def delete_queues(channel, queue: str) -> None:
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)


def queued_ids(channel, queue: str) -> list[str]:
    """Take every message off `queue`; their Dramatiq message ids."""
    ids = []
    while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
        ids.append(json.loads(got[2])["message_id"])
    return ids


def consume_all(queue: str, expected: int) -> list[dict]:
    """Run a Dramatiq worker with the probe actor on `queue` until it has processed `expected` messages."""
    broker = RabbitmqBroker(url=AMQP, confirm_delivery=True)
    seen, done = [], threading.Event()

    @dramatiq.actor(actor_name=ACTOR, queue_name=queue, broker=broker, max_retries=0)
    def probe(payload):
        seen.append(payload)
        if len(seen) >= expected:
            done.set()

    worker = dramatiq.Worker(broker, worker_threads=2)
    worker.start()
    try:
        assert done.wait(timeout=60), f"the worker processed {len(seen)} of {expected} messages"
    finally:
        worker.stop()
        broker.close()
    return seen


def test_a_batch_of_rows_arrives_as_one_message_each_that_the_actor_consumes(tmp_path, databases, channel):
    queue = f"test.confirms.{uuid.uuid4().hex[:8]}"
    try:
        rows = run_outbox(tmp_path, databases, queue, count=200, delayed=10)
        waiting = channel.queue_declare(queue, passive=True).method.message_count
        delayed = channel.queue_declare(f"{queue}.DQ", passive=True).method.message_count
        seen = consume_all(queue, 200)
    finally:
        delete_queues(channel, queue)

    assert len(rows["sent"]) == 200 and rows["unsent"] == []
    assert (waiting, delayed) == (190, 10)  # delayed rows wait on Dramatiq's delay queue, as enqueue puts them
    assert sorted(payload["n"] for payload in seen) == list(range(200))


@pytest.fixture
def refusing_queue():
    """A queue name whose queue RabbitMQ caps at 2 messages, refusing (nacking) any more, by a policy."""
    if not shutil.which("rabbitmqctl"):
        if os.environ.get("CI"):
            pytest.fail("rabbitmqctl is needed to set a queue policy (CI is set, so this is a failure)")
        pytest.skip("rabbitmqctl is needed to set a queue policy")
    vhost, prefix = unquote(urlsplit(AMQP).path[1:]) or "/", f"test.refuse.{uuid.uuid4().hex[:8]}"
    policy = ["-p", vhost, f"confirms-{prefix}"]
    subprocess.run(["rabbitmqctl", "set_policy", *policy[:2], "--apply-to", "queues", policy[2],
                    f"^{prefix.replace('.', '[.]')}$", '{"max-length": 2, "overflow": "reject-publish"}'],
                   capture_output=True, check=True, timeout=60)
    yield prefix
    subprocess.run(["rabbitmqctl", "clear_policy", *policy], capture_output=True, check=True, timeout=60)


def test_rows_the_broker_refuses_stay_unsent_and_only_the_ones_it_took_are_marked_sent(
        tmp_path, databases, channel, refusing_queue):
    try:
        rows = run_outbox(tmp_path, databases, refusing_queue, count=5)
        queued = queued_ids(channel, refusing_queue)
    finally:
        delete_queues(channel, refusing_queue)

    assert len(rows["unsent"]) == 3
    assert sorted(rows["sent"]) == sorted(queued) and len(queued) == 2


class ClosesConnection(dramatiq.Middleware):
    """Closes the publishing thread's connection when the `at`-th message is about to leave, `times` times."""

    def __init__(self, at: int, times: int):
        self.at, self.times, self.seen = at, times, 0

    def before_enqueue(self, broker, message, delay):
        self.seen += 1
        if self.times and self.seen % self.at == 0:
            self.times -= 1
            broker.connection.close()


def test_a_connection_closed_mid_batch_is_published_again_on_a_new_one(channel):
    taken, queued, ids = publish_closing(channel, closes=1)

    assert taken == ids
    assert set(queued) == ids  # some twice, perhaps: consumers dedupe


def test_a_batch_whose_connection_closes_twice_is_left_to_the_relay_but_for_what_was_confirmed(channel):
    taken, queued, ids = publish_closing(channel, closes=2)

    assert len(taken) < len(ids)  # at most what each connection confirmed before it closed
    assert taken <= set(queued)  # what counts as sent is on the queue


def publish_closing(channel, closes: int) -> tuple[set[str], list[str], set[str]]:
    """Publish 20 messages on a connection that closes when the 7th leaves, `closes` times: (confirmed ids,
    ids on the queue, all the ids)."""
    queue = f"test.confirms.{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(url=AMQP, confirm_delivery=True, middleware=[ClosesConnection(at=7, times=closes)])
    messages = [(dramatiq.Message(queue_name=queue, actor_name=ACTOR, args=({"n": n},), kwargs={}, options={}), None)
                for n in range(20)]
    try:
        taken = publish_confirmed(broker, messages)
        queued = queued_ids(channel, queue)
    finally:
        broker.close()
        delete_queues(channel, queue)
    return taken, queued, {message.message_id for message, _ in messages}
