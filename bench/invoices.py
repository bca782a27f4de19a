"""The seed-000 run end to end: seed N customers, `market send-invoices`, real workers and brokers, then the
best peer (Celery, chunks of 100 no-op calls) on the same RabbitMQ and Redis in the same sitting.

Prints seeding speed, end-to-end seconds, emails/s, the CPU seconds each process spent per 1,000 invoices
(where the time goes), the peak RSS of every worker, the peer's drain rate and the ratio ours/peer.
Needs PostgreSQL, and RabbitMQ or Redis, on loopback (the integration tests' servers; the brokers are taken
from MARKET_TEST_AMQP_URL and MARKET_TEST_REDIS_URL as the tests take them). Usage:

    .venv/bin/python bench/invoices.py --users 1000000 --broker amqp          # zero-latency provider
    .venv/bin/python bench/invoices.py --users 1000000 --broker redis --delay 20-80 --errors 0.01
    .venv/bin/python bench/invoices.py --users 100000 --profile --no-peer     # py-spy on the mailer worker
"""

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from support import ROOT, clean_env, drop_databases, fresh_database_template

BROKERS = {"amqp": os.environ.get("MARKET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
           "redis": os.environ.get("MARKET_TEST_REDIS_URL", "redis://127.0.0.1:6379")}
PEER = ROOT.parent / "shared" / "peers" / "run"
TICK = os.sysconf("SC_CLK_TCK")


def redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def group_pids(group: int) -> list[int]:
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) == group:
                pids.append(int(entry.name))
        except ProcessLookupError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def postgres_pids(database_prefix: str) -> list[int]:
    """The PostgreSQL backends serving this run's databases (their title names the database)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if database_prefix.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def peak_rss_mb(group: int) -> float:
    """Sum over the process group of each process's peak resident set (VmHWM)."""
    total = 0
    for pid in group_pids(group):
        try:
            total += int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))
        except (OSError, AttributeError):
            continue
    return total / 1024


def clean_broker(kind: str) -> None:
    if kind == "redis":
        import redis

        redis.Redis.from_url(redis_db(BROKERS["redis"], 12)).flushdb()
    else:
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(BROKERS["amqp"]))
        channel = connection.channel()
        for queue in ("mailer.invoices", "billing.events"):
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel.queue_delete(name)
        connection.close()


def consuming(kind: str) -> int:
    """How many worker processes consume this run's queues (RabbitMQ: consumers; Redis: heartbeats)."""
    if kind == "redis":
        import redis

        return redis.Redis.from_url(redis_db(BROKERS["redis"], 12)).zcard("dramatiq:__heartbeats__")
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(BROKERS["amqp"]))
    try:
        return sum(connection.channel().queue_declare(queue, passive=True).method.consumer_count
                   for queue in ("mailer.invoices", "billing.events"))
    except pika.exceptions.ChannelClosedByBroker:  # a queue is not declared yet
        return 0
    finally:
        if connection.is_open:
            connection.close()


def wait_for_workers(kind: str, processes: int, timeout: float = 120) -> None:
    """Until every worker process consumes, so the clock starts with the workers ready."""
    deadline = time.monotonic() + timeout
    while consuming(kind) < processes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not all consume within {timeout:.0f} s")
        time.sleep(0.2)


def peer_rate(n: int) -> float:
    """Celery's chunks of 100 no-op calls drained per second, on this run's RabbitMQ vhost and Redis."""
    env = dict(os.environ, BENCH_AMQP_URL=BROKERS["amqp"], BENCH_REDIS_URL=redis_db(BROKERS["redis"], 14),
               BENCH_COUNTER_URL=redis_db(BROKERS["redis"], 15))
    out = subprocess.run([str(PEER), "celery", "rabbitmq", "chunks100", "--n", str(n), "--reps", "1"], env=env,
                         check=True, capture_output=True, text=True).stdout
    print(f"peer: {out.strip()}")
    return float(re.search(r"drain=\s*([\d.]+)/s", out).group(1))


def py_spy(output: str) -> list[str]:
    """py-spy recording what holds the GIL, as raw collapsed stacks; the target follows (--pid or -- command)."""
    return [shutil.which("py-spy", path=Path(sys.executable).parent), "record", "--gil", "--format", "raw",
            "--nonblocking", "--output", output]


def top_frames(title: str, path: str, count: int = 25) -> None:
    """Print the functions most often on the stack (inclusive) and on top (own time) in py-spy's raw output."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [re.sub(r" \(.*?/((?:site-packages|services|shared)/.*?|[^/]*?):\d+\)$", r" (\1)", frame)
                  for frame in stack.split(";")[1:]]  # the first frame is the process
        n = int(samples)
        total += n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
    for what, table in (("on the stack", inclusive), ("on top (own time)", own)):
        print(f"py-spy, {title}, {total:,} samples, {what}:")
        for frame, n in sorted(table.items(), key=lambda item: -item[1])[:count]:
            print(f"  {n / total:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--broker", choices=sorted(BROKERS), default="amqp")
    parser.add_argument("--delay", default="0-0", help="simulated provider delay range in ms, e.g. 20-80")
    parser.add_argument("--errors", type=float, default=0.0, help="simulated provider error rate")
    parser.add_argument("--mailer-processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--peer-n", type=int, default=100_000, help="no-op calls for the peer's run")
    parser.add_argument("--no-peer", action="store_true", help="skip the peer's run")
    parser.add_argument("--profile", action="store_true", help="py-spy on the mailer worker; prints the top frames")
    args = parser.parse_args()
    low, high = (float(x) for x in args.delay.split("-"))
    databases = fresh_database_template()
    data = tempfile.mkdtemp(prefix="market-bench-")
    env = clean_env(**{
        "MARKET_DATABASE_URL": databases,
        "MARKET_BROKER_URL": BROKERS["amqp"] if args.broker == "amqp" else redis_db(BROKERS["redis"], 12),
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
        "billing": subprocess.Popen([*market, "worker", "billing", "--processes", "1", "--threads",
                                     str(args.threads)], env=env, cwd=ROOT, start_new_session=True),
    }
    peaks = dict.fromkeys(workers, 0.0)
    database_prefix = databases.rsplit("/", 1)[1].replace("{service}", "")
    try:
        wait_for_workers(args.broker, args.mailer_processes + 1)
        pids = {name: group_pids(worker.pid) for name, worker in workers.items()}
        cpu_before = {pid: cpu_seconds(pid) for group in pids.values() for pid in group}
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        spy = subprocess.Popen([*py_spy(f"{data}/mailer.txt"), "--subprocesses", "--pid", str(workers["mailer"].pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if args.profile else None
        spied = [*py_spy(f"{data}/send-invoices.txt"), "--"] if args.profile else []
        started = time.perf_counter()
        run = subprocess.Popen([*spied, *market, "send-invoices"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
        lines: list[tuple[float, str]] = []
        reader = threading.Thread(target=lambda: lines.extend((time.perf_counter() - started, line.strip())
                                                              for line in run.stdout))
        reader.start()
        while run.poll() is None:
            for name, worker in workers.items():
                peaks[name] = max(peaks[name], peak_rss_mb(worker.pid))
            pids["postgres"] = sorted(set(pids.get("postgres", [])) | set(postgres_pids(database_prefix)))
            cpu_before |= {pid: cpu_seconds(pid) for pid in pids["postgres"] if pid not in cpu_before}
            time.sleep(0.5)
        elapsed = time.perf_counter() - started
        cpu = {name: sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in group) for name, group in pids.items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu["send-invoices"] = (children.ru_utime + children.ru_stime - children_before.ru_utime
                                - children_before.ru_stime)
        reader.join()
        picked = next(at for at, line in lines if line.startswith(("Run ", "Resuming")))
        published = next(at for at, line in lines if "(those not reported done yet)" in line)
        print(f"send-invoices: invoices picked at {picked:.1f} s, every chunk published at {published:.1f} s")
        done = re.search(r"Done: ([\d,]+) sent, ([\d,]+) failed", "\n".join(line for _, line in lines))
        sent, failed = (int(x.replace(",", "")) for x in done.groups())
        rate = (sent + failed) / elapsed
        print(f"broker {args.broker}, provider delay {args.delay} ms, errors {args.errors:.2%}, "
              f"{args.mailer_processes} mailer processes x {args.threads} threads, chunks of {args.chunk}")
        print(f"END TO END: {sent + failed:,} emails ({sent:,} sent, {failed:,} failed) in {elapsed:.1f} s = "
              f"{rate:,.0f} emails/s")
        print("CPU s per 1,000 invoices: " + ", ".join(
            f"{name} {seconds * 1000 / (sent + failed):.3f}" for name, seconds in cpu.items())
            + f"; all {sum(cpu.values()) * 1000 / (sent + failed):.3f} (2 cores: {2 * elapsed:.0f} s in all)")
        print("peak RSS: " + ", ".join(f"{name} worker {mb:,.0f} MB" for name, mb in peaks.items()))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
            top_frames("mailer worker", f"{data}/mailer.txt")
            top_frames("send-invoices", f"{data}/send-invoices.txt")
    finally:
        for worker in workers.values():
            os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers.values():
            worker.wait()
        drop_databases(databases)
        shutil.rmtree(data, ignore_errors=True)
    if not args.no_peer:
        peer = peer_rate(args.peer_n)
        print(f"RATIO: {rate:,.0f} emails/s / peer {peer:,.0f} calls/s (Celery chunks100, n={args.peer_n:,}) "
              f"= {rate / peer:.2f}x")


if __name__ == "__main__":
    main()
