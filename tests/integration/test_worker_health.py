"""What Kubernetes reads, from real processes: a worker's health (its probe, `market worker-health`) follows its
broker, and the mailer's queue metrics (`market serve mailer`, read by KEDA) count what waits on Redis."""

import json
import subprocess
import sys
import time
import urllib.request

import dramatiq
import redis

from shared.messaging import MaintainedRedisBroker
from tests.integration.conftest import REDIS, ROOT, base_env, free_port, wait_until


def worker_health(env: dict, service: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services", "worker-health", service], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_a_mailer_worker_is_healthy_while_it_hears_from_its_redis_and_not_once_redis_is_gone(
        tmp_path, databases, processes, redis_server):
    broker_redis = redis_server("--appendonly", "yes", "--appendfsync", "everysec")
    processes.env = base_env(tmp_path, databases, MARKET_MAILER_BROKER_URL=f"{broker_redis.url}/0",
                             MARKET_HEARTBEAT_DIR=str(tmp_path / "heartbeats"), MARKET_HEARTBEAT_INTERVAL_S="1")
    processes.run("migrate", "mailer")
    assert worker_health(processes.env, "mailer").returncode == 1  # no worker yet

    processes.start("worker", "worker", "mailer")
    healthy = wait_until("the mailer worker to report healthy",
                         lambda: (done := worker_health(processes.env, "mailer")).returncode == 0 and done, timeout=90)
    assert "mailer: 1 worker process(es) consuming" in healthy.stdout

    broker_redis.stop()
    sick = wait_until("the mailer worker to report that it no longer hears from Redis",
                      lambda: (done := worker_health(processes.env, "mailer")).returncode == 1 and done, timeout=90)
    assert "last heard from its broker" in sick.stderr and "(more than 3 s)" in sick.stderr, sick.stderr
    assert processes.children["worker"].poll() is None  # alive: only its probe says it does not consume


def queues(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/queues", timeout=5) as response:
            return json.load(response)
    except OSError:
        return None


def test_the_mailer_metrics_count_the_waiting_messages_and_time_the_oldest_from_its_enqueueing(
        tmp_path, databases, processes):
    url = f"{REDIS}/11"
    redis.Redis.from_url(url).flushdb()
    port = free_port()
    processes.env = base_env(tmp_path, databases, MARKET_MAILER_BROKER_URL=url)
    processes.start("metrics", "serve", "mailer", "--bind", f"127.0.0.1:{port}", "--workers", "1")
    empty = wait_until("GET /queues to answer", lambda: queues(port), timeout=60)
    assert empty["depth"] == 0 and empty["oldest_wait_s"] == 0
    assert set(empty["queues"]) >= {"mailer.messages", "mailer.invoices", "mailer.events"}

    broker = MaintainedRedisBroker(url=url)
    before = time.time()
    hour_ago_ms = int((before - 3600) * 1000)  # first sent an hour ago, requeued now (a retry): it waited ~0 s
    for n in range(3):
        broker.enqueue(dramatiq.Message(queue_name="mailer.messages", actor_name="mailer.send_message",
                                        args=(n,), kwargs={}, options={}, message_timestamp=hour_ago_ms))
    found = queues(port)
    waited_at_most = time.time() - before
    assert found["queues"]["mailer.messages"]["depth"] == 3 and found["depth"] == 3
    assert 0 <= found["queues"]["mailer.messages"]["oldest_wait_s"] <= waited_at_most + 0.01
    assert found["oldest_wait_s"] == found["queues"]["mailer.messages"]["oldest_wait_s"]
    assert found["queues"]["mailer.invoices"] == {"depth": 0, "oldest_wait_s": 0.0}
    broker.close()
