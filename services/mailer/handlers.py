"""Mailer's work as plain functions: render into a stored message, then deliver it once."""

import smtplib
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate

from sqlalchemy.orm import Session

from services.mailer.models import OutboundMessage
from services.mailer.templates import render
from shared.contracts import DownloadsReady, PurchaseCompleted
from shared.messaging import PermanentError
from shared.outbox import send


def queue_email(session: Session, dedupe_key: str, template: str, to: str, context: dict) -> None:
    """Render and store a message, and queue its delivery in the same transaction."""
    subject, text, html = render(template, context)
    message = OutboundMessage(id=str(uuid.uuid4()), dedupe_key=dedupe_key, template=template, to_email=to,
                              subject=subject, text=text, html=html)
    session.add(message)
    send(session, "mailer", "mailer.outbound", "mailer.deliver_message", {"message_id": message.id})


def on_purchase_completed(session: Session, event: PurchaseCompleted) -> None:
    queue_email(session, f"order_confirmation:{event.order_id}", "order_confirmation", event.buyer_email,
                event.model_dump())


def on_downloads_ready(session: Session, event: DownloadsReady) -> None:
    context = event.model_dump()
    for link in context["links"]:
        link["expires_at"] = link["expires_at"].strftime("%Y-%m-%d %H:%M UTC")
    queue_email(session, f"downloads_ready:{event.order_id}", "downloads_ready", event.buyer_email, context)


def deliver(session: Session, message_id: str, sender, mail_from: str) -> None:
    """Send a stored message unless it was sent already; a refused address fails it for good."""
    message = session.get(OutboundMessage, message_id, with_for_update=True)
    if message is None:
        raise PermanentError(f"outbound message {message_id} does not exist")
    if message.status != "queued":
        return
    message.attempts += 1
    try:
        sender.send(as_email(message, mail_from))
    except smtplib.SMTPException as exc:
        if not refused_for_good(exc):
            raise  # 4xx, or the connection broke: the actor retries with backoff
        message.status, message.error = "failed", f"{type(exc).__name__}: {exc}"
        return
    message.status, message.sent_at, message.error = "sent", datetime.now(UTC), None


def refused_for_good(exc: smtplib.SMTPException) -> bool:
    """A 5xx reply means the address or the message is wrong and no retry can fix it; 4xx is temporary."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return True
    return isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600


def as_email(message: OutboundMessage, mail_from: str) -> EmailMessage:
    email = EmailMessage()
    email["From"], email["To"], email["Subject"] = mail_from, message.to_email, message.subject
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = f"<{message.id}@marketplace>"  # stable: a resend can be recognised
    email.set_content(message.text)
    email.add_alternative(message.html, subtype="html")
    return email
