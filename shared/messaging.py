"""Brokers, one per service, set up so that nothing is lost; and the actor declaration every service uses.

- RabbitMQ publishes with publisher confirms.
- Redis requeues a dead worker's unacked messages on a timer (every few seconds), not
  only in Dramatiq's random maintenance pass, and keeps this process's heartbeat fresh;
  an idle Redis queue is asked again within 100 ms.
- Messages that exhaust their retries are kept in the service's failed-jobs table.
"""

import logging
import threading
import traceback
from collections.abc import Callable
from functools import cache
from typing import TypeVar, cast

import dramatiq
import pika
import redis
import sqlalchemy as sa
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis
from dramatiq.middleware import CurrentMessage, Middleware, Retries

from shared.db import failed_jobs, transaction
from shared.settings import get_settings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Middleware)


def middleware_of(broker: dramatiq.Broker, kind: type[M], make: Callable[[], M]) -> M:
    """The broker's one middleware of `kind`, added (made by `make`) on first use: Dramatiq warns about every
    second middleware of one type, and a process may set a broker up more than once (the in-process tests)."""
    found = next((m for m in broker.middleware if isinstance(m, kind)), None)
    if found is None:
        found = make()
        broker.add_middleware(found)
    return found
DATABASE_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
# What a publish or a Redis check raises when the server is down: Dramatiq wraps RabbitMQ's errors after its
# own retries, its Redis broker lets redis-py's through, and pika's may surface before Dramatiq wraps them.
BROKER_UNAVAILABLE = (dramatiq.errors.BrokerConnectionError, redis.exceptions.ConnectionError,
                      redis.exceptions.TimeoutError, pika.exceptions.AMQPConnectionError)
# A database or broker that is down (a restart, a failover) is waited out, not failed: with backoff capped at
# an actor's max_backoff (5 min by default) these retries span about 40 minutes of outage.
OUTAGE_RETRIES = 12


class PermanentError(Exception):
    """Retrying cannot help (bad payload, unknown id): the message fails at once."""


IDLE_POLL_MS = 100  # the longest an idle Redis queue goes unasked


class MaintainedRedisBroker(RedisBroker):
    """A RedisBroker whose maintenance pass can be run on purpose, whose idle queues answer promptly, and whose
    delayed messages survive a lost connection."""

    _forced = threading.local()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        """A consumer for `queue_name`; for a delay queue, first put back what this worker holds on it.

        A worker holds the delayed messages it fetched (retries, deferrals) in memory until their time, and
        Dramatiq drops that memory when the Redis connection fails (a Redis restart), then consumes anew. The
        messages stay in this worker's acknowledgement set, which maintenance requeues only once the worker is
        dead: alive, it would strand them. A delay queue's consumer is made only at start-up and after such a
        failure, when it holds nothing, so everything in the set is stranded and goes back on the queue."""
        if queue_name.endswith(".DQ"):
            try:
                held = self.client.smembers(f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}")
                if held:
                    # the broker's client leaves responses undecoded: the members are bytes
                    self.do_requeue(queue_name, *(m.decode() for m in cast(set[bytes], held)))
                    log.warning("Put %d delayed messages back on %s after a lost Redis connection.", len(held),
                                queue_name)
            except redis.exceptions.ConnectionError as exc:  # Dramatiq retries a consumer on its own errors
                raise dramatiq.errors.ConnectionClosed(exc) from None
        # Dramatiq's Redis consumer polls an empty queue with a growing pause, up to its timeout (the worker's,
        # 1 s): each of the mailer's two hops of a purchase waited for it (emails 1.5 s after the webhook at
        # 20 purchases/s). A RabbitMQ consumer is pushed its messages and needs no cap.
        return super().consume(queue_name, prefetch, min(timeout, IDLE_POLL_MS))

    def _should_do_maintenance(self, command: str) -> int:
        return 1 if getattr(self._forced, "on", False) else super()._should_do_maintenance(command)

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        # When it joined its queue (a retry: again when its backoff is over), which `waiting` measures from:
        # message_timestamp is when it was first sent, so a retry would look as old as the first attempt.
        return super().enqueue(message.copy(options={"enqueued_at": current_millis()}), delay=delay)

    def waiting(self, queue_name: str) -> tuple[int, float]:
        """How many messages wait on a queue (not the delayed, not those being processed), and how many
        seconds the next to be delivered has waited (0 when none): Dramatiq keeps a queue as a list of
        message ids (`<namespace>:<queue>`, delivered from the head) and the messages in a hash beside it."""
        key = f"{self.namespace}:{queue_name}"
        pipeline = self.client.pipeline()
        pipeline.llen(key)
        pipeline.lindex(key, 0)
        depth, head = pipeline.execute()
        data = self.client.hget(f"{key}.msgs", head) if head is not None else None
        if data is None:  # empty, or delivered between the two reads
            return depth, 0.0
        message = dramatiq.Message.decode(cast(bytes, data))  # undecoded, as above
        enqueued_at = message.options.get("enqueued_at", message.message_timestamp)
        return depth, max(0, current_millis() - enqueued_at) / 1000

    def maintain(self) -> None:
        """Requeue messages held by dead workers on every queue of this broker; refreshes our heartbeat."""
        self._forced.on = True
        try:
            for queue in sorted(self.queues | self.delay_queues):
                self.do_qsize(queue)
        finally:
            self._forced.on = False


class PeriodicDuties(Middleware):
    """Runs each duty at its own interval, each in a daemon thread, while the worker is up; one per broker."""

    def __init__(self):
        self.duties: dict[str, tuple[float, Callable[[], object]]] = {}
        self._stop = threading.Event()

    @classmethod
    def of(cls, broker: dramatiq.Broker) -> "PeriodicDuties":
        """The broker's one PeriodicDuties, added on first use."""
        return middleware_of(broker, cls, cls)

    def add(self, name: str, interval: float, fn: Callable[[], object]) -> None:
        self.duties[name] = (interval, fn)  # by name: adding a duty again replaces it

    def after_worker_boot(self, broker, worker) -> None:
        self._stop.clear()
        for name, (interval, fn) in self.duties.items():
            threading.Thread(target=self._loop, args=(name, interval, fn), name=name, daemon=True).start()

    def before_worker_shutdown(self, broker, worker) -> None:
        self._stop.set()

    def _loop(self, name: str, interval: float, fn: Callable[[], object]) -> None:
        while not self._stop.wait(interval):
            try:
                fn()
            except Exception:
                log.exception("Periodic task %s failed; it runs again in %.1f s.", name, interval)


class FailedJobs(Middleware):
    """Keeps every message that failed for good in its service's failed-jobs table."""

    def __init__(self, service: str):
        self.service = service

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        if exception is not None and message.failed:
            self._store(message, "".join(traceback.format_exception(exception, limit=20)))

    def after_skip_message(self, broker, message) -> None:
        if message.failed:
            self._store(message, "skipped by middleware (age limit or shutdown)")

    def _store(self, message, error: str) -> None:
        with transaction(self.service) as session:
            exists = session.scalar(sa.select(failed_jobs.c.id).where(failed_jobs.c.message_id == message.message_id))
            if not exists:
                session.execute(failed_jobs.insert().values(
                    message_id=message.message_id, queue=message.queue_name, actor=message.actor_name,
                    message=message.asdict(), error=error))
        log.error("Message %s (%s) failed for good and was stored in %s's failed jobs.",
                  message.message_id, message.actor_name, self.service)


@cache
def broker_for(service: str) -> dramatiq.Broker:
    """The broker this process uses to reach `service` (its own, or a target of a publish)."""
    settings = get_settings()
    url = settings.broker_url_for(service)
    broker: dramatiq.Broker
    if url.startswith("amqp"):
        broker = RabbitmqBroker(url=url, confirm_delivery=True)
    elif url.startswith("redis"):
        broker = MaintainedRedisBroker(url=url, heartbeat_timeout=settings.redis_heartbeat_timeout_ms)
    elif url.startswith("memory"):
        broker = StubBroker()
    else:
        raise ValueError(f"unsupported broker URL for {service}: {url!r} (use amqp://, redis:// or memory://)")
    broker.add_middleware(CurrentMessage())
    # `after_` hooks run in reverse order: placed before Retries, FailedJobs sees Retries' verdict.
    broker.add_middleware(FailedJobs(service), before=Retries)
    return broker


PING_TIMEOUT_S = 2  # a probe must answer within the platform's probe timeout (compose and k8s: 5 s)


def ping_brokers(services) -> dict[str, str]:
    """"ok" or "down (why)" for the broker of each of `services`, each server asked once."""
    settings = get_settings()
    by_url: dict[str, str] = {}
    states = {}
    for service in services:
        url = settings.broker_url_for(service)
        if url not in by_url:
            by_url[url] = _ping(url)
        states[f"broker of {service}"] = by_url[url]
    return states


def _ping(url: str) -> str:
    """Open and close a connection to the broker at `url` (an in-memory one always answers)."""
    try:
        if url.startswith("amqp"):
            params = pika.URLParameters(url)
            params.connection_attempts, params.socket_timeout, params.stack_timeout = 1, PING_TIMEOUT_S, PING_TIMEOUT_S
            pika.BlockingConnection(params).close()
        elif url.startswith("redis"):
            with redis.Redis.from_url(url, socket_timeout=PING_TIMEOUT_S,
                                      socket_connect_timeout=PING_TIMEOUT_S) as client:
                client.ping()
    except (pika.exceptions.AMQPError, redis.exceptions.RedisError, OSError) as exc:
        return f"down ({type(exc).__name__})"
    return "ok"


def reaches_workers(broker: dramatiq.Broker) -> bool:
    """False for an in-memory broker that no worker of this process consumes."""
    return not isinstance(broker, StubBroker) or getattr(broker, "consumed_here", False)


def keeps_append_only_file(client: redis.Redis) -> bool | None:
    """Whether a Redis keeps an append-only file; None when it will not say (CONFIG and INFO disabled)."""
    try:
        return client.config_get("appendonly").get("appendonly") == "yes"
    except redis.exceptions.ResponseError:  # CONFIG is often renamed or disabled on managed Redis
        pass
    try:
        return str(client.info("persistence").get("aof_enabled")) == "1"
    except redis.exceptions.ResponseError:
        return None


def require_durable_broker(service: str) -> None:
    """Exit when `service` consumes a Redis that would lose its queues on a restart (no append-only file),
    unless MARKET_ALLOW_VOLATILE_REDIS says that is fine here."""
    settings = get_settings()
    url = settings.broker_url_for(service)
    if not url.startswith("redis"):
        return
    try:
        with redis.Redis.from_url(url, socket_timeout=PING_TIMEOUT_S, socket_connect_timeout=PING_TIMEOUT_S) as client:
            durable = keeps_append_only_file(client)
    except (redis.exceptions.RedisError, OSError) as exc:
        # Not ours to decide: the broker connection itself retries and reports an unreachable server.
        log.warning("Could not check whether %s's broker Redis keeps its queues (%s).", service, exc)
        return
    if durable:
        return
    if durable is None:
        log.warning("%s's broker Redis refuses CONFIG and INFO: cannot tell whether it keeps an append-only file. "
                    "Make sure it does (appendonly yes), or a Redis restart loses every queued message.", service)
    elif settings.allow_volatile_redis:
        log.warning("%s's broker Redis keeps NO append-only file: a Redis restart loses every queued message. "
                    "Allowed by MARKET_ALLOW_VOLATILE_REDIS; never do this in production.", service)
    else:
        raise SystemExit(
            f"Error: the {service} worker will not start: its broker Redis keeps no append-only file, so a Redis "
            "restart would lose every queued message. Run Redis with `appendonly yes` and `appendfsync everysec` "
            "(compose/docker-compose.yml does), or set MARKET_ALLOW_VOLATILE_REDIS=1 where losing them is fine.")


def defer(service: str, delay_ms: int) -> None:
    """Put the message being processed back on its queue after `delay_ms` without spending a retry
    (the provider is down: waiting is the cure, failing is not)."""
    message = CurrentMessage.get_current_message()
    assert message is not None  # called by an actor, while its message is processed
    broker_for(service).enqueue(message.copy(), delay=delay_ms)
    log.warning("Message %s (%s) deferred by %d ms.", message.message_id, message.actor_name, delay_ms)


def retries_left(max_retries: int, retries: int, exception: BaseException) -> bool:
    """Whether a message that failed `retries` times before, now with `exception`, is retried: up to `max_retries`
    times for a failure, at least OUTAGE_RETRIES for an outage (a database or broker unreachable), which a few
    retries 10-40 s apart would turn into failed jobs."""
    outage = isinstance(exception, DATABASE_UNAVAILABLE + BROKER_UNAVAILABLE)
    return retries < (max(max_retries, OUTAGE_RETRIES) if outage else max_retries)


def actor(service: str, name: str, *, queue: str, time_limit_s: int, max_retries: int = 2,
          backoff_s: int = 10, max_backoff_s: int = 300):
    """Declare an actor on its service's broker; PermanentError is never retried, an outage longer than others."""
    def declare(fn):
        declared = dramatiq.actor(
            actor_name=name, queue_name=queue, broker=broker_for(service),
            time_limit=time_limit_s * 1000, max_retries=max_retries,
            min_backoff=backoff_s * 1000, max_backoff=max_backoff_s * 1000, throws=(PermanentError,),
        )(fn)
        # Read when a message fails, so the declared (or a test's) max_retries still rules ordinary failures.
        declared.options["retry_when"] = lambda retries, exc: retries_left(declared.options["max_retries"],
                                                                            retries, exc)
        return declared
    return declare
