"""The component tier: the whole system in this process, on Dramatiq's stub brokers and SQLite files."""

import os
import tempfile

from tests.support import free_port  # a server on 8000 must not answer this tier's CLI

_DATA = tempfile.mkdtemp(prefix="market-unit-")
os.environ.update({"MARKET_DATA_DIR": _DATA, "MARKET_MAIL_TRANSPORT": "file",
                   "MARKET_API_BIND": f"127.0.0.1:{free_port()}",
                   "MARKET_STRIPE_WEBHOOK_SECRET": "whsec_unit_test_secret",
                   "MARKET_PAYTM_MERCHANT_KEY": "unitTestKey12345", "MARKET_MPESA_CALLBACK_SECRET": "mpesa-unit",
                   # One client address registers every test's users; the limits have tests of their own.
                   "MARKET_RATE_LIMIT_REGISTER": "100000/minute", "MARKET_RATE_LIMIT_SIGN_IN": "100000/minute",
                   "MARKET_RATE_LIMIT_LEADS": "100000/minute"})
for _name in list(os.environ):
    if _name.startswith("MARKET_") and ("BROKER_URL" in _name or "DATABASE_URL" in _name):
        del os.environ[_name]

import contextlib  # noqa: E402
import shutil  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from services.mailer.senders import breaker  # noqa: E402
from services.market import registry, runner  # noqa: E402
from shared.db import engine_for, kernel_metadata  # noqa: E402
from shared.messaging import broker_for  # noqa: E402
from shared.outbox import publisher  # noqa: E402
from shared.settings import SERVICES, get_settings  # noqa: E402
from tests.component.system import System  # noqa: E402


@pytest.fixture(autouse=True)
def settings_follow_the_environment():
    """Once a test is over and its monkeypatched environment restored (autouse: torn down last), settings are
    read afresh: a worker or publisher thread may have cached the test's own settings in between."""
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def workers():
    registry.migrate_all()
    started = runner.start_embedded_workers(threads=2)
    yield started
    for worker in started:
        worker.stop()


@pytest.fixture
def system(workers) -> System:
    """A clean system: empty databases, empty queues, no mail or files; workers running."""
    return clean_system()


def clean_system() -> System:
    """Empty every database, queue, mailbox and storage folder; the workers keep running."""
    quiet()
    for service in SERVICES:
        engine = engine_for(service)
        for metadata in (kernel_metadata, registry.metadata(service)):
            with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
    breaker.cache_clear()  # every test starts with the provider's circuit closed
    settings = get_settings()
    for folder in (settings.mail_dir, settings.storage_dir):
        shutil.rmtree(folder, ignore_errors=True)
    return System(Client(runner.web_app()), Path(_DATA))


def quiet() -> None:
    """Let the work an earlier test left in flight finish, and drop what it left queued, so that none of it
    reaches the next test's fresh databases (where it fails: "outbound message ... does not exist")."""
    for _ in range(3):  # work in flight may publish more work
        publisher.flush(5)
        for service in SERVICES:
            broker = broker_for(service)
            broker.flush_all()
            for queue in list(broker.queues):
                with contextlib.suppress(Exception):  # a failure or timeout belongs to the earlier test
                    broker.join(queue, fail_fast=False, timeout=5000)


@pytest.fixture
def served(system) -> int:
    """The system behind werkzeug's threaded server, as `market up` serves it embedded; yields the port."""
    httpd = make_server("127.0.0.1", 0, runner.web_app(), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.port
    httpd.shutdown()
    thread.join(timeout=30)
