"""Transactions on the embedded mode's SQLite behave like locked rows, and hold one connection per thread."""

import http.client
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from shared.db import after_release, engine_for, transaction
from shared.outbox import publish
from tests.component.test_outbox import purchase


@pytest.fixture
def counter(workers):
    """A scratch table in the api's SQLite database holding one counter at 0."""
    with engine_for("api").begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS race_counter"))
        conn.execute(sa.text("CREATE TABLE race_counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO race_counter VALUES (1, 0)"))
    yield
    with engine_for("api").begin() as conn:
        conn.execute(sa.text("DROP TABLE race_counter"))


def read_counter(session) -> int:
    return session.scalar(sa.text("SELECT value FROM race_counter WHERE id = 1"))


def write_counter(session, value: int) -> None:
    session.execute(sa.text("UPDATE race_counter SET value = :v WHERE id = 1"), {"v": value})


def test_two_transactions_that_read_then_write_one_counter_cannot_both_read_the_old_value(counter):
    first_read, second_read = threading.Event(), threading.Event()

    def first() -> None:
        with transaction("api") as session:
            value = read_counter(session)
            first_read.set()
            # Bounded wait: without serialised transactions the second reads the same 0 meanwhile.
            second_read.wait(timeout=1)
            write_counter(session, value + 1)

    def second() -> None:
        first_read.wait(timeout=10)
        with transaction("api") as session:
            value = read_counter(session)
            second_read.set()
            write_counter(session, value + 1)

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(first), pool.submit(second)]:
            future.result(timeout=60)

    with transaction("api") as session:
        assert read_counter(session) == 2


def test_many_threads_incrementing_one_counter_lose_no_increment(counter):
    def increment() -> None:
        with transaction("api") as session:
            write_counter(session, read_counter(session) + 1)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(increment) for _ in range(40)]:
            future.result(timeout=60)

    with transaction("api") as session:
        assert read_counter(session) == 40


@pytest.fixture
def held():
    """How many of the api pool's connections each thread holds now, and the most it ever held at once."""
    now, most = Counter(), Counter()

    def checkout(*_):
        now[threading.get_ident()] += 1
        most[threading.get_ident()] = max(most[threading.get_ident()], now[threading.get_ident()])

    def checkin(*_):
        now[threading.get_ident()] -= 1

    pool = engine_for("api").pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    yield now, most
    event.remove(pool, "checkout", checkout)
    event.remove(pool, "checkin", checkin)


def test_after_release_callbacks_run_once_the_connection_is_back_in_the_pool(workers, held):
    now, _ = held
    me, seen = threading.get_ident(), []
    with transaction("api") as session:
        session.execute(sa.text("SELECT 1"))
        after_release(session, lambda: seen.append(now[me]))
        assert seen == []
    assert seen == [0]


def test_after_release_callbacks_do_not_run_when_the_transaction_rolls_back(workers):
    seen = []
    with pytest.raises(RuntimeError), transaction("api") as session:
        after_release(session, lambda: seen.append("ran"))
        raise RuntimeError("the state change failed")
    assert seen == []


def test_sending_outbox_messages_after_commit_never_holds_two_connections_in_one_thread(system, held):
    """Marking the rows sent takes a connection (the publisher thread's): never a second one beside another."""
    _, most = held
    with transaction("api") as session:
        publish(session, purchase())
    system.drain()

    assert most[threading.get_ident()] == 1 and max(most.values()) == 1
    assert all(r["sent_at"] is not None for r in system.rows("api", "SELECT sent_at FROM outbox"))


def test_concurrent_approvals_of_one_product_notify_the_seller_once(system, served):
    seller = system.user("seller")
    product = system.call("POST", "/products", {"title": "Race Book", "price_minor": 900, "currency": "USD"},
                          seller["token"]).json
    token, start = system.admin(), threading.Barrier(4)

    def approve() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", served, timeout=60)
        start.wait(timeout=30)
        connection.request("POST", f"/admin/products/{product['id']}/approve",
                           headers={"Authorization": f"Bearer {token}"})
        status = connection.getresponse().status
        connection.close()
        return status

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(lambda _: approve(), range(4)))
    system.drain()

    assert statuses == [200, 409, 409, 409]
    assert len(system.rows("api", "SELECT * FROM notifications WHERE user_id = :u", u=seller["id"])) == 1
    assert len(system.mails()) == 1

