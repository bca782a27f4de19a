"""The subscription table: who hears which event, on which queue, by which actor."""

from typing import NamedTuple

from shared.contracts.events import Event


class Target(NamedTuple):
    service: str
    queue: str
    actor: str


SUBSCRIPTIONS: dict[str, tuple[Target, ...]] = {
    "purchase.completed": (
        Target("api", "api.events", "api.on_purchase_completed"),
        Target("billing", "billing.events", "billing.on_purchase_completed"),
        Target("mailer", "mailer.events", "mailer.on_purchase_completed"),
        Target("media", "media.events", "media.on_purchase_completed"),
        Target("reports", "reports.events", "reports.on_purchase_completed"),
    ),
    "product.file_uploaded": (Target("media", "media.events", "media.on_product_file_uploaded"),),
    "downloads.ready": (Target("mailer", "mailer.events", "mailer.on_downloads_ready"),),
    "lead.created": (Target("mailer", "mailer.events", "mailer.on_lead_created"),),
    "product.approved": (Target("mailer", "mailer.events", "mailer.on_product_approved"),
                         Target("media", "media.events", "media.on_product_approved")),
    "product.rejected": (Target("mailer", "mailer.events", "mailer.on_product_rejected"),),
    "campaign.requested": (Target("mailer", "mailer.events", "mailer.on_campaign_requested"),),
    "campaign.control_requested": (Target("mailer", "mailer.events", "mailer.on_campaign_control_requested"),),
    "campaign.progressed": (Target("api", "api.events", "api.on_campaign_progressed"),),
    "invoice.emails_requested": (Target("mailer", "mailer.invoices", "mailer.on_invoice_emails_requested"),),
    "invoice.emails_sent": (Target("billing", "billing.events", "billing.on_invoice_emails_sent"),),
}


def subscription(event_type: type[Event], service: str) -> Target:
    """The row of SUBSCRIPTIONS by which `service` hears `event_type`: its actor's name and queue."""
    found = [t for t in SUBSCRIPTIONS.get(event_type.name, ()) if t.service == service]
    if len(found) != 1:
        raise LookupError(f"{service} must subscribe to {event_type.name} exactly once in SUBSCRIPTIONS "
                          f"(shared/contracts/subscriptions.py), found {len(found)}")
    return found[0]
