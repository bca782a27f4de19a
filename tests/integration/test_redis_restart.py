"""The mailer's broker Redis, with its append-only file, restarted in the middle of a burst: every email
arrives, once."""

import dramatiq
import pytest
from dramatiq import Message, Worker
from dramatiq.brokers.redis import RedisBroker

from bench.servers import Redis
from shared.contracts import LeadCreated, envelope
from shared.messaging import MaintainedRedisBroker
from tests.integration.conftest import base_env, wait_until

BURST = 150


@pytest.fixture
def redis_aof(tmp_path):
    server = Redis(tmp_path)
    server.start()
    yield server
    if server.answers():
        server.stop()


def lead(i: int) -> dict:
    return envelope(LeadCreated(lead_id=i, lead_name=f"Lead {i}", lead_email=f"lead{i}@example.com",
                                assigned_user_id=i, assigned_email=f"agent{i}@example.com", assigned_name="Agent"))


def test_a_redis_restart_in_the_middle_of_a_burst_loses_and_doubles_no_email(
        tmp_path, databases, processes, smtp, redis_aof):
    smtp_port, inbox = smtp
    url = f"redis://127.0.0.1:{redis_aof.port}/0"
    processes.env = base_env(tmp_path, databases, MARKET_MAILER_BROKER_URL=url, MARKET_ALLOW_VOLATILE_REDIS="0",
                             MARKET_MAIL_TRANSPORT="smtp", MARKET_SMTP_PORT=str(smtp_port),
                             MARKET_OUTBOX_RELAY_AFTER_S="1", MARKET_MAIL_RECONCILE_INTERVAL_S="2",
                             MARKET_MAIL_RECONCILE_AFTER_S="10")
    processes.run("migrate")
    processes.start("mailer", "worker", "mailer")
    broker = RedisBroker(url=url)
    broker.declare_queue("mailer.events")
    for i in range(BURST):  # as the api's publisher sends lead.created
        broker.enqueue(Message(queue_name="mailer.events", actor_name="mailer.on_lead_created", args=(lead(i),),
                               kwargs={}, options={}))

    wait_until("a third of the emails", lambda: len(inbox.messages) >= BURST // 3, timeout=120)
    redis_aof.restart(down_s=0)
    wait_until("every email", lambda: len(inbox.messages) >= BURST, timeout=180)

    recipients = [line.split(":", 1)[1].strip() for m in inbox.messages for line in m.splitlines()
                  if line.startswith("To:")]
    assert sorted(recipients) == sorted(f"agent{i}@example.com" for i in range(BURST))
    sent = databases.rows("mailer", "SELECT count(*) AS n FROM outbound_messages WHERE status = 'sent'")
    assert sent == [{"n": BURST}]


def test_a_delayed_message_a_live_worker_holds_across_a_redis_restart_is_still_processed(redis_aof):
    broker = MaintainedRedisBroker(url=f"redis://127.0.0.1:{redis_aof.port}/0")
    done = []

    @dramatiq.actor(actor_name="chaos.later", queue_name="later", broker=broker)
    def later(n: int) -> None:
        done.append(n)

    worker = Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        later.send_with_options(args=(1,), delay=3000)  # as a retry's backoff or a deferral
        held = f"dramatiq:__acks__.{broker.broker_id}.later.DQ"
        wait_until("the worker to hold the delayed message", lambda: broker.client.scard(held) == 1, timeout=30)
        redis_aof.restart(down_s=0)
        # Maintenance would requeue it only once this worker died; alive, it must not sit on it forever.
        wait_until("the delayed message to run", lambda: done == [1], timeout=60)
    finally:
        worker.stop()
        broker.close()
