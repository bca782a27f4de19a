"""The integration tier: the machine's real PostgreSQL, RabbitMQ and Redis, and real processes.

A server that cannot be reached skips these tests when run by hand and FAILS them when
`CI` is set, so a green CI means the real servers were used.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest
import redis
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from tests.support import free_port, wait_until  # noqa: F401 (the tier's tests import them from here)

SERVERS = {"PostgreSQL": ("127.0.0.1", 5432), "RabbitMQ": ("127.0.0.1", 5672), "Redis": ("127.0.0.1", 6379)}
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
# Two runs at once (two checkouts) would take each other's messages: give one its own vhost and Redis.
AMQP = os.environ.get("MARKET_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS = os.environ.get("MARKET_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ROOT = Path(__file__).resolve().parents[2]
QUEUES = ["api.webhooks", "api.events", "billing.events", "mailer.events", "mailer.outbound", "mailer.invoices",
          "mailer.messages", "mailer.high_priority", "mailer.bulk_messages", "media.events", "reports.events"]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def servers():
    missing = [f"{name} at {host}:{port}" for name, (host, port) in SERVERS.items() if not _reachable(host, port)]
    if missing:
        message = f"integration servers unreachable: {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
        pytest.skip(message)


class Databases:
    """Fresh PostgreSQL databases, one per service, dropped afterwards."""

    def __init__(self, prefix: str):
        self.prefix = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.template = f"{PG}/{self.prefix}_{{service}}"
        self._engines: dict[str, sa.Engine] = {}

    def url(self, service: str) -> str:
        return self.template.format(service=service)

    def rows(self, service: str, sql: str, **params) -> list[dict]:
        if service not in self._engines:
            self._engines[service] = sa.create_engine(self.url(service), poolclass=sa.pool.NullPool)
        with self._engines[service].connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def execute(self, service: str, sql: str, **params) -> None:
        with sa.create_engine(self.url(service), poolclass=sa.pool.NullPool).begin() as conn:
            conn.execute(sa.text(sql), params)

    def drop(self) -> None:
        admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        with admin.connect() as conn:
            names = conn.scalars(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                 {"p": f"{self.prefix}_%"}).all()
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def databases(request):
    dbs = Databases(f"mkt_{request.node.name[:20].lower().replace('[', '_').replace(']', '')}")
    yield dbs
    dbs.drop()


def clean_brokers(redis_db: int) -> None:
    """Start from empty queues: delete ours on RabbitMQ, flush the Redis database used."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    for queue in QUEUES:
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
    connection.close()
    redis.Redis.from_url(f"{REDIS}/{redis_db}").flushdb()


class Processes:
    """Real child processes (`python -m services ...`), each in its own process group, logs in files."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.children = env, logs, {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        child = subprocess.Popen([sys.executable, "-m", "services", *args], env=self.env, cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children[name] = child
        return child

    def run(self, *args: str) -> str:
        """Run a command to completion (e.g. `migrate`); its output on failure."""
        done = subprocess.run([sys.executable, "-m", "services", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"market {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.children.pop(name)
        os.killpg(child.pid, sig)
        child.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.children):
            child = self.children[name]
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for name in list(self.children):
            child = self.children.pop(name)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


# Real-looking secrets, new for every run: with real brokers the processes refuse the repository's dev values.
SECRETS = {"MARKET_STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_urlsafe(32)}",
           "MARKET_PAYTM_MERCHANT_KEY": secrets.token_urlsafe(12),  # 16 characters: an AES-128 key
           "MARKET_MPESA_CALLBACK_SECRET": secrets.token_urlsafe(32),
           "MARKET_MEDIA_SIGNING_SECRET": secrets.token_urlsafe(32)}


# This machine's Redis (REDIS) keeps nothing on disk; workers refuse such a broker unless told it is fine here.
VOLATILE_REDIS_OK = {"MARKET_ALLOW_VOLATILE_REDIS": "1"}


def base_env(tmp_path: Path, databases: Databases, **overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update({"MARKET_DATA_DIR": str(tmp_path / "data"), "MARKET_DATABASE_URL": databases.template,
                "MARKET_BROKER_URL": AMQP, "MARKET_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", **SECRETS,
                **VOLATILE_REDIS_OK})
    env.update(overrides)
    return env


class RedisServer:
    """A redis-server of our own on a free port, which a test may stop (the machine's one it must not)."""

    def __init__(self, directory: Path, *options: str):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--dir", str(directory), "--save", "", *options],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(f"redis-server on port {self.port}", self._answers, timeout=20)

    def _answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def redis_server(tmp_path):
    """Start a Redis of our own with the given options; every one started is stopped afterwards."""
    started = []

    def start(*options: str) -> RedisServer:
        started.append(RedisServer(tmp_path / f"redis-{len(started)}", *options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def processes(tmp_path):
    procs = Processes({}, tmp_path)
    yield procs
    procs.stop_all()
    if os.environ.get("MARKET_SHOW_LOGS"):
        for log in sorted(tmp_path.glob("*.log")):
            print(f"==== {log.name}\n{log.read_text(errors='replace')[-3000:]}")


class Inbox:
    """An SMTP server's mailbox."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode("utf-8", errors="replace"))
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()
