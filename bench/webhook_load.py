"""Signed Stripe webhooks for real pending orders at rising rates, until p99 passes 100 ms; beside a bare Flask app.

Starts `market up` in the processes mode (gunicorn gthread, one Dramatiq worker per service, PostgreSQL,
RabbitMQ on a vhost of its own, the mailer on Redis), makes one pending order through the API and copies it
in the api's database into as many pending orders as the run needs (so every webhook pays its own order),
then sends webhooks open-loop at each rate for a few seconds: a request's latency counts from when it was due,
so a server that falls behind is charged for the queue it builds. The same client then drives a bare Flask
app (one trivial JSON view) under the same gunicorn settings. Needs the integration tests' servers. Usage:

    .venv/bin/python bench/webhook_load.py [--rates 50,100,200,300,400,500] [--seconds 5] [--web-workers 2]
                                           [--db-pre-ping true|false] [--market-only]
"""

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa
from support import ROOT, clean_env, drop_databases, free_port, fresh_database_template
from webhook_burst import SECRET, UNLIMITED, answers, own_vhost, pending_orders, signed, wait_until

P99_LIMIT_MS = 100.0
SENDERS = 48  # client threads, each with its own keep-alive connection
# A database no integration test uses, emptied first: a killed run's leftover messages name other orders.
REDIS = os.environ.get("MARKET_BENCH_REDIS_URL", "redis://127.0.0.1:6392/13")


def copies(database: str, order_id: int, count: int) -> list[dict]:
    """`count` pending orders copied from `order_id` (same buyer, lines and total), each with its own reference."""
    tag = uuid.uuid4().hex[:8]
    engine = sa.create_engine(database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        rows = conn.execute(sa.text(
            "INSERT INTO orders (reference, buyer_id, status, provider, total_minor, currency, created_at) "
            "SELECT 'load_' || :tag || '_' || g, buyer_id, 'pending', provider, total_minor, currency, now() "
            "FROM orders, generate_series(1, :n) g WHERE id = :id RETURNING id, reference, total_minor, currency"),
            {"tag": tag, "n": count, "id": order_id}).mappings().all()
        conn.execute(sa.text(
            "INSERT INTO order_lines (order_id, product_id, seller_id, title, price_minor, file_key, file_sha256) "
            "SELECT o.id, l.product_id, l.seller_id, l.title, l.price_minor, l.file_key, l.file_sha256 "
            "FROM orders o JOIN order_lines l ON l.order_id = :id WHERE o.reference LIKE :like"),
            {"id": order_id, "like": f"load_{tag}_%"})
    engine.dispose()
    return [dict(r) for r in rows]


def step(port: int, path: str, bodies: list[tuple[bytes, dict]], rate: float) -> tuple[list[float], int, float]:
    """Send `bodies` at `rate` per second, open loop: (latencies in ms from when each was due, errors, seconds)."""
    latencies, errors, lock, next_index = [], [0], threading.Lock(), iter(range(len(bodies)))
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
            try:
                connection.request("POST", path, *bodies[i])
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                connection.close()
                ok = False
            with lock:
                latencies.append((time.perf_counter() - due) * 1000)
                errors[0] += not ok

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - start


def climb(port: int, path: str, rates: list[int], seconds: float, bodies) -> list[tuple]:
    """Each rate in turn until p99 passes the limit (or errors appear); a row per rate."""
    step(port, path, [bodies() for _ in range(50)], 25)  # warm-up, not counted: pools, imports, first queues
    results = []
    for rate in rates:
        batch = [bodies() for _ in range(int(rate * seconds))]
        latencies, errors, elapsed = step(port, path, batch, rate)
        pct = statistics.quantiles(latencies, n=100)
        results.append((rate, len(latencies) / elapsed, pct[49], pct[94], pct[98], errors))
        print(f"  offered {rate:>4}/s: achieved {results[-1][1]:6.1f}/s  p50 {pct[49]:7.1f} ms  "
              f"p95 {pct[94]:7.1f} ms  p99 {pct[98]:7.1f} ms  errors {errors}", flush=True)
        if pct[98] > P99_LIMIT_MS or errors:
            break
        time.sleep(1)  # let the workers catch up a little between steps
    return results


def sustained(results: list[tuple]) -> tuple | None:
    """The highest step that kept p99 under the limit with no errors and achieved at least 95% of its rate."""
    good = [r for r in results if r[4] <= P99_LIMIT_MS and not r[5] and r[1] >= 0.95 * r[0]]
    return good[-1] if good else None


def gunicorn(app: str, port: int, env: dict, workers: int, log: Path) -> subprocess.Popen:
    """Gunicorn as `market serve` runs it (gthread, the same threads, logger and access log)."""
    args = ["-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--worker-class", "gthread",
            "--threads", env.get("MARKET_WEB_THREADS", "32"), "--logger-class", "shared.observability.GunicornLogger",
            "--access-logfile", "-", "--graceful-timeout", "20", app]
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def market(args, data: Path, databases: str, vhost: str | None) -> list[tuple]:
    port = free_port()
    env = clean_env(MARKET_DATA_DIR=str(data / "var"), MARKET_API_BIND=f"127.0.0.1:{port}",
                    MARKET_MEDIA_BIND=f"127.0.0.1:{free_port()}", MARKET_DATABASE_URL=databases,
                    MARKET_BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{vhost or '%2F'}",
                    MARKET_MAILER_BROKER_URL=REDIS, MARKET_WEB_WORKERS=str(args.web_workers),
                    MARKET_STRIPE_WEBHOOK_SECRET=SECRET, MARKET_LOG_LEVEL="WARNING",
                    MARKET_DB_PRE_PING=args.db_pre_ping, **UNLIMITED)
    redis.Redis.from_url(REDIS).flushdb()
    with open(data / "up.log", "ab") as log:
        up = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api = f"http://127.0.0.1:{port}"
        wait_until("the api", lambda: answers(f"{api}/healthz"), timeout=60)
        template = pending_orders(api, env, 1)[0]["order"]
        orders = iter(copies(databases.format(service="api"), template["id"],
                             int(sum(args.rates) * args.seconds) + 60))  # and the warm-up's 50
        print(f"market up (processes: gunicorn {args.web_workers} gthread workers, PostgreSQL with pre-ping "
              f"{args.db_pre_ping}, RabbitMQ with confirms, mailer on Redis): POST /webhooks/stripe, each paying its "
              "own pending order", flush=True)
        results = climb(port, "/webhooks/stripe", args.rates, args.seconds, lambda: signed(next(orders)))
        return results
    finally:
        stop(up)
        problems = [line for line in (data / "up.log").read_text(errors="replace").splitlines()
                    if " ERROR " in line or "Traceback" in line]
        print(f"  ERROR lines and tracebacks in market up's log: {len(problems)}", *problems[:5], sep="\n    ")


def bare(args, data: Path) -> list[tuple]:
    port = free_port()
    env = clean_env(PYTHONPATH=str(ROOT / "bench"))
    server = gunicorn("bare_app:create_app()", port, env, args.web_workers, data / "bare.log")
    try:
        wait_until("the bare app", lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        print(f"bare Flask app (same gunicorn settings: {args.web_workers} gthread workers): POST /webhooks/stripe "
              "answers {\"status\": \"accepted\"}", flush=True)
        fake = {"reference": "ord_bare", "total_minor": 1500, "currency": "USD"}
        return climb(port, "/webhooks/stripe", args.rates, args.seconds, lambda: signed(fake))
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,300,400,500,650,800,1000",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each rate is held")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--db-pre-ping", choices=["true", "false"], default="true", help="MARKET_DB_PRE_PING")
    parser.add_argument("--market-only", action="store_true", help="skip the bare app")
    args = parser.parse_args()
    data, databases, vhost = Path(tempfile.mkdtemp(prefix="mkt-load-")), fresh_database_template(), own_vhost()
    try:
        ours = market(args, data, databases, vhost)
    finally:
        drop_databases(databases)
        if vhost:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
    theirs = [] if args.market_only else bare(args, data)
    print("\nsustained (highest rate with p99 <= 100 ms, no errors, >= 95% of the offered rate achieved):")
    for name, results in (("market", ours), ("bare Flask", theirs)):
        best = sustained(results)
        print(f"  {name:<10} " + (f"{best[1]:6.1f}/s  p50 {best[2]:.1f} ms  p95 {best[3]:.1f} ms  p99 {best[4]:.1f} ms"
                                  if best else "none"))


if __name__ == "__main__":
    main()
