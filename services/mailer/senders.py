"""Where email goes. Every transport takes a batch of `Outgoing` and answers one outcome per message.

- `SmtpSender`: a real SMTP server, one connection reused for the batch, STARTTLS and login.
- `FileSender`: .eml files in a folder (the embedded default).
- `SimulatedSender`: the seed-000 mock provider: a seeded random delay and error rate, sends
  overlapping on the process's event loop (`Overlap`), for load runs.

A transport raises `ProviderDown` when the provider cannot be reached at all; the circuit
breaker counts those, and while it is open sends are deferred instead of failed.
"""

import asyncio
import hashlib
import math
import os
import smtplib
import ssl
import tempfile
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import pybreaker

from shared.settings import Settings, get_settings


@dataclass(frozen=True, slots=True)
class Outgoing:
    message_id: str  # stable per logical email: a resend can be recognised
    to: str
    subject: str
    text: str
    html: str | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class SendFailed:
    reason: str
    permanent: bool  # a bad address: retrying cannot help


class ProviderDown(Exception):
    """The provider cannot be reached; nothing in the batch was sent after this point."""


class Batch(Protocol):
    """What a transport reads of a batch: its size, and each message in turn (a list, or a `PacedBatch` that
    hands each out when the shared pace allows)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Outgoing]: ...


class Sender(Protocol):
    """What every transport is: a batch in, one outcome per message out (None when it was sent)."""

    def send_many(self, messages: Batch) -> list[SendFailed | None]: ...


UTF8 = Charset("utf-8")
UTF8.body_encoding = QP  # readable bodies, as EmailMessage.set_content writes them


def as_email(message: Outgoing, mail_from: str) -> Message:
    """The MIME message, built with the compat32 classes: with EmailMessage's default policy an email took 3.2 ms
    to build and write out, with these about 1 ms. Their generator still refuses a header holding another."""
    # typeshed wants the charset's name; the stdlib takes a Charset too, which is how QP bodies are chosen
    text = MIMEText(message.text, "plain", UTF8)  # type: ignore[arg-type]
    email: Message
    if message.html is None:
        email = text
    else:
        email = MIMEMultipart("alternative")
        email.attach(text)
        email.attach(MIMEText(message.html, "html", UTF8))  # type: ignore[arg-type]  # a Charset, as above
    # Header names are case-insensitive: mutating their case changes nothing (see README, Mutation testing).
    email["From"], email["To"] = mail_from, message.to  # pragma: no mutate
    # compat32 messages take a Header as a value; typeshed types them all with str values
    email["Subject"] = message.subject if message.subject.isascii() else Header(message.subject, UTF8)  # type: ignore[assignment]
    email["Date"] = formatdate(localtime=False)  # pragma: no mutate
    email["Message-ID"] = f"<{message.message_id}@marketplace>"  # pragma: no mutate
    return email


def smtp_failure(exc: smtplib.SMTPException) -> SendFailed:
    """A 5xx reply means the address or the message is wrong: permanent. 4xx is temporary."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        permanent = all(500 <= code < 600 for code, _ in exc.recipients.values())
    elif isinstance(exc, smtplib.SMTPNotSupportedError):
        permanent = True
    else:
        permanent = isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600
    return SendFailed(f"{type(exc).__name__}: {exc}", permanent)


class SmtpSender:
    """Delivers over one SMTP connection per batch, with STARTTLS and login when configured."""

    def __init__(self, host: str, port: int, *, mail_from: str, username: str | None = None,
                 password: str | None = None, starttls: bool = False, timeout: float = 10.0,
                 ca_file: str | None = None):
        self.host, self.port, self.timeout, self.mail_from = host, port, timeout, mail_from
        self.username, self.password, self.starttls = username, password, starttls
        self.ca_file = ca_file

    def _connect(self) -> smtplib.SMTP:
        """An open, secured and logged-in connection; any failure on the way means the provider is down
        for us (a wrong password or certificate is fixed by an operator, not by retrying each email)."""
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise ProviderDown(f"SMTP {self.host}:{self.port} unreachable: {exc}") from exc
        try:
            if self.starttls:
                # Verify the server's certificate: the stdlib default for starttls() does not.
                smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
            if self.username:
                smtp.login(self.username, self.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            smtp.close()
            raise ProviderDown(f"SMTP {self.host}:{self.port} refused the session: {exc}") from exc
        return smtp

    def send_many(self, messages: Batch) -> list[SendFailed | None]:
        outcomes: list[SendFailed | None] = []
        with self._connect() as smtp:
            for message in messages:
                try:
                    smtp.send_message(as_email(message, self.mail_from))
                    outcomes.append(None)
                except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                    if not outcomes:
                        raise ProviderDown(f"SMTP {self.host}:{self.port} dropped the connection: {exc}") from exc
                    # Whatever is left goes in the next attempt.
                    reason = SendFailed(f"connection lost: {exc}", permanent=False)
                    outcomes += [reason] * (len(messages) - len(outcomes))
                    break
                except smtplib.SMTPException as exc:
                    outcomes.append(smtp_failure(exc))
                    if not _reset(smtp):  # e.g. 421: the server refused and closed the connection
                        reason = SendFailed(f"connection closed by the server after: {exc}", permanent=False)
                        outcomes += [reason] * (len(messages) - len(outcomes))
                        break
        return outcomes


def _reset(smtp: smtplib.SMTP) -> bool:
    """Get the session ready for the next message; False when the server has gone (smtplib closes the connection
    itself on a 421, and then raises SMTPServerDisconnected here)."""
    try:
        smtp.rset()
        return True
    except (smtplib.SMTPException, OSError):
        return False


class FileSender:
    """Writes each message as an .eml file, atomically, named by its message id."""

    def __init__(self, folder: Path, mail_from: str):
        self.folder, self.mail_from = Path(folder), mail_from

    def send_many(self, messages: Batch) -> list[SendFailed | None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        for message in messages:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".mail-")
            with os.fdopen(fd, "wb") as f:
                f.write(as_email(message, self.mail_from).as_bytes())
            os.replace(tmp, self.folder / f"{message.message_id}.eml")
        return [None] * len(messages)


class SimulatedSender:
    """The mock provider of seed 000: each send takes a random delay and fails at a given rate.

    Outcomes depend only on (seed, message id, attempt), so a run can be repeated exactly. The sends are in flight
    on this process's `Overlap`, beside every other worker thread's.
    """

    def __init__(self, min_delay_ms: float = 20, max_delay_ms: float = 80, error_rate: float = 0.01,
                 seed: int = 0, concurrency: int = 5000):
        self.min_delay, self.max_delay = min_delay_ms / 1000, max_delay_ms / 1000
        self.error_rate, self.seed, self.concurrency = error_rate, seed, concurrency

    def _outcome(self, message: Outgoing) -> tuple[float, SendFailed | None]:
        # Two uniform draws from one hash: as repeatable as a seeded Random, at a tenth of its cost per message.
        digest = hashlib.blake2b(f"{self.seed}:{message.message_id}:{message.attempt}".encode(), digest_size=16)
        value = int.from_bytes(digest.digest())
        delay = self.min_delay + (self.max_delay - self.min_delay) * (value >> 64) / 2**64
        failed = (value & (2**64 - 1)) / 2**64 < self.error_rate
        return delay, SendFailed("simulated provider error 451", permanent=False) if failed else None

    def send_many(self, messages: Batch) -> list[SendFailed | None]:
        timed = [self._outcome(m) for m in messages]
        if self.max_delay <= 0:
            return [failure for _, failure in timed]
        return overlap(self.concurrency).replies(timed)


class _Batch:
    """One thread's sends on the lane: how many replies are still to come, and the signal when none are."""

    __slots__ = ("timed", "left", "done")

    def __init__(self, timed: Sequence[tuple[float, object]]):
        self.timed, self.left, self.done = timed, len(timed), threading.Event()


class Overlap:
    """One event loop per process, in its own thread, on which the sends of every worker thread are in flight
    together, at most `limit` at once; a thread waits only for the replies to its own batch.

    This is what hides a provider's latency: a send in flight holds a timer on the loop, not a thread, so
    thousands overlap across chunks (an HTTP API's transport would run its requests on this loop, under the same
    limit). A batch costs the loop a few calls, not a few per send: replies due in the same millisecond share one
    timer and are counted off together. Sends beyond the limit wait, in order, for slots to free."""

    def __init__(self, limit: int):
        self.limit, self.free = limit, limit
        self.waiting: deque[tuple[_Batch, int]] = deque()
        self.due: dict[int, list[tuple[_Batch, int]]] = {}  # millisecond -> (batch, replies due then)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="mail-overlap", daemon=True).start()

    def replies(self, timed: Sequence[tuple[float, object]]) -> list:
        """Send a batch of (delay, outcome): each send's reply comes `delay` seconds after it starts. Returns the
        outcomes, in order, once every reply has come."""
        if timed:
            batch = _Batch(timed)
            self.loop.call_soon_threadsafe(self._start, batch, range(len(timed)))
            batch.done.wait()
        return [outcome for _, outcome in timed]

    def _start(self, batch: _Batch, sends: Sequence[int]) -> None:
        going, self.free = sends[:self.free], max(0, self.free - len(sends))
        self.waiting.extend((batch, index) for index in sends[len(going):])
        now_ms, by_due = self.loop.time() * 1000, Counter[int]()
        for index in going:
            by_due[math.ceil(now_ms + batch.timed[index][0] * 1000)] += 1
        for due, count in by_due.items():
            if due not in self.due:
                self.due[due] = []
                self.loop.call_at(due / 1000, self._reply, due)
            self.due[due].append((batch, count))

    def _reply(self, due: int) -> None:
        for batch, count in self.due.pop(due):
            self.free += count
            batch.left -= count
            if not batch.left:
                batch.done.set()
        while self.waiting and self.free:
            batch, index = self.waiting.popleft()
            self._start(batch, [index])


_overlaps: dict[tuple[int, int], Overlap] = {}
_overlaps_lock = threading.Lock()


def overlap(limit: int) -> Overlap:
    """This process's overlap for `limit` (made on first use, so a forked worker process makes its own)."""
    with _overlaps_lock:
        key = (os.getpid(), limit)
        if key not in _overlaps:
            _overlaps[key] = Overlap(limit)
        return _overlaps[key]


def sender_from(settings: Settings) -> Sender:
    if settings.mail_transport == "smtp":
        return SmtpSender(settings.smtp_host, settings.smtp_port, mail_from=settings.mail_from,
                          username=settings.smtp_username, password=settings.smtp_password,
                          starttls=settings.smtp_starttls, timeout=settings.smtp_timeout_s,
                          ca_file=settings.smtp_ca_file)
    if settings.mail_transport == "file":
        return FileSender(settings.mail_dir, settings.mail_from)
    if settings.mail_transport == "simulated":
        return SimulatedSender(settings.simulated_min_delay_ms, settings.simulated_max_delay_ms,
                               settings.simulated_error_rate, settings.simulated_seed)
    raise ValueError(f"unknown MARKET_MAIL_TRANSPORT {settings.mail_transport!r} (use smtp, file or simulated)")


class ProviderUnavailable(Exception):
    """The provider is down or its circuit is open: defer the work, do not fail it."""


class ConcurrentBreaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker, except that a closed circuit lets calls run side by side: pybreaker holds its lock
    for the whole call, so a mailer process's threads sent one email at a time. An open or half-open circuit
    still takes the lock, so one trial send at a time decides whether it closes."""

    def call(self, func, *args, **kwargs):
        if self.current_state == pybreaker.STATE_CLOSED:
            return self.state.call(func, *args, **kwargs)
        return super().call(func, *args, **kwargs)


@lru_cache(maxsize=1)
def breaker() -> pybreaker.CircuitBreaker:
    """One per process: after `fail_max` unreachable attempts in a row it opens; after `reset` seconds
    one trial send decides whether it closes again."""
    settings = get_settings()
    return ConcurrentBreaker(fail_max=settings.breaker_fail_max, reset_timeout=settings.breaker_reset_s,
                             exclude=[lambda exc: not isinstance(exc, ProviderDown)])


def send_guarded(sender: Sender, messages: Batch) -> list[SendFailed | None]:
    """Send through the circuit breaker; raises ProviderUnavailable while the provider is down."""
    try:
        return breaker().call(sender.send_many, messages)
    except (ProviderDown, pybreaker.CircuitBreakerError) as exc:
        raise ProviderUnavailable(str(exc)) from exc
