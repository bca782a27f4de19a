"""`market send-invoices` on 20,000 customers with the mailer killed mid-run and restarted."""

import re
from collections import Counter

import pytest

from tests.integration.conftest import AMQP, REDIS, base_env, clean_brokers, wait_until

USERS = 20_000


def summary_entries(folder) -> Counter:
    """How often each invoice appears, sent or failed, across the run's summary files."""
    seen = Counter()
    for path in sorted(folder.glob("chunk-*.txt")):
        seen.update(int(i) for i in re.findall(r"^=== invoice-(\d+)", path.read_text(), re.M))
    return seen


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_an_invoice_run_survives_a_killed_mailer_and_emails_every_last_invoice_once(
        broker, tmp_path, databases, processes):
    clean_brokers(redis_db=10)
    url = AMQP if broker == "rabbitmq" else f"{REDIS}/10"
    # Sends of 30-90 ms: with them overlapping, a chunk still takes long enough that the kill lands mid-run.
    processes.env = base_env(tmp_path, databases, MARKET_BROKER_URL=url, MARKET_MAIL_TRANSPORT="simulated",
                             MARKET_SIMULATED_MIN_DELAY_MS="30", MARKET_SIMULATED_MAX_DELAY_MS="90",
                             MARKET_SIMULATED_ERROR_RATE="0.05", MARKET_SIMULATED_SEED="7")
    processes.run("migrate")
    assert "Seeded 20,000 customers with 60,000 invoices" in processes.run("seed-invoices", "--users", str(USERS))
    processes.start("worker-billing", "worker", "billing")
    processes.start("worker-mailer", "worker", "mailer", "--threads", "4")

    requested = processes.run("send-invoices", "--no-wait")
    run_id = re.search(r"Run ([0-9a-f-]{36})", requested).group(1)
    assert "the last invoice of 20,000 customers, in 20 chunks" in requested
    run = f"SELECT sent + failed AS done, finished_at FROM invoice_runs WHERE id = '{run_id}'"
    at_kill = wait_until("the run to be part-way", lambda: (d := databases.rows("billing", run)[0]["done"]) >= 3000
                         and d, timeout=60, interval=0.02)
    processes.kill("worker-mailer")
    assert at_kill < USERS, "the run finished before the kill"
    # Resumed while no mailer runs, so the run is surely unfinished: the chunks not reported yet are asked for
    # again (those still queued or redelivered too, which the mailer's inbox skips).
    assert f"Resuming run {run_id}" in processes.run("send-invoices", "--no-wait")
    processes.start("worker-mailer-restarted", "worker", "mailer", "--threads", "4")
    wait_until("the resumed run to finish", lambda: databases.rows("billing", run)[0]["finished_at"], timeout=120,
               interval=0.2)

    last = databases.rows("billing", """
        SELECT DISTINCT ON (customer_id) id, emailed_at, email_error FROM invoices
        ORDER BY customer_id, issued_at DESC, id DESC""")
    emailed = {r["id"] for r in last if r["emailed_at"] is not None}
    failed = {r["id"] for r in last if r["email_error"] is not None}
    assert len(last) == USERS and emailed | failed == {r["id"] for r in last} and not emailed & failed
    older = databases.rows("billing", "SELECT count(*) AS n FROM invoices WHERE emailed_at IS NOT NULL")
    assert older == [{"n": len(emailed)}], "an invoice other than a customer's last was emailed"
    # Every invoice appears exactly once in the summary files, even the chunks redone after the kill.
    folder = tmp_path / "data" / "storage" / "emails" / run_id
    assert len(list(folder.glob("chunk-*.txt"))) == 20
    assert summary_entries(folder) == Counter(emailed | failed)
    assert databases.rows("mailer", "SELECT count(*) AS n, sum(sent) AS sent FROM invoice_chunks") == [
        {"n": 20, "sent": len(emailed)}]

    # Failed ones (5% provider errors, 3 attempts each) can be retried; the rest is never sent again.
    retried = processes.run("send-invoices", "--retry-failed")
    if failed:
        assert f"the last invoice of {len(failed)} customers" in retried
        assert databases.rows("billing", "SELECT count(*) AS n FROM invoices WHERE emailed_at IS NOT NULL") == [
            {"n": USERS}]
    assert "Nothing to send" in processes.run("send-invoices")
