"""The provider's rate limit, shared by every mailer worker through Redis, one slot per email.

Built on Dramatiq's `BucketRateLimiter`: a limit of N a second becomes one slot every 1000/N ms
(or k slots every k*1000/N ms above 50 a second), so sends are spread evenly instead of bursting
N at the top of each second, and no calendar second can hold more than N slots.
"""

import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache

import redis
from dramatiq.rate_limits import BucketRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from shared.settings import Settings

log = logging.getLogger(__name__)


class Pacer:
    """At most `per_second` slots a second for `key`, counted in `backend` (Redis, or Dramatiq's stub in tests)."""

    def __init__(self, backend, key: str, per_second: int):
        per_bucket = math.ceil(per_second / 50)  # buckets of 20 ms or more: cheap to poll
        self.bucket_ms = math.ceil(per_bucket * 1000 / per_second)
        self.limiter = BucketRateLimiter(backend, key, limit=per_bucket, bucket=self.bucket_ms)

    def take(self, deadline: float) -> bool:
        """Wait for a slot; False if none came before `deadline` (time.monotonic) or Redis cannot be asked."""
        while True:
            try:
                if self._acquire_in_time():
                    return True
            except redis.RedisError as exc:
                log.warning("The mail rate limiter cannot reach Redis (%s); sending stops here for now.", exc)
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Wake just after the next bucket opens, spread a little so waiting workers do not stampede.
            now_ms = time.time() * 1000
            wait_ms = self.bucket_ms - now_ms % self.bucket_ms + random.uniform(0, self.bucket_ms / 5)
            time.sleep(min(wait_ms / 1000, left))


    def _acquire_in_time(self) -> bool:
        # A slot counts only if it was granted within its bucket. Dramatiq's limiter names the bucket from
        # the clock before it asks Redis; a grant that comes back after the bucket ended (a slow round trip,
        # or the old bucket's key expired and was made anew) would send in the next bucket beside its own
        # slot, so it is dropped and another slot is waited for.
        bucket = self._bucket()
        with self.limiter.acquire(raise_on_failure=False) as acquired:
            return acquired and self._bucket() == bucket

    def _bucket(self) -> int:
        return int(time.time() * 1000) // self.bucket_ms


class Unlimited:
    """No rate limit configured: every email may go at once."""

    def take(self, deadline: float) -> bool:
        return True


class PacedBatch:
    """The batch a transport iterates: each message is handed out only once it has a slot, and none after
    the deadline, so the transport's one connection sends at the shared pace. `taken` says how many went out
    to the transport; the outcomes beyond it are not real."""

    def __init__(self, messages: Sequence, pacer: Pacer | Unlimited, deadline: float):
        self.messages, self.pacer, self.deadline, self.taken = list(messages), pacer, deadline, 0

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator:
        for message in self.messages:
            if time.monotonic() >= self.deadline or not self.pacer.take(self.deadline):
                return
            self.taken += 1
            yield message


def pacer_from(settings: Settings) -> Pacer | Unlimited:
    if not settings.mail_rate_limit_per_s or not settings.rate_limit_redis_url:
        return Unlimited()
    smtp = settings.mail_transport == "smtp"
    provider = f"{settings.smtp_host}:{settings.smtp_port}" if smtp else settings.mail_transport
    return _redis_pacer(settings.rate_limit_redis_url, f"market:mail-rate:{provider}", settings.mail_rate_limit_per_s)


@lru_cache(maxsize=8)
def _redis_pacer(url: str, key: str, per_second: int) -> Pacer:
    """One per process and configuration, so its Redis connections are reused."""
    return Pacer(RedisBackend(url=url), key, per_second)
