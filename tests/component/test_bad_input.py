"""The catalogue of bad input, one row per case across every endpoint and webhook: each gets its specific 4xx
with a JSON error naming the problem, and writes nothing (no row in any service's database, no stored file,
no message)."""

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

from services.api.payments import paytm_sign
from services.market import registry
from shared.db import engine_for, kernel_metadata
from shared.settings import SERVICES, get_settings
from tests.component.conftest import clean_system
from tests.component.system import PASSWORD, stripe_event, stripe_headers

DEEP = "[" * 5000 + "]" * 5000
DEEP_IN_OBJECT = '{"email": "a@example.com", "name": ' + DEEP + "}"
BIG = 1024 * 1024 + 1


@dataclass
class World:
    """What the cases act on, made once: users, an approved and a pending product, a pending order."""

    seller: dict
    buyer: dict
    stranger: dict
    admin: str
    approved: int
    pending: int
    order: dict
    revoked: str


@dataclass
class Case:
    name: str
    method: str
    path: str | Callable[[World], str]
    status: int
    error: str  # found in the error message or in a problem of its details
    json: object = None
    raw: bytes | str | None = None
    content_type: str | None = None
    auth: str | None = None  # seller | buyer | stranger | admin | revoked
    headers: Callable[[World, bytes], dict] | None = field(default=None)
    body: Callable[[World], bytes] | None = field(default=None)


def user(system, name: str) -> dict:
    return system.call("POST", "/users", {"email": f"{name}@example.com", "name": name, "password": PASSWORD}).json


@pytest.fixture(scope="module")
def world(workers):
    system = clean_system()
    seller, buyer, stranger = user(system, "seller"), user(system, "buyer"), user(system, "stranger")
    admin = system.admin()
    approved, pending = (system.call("POST", "/products", {"title": t, "price_minor": 1999, "currency": "USD"},
                                     seller["token"]).json["id"] for t in ("Approved", "Pending"))
    system.approve(approved)
    system.call("POST", "/cart/items", {"product_id": approved}, buyer["token"])
    order = system.call("POST", "/orders", {"provider": "stripe"}, buyer["token"]).json
    revoked = user(system, "leaver")["token"]
    system.call("POST", "/logout", token=revoked)
    system.drain()
    return system, World(seller, buyer, stranger, admin, approved, pending, order, revoked)


def stripe_signed(offset_s: int) -> Callable[[World, bytes], dict]:
    """Signed with a timestamp `offset_s` from the moment of sending (not of collecting the cases)."""
    def headers(_world: World, body: bytes) -> dict:
        return stripe_headers(body.decode(), timestamp=int(time.time()) + offset_s)
    return headers


def stripe_raw_signed(_world: World, body: bytes) -> dict:
    ts = int(time.time())
    sig = hmac.new(get_settings().stripe_webhook_secret.encode(), f"{ts}.".encode() + body, hashlib.sha256)
    return {"Stripe-Signature": f"t={ts},v1={sig.hexdigest()}", "Content-Type": "application/json"}


def paytm_form(**changes) -> Callable[[World], bytes]:
    def body(w: World) -> bytes:
        params = {"ORDERID": w.order["reference"], "TXNID": "T1", "STATUS": "TXN_SUCCESS", "TXNAMOUNT": "19.99",
                  "CURRENCY": "USD"} | changes
        params["CHECKSUMHASH"] = paytm_sign(params, get_settings().paytm_merchant_key)
        return urllib.parse.urlencode(params).encode()
    return body


def mpesa(secret: str | None = None) -> Callable[[World], str]:
    return lambda _w: f"/webhooks/mpesa/{secret or get_settings().mpesa_callback_secret}"


def stk(result_code=0, checkout: str = "ws_CO_unknown") -> dict:
    items = [{"Name": "Amount", "Value": 19.99}, {"Name": "MpesaReceiptNumber", "Value": "R1"}]
    return {"Body": {"stkCallback": {"MerchantRequestID": "1", "CheckoutRequestID": checkout, "ResultCode": result_code,
                                     "ResultDesc": "ok", "CallbackMetadata": {"Item": items}}}}


def link(payload) -> Callable[[World], str]:
    """A download link signed with the real secret whose payload is `payload`."""
    def path(_w: World) -> str:
        token = URLSafeTimedSerializer(get_settings().media_signing_secret, salt="download-grant").dumps(payload)
        return f"/downloads/{token}"
    return path


PRODUCT = {"title": "Guide", "price_minor": 1999, "currency": "USD"}
LEAD = {"name": "Lena", "email": "lena@example.com"}
CAMPAIGN = {"subject": "Hi #name", "body": "Hello", "recipients": [{"email": "a@example.com"}]}

CASES = [
    # --- any route ---------------------------------------------------------------------------------------------
    Case("unknown route", "GET", "/nowhere", 404, "not found"),
    Case("wrong method", "DELETE", "/products", 405, "not allowed"),
    # --- users and tokens --------------------------------------------------------------------------------------
    Case("deeply nested array", "POST", "/users", 400, "nested too deeply", raw=DEEP, content_type="application/json"),
    Case("deeply nested value", "POST", "/users", 400, "nested too deeply", raw=DEEP_IN_OBJECT,
         content_type="application/json"),
    Case("not JSON content type", "POST", "/users", 415, "Content-Type: application/json", raw="email=a",
         content_type="application/x-www-form-urlencoded"),
    Case("broken JSON", "POST", "/users", 400, "not valid JSON", raw='{"email": ', content_type="application/json"),
    Case("JSON array", "POST", "/users", 400, "JSON object", json=[{"email": "a@example.com"}]),
    Case("not UTF-8", "POST", "/users", 400, "not valid JSON", raw='{"name": "\u00e9"}'.encode("latin-1"),
         content_type="application/json"),
    Case("body over 1 MB", "POST", "/users", 413, "too large", raw=b" " * BIG, content_type="application/json"),
    Case("bad email", "POST", "/users", 400, "email", json={"email": "nope", "name": "A", "password": PASSWORD}),
    Case("no password", "POST", "/users", 400, "password", json={"email": "new@example.com", "name": "A"}),
    Case("short password", "POST", "/users", 400, "password",
         json={"email": "new@example.com", "name": "A", "password": "short"}),
    Case("NUL in a name", "POST", "/users", 400, "NUL",
         json={"email": "new@example.com", "name": "A\x00B", "password": PASSWORD}),
    Case("nested just under the parser's limit", "POST", "/products", 400, "title",
         raw='{"title": ' + "[" * 900 + "]" * 900 + ', "price_minor": 1, "currency": "USD"}',
         content_type="application/json", auth="seller"),
    Case("name a number", "POST", "/users", 400, "name",
         json={"email": "new@example.com", "name": 5, "password": PASSWORD}),
    Case("self-made admin", "POST", "/users", 400, "is_admin",
         json={"email": "new@example.com", "name": "A", "password": PASSWORD, "is_admin": True}),
    Case("email taken", "POST", "/users", 409, "already exists",
         json={"email": "seller@example.com", "name": "A", "password": PASSWORD}),
    Case("wrong password", "POST", "/tokens", 401, "wrong email or password",
         json={"email": "seller@example.com", "password": "not the password"}),
    Case("unknown email", "POST", "/tokens", 401, "wrong email or password",
         json={"email": "ghost@example.com", "password": PASSWORD}),
    Case("sign-in nested", "POST", "/tokens", 400, "nested too deeply", raw=DEEP, content_type="application/json"),
    Case("no token", "GET", "/me", 401, "missing bearer token"),
    Case("revoked token", "GET", "/me", 401, "revoked", auth="revoked"),
    Case("logout without token", "POST", "/logout", 401, "missing bearer token"),
    # --- products --------------------------------------------------------------------------------------------
    Case("price true", "POST", "/products", 400, "price_minor", json=PRODUCT | {"price_minor": True}, auth="seller"),
    Case("price as text", "POST", "/products", 400, "price_minor", json=PRODUCT | {"price_minor": "1999"},
         auth="seller"),
    Case("price with cents", "POST", "/products", 400, "price_minor", json=PRODUCT | {"price_minor": 1999.7},
         auth="seller"),
    Case("price zero", "POST", "/products", 400, "price_minor", json=PRODUCT | {"price_minor": 0}, auth="seller"),
    Case("price too big", "POST", "/products", 400, "price_minor", json=PRODUCT | {"price_minor": 10**13},
         auth="seller"),
    Case("price null", "POST", "/products", 400, "price_minor", json=PRODUCT | {"price_minor": None}, auth="seller"),
    Case("test currency code", "POST", "/products", 400, "not a currency", json=PRODUCT | {"currency": "XXX"},
         auth="seller"),
    Case("gold is not money here", "POST", "/products", 400, "not a currency", json=PRODUCT | {"currency": "XAU"},
         auth="seller"),
    Case("made-up currency", "POST", "/products", 400, "ISO 4217", json=PRODUCT | {"currency": "XYZ"},
         auth="seller"),
    Case("lowercase currency", "POST", "/products", 400, "currency", json=PRODUCT | {"currency": "usd"},
         auth="seller"),
    Case("empty title", "POST", "/products", 400, "title", json=PRODUCT | {"title": ""}, auth="seller"),
    Case("long title", "POST", "/products", 400, "title", json=PRODUCT | {"title": "x" * 201}, auth="seller"),
    Case("someone else's seller id", "POST", "/products", 400, "seller_id", json=PRODUCT | {"seller_id": 1},
         auth="seller"),
    Case("product nested", "POST", "/products", 400, "nested too deeply", raw=DEEP,
         content_type="application/json", auth="seller"),
    Case("limit zero", "GET", "/products?limit=0", 400, "limit"),
    Case("limit huge", "GET", "/products?limit=100000", 400, "limit"),
    Case("limit text", "GET", "/products?limit=ten", 400, "valid integer"),
    Case("mine not a yes or no", "GET", "/products?mine=perhaps", 400, "mine"),
    Case("review status unknown", "GET", "/admin/products?status=lost", 400, "status", auth="admin"),
    Case("unread not a yes or no", "GET", "/notifications?unread=2", 400, "unread", auth="seller"),
    Case("negative offset", "GET", "/products?offset=-1", 400, "offset"),
    Case("mine without token", "GET", "/products?mine=true", 401, "mine=true"),
    Case("pending product to a stranger", "GET", lambda w: f"/products/{w.pending}", 404, "does not exist",
         auth="stranger"),
    Case("pending product to anyone", "GET", lambda w: f"/products/{w.pending}", 404, "does not exist"),
    Case("id out of range", "GET", f"/products/{10**30}", 400, "out of range"),
    Case("file of someone else's product", "PUT", lambda w: f"/products/{w.approved}/file", 403,
         "only the product's seller", raw=b"--x--\r\n", content_type="multipart/form-data; boundary=x",
         auth="stranger"),
    # --- cart and orders -------------------------------------------------------------------------------------
    Case("cart id as text", "POST", "/cart/items", 400, "product_id", json={"product_id": "1"}, auth="buyer"),
    Case("cart id true", "POST", "/cart/items", 400, "product_id", json={"product_id": True}, auth="buyer"),
    Case("cart id out of range", "POST", "/cart/items", 400, "out of range", json={"product_id": 10**30},
         auth="buyer"),
    Case("cart unknown product", "POST", "/cart/items", 404, "does not exist", json={"product_id": 999999},
         auth="buyer"),
    Case("cart pending product", "POST", "/cart/items", 409, "not approved",
         json=None, auth="buyer", body=lambda w: json.dumps({"product_id": w.pending}).encode()),
    Case("unknown provider", "POST", "/orders", 400, "provider", json={"provider": "paypal"}, auth="buyer"),
    Case("M-Pesa without phone", "POST", "/orders", 400, "phone", json={"provider": "mpesa"}, auth="buyer"),
    Case("M-Pesa bad phone", "POST", "/orders", 400, "phone", json={"provider": "mpesa", "phone": "12"},
         auth="buyer"),
    Case("empty cart", "POST", "/orders", 409, "cart is empty", json={"provider": "stripe"}, auth="stranger"),
    Case("someone else's order", "GET", lambda w: f"/orders/{w.order['id']}", 404, "does not exist",
         auth="stranger"),
    # --- leads ------------------------------------------------------------------------------------------------
    Case("lead to a user id", "POST", "/leads", 403, "only an admin", auth="stranger",
         body=lambda w: json.dumps(LEAD | {"assigned_user_id": w.seller["id"]}).encode()),
    Case("lead to nobody", "POST", "/leads", 400, "product_id", json=LEAD, auth="stranger"),
    Case("lead about a pending product", "POST", "/leads", 404, "does not exist", auth="stranger",
         body=lambda w: json.dumps(LEAD | {"product_id": w.pending}).encode()),
    Case("lead bad email", "POST", "/leads", 400, "email", json=LEAD | {"email": "x", "product_id": 1},
         auth="stranger"),
    Case("lead bad phone", "POST", "/leads", 400, "phone", json=LEAD | {"phone": "call me", "product_id": 1},
         auth="stranger"),
    Case("lead nested", "POST", "/leads", 400, "nested too deeply", raw=DEEP, content_type="application/json",
         auth="stranger"),
    Case("admin lead to nobody real", "POST", "/leads", 400, "does not exist",
         json=LEAD | {"assigned_user_id": 999999}, auth="admin"),
    # --- review and notifications --------------------------------------------------------------------------
    Case("approve as a seller", "POST", lambda w: f"/admin/products/{w.pending}/approve", 403, "only an admin",
         auth="seller"),
    Case("approve unknown product", "POST", "/admin/products/999999/approve", 404, "does not exist", auth="admin"),
    Case("approve twice", "POST", lambda w: f"/admin/products/{w.approved}/approve", 409, "already approved",
         auth="admin"),
    Case("reject without reason", "POST", lambda w: f"/admin/products/{w.pending}/reject", 400, "reason",
         json={}, auth="admin"),
    Case("reject reason a number", "POST", lambda w: f"/admin/products/{w.pending}/reject", 400, "reason",
         json={"reason": 42}, auth="admin"),
    Case("notifications limit", "GET", "/notifications?limit=0", 400, "limit", auth="seller"),
    Case("someone else's notification", "POST", "/notifications/1/read", 404, "does not exist", auth="stranger"),
    # --- campaigns -----------------------------------------------------------------------------------------
    Case("campaign by a non-admin", "POST", "/campaigns", 403, "only an admin", json=CAMPAIGN, auth="seller"),
    Case("unknown placeholder", "POST", "/campaigns", 400, "#foo", json=CAMPAIGN | {"body": "Hi #foo"},
         auth="admin"),
    Case("two audiences", "POST", "/campaigns", 400, "either recipients", json=CAMPAIGN | {"segment": "buyers"},
         auth="admin"),
    Case("no recipients", "POST", "/campaigns", 400, "recipients", json=CAMPAIGN | {"recipients": []},
         auth="admin"),
    Case("bad recipient address", "POST", "/campaigns", 400, "recipients.0.email",
         json=CAMPAIGN | {"recipients": [{"email": "nope"}]}, auth="admin"),
    Case("unknown segment", "POST", "/campaigns", 400, "segment", json={"subject": "s", "body": "b",
                                                                        "segment": "everyone"}, auth="admin"),
    Case("campaign nested", "POST", "/campaigns", 400, "nested too deeply", raw=DEEP,
         content_type="application/json", auth="admin"),
    Case("unknown campaign", "GET", "/campaigns/nope", 404, "does not exist", auth="admin"),
    Case("campaigns limit", "GET", "/campaigns?limit=201", 400, "limit", auth="admin"),
    # --- webhooks --------------------------------------------------------------------------------------------
    Case("stripe unsigned", "POST", "/webhooks/stripe", 400, "Stripe-Signature", raw=b"{}",
         content_type="application/json"),
    Case("stripe wrong signature", "POST", "/webhooks/stripe", 400, "signature", raw=b"{}",
         headers=lambda _w, _b: {"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"}),
    Case("stripe old timestamp", "POST", "/webhooks/stripe", 400, "tolerance",
         body=lambda w: json.dumps(stripe_event(w.order)).encode(), headers=stripe_signed(-600)),
    Case("stripe future timestamp", "POST", "/webhooks/stripe", 400, "tolerance",
         body=lambda w: json.dumps(stripe_event(w.order)).encode(), headers=stripe_signed(600)),
    Case("stripe signed deep nesting", "POST", "/webhooks/stripe", 400, "nested too deeply",
         raw=DEEP.encode(), headers=stripe_raw_signed),
    Case("stripe non-ASCII signature", "POST", "/webhooks/stripe", 400, "signature", raw=b"{}",
         headers=lambda _w, _b: {"Stripe-Signature": f"t={int(time.time())},v1=\u00e9\u00e9"}),
    Case("stripe signed UTF-16", "POST", "/webhooks/stripe", 400, "not JSON",
         raw='{"id": "evt_1", "type": "payment_intent.succeeded"}'.encode("utf-16"), headers=stripe_raw_signed),
    Case("stripe signed array", "POST", "/webhooks/stripe", 400, "JSON object", raw=b"[1]",
         headers=stripe_raw_signed),
    Case("stripe oversize", "POST", "/webhooks/stripe", 413, "larger than", raw=b" " * (256 * 1024 + 1),
         headers=stripe_raw_signed),
    Case("paytm without checksum", "POST", "/webhooks/paytm", 400, "CHECKSUMHASH", raw=b"ORDERID=x",
         content_type="application/x-www-form-urlencoded"),
    Case("paytm forged checksum", "POST", "/webhooks/paytm", 400, "checksum",
         raw=b"ORDERID=x&TXNID=1&TXNAMOUNT=1.00&STATUS=TXN_SUCCESS&CHECKSUMHASH=AAAA",
         content_type="application/x-www-form-urlencoded"),
    Case("paytm without amount", "POST", "/webhooks/paytm", 400, "TXNAMOUNT",
         body=lambda w: paytm_form(TXNAMOUNT="")(w), content_type="application/x-www-form-urlencoded"),
    Case("mpesa wrong secret", "POST", mpesa("guess"), 404, "unknown callback URL", json=stk()),
    Case("mpesa deep nesting", "POST", mpesa(), 400, "nested too deeply", raw=DEEP, content_type="application/json"),
    Case("mpesa UTF-16", "POST", mpesa(), 400, "not JSON", raw=json.dumps(stk()).encode("utf-16"),
         content_type="application/json"),
    Case("mpesa not a callback", "POST", mpesa(), 400, "stkCallback", json={"Body": {}}),
    Case("mpesa result code false", "POST", mpesa(), 400, "ResultCode", json=stk(result_code=False)),
    Case("mpesa paid without amount", "POST", mpesa(), 400, "Amount",
         json={"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_x", "ResultCode": 0, "ResultDesc": "ok"}}}),
    Case("mpesa result code text", "POST", mpesa(), 400, "ResultCode", json=stk(result_code="0")),
    Case("mpesa unknown checkout", "POST", mpesa(), 404, "no pending checkout request", json=stk()),
    # --- downloads -------------------------------------------------------------------------------------------
    Case("forged download link", "GET", "/downloads/not-a-token", 403, "not valid"),
    Case("download link of a list", "GET", link(["a", "b"]), 403, "not valid"),
    Case("download link of a dict", "GET", link({"grant": "x"}), 403, "not valid"),
    Case("download link of an unknown grant", "GET", link("no-such-grant"), 403, "not valid"),
]


def snapshot() -> dict:
    """Rows in every table of every service, and every stored file."""
    counts = {}
    for service in SERVICES:
        with engine_for(service).connect() as conn:
            for metadata in (kernel_metadata, registry.metadata(service)):
                for table in metadata.sorted_tables:
                    counts[f"{service}.{table.name}"] = conn.scalar(sa.select(sa.func.count()).select_from(table))
    storage = get_settings().storage_dir
    files = sorted(str(p) for p in storage.rglob("*") if p.is_file()) if storage.exists() else []
    return {"rows": counts, "files": files}


def send(system, w: World, case: Case):
    path = case.path(w) if callable(case.path) else case.path
    body = case.body(w) if case.body else case.raw
    headers = dict(case.headers(w, body if isinstance(body, bytes) else (body or "").encode()) if case.headers else {})
    token = {"seller": w.seller["token"], "buyer": w.buyer["token"], "stranger": w.stranger["token"],
             "admin": w.admin, "revoked": w.revoked, None: None}[case.auth]
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if case.body and not case.content_type and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    if case.json is not None:
        return system.client.open(path, method=case.method, json=case.json, headers=headers)
    return system.client.open(path, method=case.method, data=body, content_type=case.content_type, headers=headers)


def test_the_catalogue_covers_every_surface_with_at_least_sixty_cases():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_its_4xx_with_a_json_error_naming_the_problem_and_writes_nothing(world, case):
    system, w = world
    before = snapshot()

    response = send(system, w, case)
    system.drain()

    assert response.status_code == case.status, response.get_data(as_text=True)[:300]
    assert response.is_json, response.get_data(as_text=True)[:300]
    said = json.dumps(response.json)
    assert case.error.lower() in said.lower(), said
    assert snapshot() == before
