"""A client's view of the in-process system, plus ways to wait for and inspect its effects."""

import email
import json
import shutil
import time
from dataclasses import dataclass, field
from email import policy
from pathlib import Path

import sqlalchemy as sa
import stripe
from werkzeug.test import Client

from services.api.users import create_admin
from shared.db import transaction
from shared.messaging import broker_for
from shared.outbox import publisher
from shared.settings import SERVICES, get_settings

PASSWORD = "correct horse battery"


@dataclass
class System:
    client: Client
    data_dir: Path
    admin_token: str | None = field(default=None, repr=False)

    def call(self, method: str, path: str, json_body=None, token: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.open(path, method=method, json=json_body, headers=headers, **kwargs)

    def drain(self, fail_fast: bool = True, timeout_s: float = 20) -> None:
        """Wait until the outbox publisher has sent everything and every queue of every service is empty
        (work may cascade between services)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Queues first: an actor hands its rows to the publisher before its message counts as done.
            busy = False
            for service in SERVICES:
                broker = broker_for(service)
                for queue in list(broker.queues):
                    if broker.queues[queue].qsize() or broker.queues[queue].unfinished_tasks:
                        busy = True
                        broker.join(queue, fail_fast=fail_fast, timeout=int(timeout_s * 1000))
            if not publisher.flush(timeout_s) and not busy:
                return
        raise AssertionError(f"queues still busy after {timeout_s} s")

    def rows(self, service: str, sql: str, **params) -> list[dict]:
        with transaction(service) as session:
            return [dict(r) for r in session.execute(sa.text(sql), params).mappings()]

    def mails(self) -> list[email.message.EmailMessage]:
        folder = get_settings().mail_dir
        files = sorted(folder.glob("*.eml")) if folder.exists() else []
        return [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]

    # --- a shopper's steps -------------------------------------------------------------------

    def user(self, name: str) -> dict:
        response = self.call("POST", "/users", {"email": f"{name}@example.com", "name": name.title(),
                                                "password": PASSWORD})
        assert response.status_code == 201, response.json
        return response.json

    def admin(self) -> str:
        """The token of this system's admin, made (as `market create-admin` does) on first use."""
        if self.admin_token is None:
            self.admin_token = create_admin(f"admin{time.monotonic_ns()}@example.com", "Admin")[1]
        return self.admin_token

    def campaigner(self) -> dict:
        """A fresh admin (only admins may send campaigns): {"id", "token"}."""
        user_id, token = create_admin(f"sender{time.monotonic_ns()}@example.com", "Sender")
        return {"id": user_id, "token": token}

    def approve(self, product_id: int) -> dict:
        """Approve a product as an admin (one is made on first use) and let the seller be notified;
        returns the product."""
        response = self.call("POST", f"/admin/products/{product_id}/approve", token=self.admin())
        assert response.status_code == 200, response.json
        self.drain()
        return response.json

    def settle(self) -> None:
        """Deliver everything queued, then put away the sent mail and the api's sent outbox rows, so that a
        test starts from an empty mailbox and outbox."""
        self.drain()
        shutil.rmtree(get_settings().mail_dir, ignore_errors=True)
        with transaction("api") as session:
            session.execute(sa.text("DELETE FROM outbox WHERE sent_at IS NOT NULL"))

    def order(self, provider: str = "stripe", price_minor: int = 2500, currency: str = "USD",
              titles: tuple[str, ...] = ("Field Guide",)) -> dict:
        """A seller's approved products in a buyer's cart, checked out; returns order, buyer and seller.
        The system is quiet afterwards: the approvals' messages are delivered, then put away with their emails."""
        seller, buyer = self.user(f"seller{time.monotonic_ns()}"), self.user(f"buyer{time.monotonic_ns()}")
        for title in titles:
            product = self.call("POST", "/products", {"title": title, "price_minor": price_minor,
                                                      "currency": currency}, seller["token"]).json
            self.approve(product["id"])
            self.call("POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])
        self.settle()
        body = {"provider": provider} | ({"phone": "254712345678"} if provider == "mpesa" else {})
        response = self.call("POST", "/orders", body, buyer["token"])
        assert response.status_code == 201, response.json
        return {"order": response.json, "buyer": buyer, "seller": seller}


def stripe_event(order: dict, event_type: str = "payment_intent.succeeded", amount: int | None = None) -> dict:
    amount = order["total_minor"] if amount is None else amount
    if event_type == "checkout.session.completed":
        obj = {"id": f"cs_{time.monotonic_ns()}", "object": "checkout.session", "amount_total": amount,
               "currency": order["currency"].lower(), "client_reference_id": order["reference"],
               "payment_status": "paid", "payment_intent": f"pi_{time.monotonic_ns()}"}
    else:
        obj = {"id": f"pi_{time.monotonic_ns()}", "object": "payment_intent", "amount_received": amount,
               "currency": order["currency"].lower(), "metadata": {"order_reference": order["reference"]}}
    return {"id": f"evt_{time.monotonic_ns()}", "object": "event", "type": event_type, "data": {"object": obj}}


def stripe_headers(payload: str, secret: str | None = None, timestamp: int | None = None) -> dict:
    """Signed by the official stripe package's own code."""
    secret = secret or get_settings().stripe_webhook_secret
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def post_stripe(system: System, event: dict, **header_args):
    payload = json.dumps(event)
    return system.client.post("/webhooks/stripe", data=payload, headers=stripe_headers(payload, **header_args))
