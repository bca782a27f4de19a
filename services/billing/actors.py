"""Billing's actors."""

from services.billing import handlers, invoices
from shared.contracts import InvoiceEmailsSent, PurchaseCompleted
from shared.outbox import subscriber
from shared.settings import get_settings

SERVICE = "billing"


@subscriber(SERVICE, PurchaseCompleted, time_limit_s=120)
def on_purchase_completed(session, event: PurchaseCompleted, envelope: dict) -> None:
    """Record the sale in the ledger; the inbox row commits with the entries, so a redelivery adds nothing."""
    handlers.record_purchase(session, event, fee_bps=get_settings().platform_fee_bps)


@subscriber(SERVICE, InvoiceEmailsSent, time_limit_s=120)
def on_invoice_emails_sent(session, event: InvoiceEmailsSent, envelope: dict) -> None:
    """Record which invoices were emailed; the inbox keeps a redelivered report from counting twice."""
    invoices.record_sent(session, event)
