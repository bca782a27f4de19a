"""Signed Stripe webhooks for real pending orders at rising rates, until p99 passes 100 ms; beside a bare Flask app.

Starts `market up` in the processes mode (gunicorn gthread, one Dramatiq worker per service, PostgreSQL,
RabbitMQ, the mailer on Redis: see support.add_broker_options for which), makes one pending order through the
API and copies it in the api's database into as many pending orders as the run needs (so every webhook pays its
own order),
then sends webhooks open-loop at each rate for a few seconds: a request's latency counts from when it was due,
so a server that falls behind is charged for the queue it builds. The same client then drives a bare Flask
app (one trivial JSON view) under the same gunicorn settings. Needs the integration tests' servers. Usage:

    .venv/bin/python bench/webhook_load.py [--rates 50,100,200,300,400,500] [--seconds 5] [--web-workers 2]
                                           [--db-pre-ping true|false] [--market-only] [--amqp-url URL] [--redis-url URL]
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import (
    ROOT,
    SECRET,
    UNLIMITED,
    add_broker_options,
    answers,
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
    stop,
    wait_until,
)

P99_LIMIT_MS = 100.0


def climb(port: int, path: str, rates: list[int], seconds: float, bodies) -> list[tuple]:
    """Each rate in turn until p99 passes the limit (or errors appear); a row per rate."""
    open_loop(port, path, [bodies() for _ in range(50)], 25)  # warm-up, not counted: pools, imports, first queues
    results = []
    for rate in rates:
        sent, elapsed = open_loop(port, path, [bodies() for _ in range(int(rate * seconds))], rate)
        p50, p95, p99 = percentiles([s.latency_ms for s in sent])
        errors = sum(not s.ok for s in sent)
        results.append((rate, len(sent) / elapsed, p50, p95, p99, errors))
        late = percentiles([s.late_ms for s in sent])
        print(f"  offered {rate:>4}/s: achieved {results[-1][1]:6.1f}/s  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
              f"p99 {p99:7.1f} ms  errors {errors}  (the client sent late by p50 {late[0]:.1f} ms, p99 {late[2]:.1f})",
              flush=True)
        if p99 > P99_LIMIT_MS or errors:
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


def market(args, data: Path, databases: str, amqp: str, redis_url: str) -> list[tuple]:
    env = clean_env(MARKET_DATA_DIR=str(data / "var"), MARKET_API_BIND=f"127.0.0.1:{free_port()}",
                    MARKET_MEDIA_BIND=f"127.0.0.1:{free_port()}", MARKET_DATABASE_URL=databases,
                    MARKET_BROKER_URL=amqp, MARKET_MAILER_BROKER_URL=redis_url, MARKET_ALLOW_VOLATILE_REDIS="1",
                    MARKET_WEB_WORKERS=str(args.web_workers), MARKET_STRIPE_WEBHOOK_SECRET=SECRET,
                    MARKET_LOG_LEVEL="WARNING", MARKET_DB_PRE_PING=args.db_pre_ping, **UNLIMITED)
    with market_up(env, data / "up.log") as up:
        template = pending_orders(up.api, env, 1)[0]["order"]
        orders = iter(copies(databases.format(service="api"), template["id"],
                             int(sum(args.rates) * args.seconds) + 60))  # and the warm-up's 50
        print(f"market up (processes: gunicorn {args.web_workers} gthread workers, PostgreSQL with pre-ping "
              f"{args.db_pre_ping}, RabbitMQ with confirms, mailer on Redis): POST /webhooks/stripe, each paying its "
              "own pending order", flush=True)
        return climb(up.port, "/webhooks/stripe", args.rates, args.seconds,
                     lambda: signed(next(orders)))


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
    add_broker_options(parser)
    args = parser.parse_args()
    data, databases = Path(tempfile.mkdtemp(prefix="mkt-load-")), fresh_database_template()
    try:
        with brokers(args) as (amqp, redis_url):
            ours = market(args, data, databases, amqp, redis_url)
    finally:
        drop_databases(databases)
    theirs = [] if args.market_only else bare(args, data)
    print("\nsustained (highest rate with p99 <= 100 ms, no errors, >= 95% of the offered rate achieved):")
    for name, results in (("market", ours), ("bare Flask", theirs)):
        best = sustained(results)
        print(f"  {name:<10} " + (f"{best[1]:6.1f}/s  p50 {best[2]:.1f} ms  p95 {best[3]:.1f} ms  p99 {best[4]:.1f} ms"
                                  if best else "none"))


if __name__ == "__main__":
    main()
