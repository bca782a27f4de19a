"""A product's file versions: streamed in bounded and hashed, held within the seller's quota, and kept in
storage exactly while the product or an order line refers to them."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from flask import request
from sqlalchemy.orm import Session
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from services.api.http import ApiError
from services.api.models import PRODUCT, OrderLine, Product, ProductStatus, User
from shared.settings import get_settings
from shared.storage import LocalStorage, product_file_key, safe_content_type, safe_filename

MULTIPART_OVERHEAD = 64 * 1024  # part headers and boundaries around the file, on top of the upload limit
# The parser's own buffer (a 64 KiB read plus what may be the start of a boundary) and any small text field;
# at 64 KiB a read whose tail held a line break was refused as too large.
FORM_MEMORY = 512 * 1024


class TooLarge(Exception):
    pass


class Spool:
    """Where the multipart parser writes the file part: a temporary file on the storage volume, hashed and
    measured on the way, refused the moment it passes the limit."""

    def __init__(self, file: IO[bytes], limit: int):
        self.file, self.limit, self.size, self.hash = file, limit, 0, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge
        self.hash.update(data)
        return self.file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)


@dataclass
class Upload:
    """A received file waiting in storage's incoming folder until `store` moves it under its key."""

    temp_path: str
    filename: str
    content_type: str
    size: int
    sha256: str
    moved_to: str | None = field(default=None)  # the key it was moved in as, if that key is new

    def undo(self, storage: LocalStorage) -> None:
        """Leave nothing behind: the temporary file, and the stored file if this upload created it."""
        _remove(self.temp_path)
        if self.moved_to:
            storage.delete(self.moved_to)


def check_room(session: Session, storage: LocalStorage, product: Product) -> None:
    """Refuse before reading the body when the seller's other files already fill the quota."""
    quota = get_settings().seller_quota_bytes
    if stored_bytes(session, storage, product, new_key=None) >= quota:
        raise ApiError(413, f"your products' files already fill your storage quota of {quota:,} bytes")


def receive(storage: LocalStorage) -> Upload:
    """Stream the multipart body's `file` part into a temporary file in storage; 400/413 on a bad body."""
    limit = get_settings().upload_max_bytes
    too_large = ApiError(413, f"the file is larger than the upload limit of {limit:,} bytes")
    request.max_content_length = limit + MULTIPART_OVERHEAD  # this route's own bound, above the app's
    if (request.content_length or 0) > request.max_content_length:
        raise too_large
    spools: list[Spool] = []
    try:
        files = _parse(storage, spools, limit)
    except (TooLarge, RequestEntityTooLarge):
        _discard(spools)
        raise too_large from None
    except ClientDisconnected:
        _discard(spools)
        raise ApiError(400, "the upload was cut short before the whole file arrived") from None
    except BaseException:
        _discard(spools)
        raise
    return _chosen(files, spools)


def _parse(storage: LocalStorage, spools: list[Spool], limit: int):
    def spool(*_args, **_kwargs) -> Spool:
        spools.append(Spool(storage.incoming(), limit))
        return spools[-1]

    # werkzeug only writes the part to what the factory returns (and seeks it): a Spool, not a whole IO
    parser = FormDataParser(spool,  # type: ignore[arg-type]
                            max_form_memory_size=FORM_MEMORY, max_form_parts=8,
                            max_content_length=request.max_content_length)
    _, _, files = parser.parse(request.stream, request.mimetype, request.content_length, request.mimetype_params)
    return files


def _chosen(files, spools: list[Spool]) -> Upload:
    part = files.get("file")
    keep = part.stream if part is not None else None
    _discard([s for s in spools if s is not keep])
    if keep is None:
        raise ApiError(400, "send the file as multipart/form-data in a field named 'file'")
    keep.file.close()
    if keep.size == 0:
        _remove(keep.file.name)
        raise ApiError(400, "the uploaded file is empty")
    return Upload(keep.file.name, safe_filename(part.filename), safe_content_type(part.content_type), keep.size,
                  keep.hash.hexdigest())


def store(session: Session, storage: LocalStorage, product_id: int, upload: Upload) -> tuple[Product, str | None]:
    """Make the upload the product's file under its content-addressed key, within the seller's quota; returns
    the product and the key it replaced (None if none), for `delete_unless_referenced` after commit."""
    product = session.get(Product, product_id, with_for_update=True, populate_existing=True)
    if product is None:
        raise ApiError(404, f"product {product_id} does not exist")
    # One upload at a time per seller, so two parallel uploads cannot both fit in the last of the quota.
    session.get(User, product.seller_id, with_for_update=True)
    key, quota = product_file_key(product.id, upload.sha256), get_settings().seller_quota_bytes
    used = stored_bytes(session, storage, product, new_key=key, new_size=upload.size)
    if used > quota:
        raise ApiError(413, f"this file would take your products' files to {used:,} bytes, over your storage "
                            f"quota of {quota:,} bytes")
    if not storage.exists(key):
        upload.moved_to = key
    storage.move_in(upload.temp_path, key)
    old_key, product.file_key, product.file_sha256 = product.file_key, key, upload.sha256
    if product.status == ProductStatus.APPROVED and old_key != key:
        # What buyers download was reviewed: a new file is reviewed again.
        product.status = PRODUCT(product.status, ProductStatus.PENDING)
    return product, old_key if old_key != key else None


def stored_bytes(session: Session, storage: LocalStorage, product: Product, new_key: str | None,
                 new_size: int = 0) -> int:
    """What the seller's files take once `product`'s file is `new_key`: every product's current version and
    every version an order line pins, each counted once."""
    current = session.scalars(sa.select(Product.file_key).where(
        Product.seller_id == product.seller_id, Product.id != product.id, Product.file_key.is_not(None)))
    keys = {k for k in current if k is not None} | pinned_keys(session, product.seller_id)
    return sum(storage.size(k) for k in keys - {new_key} if storage.exists(k)) + (new_size if new_key else 0)


def pinned_keys(session: Session, seller_id: int) -> set[str]:
    return set(session.scalars(sa.select(OrderLine.file_key).distinct().where(
        OrderLine.seller_id == seller_id, OrderLine.file_key.is_not(None))))


def delete_unless_referenced(session: Session, storage: LocalStorage, product_id: int, key: str) -> bool:
    """Delete a replaced version from storage unless the product has it again or an order line pins it;
    returns whether it was deleted. Run in its own transaction after the upload's.

    Safe because it holds the product's row lock, as every change of what refers to a key does: an upload
    (which may make the same bytes the product's file again), a checkout and an approval (which pin a key in
    order lines). An upload takes an approved product back to review, so no checkout pins the old key after
    it; and a line that pinned it before is seen here, and that version stays for its buyer."""
    product = session.get(Product, product_id, with_for_update=True, populate_existing=True)
    assert product is not None  # the upload's transaction has just stored its file
    pinned = session.scalar(sa.select(sa.func.count()).select_from(OrderLine).where(OrderLine.file_key == key))
    if product.file_key == key or pinned:
        return False
    storage.delete(key)
    return True


def pin_unpinned_lines(session: Session, product: Product) -> None:
    """Lines bought while the product had no approved file get the file approved now (called under the
    product's row lock, in the approval's transaction)."""
    if product.file_key is not None:
        session.execute(sa.update(OrderLine).where(OrderLine.product_id == product.id, OrderLine.file_key.is_(None))
                        .values(file_key=product.file_key, file_sha256=product.file_sha256))


def _discard(spools: list[Spool]) -> None:
    for spool in spools:
        spool.file.close()
        _remove(spool.file.name)


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)
