"""Signed download links: from the buyer's email to the file's bytes, and every way a link is refused."""

import hashlib
import io
import re
import string
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer
from werkzeug.http import parse_options_header

from services.api import files
from services.media import web
from services.media.links import LinkExpired, LinkInvalid, LinkSigner
from services.media.models import DownloadGrant
from shared.db import transaction
from shared.settings import Settings, get_settings
from shared.storage import LocalStorage
from tests.component.system import post_stripe, stripe_event
from tests.component.uploading import multipart, put_file, stored_files

FILE = b"%PDF-1.7\n" + b"the field guide, every page of it\n" * 500
FILENAME = "field-guide.pdf"


def upload(system, sale: dict, data: bytes = FILE, filename: str = FILENAME) -> None:
    product_id = sale["order"]["lines"][0]["product_id"]
    response = system.client.put(f"/products/{product_id}/file",
                                 headers={"Authorization": f"Bearer {sale['seller']['token']}"},
                                 data={"file": (io.BytesIO(data), filename, "application/pdf")},
                                 content_type="multipart/form-data")
    assert response.status_code == 200, response.json


def pay(system, sale: dict) -> None:
    assert post_stripe(system, stripe_event(sale["order"])).json["status"] == "accepted"
    system.drain()


def download_paths(system) -> list[str]:
    """The /downloads/... paths in the text part of the "Your downloads" email."""
    [mail] = [m for m in system.mails() if m["Subject"].startswith("Your downloads")]
    text = mail.get_body(("plain",)).get_content()
    return re.findall(r"https?://[^/\s]+(/downloads/\S+)", text)


def paid_with_file(system) -> tuple[dict, str]:
    """A sale whose product got its file (and so went back to review, then was approved) before payment."""
    sale = system.order()
    upload(system, sale)
    system.approve(sale["order"]["lines"][0]["product_id"])
    pay(system, sale)
    [path] = download_paths(system)
    return sale, path


def token_of(path: str) -> str:
    return path.removeprefix("/downloads/")


def counts(system) -> tuple[int, int]:
    [grant] = system.rows("media", "SELECT download_count FROM download_grants")
    [file] = system.rows("media", "SELECT download_count FROM product_files")
    return grant["download_count"], file["download_count"]


def test_the_emailed_link_downloads_the_uploaded_file_and_counts_each_download(system):
    sale, path = paid_with_file(system)
    assert path.startswith("/downloads/")

    first = system.client.get(path)
    assert first.status_code == 200
    assert first.data == FILE
    assert "attachment" in first.headers["Content-Disposition"]
    assert FILENAME in first.headers["Content-Disposition"]
    assert first.mimetype == "application/pdf"
    assert counts(system) == (1, 1)

    second = system.client.get(path)
    assert second.status_code == 200 and second.data == FILE
    assert counts(system) == (2, 2)
    [grant] = system.rows("media", "SELECT * FROM download_grants")
    assert grant["last_downloaded_at"] is not None
    assert grant["order_id"] == sale["order"]["id"] and grant["buyer_id"] == sale["buyer"]["id"]


def test_a_token_with_one_character_changed_is_refused_with_403(system):
    _, path = paid_with_file(system)
    token = token_of(path)
    # Change a character of the signed payload (the tail of a base64 signature can hold unused bits).
    index = 3
    alphabet = string.ascii_letters + string.digits
    changed = token[:index] + next(c for c in alphabet if c != token[index]) + token[index + 1:]

    response = system.client.get(f"/downloads/{changed}")
    assert response.status_code == 403
    assert response.is_json and "not valid" in response.json["error"]
    assert counts(system) == (0, 0)


def test_a_token_whose_signature_is_cut_short_is_refused_with_403(system):
    _, path = paid_with_file(system)

    response = system.client.get(path[:-6])
    assert response.status_code == 403 and response.is_json
    assert counts(system) == (0, 0)


def test_a_token_signed_with_another_secret_is_refused_with_403(system):
    _, path = paid_with_file(system)
    [grant] = system.rows("media", "SELECT id FROM download_grants")
    forged = LinkSigner("not-the-media-secret", "http://x/downloads", 3600).url(grant["id"])

    response = system.client.get("/downloads/" + forged.rsplit("/", 1)[1])
    assert response.status_code == 403 and response.is_json and "not valid" in response.json["error"]
    assert counts(system) == (0, 0)


def test_a_genuine_token_for_a_grant_that_does_not_exist_is_refused_with_403(system):
    settings = get_settings()
    token = LinkSigner(settings.media_signing_secret, settings.downloads_url, 3600).url("no-such-grant")

    response = system.client.get("/downloads/" + token.rsplit("/", 1)[1])
    assert response.status_code == 403 and response.is_json


def test_a_link_whose_grant_has_expired_is_answered_410(system):
    _, path = paid_with_file(system)
    with transaction("media") as session:
        session.execute(sa.update(DownloadGrant).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))

    response = system.client.get(path)
    assert response.status_code == 410 and response.is_json and "expired" in response.json["error"]
    assert counts(system) == (0, 0)


def test_a_link_older_than_its_signed_lifetime_is_answered_410(system, monkeypatch):
    _, path = paid_with_file(system)
    settings = get_settings()
    monkeypatch.setattr(web, "signer", lambda: LinkSigner(settings.media_signing_secret, settings.downloads_url, -1))

    response = system.client.get(path)
    assert response.status_code == 410 and response.is_json and "expired" in response.json["error"]
    assert counts(system) == (0, 0)


def test_the_link_signer_tells_an_expired_link_from_a_forged_one():
    signer = LinkSigner("secret", "http://market.test/downloads/", ttl_s=60)
    url = signer.url("grant-1")
    assert url.startswith("http://market.test/downloads/") and "//downloads" not in url.split("://")[1]
    token = url.rsplit("/", 1)[1]
    assert signer.grant_id(token) == "grant-1"

    # A signer whose lifetime is already over sees the same genuine token as expired.
    with pytest.raises(LinkExpired):
        LinkSigner("secret", "http://market.test/downloads", ttl_s=-1).grant_id(token)
    with pytest.raises(LinkInvalid):
        LinkSigner("other secret", "http://market.test/downloads", ttl_s=60).grant_id(token)


def test_a_paid_product_without_an_uploaded_file_is_answered_404_not_available(system):
    sale = system.order(titles=("Unfinished Book",))
    pay(system, sale)
    [path] = download_paths(system)

    response = system.client.get(path)
    assert response.status_code == 404
    assert response.is_json and "not available" in response.json["error"]
    assert "Unfinished Book" in response.json["error"]


def test_a_file_uploaded_after_payment_is_served_by_the_link_already_sent_once_it_is_approved(system):
    sale = system.order()
    pay(system, sale)
    [path] = download_paths(system)
    assert system.client.get(path).status_code == 404

    upload(system, sale, data=b"late but here", filename="late.pdf")
    system.drain()
    awaiting_review = system.client.get(path)
    assert awaiting_review.status_code == 404 and "not available" in awaiting_review.json["error"]

    system.approve(sale["order"]["lines"][0]["product_id"])
    response = system.client.get(path)
    assert response.status_code == 200 and response.data == b"late but here"
    assert "late.pdf" in response.headers["Content-Disposition"]


def test_a_relative_data_dir_is_made_absolute_once_when_settings_load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir="var")
    monkeypatch.chdir("/")  # where the process is later, or what Flask takes a relative path against
    assert settings.data_dir == tmp_path / "var"
    assert settings.storage_dir == tmp_path / "var" / "storage" and settings.mail_dir == tmp_path / "var" / "mail"


def buy(system, product_id: int) -> str:
    """A new buyer pays for the product; returns the path of their download link."""
    system.settle()
    buyer = system.user(f"buyer{time.monotonic_ns()}")
    assert system.call("POST", "/cart/items", {"product_id": product_id}, buyer["token"]).status_code == 201
    order = system.call("POST", "/orders", {"provider": "stripe"}, buyer["token"]).json
    pay(system, {"order": order})
    [path] = download_paths(system)
    return path


def test_a_buyers_link_keeps_serving_the_version_approved_when_they_bought_after_the_seller_replaces_it(system):
    sale, first_link = paid_with_file(system)
    product_id = sale["order"]["lines"][0]["product_id"]

    upload(system, sale, data=b"new unreviewed bytes", filename="v2.pdf")
    system.drain()
    before_review = system.client.get(first_link)
    assert before_review.status_code == 200 and before_review.data == FILE
    assert FILENAME in before_review.headers["Content-Disposition"]

    system.approve(product_id)
    second_link = buy(system, product_id)
    assert system.client.get(second_link).data == b"new unreviewed bytes"
    assert system.client.get(first_link).data == FILE
    [grant, later] = system.rows("media", "SELECT file_key, file_sha256 FROM download_grants ORDER BY created_at")
    assert grant["file_sha256"] == hashlib.sha256(FILE).hexdigest()
    assert grant["file_key"] == f"products/{product_id}/{grant['file_sha256']}"
    assert later["file_sha256"] == hashlib.sha256(b"new unreviewed bytes").hexdigest()


def test_replacing_a_file_deletes_the_old_version_unless_an_order_pins_it(system):
    sale, _ = paid_with_file(system)
    product_id = sale["order"]["lines"][0]["product_id"]
    pinned = f"products/{product_id}/{hashlib.sha256(FILE).hexdigest()}"

    upload(system, sale, data=b"draft two", filename="v2.pdf")
    upload(system, sale, data=b"draft three", filename="v3.pdf")
    # The bought version stays; "draft two", which nobody bought, was removed when "draft three" replaced it.
    assert stored_files() == sorted([pinned, f"products/{product_id}/{hashlib.sha256(b'draft three').hexdigest()}"])


def test_a_late_delete_of_a_replaced_version_spares_it_when_the_product_has_it_again(system):
    sale = system.order()
    product_id = sale["order"]["lines"][0]["product_id"]
    key_a = f"products/{product_id}/{hashlib.sha256(b'version a').hexdigest()}"
    upload(system, sale, data=b"version a")
    upload(system, sale, data=b"version b")  # replaces A: its delete of A may still be on its way...
    upload(system, sale, data=b"version a")  # ...when A is uploaded again and replaces B

    storage = LocalStorage(get_settings().storage_dir)
    with transaction("api") as session:  # the delete of A that upload B scheduled, arriving last
        assert files.delete_unless_referenced(session, storage, product_id, key_a) is False
    assert stored_files() == [key_a]


@pytest.mark.parametrize("payload", [["grant-1"], {"grant": "grant-1"}, 42, None, True, 1.5],
                         ids=["list", "dict", "int", "null", "bool", "float"])
def test_a_genuinely_signed_link_whose_payload_is_not_a_string_is_refused_with_403(system, payload):
    serializer = URLSafeTimedSerializer(get_settings().media_signing_secret, salt="download-grant")

    response = system.client.get(f"/downloads/{serializer.dumps(payload)}")
    assert response.status_code == 403
    assert response.is_json and "not valid" in response.json["error"]


SERVED = [
    # (uploaded filename, uploaded type, filename the buyer gets, type served)
    ("evil\r\nSet-Cookie: x=1.pdf", "application/pdf", "evil__Set-Cookie_ x=1.pdf", "application/pdf"),
    ("nul\x00byte.pdf", "application/pdf", "nul_byte.pdf", "application/pdf"),
    ("../../etc/passwd", "text/plain", "passwd", "text/plain"),
    ("..\\..\\boot.ini", "text/plain", "boot.ini", "text/plain"),
    ("..", "application/zip", "download", "application/zip"),
    ("page.html", "text/html", "page.html", "application/octet-stream"),
    ("logo.svg", "image/svg+xml", "logo.svg", "application/octet-stream"),
    ("cover.PNG", "IMAGE/PNG", "cover.PNG", "image/png"),
    ("tool.exe", "application/x-msdownload", "tool.exe", "application/octet-stream"),
    ("no-type.bin", None, "no-type.bin", "application/octet-stream"),
    ("résumé – été.epub", "application/epub+zip", "résumé – été.epub", "application/epub+zip"),
    ("\u202egpj.exe", "image/jpeg", "_gpj.exe", "image/jpeg"),
    ("a" * 300 + ".pdf", "application/pdf", "a" * 146 + ".pdf", "application/pdf"),
]


@pytest.mark.parametrize(("filename", "content_type", "served_name", "served_type"), SERVED,
                         ids=[repr(case[0][:24]) for case in SERVED])
def test_a_file_is_served_as_an_attachment_with_a_safe_name_and_type(system, filename, content_type, served_name,
                                                                    served_type):
    sale = system.order()
    product_id = sale["order"]["lines"][0]["product_id"]
    response = put_file(system, product_id, sale["seller"]["token"], multipart(FILE, filename, content_type))
    assert response.status_code == 200, response.json
    system.approve(product_id)
    pay(system, sale)
    [path] = download_paths(system)

    served = system.client.get(path)
    assert served.status_code == 200 and served.data == FILE
    assert served.mimetype == served_type
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    disposition = served.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert not any(c in disposition for c in "\r\n\x00/\\")
    assert parse_options_header(disposition)[1]["filename"] == served_name
    assert counts(system) == (1, 1)
