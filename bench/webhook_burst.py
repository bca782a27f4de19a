"""A burst of distinct signed webhooks at once, each paying its own pending order, as `market up` runs.

Starts `market up` (embedded: one process, werkzeug's threaded server, SQLite; processes: gunicorn,
one worker per service, PostgreSQL, RabbitMQ), makes one pending Stripe order per webhook over HTTP,
releases every webhook at the same moment from its own connection, and prints the slowest answer, the
median, the errors, how long until every order was paid, and any pool or lock errors in the log.
The processes mode needs the integration tests' servers; it runs on a RabbitMQ vhost of its own when
`rabbitmqctl` is at hand, so that nothing else consuming the default vhost takes its messages. Usage:

    .venv/bin/python bench/webhook_burst.py [--burst 100] [--mode embedded|processes|both] [--web-workers 2]
"""

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import ROOT, clean_env, drop_databases, free_port, fresh_database_template

SECRET = f"whsec_{secrets.token_urlsafe(32)}"
LOG_PROBLEMS = re.compile(r"QueuePool limit|TimeoutError|database is locked|Traceback")


PASSWORD = "bench pass phrase"
UNLIMITED = {"MARKET_RATE_LIMIT_REGISTER": "100000/minute"}  # one address registers every buyer


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


def signed(order: dict) -> tuple[bytes, dict]:
    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "payment_intent.succeeded",
             "data": {"object": {"id": f"pi_{uuid.uuid4().hex}", "object": "payment_intent",
                                 "amount_received": order["total_minor"], "currency": order["currency"].lower(),
                                 "metadata": {"order_reference": order["reference"]}}}}
    body, ts = json.dumps(event).encode(), int(time.time())
    sig = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}


def burst(port: int, requests: list[tuple[bytes, dict]]) -> list[tuple[float, int | str]]:
    """Every request from its own thread and connection, released together: (seconds, status or error)."""
    start = threading.Barrier(len(requests))

    def post(request: tuple[bytes, dict]) -> tuple[float, int | str]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.connect()
        start.wait()
        began = time.perf_counter()
        try:
            connection.request("POST", "/webhooks/stripe", *request)
            response = connection.getresponse()
            response.read()
            return time.perf_counter() - began, response.status
        except OSError as exc:
            return time.perf_counter() - began, type(exc).__name__
        finally:
            connection.close()

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


def paid(api: str, orders: list[dict]) -> int:
    return sum(call(api, "GET", f"/orders/{o['order']['id']}", token=o["buyer"]["token"])["status"] == "paid"
               for o in orders)


def measure(mode: str, env: dict, port: int, count: int, log_path: Path) -> None:
    api = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        up = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("the api", lambda: answers(f"{api}/healthz"), timeout=60)
        orders = pending_orders(api, env, count)
        results = burst(port, [signed(o["order"]) for o in orders])
        print(f"{mode}: {answered(results)}", flush=True)
        print(f"  {settled(api, orders)}; {log_problems(log_path.read_text(errors='replace'))}", flush=True)
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        up.wait(timeout=60)


def answered(results: list[tuple[float, int | str]]) -> str:
    ms = sorted(seconds * 1000 for seconds, _ in results)
    errors = [status for _, status in results if not (isinstance(status, int) and 200 <= status < 300)]
    return (f"{len(results)} webhooks at once: {len(results) - len(errors)} answered 2xx, {len(errors)} errors "
            f"{sorted(set(map(str, errors)))}; slowest {ms[-1]:.0f} ms, p50 {statistics.median(ms):.0f} ms, "
            f"p95 {statistics.quantiles(ms, n=20)[-1]:.0f} ms")


def settled(api: str, orders: list[dict], timeout: float = 120) -> str:
    """How long until every order was paid, or how many were when the deadline passed."""
    started, count = time.monotonic(), 0
    while time.monotonic() - started < timeout:
        count = paid(api, orders)
        if count == len(orders):
            return f"every order paid {time.monotonic() - started:.1f} s after the last answer"
        time.sleep(0.5)
    return f"only {count} of {len(orders)} orders paid {timeout:.0f} s after the last answer"


def log_problems(log: str) -> str:
    problems = LOG_PROBLEMS.findall(log)
    return f"pool/lock errors and tracebacks in the log: {len(problems)} {sorted(set(problems))}"


def embedded(count: int) -> None:
    data, port = Path(tempfile.mkdtemp(prefix="mkt-burst-")), free_port()
    env = clean_env(MARKET_DATA_DIR=str(data / "var"), MARKET_API_BIND=f"127.0.0.1:{port}",
                    MARKET_STRIPE_WEBHOOK_SECRET=SECRET, MARKET_LOG_LEVEL="WARNING", **UNLIMITED)
    try:
        measure("embedded (werkzeug threaded, SQLite, in-memory brokers)", env, port, count, data / "up.log")
    finally:
        shutil.rmtree(data, ignore_errors=True)


def processes(count: int, web_workers: int) -> None:
    data, port = Path(tempfile.mkdtemp(prefix="mkt-burst-")), free_port()
    databases, vhost = fresh_database_template(), own_vhost()
    env = clean_env(MARKET_DATA_DIR=str(data / "var"), MARKET_API_BIND=f"127.0.0.1:{port}",
                    MARKET_MEDIA_BIND=f"127.0.0.1:{free_port()}", MARKET_DATABASE_URL=databases,
                    MARKET_BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost or '%2F'}",
                    MARKET_WEB_WORKERS=str(web_workers), MARKET_STRIPE_WEBHOOK_SECRET=SECRET,
                    MARKET_LOG_LEVEL="WARNING", **UNLIMITED)
    try:
        measure(f"processes (gunicorn {web_workers} gthread workers, PostgreSQL, RabbitMQ)", env, port, count,
                data / "up.log")
    finally:
        drop_databases(databases)
        if vhost:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def own_vhost() -> str | None:
    """A fresh RabbitMQ vhost for guest, or None (the default vhost) without rabbitmqctl."""
    if not shutil.which("rabbitmqctl"):
        print("rabbitmqctl not found: using the default vhost; stop other consumers of it first")
        return None
    vhost = f"mkt_bench_{uuid.uuid4().hex[:8]}"
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", *command], capture_output=True, check=True, timeout=60)
    return vhost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=100, help="webhooks sent at once, one order each")
    parser.add_argument("--mode", choices=["embedded", "processes", "both"], default="both")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers in the processes mode")
    args = parser.parse_args()
    if args.mode in ("embedded", "both"):
        embedded(args.burst)
    if args.mode in ("processes", "both"):
        processes(args.burst, args.web_workers)


if __name__ == "__main__":
    main()
