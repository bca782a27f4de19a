"""How fast the api answers a signed Stripe webhook (verify, store once, outbox, publish with confirms).

Runs `market serve api` under gunicorn on real PostgreSQL and RabbitMQ and prints latency
percentiles and throughput, sequentially and with concurrent senders. Needs the servers of the
integration tests. Usage:

    .venv/bin/python bench/webhook_latency.py [--requests 2000] [--concurrency 8] [--workers 2]
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from support import ROOT, clean_env, drop_databases, free_port, fresh_database_template

SECRET = f"whsec_{secrets.token_urlsafe(32)}"



def signed(event_id: str) -> tuple[bytes, dict]:
    body = json.dumps({"id": event_id, "object": "event", "type": "payment_intent.succeeded",
                       "data": {"object": {"id": f"pi_{event_id}", "amount_received": 100, "currency": "usd",
                                           "metadata": {"order_reference": "ord_does_not_exist"}}}}).encode()
    ts = int(time.time())
    sig = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}


def sender(port: int, count: int, latencies: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(count):
        body, headers = signed(f"evt_{uuid.uuid4().hex}")
        started = time.perf_counter()
        conn.request("POST", "/webhooks/stripe", body, headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        assert response.status == 200, response.status


def run(port: int, requests: int, concurrency: int) -> None:
    latencies: list[float] = []
    threads = [threading.Thread(target=sender, args=(port, requests // concurrency, latencies))
               for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    pct = statistics.quantiles(ms, n=100)
    print(f"concurrency {concurrency:>2}: {len(ms)} webhooks in {elapsed:.1f} s = {len(ms) / elapsed:,.0f}/s; "
          f"latency p50 {pct[49]:.1f} ms, p95 {pct[94]:.1f} ms, p99 {pct[98]:.1f} ms, max {ms[-1]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = parser.parse_args()
    databases = fresh_database_template()
    port = free_port()
    env = clean_env(**{
        "MARKET_DATABASE_URL": databases, "MARKET_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "MARKET_STRIPE_WEBHOOK_SECRET": SECRET, "MARKET_DATA_DIR": tempfile.mkdtemp(), "MARKET_LOG_LEVEL": "WARNING"})
    market = [sys.executable, "-m", "services"]
    subprocess.run([*market, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    server = subprocess.Popen([*market, "serve", "api", "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the api did not start") from None
                time.sleep(0.1)
        print(f"gunicorn api ({args.workers} workers) on PostgreSQL + RabbitMQ with publisher confirms")
        run(port, min(200, args.requests), 1)  # warm-up
        run(port, args.requests, 1)
        run(port, args.requests, args.concurrency)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        drop_databases(databases)


if __name__ == "__main__":
    main()
