"""Billing's actors."""

from functools import partial

from services.billing import handlers, invoices
from shared.contracts import InvoiceEmailsSent, PurchaseCompleted
from shared.messaging import actor
from shared.outbox import consume
from shared.settings import get_settings

SERVICE = "billing"


@actor(SERVICE, "billing.on_purchase_completed", queue="billing.events", time_limit_s=120)
def on_purchase_completed(envelope: dict) -> None:
    """Record the sale in the ledger; the inbox row commits with the entries, so a redelivery adds nothing."""
    record = partial(handlers.record_purchase, fee_bps=get_settings().platform_fee_bps)
    consume(SERVICE, "billing.on_purchase_completed", envelope, PurchaseCompleted, record)


@actor(SERVICE, "billing.on_invoice_emails_sent", queue="billing.events", time_limit_s=120)
def on_invoice_emails_sent(envelope: dict) -> None:
    """Record which invoices were emailed; the inbox keeps a redelivered report from counting twice."""
    consume(SERVICE, "billing.on_invoice_emails_sent", envelope, InvoiceEmailsSent, invoices.record_sent)
