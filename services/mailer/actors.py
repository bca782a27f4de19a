"""Mailer's actors."""

from services.mailer import handlers
from services.mailer.senders import ProviderUnavailable, sender_from
from shared.contracts import DownloadsReady, PurchaseCompleted
from shared.db import transaction
from shared.messaging import actor, defer
from shared.outbox import consume
from shared.settings import get_settings

SERVICE = "mailer"


@actor(SERVICE, "mailer.on_purchase_completed", queue="mailer.events", time_limit_s=120)
def on_purchase_completed(envelope: dict) -> None:
    """Queue the order confirmation; the inbox keeps a redelivery from queueing it twice."""
    consume(SERVICE, "mailer.on_purchase_completed", envelope, PurchaseCompleted, handlers.on_purchase_completed)


@actor(SERVICE, "mailer.on_downloads_ready", queue="mailer.events", time_limit_s=120)
def on_downloads_ready(envelope: dict) -> None:
    """Queue the download-links email; the inbox keeps a redelivery from queueing it twice."""
    consume(SERVICE, "mailer.on_downloads_ready", envelope, DownloadsReady, handlers.on_downloads_ready)


@actor(SERVICE, "mailer.deliver_message", queue="mailer.outbound", time_limit_s=60, max_retries=5)
def deliver_message(payload: dict) -> None:
    """Deliver one stored message; a message already sent is not sent again."""
    settings = get_settings()
    try:
        with transaction(SERVICE) as session:
            handlers.deliver(session, payload["message_id"], sender_from(settings))
    except ProviderUnavailable:
        defer(SERVICE, int(settings.breaker_reset_s * 1000))
