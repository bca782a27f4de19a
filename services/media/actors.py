"""Media's actors."""

from services.media import handlers
from services.media.links import signer
from shared.contracts import ProductApproved, ProductFileUploaded, PurchaseCompleted
from shared.outbox import subscriber

SERVICE = "media"


@subscriber(SERVICE, PurchaseCompleted, time_limit_s=120)
def on_purchase_completed(session, event: PurchaseCompleted, envelope: dict) -> None:
    """Create download grants and links; the inbox keeps a redelivery from granting twice."""
    handlers.grant_downloads(session, event, signer=signer())


@subscriber(SERVICE, ProductFileUploaded, time_limit_s=60)
def on_product_file_uploaded(session, event: ProductFileUploaded, envelope: dict) -> None:
    """Record the uploaded version; recording the same upload twice leaves the same row."""
    handlers.record_file(session, event)


@subscriber(SERVICE, ProductApproved, time_limit_s=60)
def on_product_approved(session, event: ProductApproved, envelope: dict) -> None:
    """Pin unpinned grants to the approved file; a grant already pinned is left alone, so twice is once."""
    handlers.pin_approved_file(session, event)
