"""The seed-000 run end to end: seed N customers, `market send-invoices`, real workers and brokers.

Prints seeding speed, end-to-end seconds, emails/s and the peak RSS of every worker process.
Needs PostgreSQL, and RabbitMQ or Redis, on loopback (the integration tests' servers). Usage:

    .venv/bin/python bench/invoices.py --users 1000000 --broker amqp          # zero-latency provider
    .venv/bin/python bench/invoices.py --users 1000000 --broker redis --delay 20-80 --errors 0.01
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import ROOT, clean_env, drop_databases, fresh_database_template

BROKERS = {"amqp": "amqp://guest:guest@127.0.0.1:5672/%2F", "redis": "redis://127.0.0.1:6379/12"}


def peak_rss_mb(group: int) -> float:
    """Sum over the process group of each process's peak resident set (VmHWM)."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            if os.getpgid(int(status.parent.name)) == group:
                total += int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1))
        except (OSError, AttributeError, ProcessLookupError):
            continue
    return total / 1024


def clean_broker(kind: str) -> None:
    if kind == "redis":
        import redis

        redis.Redis.from_url(BROKERS["redis"]).flushdb()
    else:
        import pika

        channel = pika.BlockingConnection(pika.URLParameters(BROKERS["amqp"])).channel()
        for queue in ("mailer.invoices", "billing.events"):
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--broker", choices=sorted(BROKERS), default="amqp")
    parser.add_argument("--delay", default="0-0", help="simulated provider delay range in ms, e.g. 20-80")
    parser.add_argument("--errors", type=float, default=0.0, help="simulated provider error rate")
    parser.add_argument("--mailer-processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=1000)
    args = parser.parse_args()
    low, high = (float(x) for x in args.delay.split("-"))
    databases = fresh_database_template()
    data = tempfile.mkdtemp(prefix="market-bench-")
    env = clean_env(**{
        "MARKET_DATABASE_URL": databases, "MARKET_BROKER_URL": BROKERS[args.broker],
        "MARKET_DATA_DIR": data, "MARKET_LOG_LEVEL": "WARNING", "MARKET_MAIL_TRANSPORT": "simulated",
        "MARKET_SIMULATED_MIN_DELAY_MS": str(low), "MARKET_SIMULATED_MAX_DELAY_MS": str(high),
        "MARKET_SIMULATED_ERROR_RATE": str(args.errors), "MARKET_INVOICE_CHUNK_SIZE": str(args.chunk),
        "MARKET_ALLOW_VOLATILE_REDIS": "1"})  # the machine's Redis keeps no append-only file
    market = [sys.executable, "-m", "services"]
    clean_broker(args.broker)
    subprocess.run([*market, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    seeded = subprocess.run([*market, "seed-invoices", "--users", str(args.users)], env=env, cwd=ROOT,
                            check=True, capture_output=True, text=True)
    print(seeded.stdout.strip())
    workers = {
        "mailer": subprocess.Popen([*market, "worker", "mailer", "--processes", str(args.mailer_processes),
                                    "--threads", str(args.threads)], env=env, cwd=ROOT, start_new_session=True),
        "billing": subprocess.Popen([*market, "worker", "billing", "--threads", str(args.threads)], env=env,
                                    cwd=ROOT, start_new_session=True),
    }
    peaks = dict.fromkeys(workers, 0.0)
    try:
        time.sleep(3)  # workers up and consuming before the clock starts
        started = time.perf_counter()
        run = subprocess.Popen([*market, "send-invoices"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        while run.poll() is None:
            for name, worker in workers.items():
                peaks[name] = max(peaks[name], peak_rss_mb(worker.pid))
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        output = run.stdout.read().replace("\r", "\n").strip().splitlines()
        print(output[-2] if len(output) > 1 else output)
        done = re.search(r"Done: ([\d,]+) sent, ([\d,]+) failed", "\n".join(output))
        sent, failed = (int(x.replace(",", "")) for x in done.groups())
        print(f"broker {args.broker}, provider delay {args.delay} ms, errors {args.errors:.2%}, "
              f"{args.mailer_processes} mailer processes x {args.threads} threads, chunks of {args.chunk}")
        print(f"END TO END: {sent + failed:,} emails ({sent:,} sent, {failed:,} failed) in {elapsed:.1f} s = "
              f"{(sent + failed) / elapsed:,.0f} emails/s")
        print("peak RSS: " + ", ".join(f"{name} worker {mb:,.0f} MB" for name, mb in peaks.items()))
    finally:
        for worker in workers.values():
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers.values():
            worker.wait()
        drop_databases(databases)


if __name__ == "__main__":
    main()
