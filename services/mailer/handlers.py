"""Mailer's work as plain functions: render into a stored message, then deliver it once."""

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from services.mailer.models import OutboundMessage
from services.mailer.senders import Outgoing, SendFailed
from services.mailer.templates import render
from shared.contracts import DownloadsReady, LeadCreated, ProductApproved, ProductRejected, PurchaseCompleted
from shared.db import insert_ignore
from shared.messaging import PermanentError
from shared.outbox import send

log = logging.getLogger(__name__)


def queue_email(session: Session, dedupe_key: str, template: str, to: str, context: dict) -> None:
    """Render and store a message, and queue its delivery in the same transaction; a message already
    stored under `dedupe_key` (the same email, announced again under a new event id) is left alone."""
    subject, text, html = render(template, context)
    message_id = str(uuid.uuid4())
    # Insert-if-absent, not insert-and-catch: a unique violation would abort the whole transaction (inbox row
    # included) and the actor would retry an email that is already recorded.
    if not insert_ignore(session, OutboundMessage.__table__, id=message_id, dedupe_key=dedupe_key,
                            template=template, to_email=to, subject=subject, text=text, html=html):
        log.info("The %s email %s is already recorded; this announcement of it is skipped.", template, dedupe_key)
        return
    send(session, "mailer", "mailer.outbound", "mailer.deliver_message", {"message_id": message_id})


def on_purchase_completed(session: Session, event: PurchaseCompleted) -> None:
    queue_email(session, f"order_confirmation:{event.order_id}", "order_confirmation", event.buyer_email,
                event.model_dump())


def on_downloads_ready(session: Session, event: DownloadsReady) -> None:
    context = event.model_dump()
    for link in context["links"]:
        link["expires_at"] = link["expires_at"].strftime("%Y-%m-%d %H:%M UTC")
    queue_email(session, f"downloads_ready:{event.order_id}", "downloads_ready", event.buyer_email, context)


class SendRetryable(Exception):
    """The provider answered with a temporary refusal; the actor retries with backoff."""


class SendInFlight(Exception):
    """Another attempt recorded moments ago may be sending this message now; retrying later settles it."""


def claim(session: Session, message_id: str, policy: str, ambiguous_after_s: float) -> Outgoing | None:
    """Record an attempt before it is made (status `sending`); None when there is nothing to send.
    A message found `sending` long after its attempt began died between the server's reply and the record
    of it: that send is ambiguous, counted, and resent or held as `policy` says."""
    message = session.get(OutboundMessage, message_id, with_for_update=True)
    if message is None:
        raise PermanentError(f"outbound message {message_id} does not exist")
    now = datetime.now(UTC)
    if message.status == "sending":
        assert message.attempted_at is not None  # written with the status
        if now - _utc(message.attempted_at) < timedelta(seconds=ambiguous_after_s):
            raise SendInFlight(f"outbound message {message_id} is being sent by an attempt begun moments ago")
        message.ambiguous += 1
        log.warning("Outbound message %s was being sent when its worker stopped; whether it went out is "
                    "unknown (policy: %s).", message_id, policy)
        if policy == "hold":
            message.status, message.error = "held", "ambiguous send held for an operator"
            return None
    elif message.status != "queued":
        return None
    ready = outgoing(message)
    message.status, message.attempts, message.attempted_at = "sending", message.attempts + 1, now
    return ready


def record(session: Session, message_id: str, failure: SendFailed | None) -> str | None:
    """Record the outcome of the attempt `claim` began; safe twice (a row no longer `sending` is left).
    Returns the reason of a temporary refusal, for the caller to retry."""
    message = session.get(OutboundMessage, message_id, with_for_update=True)
    if message is None or message.status != "sending":
        return None
    if failure is None:
        message.status, message.sent_at, message.error = "sent", datetime.now(UTC), None
    elif failure.permanent:
        message.status, message.error = "failed", failure.reason
    else:
        message.status, message.error = "queued", failure.reason
        return failure.reason
    return None


def release(session: Session, message_id: str) -> None:
    """Give back an attempt that sent nothing (the provider could not be reached)."""
    message = session.get(OutboundMessage, message_id, with_for_update=True)
    if message is not None and message.status == "sending":
        message.status, message.attempts = "queued", message.attempts - 1


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands datetimes back naive


def outgoing(message: OutboundMessage) -> Outgoing:
    return Outgoing(message.id, message.to_email, message.subject, message.text, message.html, message.attempts)


# Notifications. The dedupe key holds the event id: the same lead or product may rightly be announced
# again (`market test-lead`, a rejected product approved later), and each announcement is one email.

def on_lead_created(session: Session, event_id: str, event: LeadCreated) -> None:
    queue_email(session, f"lead_created:{event.lead_id}:{event_id}", "lead_created", event.assigned_email,
                event.model_dump())


def on_product_approved(session: Session, event_id: str, event: ProductApproved) -> None:
    queue_email(session, f"product_approved:{event.product_id}:{event_id}", "product_approved",
                event.seller_email, event.model_dump())


def on_product_rejected(session: Session, event_id: str, event: ProductRejected) -> None:
    queue_email(session, f"product_rejected:{event.product_id}:{event_id}", "product_rejected",
                event.seller_email, event.model_dump())
