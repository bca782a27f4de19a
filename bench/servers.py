"""PostgreSQL, RabbitMQ and Redis servers of a run's own, on free ports, which the run may restart.

The machine's servers are shared and must not be restarted; these are started into a temporary folder and
removed with it. Each has `start()`, `stop()` and `restart(down_s)`; `url` is what a service connects to.
PostgreSQL and RabbitMQ run as their system users when this is root (`initdb` refuses root; RabbitMQ's
cookie belongs to its user), so the folders are handed to those users.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PG_BIN = Path(shutil.which("pg_ctl") or "/usr/lib/postgresql/16/bin/pg_ctl").resolve().parent
# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches user; the scripts themselves are here.
RABBITMQ_BIN = next((p for p in (Path("/usr/lib/rabbitmq/bin"),) if p.is_dir()),
                    Path(shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server").parent)
REQUIRED = ["initdb", "pg_ctl", "rabbitmq-server", "rabbitmqctl", "redis-server", "redis-cli"]


def missing() -> list[str]:
    """The server programs this machine lacks."""
    return [name for name in REQUIRED if not shutil.which(name)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(what: str, probe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def as_user(user: str, args: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run `args` as `user` when this process is root (as itself otherwise)."""
    prefix = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], env=env, capture_output=True, text=True, **kwargs)


def hand_to(user: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, user, user)


class Server:
    name = "server"

    def restart(self, down_s: float) -> tuple[float, float]:
        """Stop, stay down `down_s`, start: (when it stopped, when it answered again), as time.time()."""
        self.stop()
        stopped = time.time()
        time.sleep(down_s)
        self.start()
        return stopped, time.time()


class Postgres(Server):
    """A PostgreSQL cluster (trust authentication for `postgres`, loopback only); a restart is `pg_ctl stop -m
    fast`: every connection is cut, as in a failover or an upgrade."""

    name = "PostgreSQL"

    def __init__(self, folder: Path):
        self.folder, self.port = folder / "postgres", free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        hand_to("postgres", self.folder)
        done = as_user("postgres", [str(PG_BIN / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres",
                                    "-A", "trust", "--no-sync"])
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr}")

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=400 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        done = as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-l",
                                    str(self.folder / "log"), "-o", options, "-w", "-t", "120", "start"])
        if done.returncode:
            raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        as_user("postgres", [str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"])



class RabbitMQ(Server):
    """A RabbitMQ node of its own (name, ports, data, no plugins); a restart is `rabbitmqctl stop` and a start
    on the same data: durable queues and persistent messages come back."""

    name = "RabbitMQ"

    def __init__(self, folder: Path):
        self.folder, self.port, self.node = folder / "rabbitmq", free_port(), f"chaos{free_port()}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        hand_to("rabbitmq", self.folder)
        (self.folder / "enabled_plugins").write_text("[].\n")
        # The machine's rabbitmq.conf names its own listener: this node reads only this file.
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
                                                   "consumer_timeout = 1800000\n")
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(free_port()), "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
                    "RABBITMQ_LOG_BASE": str(self.folder / "log"), "RABBITMQ_PID_FILE": str(self.folder / "pid"),
                    "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
                    # As root the node runs as rabbitmq, with that user's Erlang cookie.
                    **({"HOME": "/var/lib/rabbitmq"} if os.geteuid() == 0 else {})}

    def start(self) -> None:
        done = as_user("rabbitmq", [str(RABBITMQ_BIN / "rabbitmq-server"), "-detached"], env=self.env,
                       cwd=self.folder)
        if done.returncode:
            raise RuntimeError(f"RabbitMQ did not start: {done.stdout}{done.stderr}")
        wait_for("RabbitMQ to boot", self._running, timeout=180)

    def _running(self) -> bool:
        return self.ctl("await_startup", "--timeout", "5").returncode == 0 and listening(self.port)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return as_user("rabbitmq", [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.env,
                       cwd=self.folder, timeout=120)

    def stop(self) -> None:
        self.ctl("stop")
        wait_for("RabbitMQ to stop", lambda: not listening(self.port), timeout=60)

    def depths(self) -> dict[str, int]:
        """Messages in every queue, ready and unacknowledged (delay queues included)."""
        done = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages")
        return {name: int(n) for name, n in (line.split() for line in done.stdout.splitlines() if line.strip())}


class Redis(Server):
    """A redis-server with an append-only file (appendfsync everysec, as compose runs the brokers' Redis); a
    restart is SHUTDOWN (which writes the file out) and a start on the same folder."""

    name = "Redis"

    def __init__(self, folder: Path):
        self.folder, self.port, self.process = folder / "redis", free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}"
        self.folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("Redis to answer", self.answers, timeout=60)

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=60)
        self.process.wait(timeout=60)

    def answers(self) -> bool:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return done.stdout.strip() == "PONG"
