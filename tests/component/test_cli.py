"""The `market` command line: what it starts and what it says about itself."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.market import cli, runner
from shared.settings import SERVICES, get_settings
from tests.unit.test_compose import resolve_market_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def started(monkeypatch):
    """What `market up` would have run, instead of running it: the API's bind address it would use."""
    binds = []
    monkeypatch.setattr(runner, "run_embedded", lambda: binds.append(get_settings().api_bind))
    yield binds
    get_settings.cache_clear()


REAL_SECRETS = {"MARKET_STRIPE_WEBHOOK_SECRET": "whsec_" + "a1" * 16, "MARKET_PAYTM_MERCHANT_KEY": "Kx7#pQ2z!mW9vL4s",
                "MARKET_MPESA_CALLBACK_SECRET": "m2" * 16, "MARKET_MEDIA_SIGNING_SECRET": "s3" * 16}


@pytest.mark.parametrize(("argv", "bind"), [
    (["up"], "127.0.0.1:8000"),
    (["up", "--port", "9000"], "127.0.0.1:9000"),
    (["up", "--bind", "0.0.0.0:8100"], "0.0.0.0:8100"),
    (["up", "--bind", "0.0.0.0:8100", "--port", "9000"], "0.0.0.0:9000"),
])
def test_up_listens_where_bind_and_port_say(monkeypatch, started, argv, bind):
    monkeypatch.setenv("MARKET_API_BIND", "127.0.0.1:8000")
    for name, value in REAL_SECRETS.items():  # beyond loopback, development secrets are refused
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli.cli, argv)
    assert result.exit_code == 0, result.output
    assert started == [bind]


def test_up_refuses_a_port_that_is_not_one(started):
    result = CliRunner().invoke(cli.cli, ["up", "--port", "70000"])
    assert result.exit_code == 2
    assert started == []


def test_the_commands_dev_py_documents_exist():
    doc = (ROOT / "dev.py").read_text()
    for extra in re.findall(r"python3 dev\.py run ([^`\n]+)`", doc):
        resolve_market_command(cli.cli, ["up", *extra.split()])


@pytest.mark.parametrize("command", ["list", "retry", "forget", "flush"])
def test_every_failed_jobs_command_describes_itself(command):
    result = CliRunner().invoke(cli.cli, ["failed", command, "--help"])
    assert result.exit_code == 0
    description = result.output.split("\n\n")[1].strip()
    assert not description.startswith("Options"), result.output
    assert len(description.split()) >= 4, description
    listed = CliRunner().invoke(cli.cli, ["failed", "--help"]).output
    assert re.search(rf"^  {command}\s+\S", listed, re.MULTILINE), listed  # a summary in the group's help too


def test_serve_runs_threaded_gunicorn_workers_with_the_scrubbing_logger(monkeypatch):
    run = []
    monkeypatch.setattr(os, "execvp", lambda file, args: run.append(args))
    assert CliRunner().invoke(cli.cli, ["serve", "api", "--threads", "12"]).exit_code == 0
    assert CliRunner().invoke(cli.cli, ["serve", "media"]).exit_code == 0
    with_option, default = run
    assert with_option[with_option.index("--worker-class") + 1] == "gthread"
    assert with_option[with_option.index("--threads") + 1] == "12"
    assert default[default.index("--threads") + 1] == str(get_settings().web_threads)
    assert default[default.index("--logger-class") + 1] == "shared.observability.GunicornLogger"


def test_starting_the_embedded_workers_warns_about_no_middleware_added_twice(tmp_path):
    script = ("import logging; logging.basicConfig(level=logging.DEBUG)\n"
              "from services.market import registry, runner\n"
              "registry.migrate_all()\n"
              "for worker in runner.start_embedded_workers(threads=1): worker.stop()\n"
              "print('started and stopped')\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**clean, "MARKET_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "started and stopped" in done.stdout
    assert "middleware of the same type" not in done.stderr, done.stderr


def test_worker_passes_a_short_boot_wait_to_dramatiq(monkeypatch):
    run = []
    monkeypatch.setattr(os, "execvp", lambda file, args: run.append(args))
    assert CliRunner().invoke(cli.cli, ["worker", "billing"]).exit_code == 0
    args = run[0]
    assert args[args.index("--worker-fork-timeout") + 1] == str(get_settings().worker_boot_wait_ms) == "1000"


def test_no_middleware_has_fork_processes_so_a_short_boot_wait_loses_nothing():
    # Dramatiq's boot wait only starts middleware "forks" after the workers booted; with none, it guards nothing.
    from services.market import registry

    for service in SERVICES:
        broker = registry.load_actors(service)
        assert [m for m in broker.middleware if m.forks] == [], service
