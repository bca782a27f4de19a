"""A burst of distinct signed webhooks at once, each paying its own pending order, as `market up` runs.

Starts `market up` (embedded: one process, werkzeug's threaded server, SQLite; processes: gunicorn,
one worker per service, PostgreSQL, RabbitMQ), makes one pending Stripe order per webhook over HTTP,
releases every webhook at the same moment from its own connection, and prints the slowest answer, the
median, the errors, how long until every order was paid, and any pool or lock errors in the log.
The processes mode needs the integration tests' servers, and takes its RabbitMQ as
support.add_broker_options says. Usage:

    .venv/bin/python bench/webhook_burst.py [--burst 100] [--mode embedded|processes|both] [--web-workers 2]
                                            [--amqp-url URL]
"""

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from support import (
    ROOT,
    SECRET,
    UNLIMITED,
    add_broker_options,
    answers,
    brokers,
    call,
    clean_env,
    drop_databases,
    free_port,
    fresh_database_template,
    pending_orders,
    signed,
    wait_until,
)

LOG_PROBLEMS = re.compile(r"QueuePool limit|TimeoutError|database is locked|Traceback")


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


def processes(args: argparse.Namespace) -> None:
    data, port = Path(tempfile.mkdtemp(prefix="mkt-burst-")), free_port()
    databases = fresh_database_template()
    try:
        with brokers(args) as (amqp, _):  # every service on RabbitMQ here
            env = clean_env(MARKET_DATA_DIR=str(data / "var"), MARKET_API_BIND=f"127.0.0.1:{port}",
                            MARKET_MEDIA_BIND=f"127.0.0.1:{free_port()}", MARKET_DATABASE_URL=databases,
                            MARKET_BROKER_URL=amqp, MARKET_WEB_WORKERS=str(args.web_workers),
                            MARKET_STRIPE_WEBHOOK_SECRET=SECRET, MARKET_LOG_LEVEL="WARNING", **UNLIMITED)
            measure(f"processes (gunicorn {args.web_workers} gthread workers, PostgreSQL, RabbitMQ)", env, port,
                    args.burst, data / "up.log")
    finally:
        drop_databases(databases)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=100, help="webhooks sent at once, one order each")
    parser.add_argument("--mode", choices=["embedded", "processes", "both"], default="both")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers in the processes mode")
    add_broker_options(parser)
    args = parser.parse_args()
    if args.mode in ("embedded", "both"):
        embedded(args.burst)
    if args.mode in ("processes", "both"):
        processes(args)


if __name__ == "__main__":
    main()
