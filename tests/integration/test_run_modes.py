"""The README's ways to run the system, as a new user runs them."""

import os
import signal
import subprocess
import sys

import pytest

from tests.integration.conftest import REDIS, ROOT, base_env, clean_brokers, free_port, wait_until
from tests.support import answers


@pytest.mark.parametrize("provider", ["stripe", "paytm", "mpesa"])
def test_the_embedded_system_runs_a_demo_purchase_for_each_provider(tmp_path, provider):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")} | {
        "MARKET_DATA_DIR": str(tmp_path / "var"), "MARKET_API_BIND": f"127.0.0.1:{port}"}
    server = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("the embedded api", lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=30)
        demo = subprocess.run([sys.executable, "-m", "services", "demo", "--api-url", f"http://127.0.0.1:{port}",
                               "--provider", provider, "--timeout", "30"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        for line in ("approved by an admin; the seller was notified (1 unread notification)",
                     f"{provider} webhook answered accepted", "is paid; the buyer's cart was cleared",
                     "billing  ledger seller:", "reports  sale of product", "media    1 download grant(s)",
                     '"The Queue Handbook" was approved'):
            assert line in demo.stdout, demo.stdout
        assert demo.stdout.count("mailer   sent to") == 3  # the seller's approval, the buyer's two
        assert len(list((tmp_path / "var" / "mail").glob("*.eml"))) == 3
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    assert "Marketplace is running embedded" in output


def test_the_demo_explains_when_nothing_is_running(tmp_path):
    demo = subprocess.run([sys.executable, "-m", "services", "demo", "--api-url", f"http://127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "MARKET_DATA_DIR": str(tmp_path)})
    assert demo.returncode == 1
    assert "Start the system first: python3 dev.py run" in demo.stderr


def test_market_up_with_servers_runs_one_process_per_service_and_stops_them_all(tmp_path, databases):
    clean_brokers(redis_db=7)
    api_port, media_port = free_port(), free_port()
    env = base_env(tmp_path, databases, MARKET_MAILER_BROKER_URL=f"{REDIS}/7",
                   MARKET_API_BIND=f"127.0.0.1:{api_port}", MARKET_MEDIA_BIND=f"127.0.0.1:{media_port}")
    up = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("the api under gunicorn", lambda: answers(f"http://127.0.0.1:{api_port}/healthz"), timeout=60)
        wait_until("media's web app", lambda: answers(f"http://127.0.0.1:{media_port}/healthz"), timeout=60)
        children = subprocess.run(["pgrep", "-g", str(up.pid), "-a", "-f", "services"], capture_output=True,
                                  text=True).stdout
        for service in ("api", "billing", "mailer", "media", "reports"):  # one worker each, on its own queues
            assert f"services.market.worker --queues {service}." in children, children
        assert children.count("gunicorn") >= 2
    finally:
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=60)[0].decode()
    assert up.returncode == 0, output
    leftover = subprocess.run(["pgrep", "-g", str(up.pid)], capture_output=True, text=True).stdout
    assert leftover == "", f"processes left running: {leftover}"


def readme_walkthrough(port: int) -> str:
    """The README's curl walkthrough, verbatim but for the port."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough -->\n```sh\n", 1)[1].split("```", 1)[0]
    return block.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")


def test_the_readme_curl_walkthrough_runs_as_written_on_the_default_relative_data_folder_twice(tmp_path):
    port = free_port()
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env["MARKET_API_BIND"] = f"127.0.0.1:{port}"
    server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "market"), "up"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("the embedded api", lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=30)
        for _ in range(2):  # a used data folder works as well as a fresh one
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_walkthrough(port)], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stdout + run.stderr
            assert "The buyer downloaded the seller's file." in run.stdout, run.stdout + run.stderr
            assert '"status":"paid"' in run.stdout.replace(" ", ""), run.stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)
    assert (tmp_path / "var" / "api.db").exists()


def test_commands_pointed_at_another_data_folder_than_the_servers_say_so_and_write_nothing(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")} | {
        "MARKET_DATA_DIR": str(tmp_path / "server"), "MARKET_API_BIND": f"127.0.0.1:{port}"}
    elsewhere = env | {"MARKET_DATA_DIR": str(tmp_path / "elsewhere")}
    server = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("the embedded api", lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=30)
        for command in (["demo"], ["create-admin", "--email", "ada@example.com", "--name", "Ada"],
                        ["pay", "1", "--token", "whatever"]):
            run = subprocess.run([sys.executable, "-m", "services", *command], env=elsewhere, cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
            assert run.returncode == 1, run.stdout + run.stderr
            assert "uses another database than this command" in run.stderr
            assert "MARKET_DATA_DIR" in run.stderr
        assert not (tmp_path / "elsewhere").exists()
        same = subprocess.run([sys.executable, "-m", "services", "create-admin", "--email", "ada@example.com",
                               "--name", "Ada"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert same.returncode == 0, same.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
