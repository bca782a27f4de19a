"""No secret, token, email or phone number in any log line: every handler scrubs what it writes.

Logging is configured once per process, so each scenario runs in its own Python subprocess, set up the way the
real process is (our `observability.setup`, after Dramatiq's own `basicConfig` for a worker; gunicorn's logger).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPESA = "mpesa-path-secret-Q2xvdWRz"
STRIPE = "whsec_Jq3vXn8R2kLp0sYt7WbZc4HdFm9gAe6U"
TOKEN = "eyJncmFudCI6NDJ9.c2lnbmF0dXJlLW9mLXRoZS1saW5r"
BEARER = "tok_3b1fCq0uXz9YwV8sR7pL6mK5"
LEAKS = ["bea@example.com", "Beatrice Quill", MPESA, STRIPE, TOKEN, BEARER, "+254 712 345 678"]


def run(script: str, tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**clean, "MARKET_DATA_DIR": str(tmp_path), "MARKET_LOG_LEVEL": "DEBUG",
                                           "MARKET_MPESA_CALLBACK_SECRET": MPESA,
                                           "MARKET_STRIPE_WEBHOOK_SECRET": STRIPE, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def assert_clean(output: str, *expected: str) -> None:
    assert [leak for leak in LEAKS if leak in output] == [], output
    for sentence in expected:  # the lines were written, only masked
        assert sentence in output, output


LINES = f"""
    import logging
    log = logging.getLogger
    # werkzeug's access log and Flask's "Exception on <path>", both through child loggers
    log("werkzeug").info('127.0.0.1 - - "POST /webhooks/mpesa/{MPESA} HTTP/1.1" 200 -')
    log("werkzeug").info('127.0.0.1 - - "GET /downloads/{TOKEN}?x=1 HTTP/1.1" 200 -')
    try:
        raise ValueError("no user bea@example.com with Authorization: Bearer {BEARER}")
    except ValueError:
        log("services.api.app").exception("Exception on %s [%s]", "/webhooks/mpesa/{MPESA}", "POST")
    log("shared.outbox").warning("a note about %s, phone %s, key %s", "bea@example.com", "+254 712 345 678",
                                 "{STRIPE}")
"""


def test_our_processes_scrub_every_line_their_loggers_write(tmp_path):
    output = run(f"""
        from shared import observability
        observability.setup("api")
        {textwrap.indent(textwrap.dedent(LINES), "        ").strip()}
    """, tmp_path)
    assert_clean(output, "/webhooks/mpesa/[Filtered] HTTP/1.1", "/downloads/[Filtered]?x=1", "Exception on",
                 "ValueError: no user [email] with Authorization: Bearer [Filtered]", "a note about [email]")


def test_a_worker_scrubs_the_handler_dramatiq_installed_and_its_failure_lines(tmp_path):
    output = run(f"""
        import logging, sys
        import dramatiq
        # What `dramatiq` does in a worker process before it imports our worker module.
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
        from shared import observability
        observability.setup("billing-worker")
        {textwrap.indent(textwrap.dedent(LINES), "        ").strip()}
        message = dramatiq.Message(queue_name="billing.events", actor_name="billing.on_purchase_completed",
                                   args=({{"buyer_email": "bea@example.com", "buyer_name": "Beatrice Quill"}},),
                                   kwargs={{}}, options={{}}, message_id="m-123")
        try:
            raise RuntimeError("refused")
        except RuntimeError:
            logging.getLogger("dramatiq.worker.WorkerThread").error(
                "Failed to process message %s with unhandled exception.", message, exc_info=True)
        from dramatiq.broker import MessageProxy
        logging.getLogger("dramatiq.worker.WorkerThread").warning("Message %s was skipped.", MessageProxy(message))
    """, tmp_path)
    assert_clean(output, "Failed to process message billing.on_purchase_completed[m-123] with unhandled exception",
                 "Message billing.on_purchase_completed[m-123] was skipped", "/downloads/[Filtered]")


def test_a_worker_logs_at_the_configured_level_not_at_the_one_dramatiq_set(tmp_path):
    output = run("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)  # what `dramatiq` does in a worker process
        from shared import observability
        observability.setup("billing-worker")
        logging.getLogger("shared.outbox").info("billing.on_purchase_completed handled event e-1.")
        logging.getLogger("shared.outbox").warning("Outbox relay of billing sent 1 messages.")
    """, tmp_path, MARKET_LOG_LEVEL="WARNING")
    assert "handled event e-1" not in output and "Outbox relay of billing sent 1 messages" in output


@pytest.mark.parametrize("which", ["error", "access"])
def test_gunicorns_own_logs_are_scrubbed(tmp_path, which):
    output = run(f"""
        import datetime, logging
        from gunicorn.config import Config
        from shared.observability import GunicornLogger
        cfg = Config()
        cfg.set("accesslog", "-")
        cfg.set("logger_class", "shared.observability.GunicornLogger")
        log = GunicornLogger(cfg)
        if "{which}" == "error":
            try:
                raise OSError("bea@example.com")
            except OSError:
                log.exception("Error handling request %s", "/webhooks/mpesa/{MPESA}")
        else:
            class Request:
                method, path, query, version, headers, uri = "GET", "/downloads/{TOKEN}", "", (1, 1), [], ""
            class Response:
                status, sent, headers = "200 OK", 10, []
            environ = {{"REQUEST_METHOD": "GET", "RAW_URI": "/downloads/{TOKEN}", "PATH_INFO": "/downloads/{TOKEN}",
                        "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
                        "HTTP_REFERER": "http://x/webhooks/mpesa/{MPESA}", "HTTP_USER_AGENT": "bea@example.com"}}
            log.access(Response(), Request(), environ, datetime.timedelta(seconds=0.1))
    """, tmp_path)
    assert_clean(output, "Error handling request /webhooks/mpesa/[Filtered]" if which == "error"
                 else "GET /downloads/[Filtered] HTTP/1.1")


def test_the_sentry_scrubber_still_leaves_ids_alone():
    from shared.observability import _mask

    event_id = "5f3e2d10-9876-4321-8a7b-1234567890ab"
    assert _mask(f"billing.on_purchase_completed skipped event {event_id}") == (
        f"billing.on_purchase_completed skipped event {event_id}")
    assert _mask("call +254 712 345 678 or 254712345678") == "call [phone] or [phone]"
