"""Media's handlers on their own: a purchase grants each line with a signed link, an upload is recorded made safe,
an approval pins the grants bought before the product had a file."""

import json
from datetime import UTC, datetime, timedelta

from services.media import handlers
from services.media.links import LinkSigner
from services.media.models import DownloadGrant, ProductFile
from shared.contracts import ProductApproved, ProductFileUploaded, PurchaseCompleted, PurchaseLine
from shared.db import transaction

SIGNER = LinkSigner("a-secret-for-tests", "http://downloads.example/d/", ttl_s=3600)


def purchase() -> PurchaseCompleted:
    return PurchaseCompleted(
        order_id=9, order_reference="ord_9", buyer_id=4, buyer_email="b@example.com", buyer_name="Bea", currency="USD",
        total_minor=300, provider="stripe", paid_at=datetime.now(UTC),
        lines=[PurchaseLine(product_id=1, seller_id=2, title="Atlas", price_minor=100, file_key="k1", file_sha256="s1"),
               PurchaseLine(product_id=3, seller_id=2, title="Guide", price_minor=200)])


def grants() -> list[DownloadGrant]:
    with transaction("media") as session:
        found = session.query(DownloadGrant).order_by(DownloadGrant.product_id).all()
        session.expunge_all()
        return found


def test_a_purchase_grants_each_line_to_its_buyer_and_announces_a_signed_link_for_each(system):
    before = datetime.now(UTC)
    with transaction("media") as session:
        handlers.grant_downloads(session, purchase(), SIGNER)
    after = datetime.now(UTC)

    atlas, guide = grants()
    assert [(g.order_id, g.product_id, g.buyer_id, g.title, g.file_key, g.file_sha256) for g in (atlas, guide)] == [
        (9, 1, 4, "Atlas", "k1", "s1"), (9, 3, 4, "Guide", None, None)]
    expires = atlas.expires_at.replace(tzinfo=UTC)
    assert before + timedelta(hours=1) <= expires <= after + timedelta(hours=1)
    assert guide.expires_at == atlas.expires_at and atlas.id != guide.id

    [row] = system.rows("media", "SELECT payload FROM outbox")
    announced = json.loads(row["payload"])["data"]
    assert (announced["order_id"], announced["buyer_email"], announced["buyer_name"]) == (9, "b@example.com", "Bea")
    assert [(link["product_id"], link["title"], SIGNER.grant_id(link["url"].rsplit("/", 1)[1]))
            for link in announced["links"]] == [(1, "Atlas", atlas.id), (3, "Guide", guide.id)]
    assert all(link["url"].startswith("http://downloads.example/d/") for link in announced["links"])
    assert {datetime.fromisoformat(link["expires_at"]) for link in announced["links"]} == {expires}
    system.drain()


def upload(key: str = "k1", filename: str = "atlas.pdf", content_type: str = "application/pdf",
           sha256: str = "s1") -> ProductFileUploaded:
    return ProductFileUploaded(product_id=1, storage_key=key, filename=filename, content_type=content_type,
                               size_bytes=1234, sha256=sha256)


def files() -> list[tuple]:
    with transaction("media") as session:
        return [(f.storage_key, f.product_id, f.filename, f.content_type, f.size_bytes, f.sha256)
                for f in session.query(ProductFile).order_by(ProductFile.storage_key)]


def test_an_upload_is_recorded_under_its_key_made_safe_and_the_same_upload_twice_leaves_one_row(system):
    for _ in range(2):
        with transaction("media") as session:
            handlers.record_file(session, upload(filename="../../etc/passwd", content_type="text/html"))
    [(key, product, filename, content_type, size, sha)] = files()
    assert (key, product, size, sha) == ("k1", 1, 1234, "s1")
    assert "/" not in filename and ".." not in filename and content_type == "application/octet-stream"

    with transaction("media") as session:
        handlers.record_file(session, upload(filename="atlas-2.pdf", sha256="s2"))  # the same key again, updated
    assert files() == [("k1", 1, "atlas-2.pdf", "application/pdf", 1234, "s2")]


def approval(file_key: str | None, file_sha256: str | None = None, product_id: int = 3) -> ProductApproved:
    return ProductApproved(product_id=product_id, title="Guide", seller_id=2, seller_email="s@example.com",
                           seller_name="Sam", file_key=file_key, file_sha256=file_sha256)


def test_an_approval_pins_only_the_unpinned_grants_of_its_product_to_the_approved_file(system):
    with transaction("media") as session:
        handlers.grant_downloads(session, purchase(), SIGNER)
    system.drain()
    with transaction("media") as session:
        handlers.pin_approved_file(session, approval(None))  # approved without a file: nothing to pin
    assert [(g.file_key, g.file_sha256) for g in grants()] == [("k1", "s1"), (None, None)]

    for product_id in (1, 3):  # product 1's grant was pinned at checkout and keeps its version
        with transaction("media") as session:
            handlers.pin_approved_file(session, approval("k3", "s3", product_id))
    assert [(g.file_key, g.file_sha256) for g in grants()] == [("k1", "s1"), ("k3", "s3")]
