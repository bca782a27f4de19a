"""The fault run: Stripe-signed purchases at a steady rate through real processes while workers are killed and
RabbitMQ, PostgreSQL and Redis restart; then, per service, how many effects were expected, lost and doubled.

The run starts its own PostgreSQL, RabbitMQ and Redis (append-only file) on free ports (`bench/servers.py`),
since it restarts them, and an SMTP capture server. It runs `market serve api` (gunicorn) and one `market worker`
per service (api, billing, media and reports on RabbitMQ, the mailer on Redis), makes one pending order through
the API and copies it in the api's database into one order per purchase, each for its own buyer with the
product in the cart. Then it sends one signed `payment_intent.succeeded` per order at `--rate`, plus exact
duplicates of a share of them a few seconds later, and answers every non-2xx (or no answer) the way Stripe
does: the same event again after a growing backoff, until accepted. Meanwhile it kill -9s a random worker every
`--kill-every` seconds (a supervisor restarts any exited process after 1 s, as a container platform would)
and restarts each server once, in turn. Once every purchase is accepted it waits (up to `--drain-s`) for
every effect and for the outboxes, queues and delayed messages to empty, then counts per order:

    api      order paid, cart cleared            billing  purchase line, 2 ledger entries
    media    download grant                      reports  sale
    mailer   order confirmation and downloads-ready emails at the SMTP server, by order

A doubled email beyond the mailer's counted ambiguous sends (README: "Email is sent once, and an unclear send
is counted") is a failure. The run also reports every answer other than 2xx by cause, and each restart's
recovery: from the server answering again to the next accepted webhook, ledger row and email.
Exit status 1 on any loss, double, 500 (or a 503 without Retry-After, or no answer), purchase never accepted,
or anything left in an outbox, queue or failed-jobs table. Usage:

    .venv/bin/python bench/chaos.py [--purchases 1000] [--rate 30] [--kill-every 5] [--down-s 3]
                                    [--duplicates 0.1] [--drain-s 900] [--json report.json] [--keep]
"""

import argparse
import email.parser
import heapq
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import redis
import sqlalchemy as sa
import stripe
from aiosmtpd.controller import Controller
from servers import Postgres, RabbitMQ, Redis, free_port, wait_for
from support import PASSWORD, ROOT, admin_token, answers, call, clean_env

SERVICES = ["api", "billing", "mailer", "media", "reports"]
SECRET = f"whsec_{uuid.uuid4().hex}{uuid.uuid4().hex}"
SENDERS = 32  # the provider's concurrent deliveries


class Capture:
    """The SMTP server's mailbox: when each message arrived, and its subject."""

    def __init__(self):
        self.mails, self.lock = [], threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        headers = email.parser.BytesHeaderParser().parsebytes(envelope.content)
        with self.lock:
            self.mails.append((time.time(), str(headers["Subject"])))
        return "250 OK"


class Fleet:
    """The run's processes, each in its own process group; a supervisor restarts any that exited after 1 s."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.commands, self.children = env, logs, {}, {}
        self.kills, self.own_exits, self.lock, self.stopping = [], Counter(), threading.Lock(), False

    def start(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.children[name] = subprocess.Popen([sys.executable, "-m", "services", *args], env=self.env,
                                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                   start_new_session=True)
        self.commands[name] = args

    def kill_one(self, rng: random.Random) -> str:
        with self.lock:
            alive = [n for n in self.commands if n.startswith("worker-") and self.children[n].poll() is None]
            if not alive:
                return "nothing (every worker is restarting)"
            name = rng.choice(alive)
            os.killpg(self.children[name].pid, signal.SIGKILL)
            self.kills.append((time.time(), name))
        return name

    def supervise(self) -> None:
        while not self.stopping:
            with self.lock:
                for name, child in self.children.items():
                    if child.poll() is not None and not self.stopping:
                        if not any(n == name and time.time() - t < 5 for t, n in self.kills):
                            self.own_exits[name] += 1
                        time.sleep(1)
                        self.start(name, *self.commands[name])
            time.sleep(0.5)

    def stop(self) -> None:
        self.stopping = True
        with self.lock:
            for child in self.children.values():
                if child.poll() is None:
                    os.killpg(child.pid, signal.SIGTERM)
            for child in self.children.values():
                try:
                    child.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)

    def problems(self) -> dict[str, int]:
        """ERROR lines and tracebacks in each process's log."""
        found = {}
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace")
            found[log.stem] = text.count(" ERROR ") + text.count("Traceback")
        return found


class Provider:
    """Delivers each purchase's webhook like Stripe: concurrent, retried with backoff until a 2xx."""

    def __init__(self, port: int, deadline_s: float):
        self.port, self.deadline = port, time.monotonic() + deadline_s
        self.heap, self.cv, self.pending, self.seq = [], threading.Condition(), 0, 0
        self.answers, self.accepted, self.successes = Counter(), {}, []  # successes: (sent at, answered at)

    def schedule(self, due: float, order: dict, body: bytes, attempt: int = 0) -> None:
        with self.cv:
            self.seq += 1
            self.pending += attempt == 0
            heapq.heappush(self.heap, (due, self.seq, order, body, attempt))
            self.cv.notify()

    def run(self) -> None:
        threads = [threading.Thread(target=self._sender, daemon=True) for _ in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _next(self):
        with self.cv:
            while True:
                if (self.pending == 0 and not self.heap) or time.monotonic() > self.deadline:
                    self.cv.notify_all()
                    return None
                if self.heap and self.heap[0][0] <= time.monotonic():
                    return heapq.heappop(self.heap)
                self.cv.wait(timeout=min(0.5, self.heap[0][0] - time.monotonic()) if self.heap else 0.5)

    def _sender(self) -> None:
        while (item := self._next()) is not None:
            _, _, order, body, attempt = item
            sent = time.time()
            cause = self._deliver(body)
            with self.cv:
                self.answers[cause] += 1
                if cause == "2xx":
                    self.successes.append((sent, time.time()))
                    if attempt >= 0:  # the original delivery (a duplicate is scheduled with attempt -1)
                        self.accepted.setdefault(order["reference"], time.time())
                        self.pending -= 1
                        self.cv.notify_all()
                    continue
            if attempt >= 0:  # a failed duplicate is not retried: the original is what must get through
                backoff = min(2 ** attempt, 30) * random.uniform(0.5, 1.0)
                self.schedule(time.monotonic() + backoff, order, body, attempt + 1)

    def _deliver(self, body: bytes) -> str:
        """Send once, on a new connection as a provider does; "2xx", or the answer's status and error (and
        whether it said Retry-After), or why there was no answer."""
        signature = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/webhooks/stripe", body,
                               {"Stripe-Signature": signature, "Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return f"no answer ({type(exc).__name__})"
        finally:
            connection.close()
        if 200 <= response.status < 300:
            return "2xx"
        try:
            error = json.loads(data).get("error", "")
        except ValueError:
            error = data[:80].decode(errors="replace")
        retry_after = "with Retry-After" if response.headers.get("Retry-After") else "WITHOUT Retry-After"
        return f"{response.status} {retry_after}: {error}"


def setup_orders(api: str, env: dict, database: str, count: int) -> list[dict]:
    """One pending order made through the API, copied into `count` orders, each of its own buyer with the
    product in the cart."""
    seller = call(api, "POST", "/users", {"email": f"seller-{uuid.uuid4().hex[:8]}@example.com", "name": "Sam",
                                         "password": PASSWORD})
    product = call(api, "POST", "/products", {"title": "Chaos Guide", "price_minor": 2500, "currency": "USD"},
                   seller["token"])
    boundary, content = "chaosb0undary", b"%PDF-1.4 the file every buyer downloads\n"
    upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"guide.pdf\"\r\n"
              "Content-Type: application/pdf\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    connection = http.client.HTTPConnection("127.0.0.1", int(api.rsplit(":", 1)[1]), timeout=30)
    connection.request("PUT", f"/products/{product['id']}/file", upload,
                       {"Authorization": f"Bearer {seller['token']}",
                        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert connection.getresponse().status == 200, "the product file upload failed"
    call(api, "POST", f"/admin/products/{product['id']}/approve", token=admin_token(env))
    buyer = call(api, "POST", "/users", {"email": f"buyer-{uuid.uuid4().hex[:8]}@example.com", "name": "Bea",
                                        "password": PASSWORD})
    call(api, "POST", "/cart/items", {"product_id": product["id"]}, buyer["token"])
    template = call(api, "POST", "/orders", {"provider": "stripe"}, buyer["token"])["id"]
    tag = uuid.uuid4().hex[:8]
    engine = sa.create_engine(database, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        params = {"tag": tag, "n": count, "template": template, "product": product["id"]}
        conn.execute(sa.text("INSERT INTO users (email, name) SELECT 'chaos-' || :tag || '-' || g || "
                             "'@example.com', 'Buyer ' || g FROM generate_series(1, :n) g"), params)
        conn.execute(sa.text("INSERT INTO cart_items (buyer_id, product_id) SELECT id, :product FROM users "
                             "WHERE email LIKE 'chaos-' || :tag || '-%'"), params)
        orders = conn.execute(sa.text(
            "INSERT INTO orders (reference, buyer_id, status, provider, total_minor, currency, created_at) "
            "SELECT 'chaos_' || :tag || '_' || u.id, u.id, 'pending', t.provider, t.total_minor, t.currency, now() "
            "FROM users u, orders t WHERE t.id = :template AND u.email LIKE 'chaos-' || :tag || '-%' "
            "RETURNING id, reference, buyer_id, total_minor, currency"), params).mappings().all()
        conn.execute(sa.text(
            "INSERT INTO order_lines (order_id, product_id, seller_id, title, price_minor, file_key, file_sha256) "
            "SELECT o.id, l.product_id, l.seller_id, l.title, l.price_minor, l.file_key, l.file_sha256 "
            "FROM orders o JOIN order_lines l ON l.order_id = :template WHERE o.reference LIKE 'chaos_' || :tag "
            "|| '_%'"), params)
    engine.dispose()
    return [dict(o) for o in orders]


def event_body(order: dict) -> bytes:
    return json.dumps({
        "id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": f"pi_{uuid.uuid4().hex}", "object": "payment_intent",
                            "amount_received": order["total_minor"], "currency": order["currency"].lower(),
                            "metadata": {"order_reference": order["reference"]}}}}).encode()


class Books:
    """What the services' databases, the brokers and the mailbox hold."""

    def __init__(self, pg: Postgres, rabbit: RabbitMQ, redis_server: Redis, capture: Capture, orders: list[dict]):
        self.engines = {s: sa.create_engine(f"{pg.url}/market_{s}", poolclass=sa.pool.NullPool) for s in SERVICES}
        self.rabbit, self.redis, self.capture = rabbit, redis.Redis.from_url(f"{redis_server.url}/0"), capture
        self.ids = [o["id"] for o in orders]
        self.refs = {o["reference"]: o["id"] for o in orders}

    def _per_order(self, service: str, sql: str) -> Counter:
        with self.engines[service].connect() as conn:
            return Counter(dict(conn.execute(sa.text(sql), {"ids": self.ids}).all()))

    def effects(self) -> dict[str, tuple[Counter, int]]:
        """Each effect: (count per order id, how many each order should have)."""
        confirmations, downloads = Counter(), Counter()
        with self.capture.lock:
            subjects = [subject for _, subject in self.capture.mails]
        for subject in subjects:
            if subject.startswith("Order ") and (order := self.refs.get(subject.split()[1])):
                confirmations[order] += 1
            elif subject.startswith("Your downloads for order "):
                downloads[int(subject.split()[4])] += 1
        paid = "SELECT id, 1 FROM orders WHERE id = ANY(:ids) AND status = 'paid'"
        cleared = ("SELECT o.id, 1 FROM orders o WHERE o.id = ANY(:ids) AND NOT EXISTS "
                   "(SELECT 1 FROM cart_items c WHERE c.buyer_id = o.buyer_id)")
        grouped = "SELECT order_id, count(*) FROM {} WHERE order_id = ANY(:ids) GROUP BY order_id"
        return {"api: order paid": (self._per_order("api", paid), 1),
                "api: cart cleared": (self._per_order("api", cleared), 1),
                "billing: purchase line": (self._per_order("billing", grouped.format("purchase_lines")), 1),
                "billing: ledger entries": (self._per_order("billing", grouped.format("ledger_entries")), 2),
                "media: download grant": (self._per_order("media", grouped.format("download_grants")), 1),
                "reports: sale": (self._per_order("reports", grouped.format("sales")), 1),
                "mailer: order confirmation email": (confirmations, 1),
                "mailer: downloads-ready email": (downloads, 1)}

    def leftovers(self) -> dict[str, int]:
        """What should be empty once the run has drained: outboxes, failed jobs, queues (delayed ones too)."""
        left = {}
        for service, engine in self.engines.items():
            with engine.connect() as conn:
                left[f"{service} outbox unsent"] = conn.scalar(sa.text(
                    "SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
                left[f"{service} failed jobs"] = conn.scalar(sa.text("SELECT count(*) FROM failed_jobs"))
        left["RabbitMQ messages"] = sum(self.rabbit.depths().values())
        left |= {f"  of which on {queue}": n for queue, n in self.rabbit.depths().items() if n}
        left["Redis messages"] = sum(self.redis.hlen(k) for k in self.redis.scan_iter("dramatiq:*.msgs"))
        with self.engines["mailer"].connect() as conn:
            left["mailer emails not sent"] = conn.scalar(sa.text(
                "SELECT count(*) FROM outbound_messages WHERE status <> 'sent'"))
        return left

    def ambiguous_sends(self) -> int:
        with self.engines["mailer"].connect() as conn:
            return conn.scalar(sa.text("SELECT coalesce(sum(ambiguous), 0) FROM outbound_messages"))

    def first_after(self, moment: float) -> dict[str, float | None]:
        """Seconds from `moment` to the next ledger row and the next email."""
        with self.engines["billing"].connect() as conn:
            ledger = conn.scalar(sa.text("SELECT extract(epoch FROM min(created_at)) FROM ledger_entries "
                                         "WHERE created_at > to_timestamp(:t)"), {"t": moment})
        with self.capture.lock:
            mail = min((t for t, _ in self.capture.mails if t > moment), default=None)
        return {"ledger row": ledger and round(float(ledger) - moment, 1), "email": mail and round(mail - moment, 1)}


def tally(effects: dict[str, tuple[Counter, int]], ids: list[int]) -> dict[str, dict[str, int]]:
    return {name: {"expected": len(ids), "lost": sum(counts[i] < each for i in ids),
                   "doubled": sum(counts[i] > each for i in ids)}
            for name, (counts, each) in effects.items()}


def restarts_in_turn(args, servers: list, drive_s: float, started: float, restarts: list) -> None:
    """Each server restarted once, spread over the time the purchases are sent."""
    for i, server in enumerate(servers):
        time.sleep(max(0.0, started + drive_s * (i + 1) / (len(servers) + 1) - time.time()))
        print(f"[{time.time() - started:6.1f} s] restarting {server.name} (down {args.down_s:.0f} s)", flush=True)
        stopped, up = server.restart(args.down_s)
        restarts.append({"server": server.name, "stopped": stopped, "up": up})
        print(f"[{up - started:6.1f} s] {server.name} answers again ({up - stopped:.1f} s down)", flush=True)


def kills(args, fleet: Fleet, started: float, until) -> None:
    """A kill -9 of a random worker every `--kill-every` seconds until `until()` says stop."""
    rng = random.Random(args.seed)
    while True:
        time.sleep(args.kill_every)
        if until():
            return
        print(f"[{time.time() - started:6.1f} s] kill -9 {fleet.kill_one(rng)}", flush=True)


def drain(books: Books, provider: Provider, started: float, deadline_s: float) -> None:
    """Wait until every effect is there and nothing is left anywhere (or the deadline passes)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        missing = sum(r["lost"] for r in tally(books.effects(), books.ids).values())
        left = sum(books.leftovers().values())
        print(f"[{time.time() - started:6.1f} s] accepted {len(provider.accepted)}/{len(books.ids)}, effects missing "
              f"{missing}, left in outboxes/queues/failed jobs {left}", flush=True)
        if not missing and not left:
            return
        time.sleep(5)


def run(args, folder: Path) -> dict:
    capture = Capture()
    smtp = Controller(capture, hostname="127.0.0.1", port=free_port())
    smtp.start()
    pg, rabbit, redis_server = Postgres(folder), RabbitMQ(folder), Redis(folder)
    servers = [rabbit, pg, redis_server]
    fleet = None
    try:
        for server in servers:
            server.start()
        port = free_port()
        env = clean_env(MARKET_DATA_DIR=str(folder / "var"), MARKET_DATABASE_URL=f"{pg.url}/market_{{service}}",
                        MARKET_BROKER_URL=rabbit.url, MARKET_MAILER_BROKER_URL=f"{redis_server.url}/0",
                        MARKET_MAIL_TRANSPORT="smtp", MARKET_SMTP_HOST="127.0.0.1", MARKET_SMTP_PORT=str(smtp.port),
                        MARKET_API_BIND=f"127.0.0.1:{port}", MARKET_MEDIA_BIND=f"127.0.0.1:{free_port()}",
                        MARKET_STRIPE_WEBHOOK_SECRET=SECRET, MARKET_LOG_LEVEL="WARNING",
                        MARKET_MAIL_AMBIGUOUS_AFTER_S=str(args.ambiguous_after_s), PYTHONUNBUFFERED="1")
        fleet = Fleet(env, folder)
        migrate = subprocess.run([sys.executable, "-m", "services", "migrate"], env=env, cwd=ROOT,
                                 capture_output=True, text=True)
        if migrate.returncode:
            raise RuntimeError(f"market migrate failed: {migrate.stdout}{migrate.stderr}")
        fleet.start("api-web", "serve", "api")
        for service in SERVICES:
            fleet.start(f"worker-{service}", "worker", service)
        api = f"http://127.0.0.1:{port}"
        wait_for("the api", lambda: answers(f"{api}/healthz"), timeout=120)
        orders = setup_orders(api, env, f"{pg.url}/market_api", args.purchases)
        books = Books(pg, rabbit, redis_server, capture, orders)
        threading.Thread(target=fleet.supervise, daemon=True).start()

        drive_s = args.purchases / args.rate
        provider = Provider(port, deadline_s=drive_s + args.drain_s)
        started, rng = time.time(), random.Random(args.seed)
        for i, order in enumerate(orders):
            body, due = event_body(order), time.monotonic() + i / args.rate
            provider.schedule(due, order, body)
            if rng.random() < args.duplicates:
                provider.schedule(due + rng.uniform(0.5, 5), order, body, attempt=-1)
        print(f"{args.purchases} purchases at {args.rate}/s ({drive_s:.0f} s), {args.duplicates:.0%} duplicated; "
              f"kill -9 of a random worker every {args.kill_every:.0f} s; RabbitMQ, PostgreSQL, Redis restarted "
              "once each", flush=True)
        restarts = []
        restarter = threading.Thread(target=restarts_in_turn, args=(args, servers, drive_s, started, restarts))
        restarter.start()
        killer = threading.Thread(target=kills, args=(args, fleet, started, lambda: time.time() > started + drive_s
                                                      and not restarter.is_alive()))
        killer.start()
        provider.run()
        restarter.join()
        killer.join()
        drain(books, provider, started, args.drain_s)
        effects = books.effects()
        return {"purchases": args.purchases, "rate": args.rate, "seconds": round(time.time() - started, 1),
                "accepted": len(provider.accepted), "answers": dict(provider.answers),
                "effects": tally(effects, books.ids), "ambiguous sends": books.ambiguous_sends(),
                "leftovers": books.leftovers(), "kills": [name for _, name in fleet.kills],
                "exits not caused by the run": dict(fleet.own_exits),
                "restarts": [{"server": r["server"], "down s": round(r["up"] - r["stopped"], 1),
                              "to next accepted webhook s": next_success(provider.successes, r["up"]),
                              **{f"to next {k} s": v for k, v in books.first_after(r["up"]).items()}}
                             for r in restarts],
                "ERROR lines and tracebacks": fleet.problems()}
    finally:
        if fleet:
            fleet.stop()
        for server in servers:
            server.stop()
        smtp.stop()


def next_success(successes: list[tuple[float, float]], moment: float) -> float | None:
    answered = [done for sent, done in successes if sent >= moment]
    return round(min(answered) - moment, 1) if answered else None


def failures(report: dict) -> list[str]:
    found = [f"{name}: {r['lost']} lost, {r['doubled']} doubled" for name, r in report["effects"].items()
             if r["lost"] or (r["doubled"] and not name.startswith("mailer"))]
    doubled_mail = sum(r["doubled"] for name, r in report["effects"].items() if name.startswith("mailer"))
    if doubled_mail > report["ambiguous sends"]:
        found.append(f"{doubled_mail} doubled emails, only {report['ambiguous sends']} counted ambiguous")
    found += [f"{count} answers: {cause}" for cause, count in report["answers"].items()
              if cause != "2xx" and not (cause.startswith("503 with Retry-After"))]
    if report["accepted"] < report["purchases"]:
        found.append(f"only {report['accepted']} of {report['purchases']} purchases accepted")
    found += [f"{what}: {n}" for what, n in report["leftovers"].items() if n]
    return found


def print_report(report: dict) -> None:
    print(f"\n{report['purchases']} purchases at {report['rate']}/s: {report['accepted']} accepted; "
          f"{report['seconds']} s in all")
    print(f"{'effect':<36}{'expected':>9}{'lost':>7}{'doubled':>9}")
    for name, r in report["effects"].items():
        print(f"{name:<36}{r['expected']:>9}{r['lost']:>7}{r['doubled']:>9}")
    print(f"mailer ambiguous sends (counted, may have gone out twice): {report['ambiguous sends']}")
    print("answers by cause:", *(f"  {n:>6}  {cause}" for cause, n in sorted(report["answers"].items())), sep="\n")
    print(f"kill -9: {len(report['kills'])} ({', '.join(f'{n} {s}' for s, n in Counter(report['kills']).items())});"
          f" exits not caused by the run: {report['exits not caused by the run'] or 'none'}")
    for r in report["restarts"]:
        print(f"{r['server']} restart: down {r['down s']} s; then next accepted webhook "
              f"{r['to next accepted webhook s']} s, ledger row {r['to next ledger row s']} s, "
              f"email {r['to next email s']} s")
    print(f"left at the end: {report['leftovers']}")
    print(f"ERROR lines and tracebacks per log: {report['ERROR lines and tracebacks']}")
    problems = failures(report)
    print("FAILED:" if problems else "PASSED: nothing lost, nothing doubled, no 500", *problems, sep="\n  ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purchases", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=30.0, help="purchases per second")
    parser.add_argument("--kill-every", type=float, default=5.0, help="seconds between kill -9s of a worker")
    parser.add_argument("--down-s", type=float, default=3.0, help="how long each server stays down")
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of webhooks delivered twice")
    parser.add_argument("--drain-s", type=float, default=900.0, help="how long to wait for every effect")
    parser.add_argument("--ambiguous-after-s", type=float, default=30.0,
                        help="MARKET_MAIL_AMBIGUOUS_AFTER_S (90 by default; shorter so a run drains sooner)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs and the servers' data")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mkt-chaos-"))
    folder.chmod(0o755)  # the servers run as their own users
    try:
        report = run(args, folder)
    finally:
        if args.keep:
            print(f"logs and data kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report | {"failures": failures(report)}, indent=2))
    return 1 if failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
