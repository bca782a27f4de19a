"""Invoice emails in chunks (seed 000): templates compiled once, a whole chunk sent at a time with
sends overlapping, a summary file per chunk, one report back to billing per chunk.

Three steps, as for a single email (delivery.py): the chunk's attempt is recorded (`sending`, its own commit),
the chunk is sent, then its outcome is recorded with the inbox row and the report to billing, that
bookkeeping alone retried when it fails. A chunk found `sending` moments ago is in flight and left to that
attempt; found `sending` long ago, its send is ambiguous, counted, and resent or held as the policy says."""

import logging
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.mailer.delivery import bookkeep, retrying
from services.mailer.handlers import SendInFlight
from services.mailer.models import InvoiceChunk
from services.mailer.senders import Outgoing, ProviderUnavailable, Sender, send_guarded
from services.mailer.templates import subject, template
from shared.contracts import InvoiceEmail, InvoiceEmailsRequested, InvoiceEmailsSent, open_envelope
from shared.db import inbox, insert_ignore, transaction
from shared.messaging import PermanentError
from shared.outbox import publish
from shared.settings import Settings
from shared.storage import LocalStorage

log = logging.getLogger(__name__)
SERVICE, CONSUMER = "mailer", "mailer.on_invoice_emails_requested"
MAX_ATTEMPTS = 3  # a temporary refusal is tried again at once, twice, before the invoice counts as failed


def render(invoice: InvoiceEmail, run_id: str) -> Outgoing:
    context = {"name": invoice.name, "number": invoice.number, "amount_minor": invoice.amount_minor,
               "currency": invoice.currency, "due_date": invoice.due_date}
    # The id is stable within a run (a resend is recognisable) and new in a retry run.
    return Outgoing(f"invoice-{invoice.invoice_id}-{run_id[:8]}", invoice.email, subject("invoice", context),
                    template("invoice/body.txt").render(context))


def send_chunk(raw: dict, sender: Sender, storage: LocalStorage, settings: Settings,
               answers: dict | None = None) -> None:
    """Send one chunk once: safe twice, as a chunk recorded done or held is skipped and one recorded `sending` is
    in flight (SendInFlight) or ambiguous; billing never asks twice for an invoice it has marked emailed.
    Given the `answers` of an earlier send whose record failed, only records them."""
    try:
        event_id, event = open_envelope(raw, InvoiceEmailsRequested)
    except (ValidationError, ValueError) as exc:
        raise PermanentError(f"{CONSUMER} got an invalid invoice.emails_requested payload: {exc}") from exc
    if answers is None:
        with transaction(SERVICE) as session:
            go = claim(session, event.run_id, event.chunk, settings.ambiguous_send_policy,
                       settings.mail_ambiguous_after_s)
        if not go:
            log.info("Invoice run %s chunk %d skipped: already sent, or held (event %s).", event.run_id, event.chunk,
                     event_id)
            return
        try:
            sent, failed = _send(event, sender)
        except Exception:
            # Nothing went out (the provider was unreachable from the start) or the transport itself failed, as
            # before the attempt was recorded: give the attempt back so the retry sends the chunk.
            retrying(lambda session: release(session, event.run_id, event.chunk), settings.mail_bookkeeping_retry_s)
            raise
        answers = {"sent": list(sent), "failed": list(failed.items())}
    else:  # the emails the summary file shows are rendered again: the same text, as rendering is pure
        went = set(answers["sent"])
        sent = {i.invoice_id: render(i, event.run_id) for i in event.invoices if i.invoice_id in went}
        failed = dict(answers["failed"])
    bookkeep(lambda session: record(session, event_id, event, sent, failed, storage),
             f"invoice run {event.run_id} chunk {event.chunk}", answers, settings.mail_bookkeeping_retry_s)


def claim(session: Session, run_id: str, chunk: int, policy: str, ambiguous_after_s: float) -> bool:
    """Record the chunk's attempt before it is made; False when there is nothing to send."""
    now = datetime.now(UTC)
    if insert_ignore(session, InvoiceChunk.__table__, run_id=run_id, chunk=chunk, status="sending",
                        attempted_at=now):
        return True
    row = session.get(InvoiceChunk, (run_id, chunk), with_for_update=True, populate_existing=True)
    assert row is not None  # the insert above met this row
    if row.status == "sending":
        assert row.attempted_at is not None  # written with the status
        if now - _utc(row.attempted_at) < timedelta(seconds=ambiguous_after_s):
            raise SendInFlight(f"invoice run {run_id} chunk {chunk} is being sent by an attempt begun moments ago")
        row.ambiguous += 1
        log.warning("Invoice run %s chunk %d was being sent when its worker stopped; whether it went out is "
                    "unknown (policy: %s).", run_id, chunk, policy)
        if policy == "hold":
            row.status = "held"
            return False
    elif row.status != "queued":
        return False
    row.status, row.attempted_at = "sending", now
    return True


def release(session: Session, run_id: str, chunk: int) -> None:
    """Give back an attempt that sent nothing."""
    row = session.get(InvoiceChunk, (run_id, chunk), with_for_update=True)
    if row is not None and row.status == "sending":
        row.status = "queued"


def record(session: Session, event_id: str, event: InvoiceEmailsRequested, sent: dict[int, Outgoing],
           failed: dict[int, str], storage: LocalStorage) -> None:
    """Record the chunk's outcome, its summary file and its report to billing; safe twice (a chunk no longer
    `sending` is left)."""
    row = session.get(InvoiceChunk, (event.run_id, event.chunk), with_for_update=True, populate_existing=True)
    if row is None or row.status != "sending":
        return
    key = f"emails/{event.run_id}/chunk-{event.chunk:06d}.txt"
    storage.put(key, summary(event, sent.values(), failed).encode())
    row.status, row.sent, row.failed, row.summary_key = "done", len(sent), len(failed), key
    row.completed_at = datetime.now(UTC)
    insert_ignore(session, inbox, consumer=CONSUMER, event_id=event_id)
    publish(session, InvoiceEmailsSent(run_id=event.run_id, chunk=event.chunk, sent=list(sent), failed=failed))


def _send(event: InvoiceEmailsRequested, sender: Sender) -> tuple[dict[int, Outgoing], dict[int, str]]:
    """Send the chunk, trying temporary refusals again at once; the invoices sent, and those failed with why."""
    pending = {i.invoice_id: render(i, event.run_id) for i in event.invoices}
    sent: dict[int, Outgoing] = {}
    failed: dict[int, str] = {}
    for attempt in range(MAX_ATTEMPTS):
        try:
            outcomes = send_guarded(sender, list(pending.values()))
        except ProviderUnavailable as exc:
            if attempt == 0:
                raise  # nothing sent yet: the whole chunk is deferred
            # Keep what the first attempt sent; the rest is reported failed, for --retry-failed.
            failed |= dict.fromkeys(pending, f"provider unavailable on attempt {attempt + 1}: {exc}")
            break
        retry = {}
        for (invoice_id, message), failure in zip(pending.items(), outcomes, strict=True):
            if failure is None:
                sent[invoice_id] = message
            elif failure.permanent or attempt == MAX_ATTEMPTS - 1:
                failed[invoice_id] = failure.reason
            else:
                retry[invoice_id] = Outgoing(message.message_id, message.to, message.subject, message.text,
                                             attempt=attempt + 1)
        pending = retry
        if not pending:
            break
    return sent, failed


def summary(event: InvoiceEmailsRequested, sent, failed: dict[int, str]) -> str:
    """The fake email text of every invoice email of the chunk, then the failures."""
    parts = [f"Invoice run {event.run_id}, chunk {event.chunk}: {len(event.invoices)} emails, "
             f"{len(event.invoices) - len(failed)} sent, {len(failed)} failed\n"]
    parts += [f"\n=== {m.message_id} to {m.to}\nSubject: {m.subject}\n\n{m.text}" for m in sent]
    parts += [f"\n=== invoice-{invoice_id}-{event.run_id[:8]} FAILED: {reason}\n"
              for invoice_id, reason in failed.items()]
    return "".join(parts)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands datetimes back naive
