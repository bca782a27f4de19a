"""How the brokers of `shared.messaging` consume."""

from types import SimpleNamespace

import dramatiq.brokers.redis
import pytest

from shared.messaging import IDLE_POLL_MS, MaintainedRedisBroker


@pytest.mark.parametrize("worker_timeout_ms", [50, 1000, 5000])
def test_an_idle_redis_queue_is_asked_again_within_the_idle_poll_whatever_the_worker_timeout(
        monkeypatch, worker_timeout_ms):
    broker = MaintainedRedisBroker(url="redis://127.0.0.1:1")  # never reached: fetching is replaced below
    monkeypatch.setattr(broker, "do_fetch", lambda queue, count: [])
    pauses = []
    monkeypatch.setattr(dramatiq.brokers.redis, "time", SimpleNamespace(sleep=pauses.append))
    consumer = broker.consume("mailer.outbound", timeout=worker_timeout_ms)
    assert [next(consumer) for _ in range(30)] == [None] * 30
    longest = min(worker_timeout_ms, IDLE_POLL_MS)
    assert longest / 2 <= max(pauses) * 1000 <= longest  # backs off (sparing Redis), but never past the cap
