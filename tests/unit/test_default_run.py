"""The default embedded run exactly as a new user starts it: relative `var/`, no MARKET_ variables."""

import email
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from email import policy
from pathlib import Path

import pytest

from tests.support import free_port, wait_until

DEMO_FILE = b"Chapter 1: messages are cheap, lost messages are not.\n"  # what `market demo` uploads


def get(url: str):
    """(status, headers, body) of a GET; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
    except OSError:
        return None, None, None


def download_url(mail_dir: Path) -> str | None:
    """The first link of the "Your downloads" email among the .eml files, once it is there."""
    for path in sorted(mail_dir.glob("*.eml")):
        mail = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if mail["Subject"].startswith("Your downloads"):
            return re.search(r"https?://\S+/downloads/\S+", mail.get_body(("plain",)).get_content()).group(0)
    return None


@pytest.fixture
def embedded(tmp_path):
    """`market up` started in an empty folder with no MARKET_ variables: data goes to the relative `var`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    server = subprocess.Popen([sys.executable, "-m", "services", "up", "--bind", f"127.0.0.1:{port}"], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until("the embedded api", lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
        yield {"api": f"http://127.0.0.1:{port}", "cwd": tmp_path, "env": env}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=30)


def test_the_link_in_the_demo_buyers_email_downloads_the_file_with_the_default_relative_data_dir(embedded):
    demo = subprocess.run([sys.executable, "-m", "services", "demo", "--api-url", embedded["api"], "--timeout", "30"],
                          env=embedded["env"], cwd=embedded["cwd"], capture_output=True, text=True, timeout=90)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    url = wait_until("the downloads email", lambda: download_url(embedded["cwd"] / "var" / "mail"))

    answers = [get(url) for _ in range(2)]
    counted = sqlite3.connect(embedded["cwd"] / "var" / "media.db").execute(
        "SELECT download_count FROM download_grants").fetchone()[0]
    assert counted == [status for status, _, _ in answers].count(200)  # an attempt that failed is not counted
    status, headers, body = answers[-1]
    assert status == 200, body
    assert body == DEMO_FILE
    assert headers["Content-Disposition"] == 'attachment; filename=queue-handbook.txt'
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (embedded["cwd"] / "var" / "storage" / "products").is_dir()  # under the working directory
