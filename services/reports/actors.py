"""Reports' actors."""

from services.reports import handlers
from shared.contracts import PurchaseCompleted
from shared.outbox import subscriber

SERVICE = "reports"


@subscriber(SERVICE, PurchaseCompleted, time_limit_s=120)
def on_purchase_completed(session, event: PurchaseCompleted, envelope: dict) -> None:
    """Add the sale to the read model; the inbox keeps a redelivery from counting it twice."""
    handlers.record_sales(session, event)
