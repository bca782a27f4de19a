"""A worker's health signal: a file per worker process, touched while every one of its consumers hears from its
broker, so that a probe (`market worker-health SERVICE`) can tell a worker that consumes from one that merely runs.

A consumer hears from its broker with each message it receives and at the end of each idle poll (about every
second); one stuck reconnecting to a broker that is down, or a consumer thread that died, stops the beat.
Dramatiq has no hook for an idle poll, so the broker's consumers are wrapped to note each answer.
"""

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import dramatiq
from dramatiq.middleware import Middleware


class _NotingConsumer(dramatiq.Consumer):
    """A broker's consumer that notes the time of every answer it gets: a message, or an idle poll's end."""

    def __init__(self, consumer: dramatiq.Consumer, note):
        self._consumer, self._note = consumer, note

    def __next__(self):
        message = next(self._consumer)
        self._note()
        return message

    def ack(self, message):
        return self._consumer.ack(message)

    def nack(self, message):
        return self._consumer.nack(message)

    def requeue(self, messages):
        return self._consumer.requeue(messages)

    def close(self):
        return self._consumer.close()


class Heartbeat(Middleware):
    """Touches `<directory>/<service>.<host>.<pid>` every `interval_s` while each consumer of this process's
    worker heard from its broker within the last `interval_s`; removes the file when the worker stops."""

    def __init__(self, service: str, directory: Path, interval_s: float):
        self.service, self.directory, self.interval_s = service, directory, interval_s
        self.heard: dict[str, float] = {}
        self.worker: dramatiq.Worker | None = None
        self.watching: dramatiq.Broker | None = None

    @property
    def path(self) -> Path:
        return self.directory / f"{self.service}.{socket.gethostname()}.{os.getpid()}"

    def before_worker_boot(self, broker, worker) -> None:
        self.worker = worker
        if self.watching is broker:  # a process may boot several workers on one broker (the in-process tests)
            return
        consume = broker.consume

        def noting_consume(queue_name, prefetch=1, timeout=30000):
            return _NotingConsumer(consume(queue_name, prefetch=prefetch, timeout=timeout),
                                   lambda: self.heard.__setitem__(queue_name, time.monotonic()))

        broker.consume = noting_consume
        self.watching = broker

    def beat(self) -> bool:
        """Touch the file if every consumer heard from its broker lately; whether it did."""
        if self.worker is None or not self.worker.consumers:
            return False
        since = time.monotonic() - self.interval_s
        consumers = list(self.worker.consumers.items())  # the worker adds one for each queue declared later
        if any(self.heard.get(queue, since - 1) < since or not thread.is_alive() for queue, thread in consumers):
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        return True

    def after_worker_shutdown(self, broker, worker) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Beat:
    pid: int
    age_s: float


def beats(directory: Path, service: str) -> list[Beat]:
    """The heartbeats of `service`'s live worker processes on this host (a dead process's file is ignored)."""
    found = []
    for path in directory.glob(f"{service}.{socket.gethostname()}.*"):
        pid = int(path.name.rsplit(".", 1)[1])
        try:
            age_s = time.time() - path.stat().st_mtime
        except FileNotFoundError:  # its process stopped meanwhile
            continue
        if _alive(pid):
            found.append(Beat(pid, age_s))
    return sorted(found, key=lambda beat: beat.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def health(directory: Path, service: str, max_age_s: float) -> tuple[bool, str]:
    """Whether every worker process of `service` on this host consumes, and a sentence saying so or why not."""
    found = beats(directory, service)
    if not found:
        return False, (f"no {service} worker process on {socket.gethostname()} has a heartbeat in {directory}: "
                       "not started, still booting, or never heard from its broker")
    stale = [beat for beat in found if beat.age_s > max_age_s]
    if stale:
        return False, "; ".join(f"{service} worker process {beat.pid} last heard from its broker {beat.age_s:.0f} s "
                                f"ago (more than {max_age_s:g} s)" for beat in stale)
    return True, (f"{service}: {len(found)} worker process(es) consuming, the oldest heartbeat "
                  f"{max(beat.age_s for beat in found):.1f} s old")
