"""What the benchmarks share: the servers' addresses, fresh databases they drop afterwards, brokers of their own,
`market up` started and stopped, pending orders to pay, signed webhooks and an open-loop sender."""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pika
import pika.exceptions
import redis
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
SECRET = f"whsec_{secrets.token_urlsafe(32)}"
PASSWORD = "bench pass phrase"
UNLIMITED = {"MARKET_RATE_LIMIT_REGISTER": "100000/minute"}  # one address registers every buyer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database_template() -> str:
    """A `MARKET_DATABASE_URL` naming databases no one else uses (created by `market migrate`)."""
    return f"{PG}/mkt_bench_{uuid.uuid4().hex[:8]}_{{service}}"


def real_secrets() -> dict:
    """Fresh secrets: with real brokers the processes refuse the repository's development values."""
    return {"MARKET_STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_urlsafe(32)}",
            "MARKET_PAYTM_MERCHANT_KEY": secrets.token_urlsafe(12),  # 16 characters: an AES-128 key
            "MARKET_MPESA_CALLBACK_SECRET": secrets.token_urlsafe(32),
            "MARKET_MEDIA_SIGNING_SECRET": secrets.token_urlsafe(32)}


def clean_env(**settings: str) -> dict:
    """This process's environment without any MARKET_ variable, with fresh secrets, plus `settings`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")} | real_secrets() | settings


def drop_databases(template: str) -> None:
    prefix = template.rsplit("/", 1)[1].replace("{service}", "")
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in conn.scalars(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                 {"p": f"{prefix}%"}).all():
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


# --- brokers ---------------------------------------------------------------------------------------------------

def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--amqp-url", default=os.environ.get("MARKET_TEST_AMQP_URL"),
                        help="RabbitMQ for every service but the mailer; this system's queues on it are emptied first "
                             "(default MARKET_TEST_AMQP_URL; without either, a fresh vhost made with rabbitmqctl)")
    parser.add_argument("--redis-url", default=os.environ.get("MARKET_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
                        help="the mailer's broker; its database is emptied first "
                             "(default MARKET_TEST_REDIS_URL, else database 13 of the local Redis)")


@contextmanager
def brokers(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The (RabbitMQ, Redis) URLs of a run, emptied of a killed run's leftovers (messages naming orders of dropped
    databases); a vhost made here is deleted afterwards."""
    made = None if args.amqp_url else own_vhost()
    amqp = args.amqp_url or f"amqp://guest:guest@127.0.0.1:5672/{made or '%2F'}"
    if args.amqp_url:
        purge_queues(amqp)
    redis.Redis.from_url(args.redis_url).flushdb()
    try:
        yield amqp, args.redis_url
    finally:
        if made:
            subprocess.run(["rabbitmqctl", "delete_vhost", made], capture_output=True, timeout=60)


def own_vhost() -> str | None:
    """A fresh RabbitMQ vhost for guest, or None (the default vhost) without rabbitmqctl."""
    if not shutil.which("rabbitmqctl"):
        print("rabbitmqctl not found: using the default vhost; stop other consumers of it first")
        return None
    vhost = f"mkt_bench_{uuid.uuid4().hex[:8]}"
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", *command], capture_output=True, check=True, timeout=60)
    return vhost


def purge_queues(amqp_url: str) -> None:
    """Empty every queue of this system (and its delay and dead-letter queues) on `amqp_url`'s vhost."""
    from dramatiq.common import dq_name, xq_name

    from services.market import registry
    from shared.settings import SERVICES

    names = [name for service in SERVICES for queue in registry.queues(service)
             for name in (queue, dq_name(queue), xq_name(queue))]
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
        for name in names:
            with suppress(pika.exceptions.ChannelClosedByBroker):  # never declared on this vhost: nothing to empty
                connection.channel().queue_purge(name)


# --- the system under test -------------------------------------------------------------------------------------

def call(api: str, method: str, path: str, body=None, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(f"{api}{path}", json.dumps(body).encode() if body is not None else None,
                                     headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(what: str, probe, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return value


@dataclass(frozen=True, slots=True)
class MarketUp:
    api: str  # base URL
    session: int  # the session id of every process `market up` started

    @property
    def port(self) -> int:
        return int(self.api.rsplit(":", 1)[1])

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) so far of each kind of process `market up` runs: "api web", "billing worker"..."""
        ticks, used = os.sysconf("SC_CLK_TCK"), {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                command = (stat.parent / "cmdline").read_bytes().decode().split("\0")
            except OSError:  # gone meanwhile
                continue
            if int(fields[3]) == self.session and (kind := _kind(command)):
                used[kind] = used.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
        return used


def _kind(command: list[str]) -> str | None:
    line = " ".join(command)
    if app := re.search(r"gunicorn.*services\.(\w+)\.\w+:create_app", line):  # also as its process title
        return f"{app.group(1)} web"
    if worker := re.search(r"dramatiq .*--queues (\w+)\.", line):  # one worker module: the queues name the service
        return f"{worker.group(1)} worker"
    return None


@contextmanager
def market_up(env: dict, log_path: Path) -> Iterator[MarketUp]:
    """`market up` with `env`, once its api answers; on the way out, stops it and prints the ERROR lines and
    tracebacks its log holds."""
    with open(log_path, "ab") as log:
        up = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api = f"http://{env['MARKET_API_BIND']}"
        wait_until("the api", lambda: answers(f"{api}/healthz"), timeout=90)
        yield MarketUp(api, up.pid)
    finally:
        stop(up)
        problems = [line for line in log_path.read_text(errors="replace").splitlines()
                    if " ERROR " in line or "Traceback" in line]
        print(f"  ERROR lines and tracebacks in market up's log: {len(problems)}", *problems[:5], sep="\n    ")


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def admin_token(env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "services", "create-admin", "--email",
                           f"admin-{uuid.uuid4().hex[:6]}@example.com", "--name", "Bench Admin"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return re.search(r"token: (\S+)", done.stdout).group(1)


def pending_orders(api: str, env: dict, count: int) -> list[dict]:
    """`count` buyers, each with one pending Stripe order for one approved product."""
    seller = call(api, "POST", "/users", {"email": f"seller-{uuid.uuid4().hex[:8]}@example.com", "name": "Sam",
                                         "password": PASSWORD})
    product = call(api, "POST", "/products", {"title": "Burst Book", "price_minor": 1500, "currency": "USD"},
                   seller["token"])
    call(api, "POST", f"/admin/products/{product['id']}/approve", token=admin_token(env))
    orders = []
    for n in range(count):
        buyer = call(api, "POST", "/users", {"email": f"buyer{n}-{uuid.uuid4().hex[:8]}@example.com", "name": "Bea",
                                             "password": PASSWORD})
        call(api, "POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])
        orders.append({"order": call(api, "POST", "/orders", {"provider": "stripe"}, buyer["token"]), "buyer": buyer})
    return orders


def copies(database: str, order_id: int, count: int) -> list[dict]:
    """`count` pending orders copied from `order_id` in the api's database (same lines and total), each with a
    buyer of its own holding the order's products in the cart, as the API would have left them."""
    tag = uuid.uuid4().hex[:8]
    engine = sa.create_engine(database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        rows = conn.execute(sa.text(
            "WITH buyers AS (INSERT INTO users (email, name) "
            "  SELECT 'load_' || :tag || '_' || g || '@example.com', 'Bea' FROM generate_series(1, :n) g "
            "  RETURNING id, email) "
            "INSERT INTO orders (reference, buyer_id, status, provider, total_minor, currency, created_at) "
            "SELECT split_part(b.email, '@', 1), b.id, 'pending', o.provider, o.total_minor, o.currency, now() "
            "FROM buyers b, orders o WHERE o.id = :id RETURNING id, reference, total_minor, currency"),
            {"tag": tag, "n": count, "id": order_id}).mappings().all()
        conn.execute(sa.text(
            "INSERT INTO order_lines (order_id, product_id, seller_id, title, price_minor, file_key, file_sha256) "
            "SELECT o.id, l.product_id, l.seller_id, l.title, l.price_minor, l.file_key, l.file_sha256 "
            "FROM orders o JOIN order_lines l ON l.order_id = :id WHERE o.reference LIKE :like"),
            {"id": order_id, "like": f"load_{tag}_%"})
        conn.execute(sa.text(
            "INSERT INTO cart_items (buyer_id, product_id) SELECT o.buyer_id, l.product_id "
            "FROM orders o JOIN order_lines l ON l.order_id = :id WHERE o.reference LIKE :like"),
            {"id": order_id, "like": f"load_{tag}_%"})
    engine.dispose()
    return [dict(r) for r in rows]


def signed(order: dict) -> tuple[bytes, dict]:
    """A Stripe `payment_intent.succeeded` webhook paying `order`, signed with SECRET."""
    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "payment_intent.succeeded",
             "data": {"object": {"id": f"pi_{uuid.uuid4().hex}", "object": "payment_intent",
                                 "amount_received": order["total_minor"], "currency": order["currency"].lower(),
                                 "metadata": {"order_reference": order["reference"]}}}}
    body, ts = json.dumps(event).encode(), int(time.time())
    sig = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}


# --- the open-loop client --------------------------------------------------------------------------------------

SENDERS = 48  # client threads, each with its own keep-alive connection


@dataclass(frozen=True, slots=True)
class Sent:
    index: int
    latency_ms: float  # from when it was due, so a server that falls behind is charged for the queue it builds
    late_ms: float  # of that, how late this client sent it: a client starved of CPU charges the server for its lag
    answered_at: float  # time.time() of the answer, to compare with timestamps other processes wrote
    ok: bool


def open_loop(port: int, path: str, bodies: list[tuple[bytes, dict]], rate: float) -> tuple[list[Sent], float]:
    """Send `bodies` at `rate` per second, each when it is due whatever the answers before it: (what each
    request met, seconds the whole took)."""
    sent: list[Sent] = []
    lock, next_index = threading.Lock(), iter(range(len(bodies)))
    start = time.perf_counter() + 0.2

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            due = start + i / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            began = time.perf_counter()
            try:
                connection.request("POST", path, *bodies[i])
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                connection.close()
                ok = False
            done = Sent(i, (time.perf_counter() - due) * 1000, (began - due) * 1000, time.time(), ok)
            with lock:
                sent.append(done)

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sent, time.perf_counter() - start


def percentiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p95 and p99."""
    pct = statistics.quantiles(values, n=100)
    return pct[49], pct[94], pct[98]
