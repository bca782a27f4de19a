"""Fan-out latency: from a webhook's 200 to every consumer's effect of the purchase, at a steady rate.

Starts `market up` in the processes mode (gunicorn, one Dramatiq worker per service, PostgreSQL, RabbitMQ, the
mailer on Redis: see support.add_broker_options for which) with the mailer sending over SMTP to a capture server
(aiosmtpd) in this process. Copies one pending order into as many as the run needs, each with a buyer of its own
holding the product in the cart, pays them with signed Stripe webhooks sent open-loop at `--rate` for `--seconds`,
waits for every effect, and prints p50/p95/p99 of how long after the webhook's answer each effect came:

    api      cart cleared              billing  ledger entries          media    download grants
    reports  sale recorded             mailer   confirmation email      mailer   downloads email (after media)
    all      the last of them

and, on the way, the api's stages: its webhook message confirmed by RabbitMQ, its worker starting on it, and
purchase.completed confirmed by the brokers (from the api's outbox and webhook events).

A consumer's effect is dated by its inbox row, written in the same transaction as the effect: PostgreSQL's now()
there is when that transaction began, a few milliseconds before it committed. An email is dated by its arrival at
the capture server. A few purchases at a low rate first warm the processes up; they are not counted. Usage:

    .venv/bin/python bench/fanout.py [--rate 100] [--seconds 5] [--amqp-url URL] [--redis-url URL]
"""

import argparse
import re
import tempfile
import threading
import time
from email.parser import BytesHeaderParser
from pathlib import Path

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from support import (
    SECRET,
    UNLIMITED,
    add_broker_options,
    brokers,
    clean_env,
    copies,
    drop_databases,
    free_port,
    fresh_database_template,
    market_up,
    open_loop,
    pending_orders,
    percentiles,
    signed,
    wait_until,
)

CONSUMERS = {  # effect: (service, inbox consumer)
    "cart cleared": ("api", "api.on_purchase_completed"),
    "ledger": ("billing", "billing.on_purchase_completed"),
    "grants": ("media", "media.on_purchase_completed"),
    "sale": ("reports", "reports.on_purchase_completed"),
}
# Steps on the way, not effects: the webhook's message confirmed by RabbitMQ, the api's worker starting on it,
# and purchase.completed confirmed by the brokers.
STAGES = ("webhook queued", "webhook taken", "purchase published")
CONFIRMATION = re.compile(r"Order (\S+) confirmed")
DOWNLOADS = re.compile(r"Your downloads for order (\d+) are ready")


class Capture:
    """An SMTP server's DATA handler that keeps when each email arrived and its subject."""

    def __init__(self):
        self.arrivals: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        subject = BytesHeaderParser().parsebytes(envelope.original_content).get("Subject", "")
        with self._lock:
            self.arrivals.append((time.time(), str(subject)))
        return "250 OK"


def pay(port: int, orders: list[dict], rate: float) -> dict[int, float]:
    """Pay every order by webhook at `rate`; returns order id -> time.time() of its 200."""
    sent, _ = open_loop(port, "/webhooks/stripe", [signed(o) for o in orders], rate)
    failed = [s for s in sent if not s.ok]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(sent)} webhooks were not answered 200")
    return {orders[s.index]["id"]: s.answered_at for s in sent}


def emails(capture: Capture, orders: list[dict]) -> dict[str, dict[int, float]]:
    """"confirmation email" and "downloads email" -> order id -> time.time() when it arrived, for `orders`."""
    by_reference, ids = {o["reference"]: o["id"] for o in orders}, {o["id"] for o in orders}
    found: dict[str, dict[int, float]] = {"confirmation email": {}, "downloads email": {}}
    for arrived, subject in list(capture.arrivals):
        if (m := CONFIRMATION.search(subject)) and m.group(1) in by_reference:
            found["confirmation email"][by_reference[m.group(1)]] = arrived
        elif (m := DOWNLOADS.search(subject)) and int(m.group(1)) in ids:
            found["downloads email"][int(m.group(1))] = arrived
    return found


def all_emailed(capture: Capture, orders: list[dict]) -> bool:
    return all(len(at) == len(orders) for at in emails(capture, orders).values())


def effects(databases: str, capture: Capture, orders: list[dict]) -> dict[str, dict[int, float]]:
    """effect (or stage of the api's) -> order id -> time.time() when it happened."""
    found = emails(capture, orders)
    by_reference = {o["reference"]: o["id"] for o in orders}
    api = sa.create_engine(databases.format(service="api"), poolclass=sa.pool.NullPool)
    with api.connect() as conn:  # the api's stages, from its webhook events and its own outbox
        for reference, queued, began in conn.execute(sa.text(
                "SELECT e.payload::json->'data'->'object'->'metadata'->>'order_reference', "
                "extract(epoch FROM o.sent_at), extract(epoch FROM e.processed_at) FROM webhook_events e "
                "JOIN outbox o ON o.actor = 'api.process_webhook' AND (o.payload->>'webhook_event_id')::int = e.id")):
            if reference in by_reference and queued is not None and began is not None:
                found.setdefault("webhook queued", {})[by_reference[reference]] = float(queued)
                found.setdefault("webhook taken", {})[by_reference[reference]] = float(began)
        order_of = {}
        for event_id, order_id, sent in conn.execute(sa.text(
                "SELECT payload->>'event_id', (payload->'data'->>'order_id')::int, extract(epoch FROM sent_at) "
                "FROM outbox WHERE actor = 'billing.on_purchase_completed'")):
            order_of[event_id] = order_id
            if sent is not None:
                found.setdefault("purchase published", {})[order_id] = float(sent)
    api.dispose()
    for effect, (service, consumer) in CONSUMERS.items():
        engine = sa.create_engine(databases.format(service=service), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, extract(epoch FROM handled_at) FROM inbox "
                                        "WHERE consumer = :c"), {"c": consumer}).all()
        engine.dispose()
        found[effect] = {order_of[event_id]: float(at) for event_id, at in rows if event_id in order_of}
    return found


def report(answered: dict[int, float], found: dict[str, dict[int, float]]) -> None:
    print(f"{'effect':<20} {'done':>9}  {'p50':>8} {'p95':>8} {'p99':>8}  (ms after the webhook's 200)")
    ends = [at for effect, at in found.items() if effect not in STAGES]
    complete = {o: max(at[o] for at in ends) for o in answered if all(o in at for at in ends)}
    rows = sorted(found.items(), key=lambda item: item[0] not in STAGES)  # the stages first
    for effect, at in [*rows, ("all (the last one)", complete)]:
        lags = [(at[o] - answered[o]) * 1000 for o in answered if o in at]
        p50, p95, p99 = percentiles(lags) if len(lags) > 1 else (float("nan"),) * 3
        print(f"{effect:<20} {len(lags):>4}/{len(answered):<4}  {p50:8.1f} {p95:8.1f} {p99:8.1f}", flush=True)


def print_cpu(cpu: dict[str, float], purchases: int) -> None:
    """CPU milliseconds per purchase of each process kind: what a purchase costs, however busy the machine is."""
    print(f"CPU per purchase: {sum(cpu.values()) * 1000 / purchases:.1f} ms in all (the servers not counted): " +
          ", ".join(f"{kind} {used * 1000 / purchases:.1f}" for kind, used in sorted(cpu.items()) if used > 0),
          flush=True)


def run(args, data: Path, databases: str, amqp: str, redis_url: str) -> None:
    capture = Capture()
    smtp = Controller(capture, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = clean_env(MARKET_DATA_DIR=str(data / "var"), MARKET_API_BIND=f"127.0.0.1:{free_port()}",
                    MARKET_MEDIA_BIND=f"127.0.0.1:{free_port()}", MARKET_DATABASE_URL=databases,
                    MARKET_BROKER_URL=amqp, MARKET_MAILER_BROKER_URL=redis_url, MARKET_ALLOW_VOLATILE_REDIS="1",
                    MARKET_MAIL_TRANSPORT="smtp", MARKET_SMTP_HOST="127.0.0.1", MARKET_SMTP_PORT=str(smtp.port),
                    MARKET_STRIPE_WEBHOOK_SECRET=SECRET, MARKET_LOG_LEVEL="WARNING", **UNLIMITED)
    try:
        with market_up(env, data / "up.log") as up:
            port = up.port
            template = pending_orders(up.api, env, 1)[0]["order"]
            warm_up, *measured = (copies(databases.format(service="api"), template["id"], n)
                                  for n in (args.warm_up, int(args.rate * args.seconds)))
            pay(port, warm_up, 10)
            wait_until("the warm-up's emails", lambda: all_emailed(capture, warm_up), timeout=120)
            print(f"market up (processes, PostgreSQL, RabbitMQ with confirms, mailer on Redis, SMTP capture): "
                  f"{len(measured[0])} purchases at {args.rate:g}/s", flush=True)
            cpu_before = up.cpu_seconds()
            answered = pay(port, measured[0], args.rate)
            deadline = time.monotonic() + args.timeout
            while not all_emailed(capture, measured[0]) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1)  # the database consumers have one hop where the emails have two or three; a margin anyway
            cpu = {kind: used - cpu_before.get(kind, 0.0) for kind, used in up.cpu_seconds().items()}
            report(answered, effects(databases, capture, measured[0]))
            print_cpu(cpu, len(measured[0]))
    finally:
        smtp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="purchases (webhooks) per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the rate is held")
    parser.add_argument("--warm-up", type=int, default=20, help="purchases at 10/s first, not counted")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every effect")
    add_broker_options(parser)
    args = parser.parse_args()
    data, databases = Path(tempfile.mkdtemp(prefix="mkt-fanout-")), fresh_database_template()
    try:
        with brokers(args) as (amqp, redis_url):
            run(args, data, databases, amqp, redis_url)
    finally:
        drop_databases(databases)


if __name__ == "__main__":
    main()
