"""Media's work as plain functions."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from services.media.links import LinkSigner
from services.media.models import DownloadGrant, ProductFile
from shared.contracts import DownloadLink, DownloadsReady, ProductFileUploaded, PurchaseCompleted
from shared.outbox import publish


def record_file(session: Session, event: ProductFileUploaded) -> None:
    """Remember which stored file is the product's; a newer upload replaces the older."""
    file = session.get(ProductFile, event.product_id) or ProductFile(product_id=event.product_id)
    file.storage_key, file.filename, file.content_type = event.storage_key, event.filename, event.content_type
    file.size_bytes, file.sha256 = event.size_bytes, event.sha256
    session.add(file)


def grant_downloads(session: Session, event: PurchaseCompleted, signer: LinkSigner) -> None:
    """Grant the buyer each purchased product and announce the signed links."""
    expires_at = datetime.now(UTC) + timedelta(seconds=signer.ttl_s)
    links = []
    for line in event.lines:
        grant = DownloadGrant(id=str(uuid.uuid4()), order_id=event.order_id, product_id=line.product_id,
                              buyer_id=event.buyer_id, title=line.title, expires_at=expires_at)
        session.add(grant)
        links.append(DownloadLink(product_id=line.product_id, title=line.title, url=signer.url(grant.id),
                                  expires_at=expires_at))
    publish(session, DownloadsReady(order_id=event.order_id, buyer_email=event.buyer_email,
                                    buyer_name=event.buyer_name, links=links))
