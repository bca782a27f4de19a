"""What reaches Sentry carries no secrets or personal data.

A real sentry-sdk, started by `shared.observability.setup`, sends to a local HTTP receiver standing in for
Sentry. Sentry's init is process-global, so each scenario runs in its own Python subprocess.
"""

import gzip
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0


class Receiver:
    """Stores every envelope POSTed to /api/<project>/envelope/, decompressed."""

    def __init__(self):
        self.envelopes: list[bytes] = []
        self.problems: list[str] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path_ok = self.path.startswith("/api/") and self.path.rstrip("/").endswith("/envelope")
                try:
                    decoded = _decompress(body, self.headers.get("Content-Encoding", ""))
                except Exception as exc:  # reported through `problems`, not hidden
                    decoded, problem = None, f"cannot decode {self.headers.get('Content-Encoding')!r}: {exc}"
                else:
                    problem = None if path_ok else f"unexpected path {self.path}"
                with receiver._changed:
                    if decoded is not None and path_ok:
                        receiver.envelopes.append(decoded)
                    if problem:
                        receiver.problems.append(problem)
                    receiver._changed.notify_all()
                self.send_response(200 if path_ok else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for_event(self, matches) -> tuple[dict, bytes]:
        """The first event item that `matches`, with the raw envelope it came in; fails at the deadline."""
        found = None

        def search() -> bool:
            nonlocal found
            for raw in self.envelopes:
                for item_type, payload in _items(raw):
                    if item_type == "event" and matches(payload):
                        found = (payload, raw)
                        return True
            return False

        with self._changed:
            arrived = self._changed.wait_for(search, timeout=DEADLINE_S)
        assert arrived, (f"no matching event reached the receiver within {DEADLINE_S} s; problems={self.problems}; "
                         f"received={[raw[:300] for raw in self.envelopes]}")
        return found

    def raw(self) -> str:
        """Everything received so far, decompressed, as one string."""
        with self._changed:
            return b"\n".join(self.envelopes).decode("utf-8", "replace")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # only sent by the SDK when brotli is installed

        return brotli.decompress(body)
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


def _items(raw: bytes):
    """(type, parsed payload) of each item in a Sentry envelope: a header line, then header/payload pairs."""
    _, _, rest = raw.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[:header["length"]], rest[header["length"]:]
            rest = rest[1:] if rest.startswith(b"\n") else rest
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            yield header.get("type"), json.loads(payload)
        except ValueError:
            yield header.get("type"), payload


@pytest.fixture
def receiver():
    started = Receiver()
    yield started
    started.close()


def run_scenario(script: str, receiver: Receiver, data_dir: Path, **extra_env: str) -> None:
    """Run `script` in a fresh interpreter that reports to `receiver`; only the DSN and data dir are set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKET_", "SENTRY_"))}
    env.update(MARKET_SENTRY_DSN=receiver.dsn, MARKET_DATA_DIR=str(data_dir), **extra_env)
    script = textwrap.dedent(script) + "\nimport sentry_sdk\nsentry_sdk.flush(timeout=10)\n"
    # `-c`: the script has no source file, so frames carry no source lines quoting its literals.
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"scenario failed:\n{done.stdout}\n{done.stderr}"


def frames(event: dict) -> list[dict]:
    return [f for exc in event["exception"]["values"] for f in (exc.get("stacktrace") or {}).get("frames", [])]


def test_an_exception_in_an_api_request_reaches_sentry_without_secrets_or_personal_data(receiver, tmp_path):
    run_scenario("""
        from services.api.app import create_app

        app = create_app()

        @app.post("/observability-test/fail")
        def fail():
            raise RuntimeError("card holder jane.doe@example.com phone +254712345678 failed")

        response = app.test_client().post(
            "/observability-test/fail",
            headers={"Stripe-Signature": "t=1,v1=deadbeefsecret", "Authorization": "Bearer tok_secret_value",
                     "Cookie": "session=cookie_secret_value"},
            data="body with secret")
        assert response.status_code == 500, response.status_code
    """, receiver, tmp_path)

    event, _ = receiver.wait_for_event(
        lambda e: any(x.get("type") == "RuntimeError" for x in e.get("exception", {}).get("values", [])))
    raw = receiver.raw()
    assert "RuntimeError" in raw
    for secret in ("deadbeefsecret", "tok_secret_value", "cookie_secret_value", "jane.doe@example.com",
                   "254712345678", "body with secret"):
        assert secret not in raw, f"{secret!r} reached Sentry"
    # The request was attached and scrubbed, not merely missing.
    error = next(x for x in event["exception"]["values"] if x["type"] == "RuntimeError")
    assert error["value"] == "card holder [email] phone [phone] failed"
    headers = {k.lower(): v for k, v in event["request"]["headers"].items()}
    assert headers["stripe-signature"] == "[Filtered]" and headers["authorization"] == "[Filtered]"
    assert event["server_name"] == "api"
    assert frames(event), "the event has no stack frames to check"
    assert all("vars" not in frame for frame in frames(event)), "local variables reached Sentry"


def test_a_logged_error_reaches_sentry_with_the_email_in_its_message_masked(receiver, tmp_path):
    run_scenario("""
        import logging
        from shared import observability

        observability.setup("test")
        logging.getLogger("x").error("mail to bob@example.com bounced")
    """, receiver, tmp_path)

    event, _ = receiver.wait_for_event(lambda e: e.get("logger") == "x")
    assert event["logentry"]["message"] == "mail to [email] bounced"
    assert event["logentry"].get("formatted", "mail to [email] bounced") == "mail to [email] bounced"
    assert "bob@example.com" not in receiver.raw()


def test_log_arguments_and_earlier_log_lines_reach_sentry_masked(receiver, tmp_path):
    run_scenario("""
        import logging
        from shared import observability

        observability.setup("test")
        logging.getLogger("x").info("login by carol@example.com from +254700000001")
        logging.getLogger("x").error("mail to %s bounced", "dave@example.com")
    """, receiver, tmp_path)

    event, _ = receiver.wait_for_event(lambda e: e.get("logger") == "x")
    assert [c["message"] for c in event["breadcrumbs"]["values"]] == ["login by [email] from [phone]"]
    assert event["logentry"]["params"] == ["[email]"]
    raw = receiver.raw()
    for personal in ("carol@example.com", "254700000001", "dave@example.com"):
        assert personal not in raw, f"{personal!r} reached Sentry"


@pytest.mark.parametrize("app_module, path, secret", [
    ("services.api.app", "/webhooks/mpesa/mpesa-path-secret-123", "mpesa-path-secret-123"),
    ("services.media.web", "/downloads/signed.download-token-456", "signed.download-token-456"),
], ids=["mpesa callback secret", "download token"])
def test_a_secret_in_the_request_path_does_not_reach_sentry(receiver, tmp_path, app_module, path, secret):
    # The route's first collaborator fails, quoting the path, as an unexpected error would.
    run_scenario(f"""
        import importlib
        from flask import request

        module = importlib.import_module({app_module!r})

        def fail(*args, **kwargs):
            raise RuntimeError(f"could not handle {{request.path}}")

        if {app_module!r} == "services.api.app":
            from services.api import webhooks
            webhooks.verify_mpesa = fail
        else:
            module.signer = lambda: type("Signer", (), {{"grant_id": staticmethod(fail)}})()

        app = module.create_app()
        response = app.test_client().open({path!r}, method="POST" if "mpesa" in {path!r} else "GET", data="{{}}")
        assert response.status_code == 500, response.status_code
    """, receiver, tmp_path, MARKET_MPESA_CALLBACK_SECRET="mpesa-path-secret-123")

    event, _ = receiver.wait_for_event(lambda e: "exception" in e)
    assert event["request"]["url"].endswith("/[Filtered]")
    assert secret not in receiver.raw()
