"""The per-process publisher: one daemon thread sends committed outbox rows, a batch at a time.

Publishing with confirms waits on the broker: done inside the request, it was most of a webhook's answer
time under load (p50 1.3-2.1 s, against 20 ms with the broker down). So the request only hands its rows to
this thread. The thread is also the only one of its process that publishes outbox rows, which suits pika's
BlockingConnection (not thread-safe; it answers heartbeats only while it is being called): while idle, the
thread keeps its connections alive, so RabbitMQ does not close them for missed heartbeats. A crash loses
nothing: the rows are committed, and the relay sends what was left unsent.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker

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
                self._cond.wait(IDLE_TICK_S)
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
                keep_alive(broker)


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
        try:
            del broker.connection
        except Exception:  # it is gone already; the next publish opens a new one
            log.debug("Closing a lost RabbitMQ connection failed.", exc_info=True)
