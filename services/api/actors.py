"""The api's actors: process stored webhooks, react to purchases."""

from services.api import campaign_status, handlers
from shared.contracts import CampaignProgressed, PurchaseCompleted
from shared.db import transaction
from shared.messaging import actor
from shared.outbox import subscriber

SERVICE = "api"


@actor(SERVICE, "api.process_webhook", queue="api.webhooks", time_limit_s=60)
def process_webhook(payload: dict) -> None:
    """Verify the payment in a stored webhook and mark its order paid."""
    with transaction(SERVICE) as session:
        handlers.process_webhook(session, int(payload["webhook_event_id"]))


@subscriber(SERVICE, PurchaseCompleted, time_limit_s=120)
def on_purchase_completed(session, event: PurchaseCompleted, envelope: dict) -> None:
    """Clear the buyer's cart; the inbox makes a second delivery a no-op."""
    handlers.clear_cart(session, event)


@subscriber(SERVICE, CampaignProgressed, time_limit_s=60)
def on_campaign_progressed(session, event: CampaignProgressed, envelope: dict) -> None:
    """Update the campaign status read model; a redelivered or overtaken report changes nothing."""
    campaign_status.on_campaign_progressed(session, event, envelope["occurred_at"])
