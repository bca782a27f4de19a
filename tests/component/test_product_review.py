"""Product review: admins approve or reject, sellers hear of it by email and in the app, buyers see only approved."""

import hashlib
import io
import re
from datetime import datetime

import pytest
from click.testing import CliRunner

from services.market.cli import cli


def pending_product(system, seller: dict, title: str = "Field Guide") -> dict:
    response = system.call("POST", "/products", {"title": title, "price_minor": 1500, "currency": "USD"},
                           seller["token"])
    assert response.status_code == 201 and response.json["status"] == "pending", response.json
    return response.json


def review(system, product_id: int, decision: str, token: str, reason: str | None = None):
    body = {"reason": reason} if reason is not None else None
    return system.call("POST", f"/admin/products/{product_id}/{decision}", body, token)


def notifications(system, user: dict, query: str = "") -> dict:
    response = system.call("GET", f"/notifications{query}", token=user["token"])
    assert response.status_code == 200, response.json
    return response.json


def catalog_ids(system) -> list[int]:
    return [p["id"] for p in system.call("GET", "/products").json["products"]]


def naive(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp).replace(tzinfo=None)  # SQLite drops the offset


def parts(mail) -> tuple[str, str]:
    return mail.get_body(("plain",)).get_content(), mail.get_body(("html",)).get_content()


# --- the catalog ---------------------------------------------------------------------------------

def test_a_new_product_awaits_review_hidden_from_the_catalog_but_listed_for_its_seller(system):
    seller = system.user("seller")
    product = pending_product(system, seller)

    assert catalog_ids(system) == []
    mine = system.call("GET", "/products?mine=true", token=seller["token"]).json["products"]
    assert [(p["id"], p["status"]) for p in mine] == [(product["id"], "pending")]
    assert system.call("GET", "/products?mine=true").status_code == 401


def test_a_seller_sees_only_their_own_products_with_mine(system):
    seller, other = system.user("seller"), system.user("other")
    pending_product(system, seller)
    theirs = system.approve(pending_product(system, other, "Atlas")["id"])

    assert system.call("GET", "/products?mine=true", token=seller["token"]).json["products"][0]["title"] == \
        "Field Guide"
    assert [p["id"] for p in system.call("GET", "/products?mine=true", token=other["token"]).json["products"]] == [
        theirs["id"]]


def test_a_product_awaiting_review_or_rejected_cannot_be_added_to_a_cart(system):
    seller, buyer = system.user("seller"), system.user("buyer")
    waiting, refused = pending_product(system, seller), pending_product(system, seller, "Atlas")
    review(system, refused["id"], "reject", system.admin(), "Not ours to sell")
    system.drain()

    for product, status in ((waiting, "pending"), (refused, "rejected")):
        response = system.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])
        assert response.status_code == 409 and response.is_json and status in response.json["error"]
    assert system.call("GET", "/cart", token=buyer["token"]).json == {"items": []}


def test_a_product_rejected_after_it_was_put_in_a_cart_cannot_be_checked_out(system):
    seller, buyer = system.user("seller"), system.user("buyer")
    product = system.approve(pending_product(system, seller)["id"])
    assert system.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"]).status_code == 201
    review(system, product["id"], "reject", system.admin(), "Counterfeit")
    system.drain()

    response = system.call("POST", "/orders", {"provider": "stripe"}, buyer["token"])
    assert response.status_code == 409 and "no longer for sale" in response.json["error"]
    assert system.rows("api", "SELECT * FROM orders") == []


# --- approving and rejecting ---------------------------------------------------------------------

def test_approving_a_product_lists_it_emails_the_seller_and_leaves_an_unread_notification(system):
    seller = system.user("seller")
    product = pending_product(system, seller)

    response = review(system, product["id"], "approve", system.admin())
    assert response.status_code == 200
    assert (response.json["status"], response.json["rejection_reason"]) == ("approved", None)
    system.drain()

    assert catalog_ids(system) == [product["id"]]
    [mail] = system.mails()
    assert mail["To"] == "seller@example.com" and mail["Subject"] == 'Your product "Field Guide" was approved'
    assert "now listed in the catalog" in parts(mail)[0]
    listing = notifications(system, seller)
    assert listing["unread_count"] == 1
    [note] = listing["notifications"]
    assert (note["kind"], note["title"], note["read_at"]) == (
        "product_approved", 'Your product "Field Guide" was approved', None)
    assert note["data"] == {"product_id": product["id"]}


def test_rejecting_a_product_emails_the_reason_html_escaped_and_puts_it_in_the_notification(system):
    seller = system.user("seller")
    product = pending_product(system, seller)
    reason = "<b>Blurry</b> cover & a <script>alert(1)</script> in the description"

    response = review(system, product["id"], "reject", system.admin(), f"  {reason}  ")
    assert response.status_code == 200
    assert (response.json["status"], response.json["rejection_reason"]) == ("rejected", reason)
    system.drain()

    assert catalog_ids(system) == []
    [mail] = system.mails()
    text, html = parts(mail)
    assert mail["Subject"] == 'Your product "Field Guide" was not approved'
    assert reason in text
    assert "&lt;b&gt;Blurry&lt;/b&gt; cover &amp; a &lt;script&gt;" in html
    assert "<b>Blurry" not in html and "<script>" not in html
    [note] = notifications(system, seller)["notifications"]
    assert note["kind"] == "product_rejected" and reason in note["body"]
    assert note["data"] == {"product_id": product["id"], "reason": reason}


@pytest.mark.parametrize("body", [None, {}, {"reason": ""}, {"reason": "   "}, {"reason": 42}])
def test_a_rejection_without_a_reason_is_refused_with_400_and_changes_nothing(system, body):
    seller = system.user("seller")
    product = pending_product(system, seller)

    response = system.call("POST", f"/admin/products/{product['id']}/reject", body, system.admin())
    assert response.status_code == (415 if body is None else 400) and response.is_json
    if body is not None:
        assert [d["field"] for d in response.json["details"]] == ["reason"]
    assert system.call("GET", f"/products/{product['id']}", token=seller["token"]).json["status"] == "pending"
    assert system.rows("api", "SELECT * FROM notifications") == [] and system.rows("api", "SELECT * FROM outbox") == []


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_only_an_admin_can_review_a_product(system, decision):
    seller = system.user("seller")
    product = pending_product(system, seller)

    response = review(system, product["id"], decision, seller["token"], "I would rather not")
    assert response.status_code == 403 and response.is_json and "admin" in response.json["error"]
    assert system.call("GET", f"/products/{product['id']}", token=seller["token"]).json["status"] == "pending"
    assert system.rows("api", "SELECT * FROM notifications") == [] and system.rows("api", "SELECT * FROM outbox") == []


@pytest.mark.parametrize(("decision", "reason"), [("approve", None), ("reject", "Blurry")])
def test_the_same_decision_twice_is_answered_409_and_the_seller_hears_of_it_once(system, decision, reason):
    seller = system.user("seller")
    product = pending_product(system, seller)

    first = review(system, product["id"], decision, system.admin(), reason)
    second = review(system, product["id"], decision, system.admin(), reason)
    system.drain()

    assert (first.status_code, second.status_code) == (200, 409)
    assert "already" in second.json["error"]
    assert len(system.mails()) == 1 and notifications(system, seller)["unread_count"] == 1


def test_a_rejected_product_approved_later_is_listed_and_the_seller_gets_both_emails(system):
    seller = system.user("seller")
    product = pending_product(system, seller)
    review(system, product["id"], "reject", system.admin(), "Missing cover")
    system.drain()

    approved = review(system, product["id"], "approve", system.admin())
    system.drain()

    assert approved.status_code == 200 and approved.json["rejection_reason"] is None
    assert catalog_ids(system) == [product["id"]]
    assert sorted(m["Subject"] for m in system.mails()) == ['Your product "Field Guide" was approved',
                                                            'Your product "Field Guide" was not approved']
    assert [n["kind"] for n in notifications(system, seller)["notifications"]] == ["product_approved",
                                                                                   "product_rejected"]


def test_reviewing_a_product_that_does_not_exist_is_answered_404(system):
    response = review(system, 999999, "approve", system.admin())

    assert response.status_code == 404 and response.is_json


# --- in-app notifications ---------------------------------------------------------------------------

def seller_with_three_notifications(system) -> dict:
    seller = system.user("seller")
    for title in ("One", "Two", "Three"):
        system.approve(pending_product(system, seller, title)["id"])
    return seller


def test_notifications_are_listed_newest_first_with_the_unread_count(system):
    seller = seller_with_three_notifications(system)

    listing = notifications(system, seller)
    assert [n["title"] for n in listing["notifications"]] == [f'Your product "{t}" was approved'
                                                              for t in ("Three", "Two", "One")]
    assert listing["unread_count"] == 3


def test_marking_a_notification_read_takes_it_out_of_the_unread_listing(system):
    seller = seller_with_three_notifications(system)
    newest = notifications(system, seller)["notifications"][0]

    response = system.call("POST", f"/notifications/{newest['id']}/read", token=seller["token"])
    assert response.status_code == 200 and response.json["read_at"] and response.json["unread_count"] == 2
    again = system.call("POST", f"/notifications/{newest['id']}/read", token=seller["token"])
    assert naive(again.json["read_at"]) == naive(response.json["read_at"])  # marking twice keeps the first time

    unread = notifications(system, seller, "?unread=true")
    assert newest["id"] not in [n["id"] for n in unread["notifications"]] and len(unread["notifications"]) == 2
    assert len(notifications(system, seller)["notifications"]) == 3


def test_read_all_marks_every_unread_notification_read(system):
    seller = seller_with_three_notifications(system)

    response = system.call("POST", "/notifications/read-all", token=seller["token"])
    assert response.status_code == 200 and response.json == {"marked": 3, "unread_count": 0}
    assert notifications(system, seller, "?unread=true") == {"notifications": [], "unread_count": 0,
                                                             "next_offset": None}
    assert all(n["read_at"] for n in notifications(system, seller)["notifications"])


def test_a_user_never_sees_nor_marks_someone_elses_notifications(system):
    seller, other = seller_with_three_notifications(system), system.user("other")
    theirs = notifications(system, seller)["notifications"][0]

    assert notifications(system, other) == {"notifications": [], "unread_count": 0, "next_offset": None}
    response = system.call("POST", f"/notifications/{theirs['id']}/read", token=other["token"])
    assert response.status_code == 404 and response.is_json
    assert system.call("POST", "/notifications/read-all", token=other["token"]).json["marked"] == 0
    assert notifications(system, seller)["unread_count"] == 3


@pytest.mark.parametrize(("method", "path"), [("GET", "/notifications"), ("POST", "/notifications/1/read"),
                                              ("POST", "/notifications/read-all"),
                                              ("POST", "/admin/products/1/approve")])
def test_notifications_and_reviews_need_a_valid_token(system, method, path):
    response = system.client.open(path, method=method, headers={"Authorization": "Bearer nope"})

    assert response.status_code == 401 and response.is_json


# --- market create-admin ----------------------------------------------------------------------------

def create_admin(*args: str):
    return CliRunner().invoke(cli, ["create-admin", *args])


def test_market_create_admin_prints_a_token_once_that_can_review_products(system):
    seller = system.user("seller")
    product = pending_product(system, seller)

    result = create_admin("--email", "Root@Example.com", "--name", "Root")
    assert result.exit_code == 0, result.output
    token = re.search(r"^token: (\S+)$", result.output, re.MULTILINE).group(1)
    assert "shown only once" in result.output
    assert review(system, product["id"], "approve", token).status_code == 200
    system.drain()
    assert system.rows("api", "SELECT email, is_admin FROM users WHERE name = 'Root'") == [
        {"email": "root@example.com", "is_admin": 1}]


def test_market_create_admin_promotes_an_existing_user_with_a_new_token_and_the_old_one_stops_working(system):
    seller, reviewer = system.user("seller"), system.user("reviewer")
    product = pending_product(system, seller)
    assert review(system, product["id"], "approve", reviewer["token"]).status_code == 403

    result = create_admin("--email", "reviewer@example.com", "--name", "Reviewer")
    assert result.exit_code == 0 and f"Admin {reviewer['id']} <reviewer@example.com>" in result.output
    new_token = re.search(r"^token: (\S+)$", result.output, re.MULTILINE).group(1)
    assert review(system, product["id"], "approve", reviewer["token"]).status_code == 401
    assert review(system, product["id"], "approve", new_token).status_code == 200
    system.drain()


def test_market_create_admin_refuses_an_invalid_email_with_exit_1(system):
    result = create_admin("--email", "not-an-email", "--name", "Root")

    assert result.exit_code == 1 and "Error: cannot create an admin" in result.output
    assert system.rows("api", "SELECT * FROM users") == []


def put_file(system, seller: dict, product_id: int, data: bytes):
    return system.client.put(f"/products/{product_id}/file", headers={"Authorization": f"Bearer {seller['token']}"},
                             data={"file": (io.BytesIO(data), "guide.pdf", "application/pdf")},
                             content_type="multipart/form-data")


def test_admins_see_the_review_queue_and_fetch_the_file_to_review_without_it_being_rendered(system):
    seller = system.user("seller")
    product = pending_product(system, seller)
    put_file(system, seller, product["id"], b"<html>the reviewed bytes</html>")

    queue = system.call("GET", "/admin/products", token=system.admin())
    assert [p["id"] for p in queue.json["products"]] == [product["id"]]
    assert system.call("GET", "/admin/products", token=seller["token"]).status_code == 403
    file = system.call("GET", f"/admin/products/{product['id']}/file", token=system.admin())
    assert file.status_code == 200 and file.data == b"<html>the reviewed bytes</html>"
    assert file.mimetype == "application/octet-stream" and file.headers["X-Content-Type-Options"] == "nosniff"
    assert file.headers["Content-Disposition"].startswith("attachment")
    assert system.call("GET", f"/admin/products/{product['id']}/file", token=seller["token"]).status_code == 403


def test_an_approval_of_a_reviewed_version_fails_when_the_seller_swapped_the_file_meanwhile(system):
    seller = system.user("seller")
    product = pending_product(system, seller)
    put_file(system, seller, product["id"], b"reviewed")
    reviewed = hashlib.sha256(b"reviewed").hexdigest()
    put_file(system, seller, product["id"], b"swapped after the review")

    stale = system.call("POST", f"/admin/products/{product['id']}/approve", {"file_sha256": reviewed}, system.admin())
    assert stale.status_code == 409 and "no longer the version you reviewed" in stale.json["error"]
    assert system.rows("api", "SELECT status FROM products") == [{"status": "pending"}]
    assert system.rows("api", "SELECT * FROM notifications") == []

    current = hashlib.sha256(b"swapped after the review").hexdigest()
    fresh = system.call("POST", f"/admin/products/{product['id']}/approve", {"file_sha256": current}, system.admin())
    assert fresh.status_code == 200 and fresh.json["status"] == "approved"
