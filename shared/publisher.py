"""The per-process publisher: one daemon thread sends committed outbox rows, a batch at a time.

Publishing with confirms waits on the broker: done inside the request, it was most of a webhook's answer
time under load (p50 1.3-2.1 s, against 20 ms with the broker down). So the request only hands its rows to
this thread. The thread is also the only one of its process that publishes outbox rows, which suits pika's
BlockingConnection (not thread-safe; it answers heartbeats only while it is being called): while idle, the
thread keeps its connections alive, so RabbitMQ does not close them for missed heartbeats. A crash loses
nothing: the rows are committed, and the relay sends what was left unsent.

RabbitMQ gets a batch the way `RabbitmqBroker.enqueue` would send its messages (same body, properties, queues and
delay queues), all published before one wait for the broker's confirms (`ConfirmChannel`); a row counts as sent
only once the broker confirmed its message.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

import dramatiq
import dramatiq.errors
import pika
import pika.exceptions
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import current_millis, dq_name, q_name

log = logging.getLogger(__name__)
BATCH = 500  # rows marked sent per transaction
IDLE_TICK_S = 0.25  # how often an idle thread answers heartbeats: well under the shortest heartbeat (1 s)
EXIT_FLUSH_S = 10.0  # a short-lived process waits this long at exit for its rows to leave


class Publisher:
    """Sends the rows it is given with `send(owner, rows)` in its own thread, one batch per owner at a time."""

    def __init__(self, send: Callable[[str, list[dict]], None], brokers: Callable[[], Iterable[dramatiq.Broker]]):
        self._send, self._brokers = send, brokers
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child starts with no thread and no rows
        atexit.register(self.flush, EXIT_FLUSH_S)  # so a command's messages leave before the relay's delay

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, list[dict]] = {}
        self._in_flight = 0
        self._thread: threading.Thread | None = None

    def submit(self, owner: str, rows: list[dict]) -> None:
        """Queue committed rows of `owner`'s outbox for sending; returns at once."""
        with self._cond:
            self._pending.setdefault(owner, []).extend(rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every row submitted so far was sent (or left to the relay); returns whether there were any."""
        deadline = time.monotonic() + timeout
        with self._cond:
            had_work = bool(self._pending or self._in_flight)
            while (self._pending or self._in_flight) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            if self._pending or self._in_flight:
                log.warning("The outbox publisher still had %d rows after %.0f s; the relay will send them.",
                            sum(map(len, self._pending.values())) + self._in_flight, timeout)
        return had_work

    def _run(self) -> None:
        while True:
            owner, rows = self._take()
            if not rows:
                self._keep_alive()
                continue
            try:
                self._send(owner, rows)
            except Exception:  # the database is down, say: the rows stay unsent, and the relay sends them later
                log.exception("Sending %d outbox messages of %s failed; the relay will send them.", len(rows), owner)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _take(self) -> tuple[str, list[dict]]:
        with self._cond:
            if not self._pending:
                self._cond.wait(IDLE_TICK_S)  # pragma: no mutate (the tick answers RabbitMQ's heartbeats only)
            if not self._pending:
                return "", []
            owner = next(iter(self._pending))
            rows, rest = self._pending[owner][:BATCH], self._pending[owner][BATCH:]
            if rest:
                self._pending[owner] = rest
            else:
                del self._pending[owner]
            self._in_flight = len(rows)
            return owner, rows

    def _keep_alive(self) -> None:
        for broker in self._brokers():
            if isinstance(broker, RabbitmqBroker):
                keep_alive(broker)  # pragma: no mutate (RabbitMQ only)


# pragma: no mutate block (from here on, RabbitMQ only: tests/integration/test_publisher_*.py; see README)
def keep_alive(broker: RabbitmqBroker) -> None:
    """Answer heartbeats on this thread's connection, if it has one; drop it quietly if the server closed it."""
    connection = getattr(broker.state, "connection", None)
    if connection is None:
        return
    try:
        connection.process_data_events(time_limit=0)
    except (pika.exceptions.AMQPError, OSError) as exc:
        log.warning("The publishing connection to RabbitMQ was lost (%s); the next message opens a new one.",
                    type(exc).__name__)
        drop_connection(broker)


def drop_connection(broker: RabbitmqBroker) -> None:
    """Forget this thread's connection to `broker` (closing it if it is still open); the next publish opens one."""
    broker.state.confirm_channel = None
    try:
        del broker.connection
    except Exception:  # it is gone already; the next publish opens a new one
        log.debug("Closing a lost RabbitMQ connection failed.", exc_info=True)


CONFIRM_TIMEOUT_S = 30.0  # a broker that has not confirmed a batch by then (memory alarm, say) leaves it to the relay


def publish_confirmed(broker: RabbitmqBroker, messages: list[tuple[Message, int | None]]) -> set[str]:
    """Publish `(message, delay_ms)` pairs as `broker.enqueue` would, then wait once for all their confirms;
    returns the ids of the messages the broker confirmed. What a lost connection interrupts is tried once more."""
    confirmed: set[str] = set()
    for attempt in (1, 2):
        todo = [(message, delay) for message, delay in messages if message.message_id not in confirmed]
        try:
            _confirm_channel(broker).publish(todo, confirmed)
            break
        except (pika.exceptions.AMQPError, dramatiq.errors.ConnectionClosed, OSError) as exc:
            log.warning("Publishing %d messages to RabbitMQ failed (%s, attempt %d of 2).", len(todo),
                        type(exc).__name__, attempt)
            drop_connection(broker)
    return confirmed


def _confirm_channel(broker: RabbitmqBroker) -> "ConfirmChannel":
    """This thread's confirm channel on its connection of `broker`, opened again once that was closed."""
    channel = getattr(broker.state, "confirm_channel", None)
    if channel is None or not channel.usable_on(broker.connection):
        channel = broker.state.confirm_channel = ConfirmChannel(broker)
    return channel


def as_enqueued(message: Message, delay: int | None) -> Message:
    """The message as `RabbitmqBroker.enqueue` sends it: a delayed one goes to the `.DQ` queue with its eta."""
    if delay is None:
        return message
    return message.copy(queue_name=dq_name(message.queue_name), options={"eta": current_millis() + delay})


class ConfirmChannel:
    """A channel in confirm mode whose publishes do not wait for their confirms.

    pika's BlockingChannel in confirm mode waits for the broker after every message (one round trip each, which
    under load held a process to ~50 messages/s); this one publishes on the channel beneath it and collects the
    broker's acks, nacks and returns as they arrive, so a batch costs one round trip. Only the thread that opened
    it may use it."""

    def __init__(self, broker: RabbitmqBroker):
        self.broker, self.connection = broker, broker.connection
        self._blocking = self.connection.channel()
        self._channel = self._blocking._impl  # the asynchronous channel: publishing on it does not block
        self._next_tag = 1
        self._waiting: dict[int, Message] = {}  # delivery tag -> the message awaiting the broker's answer
        self._returned: set[str] = set()  # ids of the messages the broker returned
        self._acked: set[str] = set()
        ready: list[bool] = []

        def confirming(_frame) -> None:
            ready.append(True)
            self._wake()

        self._channel.confirm_delivery(ack_nack_callback=self._on_answer, callback=confirming)
        self._channel.add_on_return_callback(self._on_return)
        self._channel.add_on_close_callback(lambda *_: self._wake())
        if not self._wait_until(lambda: ready, CONFIRM_TIMEOUT_S):
            raise pika.exceptions.AMQPChannelError("RabbitMQ did not put the channel in confirm mode")

    def usable_on(self, connection: pika.BlockingConnection) -> bool:
        return connection is self.connection and connection.is_open and self._blocking.is_open

    def publish(self, messages: list[tuple[Message, int | None]], confirmed: set[str]) -> None:
        """Publish every message, then wait for the broker's answers; adds the ids it confirmed to `confirmed`
        as they arrive (so a connection lost halfway keeps those)."""
        broker, self._acked, self._returned, sent_ones = self.broker, confirmed, set(), []
        for message, delay in messages:
            broker.declare_queue(message.queue_name, ensure=True)
            sent = as_enqueued(message, delay)
            sent_ones.append((sent, delay))
            broker.emit_before("enqueue", sent, delay)
            self._channel.basic_publish(
                exchange="", routing_key=sent.queue_name, body=sent.encode(),
                properties=pika.BasicProperties(delivery_mode=2, priority=sent.options.get("broker_priority")),
                mandatory=True)  # an unroutable message comes back instead of vanishing
            self._waiting[self._next_tag] = sent
            self._next_tag += 1
        if not self._wait_until(lambda: not self._waiting, CONFIRM_TIMEOUT_S):
            log.warning("RabbitMQ did not confirm %d messages in %.0f s; the relay sends them.", len(self._waiting),
                        CONFIRM_TIMEOUT_S)
            self._blocking.close()  # its late answers must not count for the next batch
        for sent, delay in sent_ones:
            if sent.message_id in confirmed:
                broker.emit_after("enqueue", sent, delay)

    def _wait_until(self, done: Callable[[], object], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and (left := deadline - time.monotonic()) > 0:
            if self._blocking.is_closed:
                raise pika.exceptions.ChannelClosed(-1, "the channel closed while waiting for confirms")
            self.connection.process_data_events(time_limit=left)
        return bool(done())

    def _wake(self) -> None:
        # The answers reach the channel beneath, which `process_data_events` does not watch: a callback queued
        # on the connection is what makes it return at once rather than at its time limit.
        if self.connection.is_open:
            self.connection.add_callback_threadsafe(lambda: None)

    def _on_answer(self, frame) -> None:
        method = frame.method
        tags = [t for t in self._waiting if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            message = self._waiting.pop(tag, None)
            if message is None:
                continue
            if isinstance(method, pika.spec.Basic.Ack) and message.message_id not in self._returned:
                self._acked.add(message.message_id)
            else:
                log.warning("RabbitMQ refused message %s on %s; the relay tries again.", message.message_id,
                            message.queue_name)
        if not self._waiting:
            self._wake()

    def _on_return(self, _channel, method, _properties, body: bytes) -> None:
        # The queue is gone (deleted by hand, say): the next publish declares it again.
        self._returned.add(Message.decode(body).message_id)
        self.broker.queues_pending.add(q_name(method.routing_key))
