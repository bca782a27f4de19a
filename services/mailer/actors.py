"""Mailer's actors."""


from dramatiq.middleware import CurrentMessage

from services.mailer import campaign_sending, campaigns, delivery, handlers, invoices, reconcile
from services.mailer.pacing import pacer_from
from services.mailer.senders import ProviderUnavailable, sender_from
from shared.contracts import (
    CampaignControlRequested,
    CampaignRequested,
    DownloadsReady,
    InvoiceEmailsRequested,
    LeadCreated,
    ProductApproved,
    ProductRejected,
    PurchaseCompleted,
    subscription,
)
from shared.messaging import PeriodicDuties, actor, broker_for, defer
from shared.outbox import subscriber
from shared.settings import get_settings
from shared.storage import LocalStorage

SERVICE = "mailer"


@subscriber(SERVICE, PurchaseCompleted, time_limit_s=120)
def on_purchase_completed(session, event: PurchaseCompleted, envelope: dict) -> None:
    """Queue the order confirmation; the inbox keeps a redelivery from queueing it twice."""
    handlers.on_purchase_completed(session, event)


@subscriber(SERVICE, DownloadsReady, time_limit_s=120)
def on_downloads_ready(session, event: DownloadsReady, envelope: dict) -> None:
    """Queue the download-links email; the inbox keeps a redelivery from queueing it twice."""
    handlers.on_downloads_ready(session, event)


@actor(SERVICE, "mailer.deliver_message", queue="mailer.outbound", time_limit_s=60, max_retries=5)
def deliver_message(payload: dict) -> None:
    """Deliver one stored message; the attempt is recorded first, so a redelivery never sends it twice."""
    settings = get_settings()
    try:
        refused_for_now = delivery.deliver(payload["message_id"], sender_from(settings), settings,
                                           payload.get("outcome"))
    except ProviderUnavailable:
        defer(SERVICE, int(settings.breaker_reset_s * 1000))
        return
    except delivery.OutcomeUnrecorded as unrecorded:  # sent; only the record is left, for a later message
        carry_on(5000, {"message_id": payload["message_id"], "outcome": unrecorded.outcome})
        return
    if refused_for_now:  # raised after the commit, so the attempt and its reason are kept
        raise handlers.SendRetryable(refused_for_now)


def carry_on(delay_ms: int, *args) -> None:
    """Replace the message being processed by one with `args`, `delay_ms` later, spending no retry."""
    message = CurrentMessage.get_current_message()
    assert message is not None  # called by an actor, while its message is processed
    broker_for(SERVICE).enqueue(message.copy(args=args), delay=delay_ms)


# Not through the inbox: a chunk's own record says whether it was sent (and holds it while it is being sent).
INVOICE_EMAILS = subscription(InvoiceEmailsRequested, SERVICE)


@actor(SERVICE, INVOICE_EMAILS.actor, queue=INVOICE_EMAILS.queue, time_limit_s=120)
def on_invoice_emails_requested(envelope: dict, answers: dict | None = None) -> None:
    """Send a chunk of invoice emails; its attempt is recorded first, so a redelivered chunk is not sent again."""
    settings = get_settings()
    try:
        invoices.send_chunk(envelope, sender_from(settings), LocalStorage(settings.storage_dir), settings, answers)
    except ProviderUnavailable:
        defer(SERVICE, int(settings.breaker_reset_s * 1000))
    except handlers.SendInFlight:  # look again once that attempt would count as ambiguous, spending no retry
        defer(SERVICE, int(settings.mail_ambiguous_after_s * 1000))
    except delivery.OutcomeUnrecorded as unrecorded:  # sent; only the record is left, for a later message
        carry_on(5000, envelope, unrecorded.outcome)


# Notifications: 3 attempts, 60 s each (seeds 001 and 003); delivery itself retries in deliver_message.

@subscriber(SERVICE, LeadCreated, time_limit_s=60, max_retries=2)
def on_lead_created(session, event: LeadCreated, envelope: dict) -> None:
    """Queue the new-lead email to the assigned user; the inbox keeps a redelivery from queueing it twice."""
    handlers.on_lead_created(session, envelope["event_id"], event)


@subscriber(SERVICE, ProductApproved, time_limit_s=60, max_retries=2)
def on_product_approved(session, event: ProductApproved, envelope: dict) -> None:
    """Queue the approval email to the seller; the inbox keeps a redelivery from queueing it twice."""
    handlers.on_product_approved(session, envelope["event_id"], event)


@subscriber(SERVICE, ProductRejected, time_limit_s=60, max_retries=2)
def on_product_rejected(session, event: ProductRejected, envelope: dict) -> None:
    """Queue the rejection email, reason included; the inbox keeps a redelivery from queueing it twice."""
    handlers.on_product_rejected(session, envelope["event_id"], event)


# Campaigns (seed 002): stored and steered on mailer.events, sent on their own queues.

@subscriber(SERVICE, CampaignRequested, time_limit_s=120)
def on_campaign_requested(session, event: CampaignRequested, envelope: dict) -> None:
    """Store a campaign and queue its first sends; the inbox keeps a redelivery from storing it twice."""
    settings = get_settings()
    routing = campaigns.Routing(settings.campaign_bulk_threshold, settings.campaign_chunk_size,
                                LocalStorage(settings.storage_dir))
    campaigns.on_campaign_requested(session, event, routing=routing)


@subscriber(SERVICE, CampaignControlRequested, time_limit_s=120)
def on_campaign_control_requested(session, event: CampaignControlRequested, envelope: dict) -> None:
    """Pause, resume or cancel a campaign; the inbox drops a redelivery, and an action out of place is a no-op."""
    campaigns.on_campaign_control_requested(session, event, envelope["occurred_at"])


@actor(SERVICE, "mailer.send_campaign_message", queue="mailer.messages", time_limit_s=60, max_retries=4)
def send_campaign_message(payload: dict) -> None:
    """Send one recipient's campaign email; a recipient no longer queued is not sent again."""
    _send_campaign(campaign_sending.send_message, payload, "position", budget_s=30)


@actor(SERVICE, "mailer.send_campaign_message_priority", queue="mailer.high_priority", time_limit_s=60,
       max_retries=4)
def send_campaign_message_priority(payload: dict) -> None:
    """The same for a campaign a user triggered, on its own queue so bulk work never delays it."""
    _send_campaign(campaign_sending.send_message, payload, "position", budget_s=30)


@actor(SERVICE, "mailer.send_campaign_chunk", queue="mailer.bulk_messages", time_limit_s=120, max_retries=4)
def send_campaign_chunk(payload: dict) -> None:
    """Send one chunk and schedule the next; a chunk that is not the campaign's next is skipped."""
    _send_campaign(campaign_sending.send_chunk, payload, "chunk", budget_s=60)


def _send_campaign(handler, payload: dict, part: str, budget_s: float) -> None:
    """Run a sending handler. Provider down: defer, spending no retry. An attempt in flight: look again once
    it would count as ambiguous. Sent, but the record failed: the answers go on in a new message. Rate limit or
    budget ran out: go on soon in a new message. Recipients refused for now: raise, so Retries try them again
    with backoff (max_retries leaves room beyond the 3 attempts each recipient gets)."""
    settings = get_settings()
    mail = campaign_sending.Mail(sender_from(settings), pacer_from(settings), settings.campaign_chunk_spacing_s,
                                 budget_s, policy=settings.ambiguous_send_policy,
                                 ambiguous_after_s=settings.mail_ambiguous_after_s,
                                 bookkeeping_retry_s=settings.mail_bookkeeping_retry_s)
    fresh = {k: v for k, v in payload.items() if k != "answers"}
    try:
        outcome = handler(payload["campaign_id"], payload[part], mail, payload.get("answers"))
    except ProviderUnavailable:
        defer(SERVICE, int(settings.breaker_reset_s * 1000))
        return
    except handlers.SendInFlight:
        defer(SERVICE, int(settings.mail_ambiguous_after_s * 1000))
        return
    except delivery.OutcomeUnrecorded as unrecorded:
        carry_on(5000, fresh | {"answers": unrecorded.outcome})
        return
    if fresh != payload and (outcome.untried or outcome.refused):
        carry_on(10_000, fresh)  # answers recorded: what is left goes on as a fresh send, never a re-record
    elif outcome.untried:
        defer(SERVICE, 1000)
    elif outcome.refused:
        raise campaign_sending.RecipientsRefused(f"{len(outcome.refused)} refused for now: {outcome.refused[0]}")


# The sweep runs wherever the mailer's actors are consumed (its worker, or `market up`): declared with
# them, it starts only when a worker boots.
PeriodicDuties.of(broker_for(SERVICE)).add("mailer-reconcile", get_settings().mail_reconcile_interval_s,
                                           reconcile.sweep)
