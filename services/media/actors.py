"""Media's actors."""

from functools import partial

from services.media import handlers
from services.media.links import signer
from shared.contracts import ProductApproved, ProductFileUploaded, PurchaseCompleted
from shared.messaging import actor
from shared.outbox import consume

SERVICE = "media"


@actor(SERVICE, "media.on_purchase_completed", queue="media.events", time_limit_s=120)
def on_purchase_completed(envelope: dict) -> None:
    """Create download grants and links; the inbox keeps a redelivery from granting twice."""
    grant = partial(handlers.grant_downloads, signer=signer())
    consume(SERVICE, "media.on_purchase_completed", envelope, PurchaseCompleted, grant)


@actor(SERVICE, "media.on_product_file_uploaded", queue="media.events", time_limit_s=60)
def on_product_file_uploaded(envelope: dict) -> None:
    """Record the uploaded version; recording the same upload twice leaves the same row."""
    consume(SERVICE, "media.on_product_file_uploaded", envelope, ProductFileUploaded, handlers.record_file)


@actor(SERVICE, "media.on_product_approved", queue="media.events", time_limit_s=60)
def on_product_approved(envelope: dict) -> None:
    """Pin unpinned grants to the approved file; a grant already pinned is left alone, so twice is once."""
    consume(SERVICE, "media.on_product_approved", envelope, ProductApproved, handlers.pin_approved_file)
