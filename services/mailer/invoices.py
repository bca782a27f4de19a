"""Invoice emails in chunks (seed 000): templates compiled once, a whole chunk sent at a time with
sends overlapping, a summary file per chunk, one report back to billing per chunk."""

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from services.mailer.models import InvoiceChunk
from services.mailer.senders import Outgoing, ProviderUnavailable, send_guarded
from services.mailer.templates import environment
from shared.contracts import InvoiceEmail, InvoiceEmailsRequested, InvoiceEmailsSent
from shared.outbox import publish
from shared.storage import LocalStorage

MAX_ATTEMPTS = 3  # a temporary refusal is tried again at once, twice, before the invoice counts as failed


def render(invoice: InvoiceEmail, run_id: str) -> Outgoing:
    env = environment()
    context = {"name": invoice.name, "number": invoice.number, "amount_minor": invoice.amount_minor,
               "currency": invoice.currency, "due_date": invoice.due_date}
    subject = " ".join(env.get_template("invoice/subject.txt").render(context).split())
    # The id is stable within a run (a resend is recognisable) and new in a retry run.
    return Outgoing(f"invoice-{invoice.invoice_id}-{run_id[:8]}", invoice.email, subject,
                    env.get_template("invoice/body.txt").render(context))


def send_chunk(session: Session, event: InvoiceEmailsRequested, sender, storage: LocalStorage) -> None:
    """Send one chunk; safe twice: the inbox skips a repeated chunk, billing never asks twice for an
    invoice it has marked emailed."""
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
    key = f"emails/{event.run_id}/chunk-{event.chunk:06d}.txt"
    storage.put(key, summary(event, sent.values(), failed).encode())
    session.add(InvoiceChunk(run_id=event.run_id, chunk=event.chunk, sent=len(sent), failed=len(failed),
                             summary_key=key, completed_at=datetime.now(UTC)))
    publish(session, InvoiceEmailsSent(run_id=event.run_id, chunk=event.chunk, sent=list(sent), failed=failed))


def summary(event: InvoiceEmailsRequested, sent, failed: dict[int, str]) -> str:
    """The fake email text of every invoice email of the chunk, then the failures."""
    parts = [f"Invoice run {event.run_id}, chunk {event.chunk}: {len(event.invoices)} emails, "
             f"{len(event.invoices) - len(failed)} sent, {len(failed)} failed\n"]
    parts += [f"\n=== {m.message_id} to {m.to}\nSubject: {m.subject}\n\n{m.text}" for m in sent]
    parts += [f"\n=== invoice-{invoice_id}-{event.run_id[:8]} FAILED: {reason}\n"
              for invoice_id, reason in failed.items()]
    return "".join(parts)
