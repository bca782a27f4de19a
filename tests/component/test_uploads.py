"""Uploading a product's file: streamed to storage while hashed, bounded, per-seller quota, never half-stored."""

import hashlib
import os
import random
import time
from dataclasses import dataclass, field

import pytest

from services.api.app import create_app
from shared.settings import get_settings
from shared.storage import LocalStorage
from tests.component.uploading import Body, multipart, put_file, stored_files

LIMIT = 4000  # the upload limit these tests set, in bytes
QUOTA = 10_000  # the seller quota these tests set, in bytes


@pytest.fixture
def limits(monkeypatch):
    settings = get_settings()
    monkeypatch.setattr(settings, "upload_max_bytes", LIMIT)
    monkeypatch.setattr(settings, "seller_quota_bytes", QUOTA)


def new_product(system, seller: dict, title: str = "Field Guide") -> int:
    response = system.call("POST", "/products", {"title": title, "price_minor": 999, "currency": "USD"},
                           seller["token"])
    assert response.status_code == 201, response.json
    return response.json["id"]


def file_rows(system) -> list[dict]:
    return system.rows("api", "SELECT id, file_key FROM products ORDER BY id")


def uploaded_events(system) -> int:
    return len([r for r in system.rows("api", "SELECT actor FROM outbox") if r["actor"].endswith("file_uploaded")])


def test_an_upload_is_stored_under_its_content_address_and_announced_to_media(system, limits):
    seller = system.user("sam")
    product_id = new_product(system, seller)
    data = b"%PDF-1.7\n" + b"x" * 3000

    response = put_file(system, product_id, seller["token"], multipart(data, "guide.pdf"))
    assert response.status_code == 200, response.json
    digest = hashlib.sha256(data).hexdigest()
    assert stored_files() == [f"products/{product_id}/{digest}"]
    assert (get_settings().storage_dir / f"products/{product_id}/{digest}").read_bytes() == data
    system.drain()
    [row] = system.rows("media", "SELECT * FROM product_files")
    assert (row["storage_key"], row["sha256"], row["size_bytes"]) == (f"products/{product_id}/{digest}", digest,
                                                                       len(data))
    assert (row["filename"], row["content_type"]) == ("guide.pdf", "application/pdf")


def test_a_file_of_many_read_chunks_arrives_whole_with_the_default_limits(system):
    seller = system.user("sam")
    product_id = new_product(system, seller)
    data = random.Random(7).randbytes(3_000_000)  # many times the parser's read size, line breaks included

    response = put_file(system, product_id, seller["token"], multipart(data, "album.zip", "application/zip"))
    assert response.status_code == 200, response.json
    [key] = stored_files()
    assert (get_settings().storage_dir / key).read_bytes() == data


def test_an_upload_larger_than_the_apps_small_global_body_limit_is_accepted_up_to_the_upload_limit(system, limits):
    app = create_app()
    app.config["MAX_CONTENT_LENGTH"] = 1000  # the global bound for every other route
    seller = system.user("sam")
    product_id = new_product(system, seller)

    response = put_file(system, product_id, seller["token"], multipart(b"y" * 3500), app=app)
    assert response.status_code == 200, response.json
    assert len(stored_files()) == 1


def test_a_filename_and_type_are_made_safe_when_the_file_is_uploaded(system, limits):
    seller = system.user("sam")
    product_id = new_product(system, seller)

    response = put_file(system, product_id, seller["token"],
                        multipart(b"<script>alert(1)</script>", "../../x\r\n.html", "text/html"))
    assert response.status_code == 200, response.json
    system.drain()
    [row] = system.rows("media", "SELECT filename, content_type FROM product_files")
    assert row == {"filename": "x__.html", "content_type": "application/octet-stream"}


@dataclass
class Case:
    """A refused upload: what is sent, by whom, the answer expected, and whether the body may be read."""

    id: str
    status: int
    error: str
    body: bytes = field(default_factory=lambda: multipart(b"z" * 1000))
    who: str = "seller"  # seller | other | nobody
    product: str = "own"  # own | missing
    content_type: str | None = None
    length: int | None = None  # a declared length other than the body's
    sent: int | None = None  # bytes that arrive before the client disconnects
    body_read: bool = True


CASES = [
    Case("no token", 401, "missing bearer token", who="nobody", body_read=False),
    Case("someone else's product", 403, "only the product's seller", who="other", body_read=False),
    Case("a product that does not exist", 404, "does not exist", product="missing", body_read=False),
    Case("a declared length over the limit", 413, "upload limit", body=multipart(b"z" * (LIMIT + 70_000)),
         body_read=False),
    Case("a file over the limit, streamed", 413, "upload limit", body=multipart(b"z" * (LIMIT + 1))),
    Case("over the seller's quota", 413, "storage quota", body=multipart(b"q" * 3500)),
    Case("an empty file", 400, "empty", body=multipart(b"")),
    Case("no part named 'file'", 400, "field named 'file'", body=multipart(b"abc", field="upload")),
    Case("a part without a filename", 400, "field named 'file'", body=multipart(b"abc", filename=None)),
    Case("not multipart", 400, "multipart/form-data", body=b"just bytes", content_type="application/pdf"),
    Case("a client that disconnects mid-upload", 400, "cut short", body=multipart(b"d" * 3000), sent=1500),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_refused_upload_answers_a_json_4xx_and_leaves_nothing_behind(system, limits, case):
    seller, other = system.user("sam"), system.user("olga")
    product_id = new_product(system, seller)
    # The seller already stores 7,000 of a 10,000-byte quota on another product.
    stocked = new_product(system, seller, "Stocked")
    assert put_file(system, stocked, seller["token"], multipart(b"s" * 3500)).status_code == 200
    assert put_file(system, new_product(system, seller, "More"), seller["token"],
                    multipart(b"m" * 3500)).status_code == 200
    before = (stored_files(), file_rows(system), uploaded_events(system))

    token = {"seller": seller["token"], "other": other["token"], "nobody": None}[case.who]
    target = product_id if case.product == "own" else 999_999
    body = Body(case.body, sent=case.sent)
    response = put_file(system, target, token, body, **({"content_type": case.content_type} if case.content_type
                                                          else {}), length=case.length or len(case.body))

    assert response.status_code == case.status, response.data
    assert response.is_json and case.error in response.json["error"], response.json
    assert (stored_files(), file_rows(system), uploaded_events(system)) == before
    if not case.body_read:
        assert body.read_bytes == 0


def test_replacing_a_file_within_the_quota_counts_the_replaced_version_as_freed(system, limits):
    seller = system.user("sam")
    product_id = new_product(system, seller)
    for filler in (b"a", b"b", b"c", b"d"):  # each 3,000 bytes replaces the last: never more than one stored
        response = put_file(system, product_id, seller["token"], multipart(filler * 3000))
        assert response.status_code == 200, response.json
    assert len(stored_files()) == 1


def test_upload_leftovers_a_crash_abandoned_are_swept_and_fresh_ones_kept(tmp_path):
    storage = LocalStorage(tmp_path)
    old, fresh = storage.incoming(), storage.incoming()
    for handle in (old, fresh):
        handle.close()
    os.utime(old.name, (time.time() - 2 * 3600,) * 2)

    storage.incoming().close()
    assert not os.path.exists(old.name) and os.path.exists(fresh.name)
