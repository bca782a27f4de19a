"""A process that publishes, sits idle past RabbitMQ's heartbeat timeout, then publishes again, logs no ERROR."""

import subprocess
import sys
import textwrap
import uuid

import pika

from tests.integration.conftest import AMQP, ROOT, base_env

IDLE_S = 5  # RabbitMQ drops a connection after two missed 1 s heartbeats


def probe_script(queue: str) -> str:
    """A process that sends one outbox message, idles, sends another, and prints how many rows stayed unsent."""
    return textwrap.dedent(f"""
        import time
        import sqlalchemy as sa
        from shared import observability
        from services.market import registry
        from shared.db import outbox, transaction
        from shared.outbox import publisher, send

        observability.setup("probe")
        registry.migrate("api")
        for n in (1, 2):
            with transaction("api") as session:
                send(session, "api", {queue!r}, "api.heartbeat_probe", {{"n": n}})
            publisher.flush()
            if n == 1:
                time.sleep({IDLE_S})  # the stimulus: idle longer than the connection's heartbeat timeout
        with transaction("api") as session:
            print("unsent", session.scalar(sa.select(sa.func.count()).where(outbox.c.sent_at.is_(None))))
    """)


def test_an_idle_publisher_keeps_its_connection_and_publishes_again_without_errors(tmp_path, databases):
    queue = f"test.heartbeat.{uuid.uuid4().hex[:8]}"
    env = base_env(tmp_path, databases, MARKET_BROKER_URL=f"{AMQP}{'&' if '?' in AMQP else '?'}heartbeat=1",
                   MARKET_DATABASE_URL=f"sqlite:///{tmp_path}/{{service}}.db")
    done = subprocess.run([sys.executable, "-c", probe_script(queue)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    try:
        waiting = connection.channel().queue_declare(queue, passive=True).method.message_count
        connection.channel().queue_delete(queue)
    finally:
        connection.close()

    assert done.returncode == 0, done.stderr
    assert "unsent 0" in done.stdout
    assert waiting == 2
    assert " ERROR " not in done.stderr and "Traceback" not in done.stderr, done.stderr
