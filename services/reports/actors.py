"""Reports' actors."""

from services.reports import handlers
from shared.contracts import PurchaseCompleted
from shared.messaging import actor
from shared.outbox import consume

SERVICE = "reports"


@actor(SERVICE, "reports.on_purchase_completed", queue="reports.events", time_limit_s=120)
def on_purchase_completed(envelope: dict) -> None:
    """Add the sale to the read model; the inbox keeps a redelivery from counting it twice."""
    consume(SERVICE, "reports.on_purchase_completed", envelope, PurchaseCompleted, handlers.record_sales)
