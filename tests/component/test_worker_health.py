"""A worker's heartbeat says it consumes, and `market worker-health` reads it: the workers' probe."""

import os
import socket
import subprocess
import sys
import time

import dramatiq
import pytest
from click.testing import CliRunner
from dramatiq.brokers.stub import StubBroker

from services.market import cli
from shared.heartbeat import Heartbeat, health
from shared.settings import get_settings
from tests.support import wait_until

HOST = socket.gethostname()


@pytest.fixture
def stub_worker(tmp_path):
    """A Dramatiq worker consuming a stub broker's queue, with a heartbeat every 0.2 s in tmp_path."""
    broker = StubBroker()
    heartbeat = Heartbeat("mailer", tmp_path, interval_s=0.2)
    broker.add_middleware(heartbeat)
    handled = []
    dramatiq.actor(lambda n: handled.append(n), actor_name="work", queue_name="work", broker=broker)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    yield worker, heartbeat, handled
    worker.stop()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def age(path, seconds: float) -> None:
    os.utime(path, (time.time() - seconds, time.time() - seconds))


def test_a_consuming_worker_touches_its_process_file_and_is_healthy(stub_worker, tmp_path):
    worker, heartbeat, handled = stub_worker
    wait_until("a beat", heartbeat.beat, timeout=10, interval=0.05)
    assert heartbeat.path == tmp_path / f"mailer.{HOST}.{os.getpid()}" and heartbeat.path.exists()
    worker.broker.enqueue(dramatiq.Message(queue_name="work", actor_name="work", args=(1,), kwargs={}, options={}))
    wait_until("the message handled", lambda: handled == [1], timeout=10)
    assert heartbeat.beat()
    fine, sentence = health(tmp_path, "mailer", max_age_s=5)
    assert fine, sentence
    assert sentence.startswith("mailer: 1 worker process(es) consuming")


def test_a_worker_whose_consumers_stop_hearing_from_the_broker_stops_beating(stub_worker):
    worker, heartbeat, _ = stub_worker
    wait_until("a beat", heartbeat.beat, timeout=10, interval=0.05)
    worker.pause()  # its consumers stop polling the broker, as when stuck reconnecting to one that is down
    wait_until("the beat to stop", lambda: not heartbeat.beat(), timeout=10, interval=0.05)
    worker.resume()
    wait_until("the beat to come back", heartbeat.beat, timeout=10, interval=0.05)


def test_a_worker_that_never_booted_does_not_beat(tmp_path):
    assert not Heartbeat("mailer", tmp_path, interval_s=1).beat()
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_worker_removes_its_file(stub_worker):
    worker, heartbeat, _ = stub_worker
    wait_until("a beat", heartbeat.beat, timeout=10, interval=0.05)
    worker.stop()
    assert not heartbeat.path.exists()
    assert not heartbeat.beat()


def test_health_names_a_stale_process(tmp_path):
    (tmp_path / f"mailer.{HOST}.{os.getpid()}").touch()
    age(tmp_path / f"mailer.{HOST}.{os.getpid()}", 40)
    fine, sentence = health(tmp_path, "mailer", max_age_s=15)
    assert not fine
    assert f"mailer worker process {os.getpid()} last heard from its broker 40 s ago (more than 15 s)" == sentence


def test_health_ignores_dead_processes_other_hosts_and_other_services(tmp_path):
    for name in (f"mailer.{HOST}.{dead_pid()}", f"mailer.another-pod.{os.getpid()}", f"billing.{HOST}.{os.getpid()}"):
        (tmp_path / name).touch()
    fine, sentence = health(tmp_path, "mailer", max_age_s=15)
    assert not fine
    assert sentence.startswith(f"no mailer worker process on {HOST} has a heartbeat in {tmp_path}")


def test_health_wants_every_live_process_fresh(tmp_path):
    (tmp_path / f"mailer.{HOST}.{os.getpid()}").touch()
    (tmp_path / f"mailer.{HOST}.{os.getppid()}").touch()
    assert health(tmp_path, "mailer", max_age_s=15)[0]
    age(tmp_path / f"mailer.{HOST}.{os.getppid()}", 60)
    assert not health(tmp_path, "mailer", max_age_s=15)[0]


@pytest.fixture
def heartbeat_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MARKET_HEARTBEAT_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_worker_health_exits_0_on_a_fresh_heartbeat_and_1_naming_the_problem_otherwise(heartbeat_dir):
    missing = CliRunner().invoke(cli.cli, ["worker-health", "billing"])
    assert missing.exit_code == 1
    assert f"no billing worker process on {HOST} has a heartbeat in {heartbeat_dir}" in missing.output

    (heartbeat_dir / f"billing.{HOST}.{os.getpid()}").touch()
    fresh = CliRunner().invoke(cli.cli, ["worker-health", "billing"])
    assert fresh.exit_code == 0, fresh.output
    assert "billing: 1 worker process(es) consuming" in fresh.output

    age(heartbeat_dir / f"billing.{HOST}.{os.getpid()}", 20)  # the default limit: 3 beats of 5 s
    stale = CliRunner().invoke(cli.cli, ["worker-health", "billing"])
    assert stale.exit_code == 1 and "last heard from its broker 20 s ago (more than 15 s)" in stale.output
    assert CliRunner().invoke(cli.cli, ["worker-health", "billing", "--max-age", "30"]).exit_code == 0


def test_every_consuming_process_beats_once_per_interval(monkeypatch):
    from services.market import registry
    from services.market.registry import add_worker_duties
    from shared.messaging import PeriodicDuties

    broker = registry.load_actors("reports")
    add_worker_duties("reports")
    add_worker_duties("reports")  # set up twice (as the in-process tests do): still one heartbeat
    heartbeats = [m for m in broker.middleware if isinstance(m, Heartbeat)]
    assert len(heartbeats) == 1
    assert heartbeats[0].path.parent == get_settings().heartbeats_dir
    interval, beat = PeriodicDuties.of(broker).duties["reports-heartbeat"]
    assert interval == get_settings().heartbeat_interval_s == 5.0 and beat == heartbeats[0].beat
