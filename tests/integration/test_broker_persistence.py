"""A worker refuses a broker Redis that would lose its queues on a restart (no append-only file), and starts
on one that keeps them, whether it answers CONFIG or only INFO."""

import pytest

from tests.integration.conftest import base_env, wait_until

NO_CONFIG = ("--rename-command", "CONFIG", "")  # as managed Redis services often do


def mailer_env(tmp_path, databases, url: str) -> dict:
    env = base_env(tmp_path, databases, MARKET_MAILER_BROKER_URL=f"{url}/0")
    del env["MARKET_ALLOW_VOLATILE_REDIS"]
    return env


@pytest.mark.parametrize("options", [("--appendonly", "no"), ("--appendonly", "no", *NO_CONFIG)],
                         ids=["config", "info-only"])
def test_a_worker_refuses_a_broker_redis_without_an_append_only_file(tmp_path, databases, processes, redis_server,
                                                                    options):
    broker = redis_server(*options)
    processes.env = mailer_env(tmp_path, databases, broker.url)

    worker = processes.start("worker", "worker", "mailer")
    wait_until("the worker to exit", lambda: worker.poll() is not None, timeout=60)
    assert worker.returncode != 0
    log = processes.log("worker")
    assert "broker Redis keeps no append-only file" in log and "MARKET_ALLOW_VOLATILE_REDIS=1" in log
    assert "ready for action" not in log


@pytest.mark.parametrize("options", [("--appendonly", "yes"), ("--appendonly", "yes", *NO_CONFIG)],
                         ids=["config", "info-only"])
def test_a_worker_starts_on_a_broker_redis_with_an_append_only_file(tmp_path, databases, processes, redis_server,
                                                                    options):
    broker = redis_server(*options)
    processes.env = mailer_env(tmp_path, databases, broker.url)
    processes.run("migrate")

    worker = processes.start("worker", "worker", "mailer")
    wait_until("the worker to be ready", lambda: "Worker process is ready for action" in processes.log("worker"),
               timeout=60)
    assert worker.poll() is None
    assert "append-only file" not in processes.log("worker")


def test_a_volatile_broker_redis_is_allowed_with_a_warning_when_the_setting_says_so(
        tmp_path, databases, processes, redis_server):
    broker = redis_server("--appendonly", "no")
    processes.env = mailer_env(tmp_path, databases, broker.url) | {"MARKET_ALLOW_VOLATILE_REDIS": "1"}
    processes.run("migrate")

    worker = processes.start("worker", "worker", "mailer")
    wait_until("the worker to be ready", lambda: "Worker process is ready for action" in processes.log("worker"),
               timeout=60)
    assert worker.poll() is None
    assert "keeps NO append-only file" in processes.log("worker")
