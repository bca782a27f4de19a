"""One purchase through real processes: gunicorn api and media, one worker per service.

billing, media, api and reports on RabbitMQ, mailer on Redis, every service on its own
PostgreSQL database, mail over SMTP to an aiosmtpd server.
"""

import email
import json
import re
import urllib.request
from email import policy

import stripe
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from tests.integration.conftest import AMQP, REDIS, SECRETS, base_env, clean_brokers, free_port, wait_until

PASSWORD = "correct horse battery"
SECRET = SECRETS["MARKET_STRIPE_WEBHOOK_SECRET"]
CONSUMERS = ["api", "billing", "mailer", "media", "reports"]


def http(method: str, url: str, body=None, token=None, headers=None) -> tuple[int, dict | bytes]:
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(data) if is_json else data
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def healthy(url: str) -> bool:
    try:
        return http("GET", url)[0] == 200
    except OSError:
        return False


def test_a_stripe_webhook_drives_a_purchase_through_separate_processes_exactly_once(
        tmp_path, databases, processes, smtp):
    smtp_port, inbox = smtp
    api_port, media_port = free_port(), free_port()
    clean_brokers(redis_db=5)
    processes.env = base_env(
        tmp_path, databases, MARKET_MAILER_BROKER_URL=f"{REDIS}/5", MARKET_MAIL_TRANSPORT="smtp",
        MARKET_SMTP_PORT=str(smtp_port),
        MARKET_API_BIND=f"127.0.0.1:{api_port}", MARKET_MEDIA_BIND=f"127.0.0.1:{media_port}",
        MARKET_OUTBOX_RELAY_AFTER_S="1")
    processes.run("migrate")
    processes.start("api-web", "serve", "api")
    processes.start("media-web", "serve", "media")
    for service in CONSUMERS:
        processes.start(f"worker-{service}", "worker", service)
    api = f"http://127.0.0.1:{api_port}"
    wait_until("the api to answer", lambda: healthy(f"{api}/healthz"), timeout=30)
    wait_until("media's web app to answer", lambda: healthy(f"http://127.0.0.1:{media_port}/healthz"), timeout=30)

    # A client's purchase, over HTTP.
    seller = http("POST", f"{api}/users", {"email": "seller@example.com", "name": "Sam", "password": PASSWORD})[1]
    buyer = http("POST", f"{api}/users", {"email": "buyer@example.com", "name": "Beatrice Quill",
                                          "password": PASSWORD})[1]
    product = http("POST", f"{api}/products", {"title": "Field Guide", "price_minor": 4200, "currency": "EUR"},
                   seller["token"])[1]
    content = b"%PDF-1.4 pretend this is a book\n"
    boundary = "b0undary"
    upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"guide.pdf\"\r\n"
              f"Content-Type: application/pdf\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, _ = http("PUT", f"{api}/products/{product['id']}/file", upload, seller["token"],
                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200
    # New products await review: an operator makes an admin, who approves this one.
    admin = processes.run("create-admin", "--email", "admin@example.com", "--name", "Ada")
    admin_token = re.search(r"^token: (\S+)$", admin, re.MULTILINE).group(1)
    assert http("POST", f"{api}/admin/products/{product['id']}/approve", token=admin_token)[0] == 200
    assert http("POST", f"{api}/cart/items", {"product_id": product["id"]}, buyer["token"])[0] == 201
    status, order = http("POST", f"{api}/orders", {"provider": "stripe"}, buyer["token"])
    assert status == 201

    event = {"id": "evt_e2e_1", "object": "event", "type": "payment_intent.succeeded",
             "data": {"object": {"id": "pi_e2e_1", "object": "payment_intent", "amount_received": 4200,
                                 "currency": "eur", "metadata": {"order_reference": order["reference"]}}}}
    payload = json.dumps(event)
    headers = {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, SECRET),
               "Content-Type": "application/json"}
    assert http("POST", f"{api}/webhooks/stripe", payload.encode(), headers=headers) == (
        200, {"status": "accepted", "event_id": "evt_e2e_1"})

    ledger = wait_until("billing's ledger rows", lambda: databases.rows(
        "billing", "SELECT account, amount_minor FROM ledger_entries ORDER BY account"))
    assert ledger == [{"account": "platform:fees", "amount_minor": 420},
                      {"account": f"seller:{seller['id']}", "amount_minor": 3780}]
    wait_until("three emails at the SMTP server", lambda: len(inbox.messages) == 3)
    mails = [email.message_from_string(m, policy=policy.default) for m in inbox.messages]
    approval = next(m for m in mails if m["To"] == "seller@example.com")
    assert approval["Subject"] == 'Your product "Field Guide" was approved'
    assert http("GET", f"{api}/notifications", token=seller["token"])[1]["unread_count"] == 1
    downloads_mail = next(m for m in mails if m["Subject"].startswith("Your downloads"))
    text = downloads_mail.get_body(("plain",)).get_content()
    link = re.search(rf"http://127\.0\.0\.1:{media_port}/downloads/\S+", text).group()
    assert http("GET", link) == (200, content)
    assert databases.rows("media", "SELECT download_count FROM download_grants") == [{"download_count": 1}]
    wait_until("the cart to be cleared", lambda: http("GET", f"{api}/cart", token=buyer["token"])[1]["items"] == [])
    wait_until("the sale in reports", lambda: databases.rows("reports", "SELECT * FROM sales"))

    # The same webhook again: answered, nothing done.
    assert http("POST", f"{api}/webhooks/stripe", payload.encode(), headers=headers) == (
        200, {"status": "duplicate", "event_id": "evt_e2e_1"})
    # And purchase.completed delivered a second time to every consumer, by the api's outbox relay.
    event_id = databases.rows("api", "SELECT payload FROM outbox WHERE actor = 'billing.on_purchase_completed'")[0][
        "payload"]["event_id"]
    databases.execute("api", "UPDATE outbox SET sent_at = NULL, created_at = now() - interval '1 minute' "
                      "WHERE actor LIKE '%.on_purchase_completed'")
    for service in CONSUMERS:
        wait_until(f"{service} to skip the redelivered event",
                   lambda s=service: f"{s}.on_purchase_completed skipped event {event_id}"
                   in processes.log(f"worker-{s}"))

    assert len(databases.rows("api", "SELECT * FROM webhook_events")) == 1
    assert len(databases.rows("billing", "SELECT * FROM ledger_entries")) == 2
    assert databases.rows("billing", "SELECT balance_minor FROM balances ORDER BY account") == [
        {"balance_minor": 420}, {"balance_minor": 3780}]
    assert len(databases.rows("media", "SELECT * FROM download_grants")) == 1
    assert len(databases.rows("reports", "SELECT * FROM sales")) == 1
    assert len(databases.rows("mailer", "SELECT * FROM outbound_messages WHERE status = 'sent'")) == 3
    assert len(inbox.messages) == 3

    # What a log could leak: an M-Pesa callback (its path is the secret), the download above, a message whose
    # arguments carry the buyer and fail; then no process's output holds any of them.
    mpesa = {"Body": {"stkCallback": {"MerchantRequestID": "m-1", "CheckoutRequestID": "ws_CO_unknown",
                                      "ResultCode": 1032, "ResultDesc": "Request cancelled by user"}}}
    secret = SECRETS["MARKET_MPESA_CALLBACK_SECRET"]
    assert http("POST", f"{api}/webhooks/mpesa/{secret}", mpesa)[0] == 404
    broker = RabbitmqBroker(url=AMQP)
    broker.declare_queue("billing.events")
    broker.enqueue(Message(queue_name="billing.events", actor_name="billing.on_purchase_completed",
                           args=({"event_id": "evt-bad", "buyer_email": "buyer@example.com",
                                  "buyer_name": "Beatrice Quill", "lines": []},), kwargs={}, options={}))
    broker.close()
    wait_until("the bad message to fail", lambda: "failed for good" in processes.log("worker-billing"))
    wait_until("the access log lines", lambda: processes.log("api-web").count("/webhooks/mpesa/[Filtered]") == 1
               and "/downloads/[Filtered]" in processes.log("media-web"))
    token = link.rsplit("/", 1)[1]
    leaks = {"buyer@example.com", "seller@example.com", "Beatrice Quill", secret, token, seller["token"],
             buyer["token"], admin_token, *SECRETS.values()}
    for name in processes.children:
        found = [leak for leak in leaks if leak in processes.log(name)]
        assert found == [], f"{name}'s log shows {found}"
