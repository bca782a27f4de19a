"""Media's work as plain functions."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.media.links import LinkSigner
from services.media.models import DownloadGrant, ProductFile
from shared.contracts import DownloadLink, DownloadsReady, ProductApproved, ProductFileUploaded, PurchaseCompleted
from shared.outbox import publish
from shared.storage import safe_content_type, safe_filename


def record_file(session: Session, event: ProductFileUploaded) -> None:
    """Record an uploaded version under its storage key; the same upload twice leaves the same row."""
    file = session.get(ProductFile, event.storage_key) or ProductFile(storage_key=event.storage_key)
    file.product_id, file.size_bytes, file.sha256 = event.product_id, event.size_bytes, event.sha256
    # Made safe again here: the event may come from an api older than the upload-time checks.
    file.filename, file.content_type = safe_filename(event.filename), safe_content_type(event.content_type)
    session.add(file)


def pin_approved_file(session: Session, event: ProductApproved) -> None:
    """Pin the grants bought while the product had no approved file to the file just approved; grants
    already pinned keep theirs, so handling the approval twice pins nothing new."""
    if event.file_key is None:
        return
    session.execute(update(DownloadGrant).where(DownloadGrant.product_id == event.product_id,
                                                DownloadGrant.file_key.is_(None))
                    .values(file_key=event.file_key, file_sha256=event.file_sha256))


def grant_downloads(session: Session, event: PurchaseCompleted, signer: LinkSigner) -> None:
    """Grant the buyer each purchased product and announce the signed links."""
    expires_at = datetime.now(UTC) + timedelta(seconds=signer.ttl_s)
    links = []
    for line in event.lines:
        grant = DownloadGrant(id=str(uuid.uuid4()), order_id=event.order_id, product_id=line.product_id,
                              buyer_id=event.buyer_id, title=line.title, expires_at=expires_at,
                              file_key=line.file_key, file_sha256=line.file_sha256)
        session.add(grant)
        links.append(DownloadLink(product_id=line.product_id, title=line.title, url=signer.url(grant.id),
                                  expires_at=expires_at))
    publish(session, DownloadsReady(order_id=event.order_id, buyer_email=event.buyer_email,
                                    buyer_name=event.buyer_name, links=links))
