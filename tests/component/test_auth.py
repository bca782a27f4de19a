"""Signing in and out, tokens that expire, rate limits, pages and security headers."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from services.api.http import limiter
from shared.db import transaction
from shared.settings import get_settings
from shared.web import SECURITY_HEADERS
from tests.component.system import PASSWORD


@pytest.fixture
def limits(monkeypatch):
    """Set rate limits for one test, starting from empty counters."""

    def set_limits(**values):
        for name, value in values.items():
            monkeypatch.setenv(f"MARKET_RATE_LIMIT_{name.upper()}", value)
        get_settings.cache_clear()
        limiter.reset()

    yield set_limits
    get_settings.cache_clear()
    limiter.reset()


def register(system, name: str, **changes):
    return system.call("POST", "/users", {"email": f"{name}@example.com", "name": name, "password": PASSWORD}
                       | changes)


# --- tokens -----------------------------------------------------------------------------------------------

def test_signing_in_gives_a_new_token_and_signing_out_revokes_only_that_one(system):
    first = register(system, "ann").json
    signed_in = system.call("POST", "/tokens", {"email": "ANN@example.com", "password": PASSWORD})
    assert signed_in.status_code == 201 and signed_in.json["token"] != first["token"]

    assert system.call("POST", "/logout", token=signed_in.json["token"]).status_code == 200
    assert system.call("GET", "/me", token=signed_in.json["token"]).status_code == 401
    assert system.call("GET", "/me", token=first["token"]).status_code == 200


def test_an_expired_token_is_refused_and_says_to_sign_in_again(system):
    user = register(system, "ann").json
    with transaction("api") as session:
        session.execute(sa.text("UPDATE api_tokens SET expires_at = :t"), {"t": datetime.now(UTC) - timedelta(1)})

    response = system.call("GET", "/me", token=user["token"])
    assert response.status_code == 401 and "sign in again" in response.json["error"]


def test_a_new_token_expires_after_the_configured_time(system):
    before = datetime.now(UTC)
    user = register(system, "ann").json

    expires_at = datetime.fromisoformat(user["token_expires_at"])
    ttl = timedelta(hours=get_settings().token_ttl_hours)
    assert before + ttl <= expires_at <= datetime.now(UTC) + ttl


def test_only_the_hash_of_a_token_is_stored(system):
    user = register(system, "ann").json

    stored = system.rows("api", "SELECT token_hash FROM api_tokens")
    assert len(stored) == 1 and user["token"] not in str(stored)
    assert user["token"] not in str(system.rows("api", "SELECT * FROM users"))


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/users", {"email": "ann@example.com", "name": "Ann", "password": PASSWORD}),
    ("POST", "/tokens", {"email": "bob@example.com", "password": PASSWORD})])
def test_answers_that_carry_a_token_are_never_cached(system, method, path, body):
    register(system, "bob")
    response = system.call(method, path, body)

    assert response.status_code == 201 and "token" in response.json
    assert response.headers["Cache-Control"] == "no-store"


# --- rate limits ------------------------------------------------------------------------------------------

def test_registration_is_rate_limited_per_client_with_a_429_json_and_retry_after(system, limits):
    limits(register="3/minute")
    answers = [register(system, f"user{i}").status_code for i in range(5)]

    assert answers == [201, 201, 201, 429, 429]
    refused = register(system, "user9")
    assert refused.is_json and "too many register requests" in refused.json["error"]
    assert int(refused.headers["Retry-After"]) > 0
    assert len(system.rows("api", "SELECT * FROM users")) == 3


def test_sign_in_is_rate_limited_so_passwords_cannot_be_guessed_at_speed(system, limits):
    register(system, "ann")
    limits(sign_in="5/minute")
    answers = [system.call("POST", "/tokens", {"email": "ann@example.com", "password": f"guess {i}"}).status_code
               for i in range(7)]

    assert answers == [401] * 5 + [429] * 2
    assert system.call("POST", "/tokens", {"email": "ann@example.com", "password": PASSWORD}).status_code == 429


def test_ipv6_clients_are_counted_per_64_so_fresh_addresses_of_one_subscriber_share_a_limit(system, limits):
    limits(register="2/minute")
    answers = [system.client.post("/users", json={"email": f"v6-{i}@example.com", "name": "V", "password": PASSWORD},
                                  environ_base={"REMOTE_ADDR": f"2001:db8:1:2::{i + 1}"}).status_code for i in range(3)]
    other = system.client.post("/users", json={"email": "v6-x@example.com", "name": "V", "password": PASSWORD},
                               environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"})

    assert answers == [201, 201, 429] and other.status_code == 201


def test_sign_in_is_also_limited_per_account_so_guesses_from_many_addresses_still_count(system, limits):
    register(system, "ann")
    limits(sign_in="3/minute")
    answers = [system.client.post("/tokens", json={"email": "Ann@example.com", "password": f"guess {i}"},
                                  environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code for i in range(5)]

    assert answers == [401, 401, 401, 429, 429]


def test_leads_are_rate_limited_per_user_whichever_token_they_sign_in_with(system, limits):
    seller, first, second = system.user("seller"), system.user("first"), system.user("second")
    product = system.call("POST", "/products", {"title": "G", "price_minor": 100, "currency": "USD"},
                          seller["token"]).json
    system.approve(product["id"])
    limits(leads="2/minute")
    lead = {"name": "Lena", "email": "lena@example.com", "product_id": product["id"]}

    assert [system.call("POST", "/leads", lead, first["token"]).status_code for _ in range(2)] == [201, 201]
    again = system.call("POST", "/tokens", {"email": "first@example.com", "password": PASSWORD}).json["token"]
    assert system.call("POST", "/leads", lead, again).status_code == 429
    assert system.call("POST", "/leads", lead, second["token"]).status_code == 201
    system.drain()


# --- races ------------------------------------------------------------------------------------------------

def at_once(count: int, call) -> list:
    """Run `call` in `count` threads released together; returns their results."""
    barrier, results = threading.Barrier(count), [None] * count

    def one(i):
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_approvals_of_one_product_notify_the_seller_once(system):
    seller, admin = system.user("seller"), system.admin()
    product = system.call("POST", "/products", {"title": "G", "price_minor": 100, "currency": "USD"},
                          seller["token"]).json

    codes = at_once(4, lambda: system.call("POST", f"/admin/products/{product['id']}/approve",
                                           token=admin).status_code)
    system.drain()

    assert sorted(codes) == [200, 409, 409, 409]
    assert len(system.rows("api", "SELECT * FROM notifications")) == 1
    assert len(system.mails()) == 1


def test_concurrent_adds_of_one_cart_item_all_succeed_and_leave_one_item(system):
    seller, buyer = system.user("seller"), system.user("buyer")
    product = system.call("POST", "/products", {"title": "G", "price_minor": 100, "currency": "USD"},
                          seller["token"]).json
    system.approve(product["id"])

    codes = at_once(8, lambda: system.call("POST", "/cart/items", {"product_id": product["id"]},
                                           buyer["token"]).status_code)

    assert codes == [201] * 8
    assert len(system.rows("api", "SELECT * FROM cart_items")) == 1


# --- pages, visibility, headers ---------------------------------------------------------------------------

def test_the_catalog_is_listed_a_page_at_a_time(system):
    seller = system.user("seller")
    ids = [system.call("POST", "/products", {"title": f"P{i}", "price_minor": 100, "currency": "USD"},
                       seller["token"]).json["id"] for i in range(5)]
    for product_id in ids:
        system.approve(product_id)

    first = system.call("GET", "/products?limit=2").json
    last = system.call("GET", "/products?limit=2&offset=4").json
    assert [p["id"] for p in first["products"]] == ids[:2] and first["next_offset"] == 2
    assert [p["id"] for p in last["products"]] == ids[4:] and last["next_offset"] is None


def test_a_pending_product_is_seen_by_its_seller_and_admins_only(system):
    seller, stranger = system.user("seller"), system.user("stranger")
    product = system.call("POST", "/products", {"title": "Draft", "price_minor": 100, "currency": "USD"},
                          seller["token"]).json

    seen = [system.call("GET", f"/products/{product['id']}", token=t).status_code
            for t in (seller["token"], system.admin(), stranger["token"], None)]
    assert seen == [200, 200, 404, 404]
    assert system.call("GET", "/products").json["products"] == []


def test_the_campaigns_of_their_owner_are_listed_a_page_at_a_time(system):
    owner = system.campaigner()
    for i in range(3):
        system.call("POST", "/campaigns", {"subject": f"S{i}", "body": "B", "recipients": [{"email": "a@example.com"}]},
                    owner["token"])

    page = system.call("GET", "/campaigns?limit=2", token=owner["token"]).json
    assert len(page["campaigns"]) == 2 and page["next_offset"] == 2
    other = system.user("other")
    assert system.call("GET", "/campaigns", token=other["token"]).json["campaigns"] == []


@pytest.mark.parametrize(("method", "path"), [("GET", "/products"), ("GET", "/nowhere"), ("POST", "/users"),
                                              ("GET", "/me"), ("GET", "/healthz"), ("GET", "/downloads/forged")])
def test_every_answer_carries_the_security_headers(system, method, path):
    response = system.client.open(path, method=method)

    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
