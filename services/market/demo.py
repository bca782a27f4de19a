"""`market demo` and `market pay`: a purchase driven like a real client and a provider would, then what every
service did with it."""

import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import click
import sqlalchemy as sa

from services.api.payments import paytm_sign
from services.api.users import create_admin
from shared.db import transaction
from shared.settings import get_settings

BOUNDARY = "marketplace-demo-boundary"


class Unreachable(click.ClickException):
    """No server answered at the URL."""


def call(method: str, url: str, body=None, token: str | None = None, headers: dict | None = None) -> dict:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{method} {url} answered {exc.code}: {exc.read().decode()[:300]}") from None
    except urllib.error.URLError as exc:
        raise Unreachable(f"cannot reach {url} ({exc.reason}). Start the system first: python3 dev.py run") from None


def signed_webhook(api: str, provider: str, order: dict) -> tuple[str, bytes, dict]:
    """The request the provider would send for this order, signed with the configured secret."""
    settings = get_settings()
    if provider == "stripe":
        event = {"id": f"evt_{uuid.uuid4().hex[:24]}", "object": "event", "type": "payment_intent.succeeded",
                 "data": {"object": {"id": f"pi_{uuid.uuid4().hex[:24]}", "object": "payment_intent",
                                     "amount_received": order["total_minor"], "currency": order["currency"].lower(),
                                     "metadata": {"order_reference": order["reference"]}}}}
        body = json.dumps(event).encode()
        ts = int(time.time())
        sig = hmac.new(settings.stripe_webhook_secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        return f"{api}/webhooks/stripe", body, {"Stripe-Signature": f"t={ts},v1={sig}",
                                                 "Content-Type": "application/json"}
    if provider == "paytm":
        params = {"ORDERID": order["reference"], "TXNID": f"T{secrets.token_hex(8)}", "STATUS": "TXN_SUCCESS",
                  "TXNAMOUNT": f"{order['total_minor'] // 100}.{order['total_minor'] % 100:02d}",
                  "CURRENCY": order["currency"], "RESPMSG": "Txn Success"}
        params["CHECKSUMHASH"] = paytm_sign(params, settings.paytm_merchant_key)
        return (f"{api}/webhooks/paytm", urllib.parse.urlencode(params).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"})
    items = [{"Name": "Amount", "Value": order["total_minor"] / 100},
             {"Name": "MpesaReceiptNumber", "Value": secrets.token_hex(5).upper()}]
    callback = {"Body": {"stkCallback": {"MerchantRequestID": secrets.token_hex(6),
                                         "CheckoutRequestID": order["provider_checkout_id"], "ResultCode": 0,
                                         "ResultDesc": "The service request is processed successfully.",
                                         "CallbackMetadata": {"Item": items}}}}
    return (f"{api}/webhooks/mpesa/{settings.mpesa_callback_secret}", json.dumps(callback).encode(),
            {"Content-Type": "application/json"})


def upload(url: str, token: str, filename: str, data: bytes) -> dict:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: text/plain\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return call("PUT", url, body, token, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def wait_for(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise click.ClickException(f"gave up after {timeout:.0f} s waiting for {what}")


def rows(service: str, sql: str, **params) -> list[dict]:
    with transaction(service) as session:
        return [dict(r) for r in session.execute(sa.text(sql), params).mappings()]


def same_system(api: str, required: bool = True) -> None:
    """Refuse to go on when the API at `api` uses another database than this command would (another
    MARKET_DATA_DIR or MARKET_DATABASE_URL): what this command writes or reads would not be what it serves.
    With `required` False, no API answering is fine."""
    try:
        health = call("GET", f"{api}/healthz")
    except Unreachable:
        if required:
            raise
        return
    if health.get("database") != get_settings().database_fingerprint("api"):
        raise click.ClickException(
            f"the API at {api} uses another database than this command ({_where()}). Run this command with "
            "the same MARKET_DATA_DIR (or MARKET_DATABASE_URL) and working directory as the server.")


def _where() -> str:
    settings = get_settings()
    url = sa.engine.make_url(settings.database_url_for("api"))
    return f"api database {url.render_as_string(hide_password=True)}"


def review(api: str, product_id: int, seller: dict, tag: str) -> None:
    """New products await review: an admin (made as `market create-admin` makes one) approves this one."""
    _, token = create_admin(f"admin-{tag}@example.com", "Ada Admin")
    call("POST", f"{api}/admin/products/{product_id}/approve", token=token)
    unread = call("GET", f"{api}/notifications?unread=true", token=seller["token"])["unread_count"]
    click.echo(f"api      product {product_id} approved by an admin; the seller was notified "
               f"({unread} unread notification)")


def run_demo(api: str, provider: str, timeout: float) -> None:
    same_system(api)
    tag, password = secrets.token_hex(3), secrets.token_urlsafe(12)
    seller = call("POST", f"{api}/users", {"email": f"seller-{tag}@example.com", "name": "Sam Seller",
                                           "password": password})
    buyer = call("POST", f"{api}/users", {"email": f"buyer-{tag}@example.com", "name": "Bea Buyer",
                                          "password": password})
    currency = {"stripe": "USD", "paytm": "INR", "mpesa": "KES"}[provider]
    product = call("POST", f"{api}/products", {"title": "The Queue Handbook", "price_minor": 1999,
                                               "currency": currency}, seller["token"])
    upload(f"{api}/products/{product['id']}/file", seller["token"], "queue-handbook.txt",
           b"Chapter 1: messages are cheap, lost messages are not.\n")
    review(api, product["id"], seller, tag)
    call("POST", f"{api}/cart/items", {"product_id": product["id"]}, buyer["token"])
    checkout = {"provider": provider} | ({"phone": "254712345678"} if provider == "mpesa" else {})
    order = call("POST", f"{api}/orders", checkout, buyer["token"])
    click.echo(f"api      order {order['id']} ({order['reference']}) for {order['total_minor']} {currency} "
               "minor units")
    approval = wait_for("the seller's approval email", lambda: rows(
        "mailer", "SELECT subject FROM outbound_messages WHERE to_email = :e AND status = 'sent'", e=seller["email"]),
        timeout)
    click.echo(f"mailer   sent to {seller['email']}: {approval[0]['subject']}")
    pay_and_report(api, order, buyer["token"], timeout)


def pay(api: str, order_id: int, buyer_token: str, timeout: float) -> None:
    """Pay a buyer's pending order with the webhook its provider would send, signed with this system's secret."""
    same_system(api)
    order = call("GET", f"{api}/orders/{order_id}", token=buyer_token)
    if order["status"] != "pending":
        raise click.ClickException(f"order {order_id} is {order['status']}, not pending")
    pay_and_report(api, order, buyer_token, timeout)


def pay_and_report(api: str, order: dict, buyer_token: str, timeout: float) -> None:
    buyer = call("GET", f"{api}/me", token=buyer_token)
    provider = order["provider"]
    url, body, headers = signed_webhook(api, provider, order)
    answer = call("POST", url, body, headers=headers)
    click.echo(f"api      {provider} webhook answered {answer['status']}")
    wait_for("the order to be paid", lambda: call("GET", f"{api}/orders/{order['id']}",
                                                  token=buyer_token)["status"] == "paid", timeout)
    wait_for("the cart to be cleared", lambda: not call("GET", f"{api}/cart", token=buyer_token)["items"],
             timeout)
    click.echo(f"api      order {order['id']} is paid; the buyer's cart was cleared")
    for entry in wait_for("billing's ledger", lambda: rows(
            "billing", "SELECT account, amount_minor, currency FROM ledger_entries WHERE order_id = :o",
            o=order["id"]), timeout):
        click.echo(f"billing  ledger {entry['account']:<16} +{entry['amount_minor']} {entry['currency']}")
    for sale in wait_for("the reports read model", lambda: rows(
            "reports", "SELECT product_id, amount_minor FROM sales WHERE order_id = :o", o=order["id"]), timeout):
        click.echo(f"reports  sale of product {sale['product_id']} for {sale['amount_minor']} recorded")
    mails = wait_for("both emails to be delivered", lambda: (lambda m: len(m) == 2 and m)(rows(
        "mailer", "SELECT subject, text FROM outbound_messages WHERE to_email = :e AND status = 'sent' "
        "AND (subject LIKE :reference OR subject LIKE :order)", e=buyer["email"], reference=f"%{order['reference']}%",
        order=f"%order {order['id']} %")), timeout)
    for mail in mails:
        click.echo(f"mailer   sent to {buyer['email']}: {mail['subject']}")
    grants = wait_for("download grants", lambda: rows(
        "media", "SELECT id, title FROM download_grants WHERE order_id = :o", o=order["id"]), timeout)
    click.echo(f"media    {len(grants)} download grant(s); the links are in the second email")
    for link in sorted({u for mail in mails for u in re.findall(r"https?://\S+/downloads/[\w.-]+", mail["text"])}):
        click.echo(f"media    download link: {link}")
    if get_settings().mail_transport == "file":
        click.echo(f"\nMail files are in {get_settings().mail_dir.resolve()}")
