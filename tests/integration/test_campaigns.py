"""Campaigns through real processes: the api under gunicorn, api and mailer workers, PostgreSQL, the
mailer's broker on RabbitMQ or Redis, and mail over SMTP to aiosmtpd servers."""

import asyncio
import email
import re
import time
from collections import Counter
from email import policy

import pytest
from aiosmtpd.controller import Controller

from tests.integration.conftest import REDIS, base_env, clean_brokers, free_port, wait_until
from tests.integration.test_end_to_end import healthy, http

SUBJECT = "Hello #name, ##1 of #days_remain"
BODY = "Dear #name,\nyou pledged #pledge and paid #paid_amount; #balance is left, #days_remain days to go."


class Mailbox:
    """What an SMTP server received: each message parsed, with the time its MAIL command arrived (when
    the provider sees a send begin). A `delay` per message makes a campaign last long enough to break
    things in the middle of it."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.received = delay_s, []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        envelope.mail_from, envelope.mail_options, envelope.started_at = address, mail_options, time.time()
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        message = email.message_from_bytes(envelope.original_content, policy=policy.default)
        self.received.append((envelope.started_at, message))
        return "250 OK"

    def recipients(self) -> list[str]:
        return [str(message["To"]) for _, message in self.received]


def smtp_server(mailbox: Mailbox, port: int) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def smtp_servers():
    started = []
    yield lambda mailbox, port: started.append(smtp_server(mailbox, port)) or started[-1]
    for controller in started:
        if controller._thread is not None:
            controller.stop()


def people(count: int) -> list[dict]:
    return [{"email": f"person{i}@example.com", "name": f"Person {i}", "pledge": f"{100 + i} USD",
             "paid_amount": f"{i}.00 USD", "balance": f"{100 - i % 100}.00 USD", "days_remain": str(i % 30)}
            for i in range(count)]


def start_system(processes, tmp_path, databases, smtp_port: int, mailer_processes: int = 1, **env) -> str:
    """Migrate, then the api under gunicorn, its worker and the mailer's; returns the api's URL."""
    api_port = free_port()
    processes.env = base_env(tmp_path, databases, MARKET_MAIL_TRANSPORT="smtp", MARKET_SMTP_PORT=str(smtp_port),
                             MARKET_API_BIND=f"127.0.0.1:{api_port}", MARKET_CAMPAIGN_CHUNK_SPACING_S="0.2", **env)
    processes.run("migrate")
    processes.start("api-web", "serve", "api")
    processes.start("worker-api", "worker", "api")
    processes.start("worker-mailer", "worker", "mailer", "--processes", str(mailer_processes))
    api = f"http://127.0.0.1:{api_port}"
    wait_until("the api to answer", lambda: healthy(f"{api}/healthz"), timeout=30)
    return api


def request_campaign(api: str, processes, recipients: list[dict], **fields) -> tuple[dict, str]:
    """As an admin (only admins send campaigns), made with `market create-admin`."""
    made = processes.run("create-admin", "--email", "owner@example.com", "--name", "Owner")
    token = re.search(r"^token: (\S+)$", made, re.MULTILINE).group(1)
    status, campaign = http("POST", f"{api}/campaigns", {"subject": SUBJECT, "body": BODY, "recipients": recipients}
                            | fields, token)
    assert status == 202 and campaign["status"] == "queued", campaign
    return campaign, token


def finished(api: str, campaign: dict, token: str) -> dict:
    return wait_until("the campaign to complete", lambda: (
        s := http("GET", f"{api}{campaign['status_url']}", token=token)[1])["status"] == "completed" and s,
        timeout=30)


def assert_personalised(mailbox: Mailbox, recipients: list[dict]) -> None:
    by_address = {str(message["To"]): message for _, message in mailbox.received}
    for p in recipients:
        message = by_address[p["email"]]
        assert message["Subject"] == f"Hello {p['name']}, #1 of {p['days_remain']}"
        assert message.get_body(("plain",)).get_content().replace("\r\n", "\n").strip() == (
            f"Dear {p['name']},\nyou pledged {p['pledge']} and paid {p['paid_amount']}; {p['balance']} is left, "
            f"{p['days_remain']} days to go.")
        assert f"Dear {p['name']},<br>" in message.get_body(("html",)).get_content()


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_a_campaign_of_250_goes_in_five_chunks_of_50_each_recipient_once_and_personalised(
        broker, tmp_path, databases, processes, smtp_servers):
    clean_brokers(redis_db=9)
    mailbox, smtp_port = Mailbox(), free_port()
    smtp_servers(mailbox, smtp_port)
    mailer_broker = {"MARKET_MAILER_BROKER_URL": f"{REDIS}/9"} if broker == "redis" else {}
    api = start_system(processes, tmp_path, databases, smtp_port, **mailer_broker)
    recipients = people(250)

    campaign, token = request_campaign(api, processes, recipients)
    wait_until("250 emails", lambda: len(mailbox.received) >= 250, timeout=40)
    shown = finished(api, campaign, token)

    assert sorted(mailbox.recipients()) == sorted(p["email"] for p in recipients), "missing or doubled emails"
    assert_personalised(mailbox, recipients)
    chunks = re.findall(rf"Campaign {campaign['id']} chunk (\d+): (\d+) recipients", processes.log("worker-mailer"))
    assert chunks == [(str(k), "50") for k in range(5)]
    assert (shown["sent"], shown["failed"], shown["delivery_rate"]) == (250, 0, 1.0)
    assert databases.rows("mailer", "SELECT status, attempts, count(*) AS n FROM campaign_recipients "
                                    "GROUP BY status, attempts") == [{"status": "sent", "attempts": 1, "n": 250}]


def test_an_smtp_outage_mid_campaign_is_waited_out_and_every_recipient_gets_exactly_one_email(
        tmp_path, databases, processes, smtp_servers):
    clean_brokers(redis_db=9)
    mailbox, smtp_port = Mailbox(delay_s=0.02), free_port()
    first_server = smtp_servers(mailbox, smtp_port)
    api = start_system(processes, tmp_path, databases, smtp_port, MARKET_BREAKER_RESET_S="1",
                       MARKET_SMTP_TIMEOUT_S="3")
    recipients = people(250)

    campaign, token = request_campaign(api, processes, recipients)
    wait_until("some emails to arrive", lambda: len(mailbox.received) >= 60, timeout=30, interval=0.01)
    first_server.stop()
    at_outage = len(mailbox.received)
    wait_until("the mailer to find the provider unavailable and defer",
               lambda: "the mail provider is unavailable" in processes.log("worker-mailer"), timeout=40)
    wait_until("the breaker to open", lambda: "circuit breaker" in processes.log("worker-mailer"), timeout=20)
    assert len(mailbox.received) == at_outage < 250
    smtp_servers(mailbox, smtp_port)  # the provider is back, on the same port
    shown = finished(api, campaign, token)

    doubled = [address for address, n in Counter(mailbox.recipients()).items() if n > 1]
    assert doubled == [] and sorted(mailbox.recipients()) == sorted(p["email"] for p in recipients)
    assert_personalised(mailbox, recipients)
    assert (shown["sent"], shown["failed"]) == (250, 0), "an outage must not fail anyone"
    print(f"outage after {at_outage} of 250 emails; all 250 delivered once after the server came back")


def test_four_mailer_processes_together_never_send_more_than_the_rate_limit_in_a_second(
        tmp_path, databases, processes, smtp_servers):
    clean_brokers(redis_db=8)
    mailbox, smtp_port = Mailbox(), free_port()
    smtp_servers(mailbox, smtp_port)
    # Every recipient its own message (no chunks), so 4 processes x 8 threads send at once and only the
    # limiter in Redis holds them back.
    api = start_system(processes, tmp_path, databases, smtp_port, mailer_processes=4,
                       MARKET_MAIL_RATE_LIMIT_PER_S="20", MARKET_RATE_LIMIT_REDIS_URL=f"{REDIS}/8",
                       MARKET_CAMPAIGN_BULK_THRESHOLD="1000")
    recipients = people(120)

    campaign, token = request_campaign(api, processes, recipients)
    wait_until("120 emails", lambda: len(mailbox.received) >= 120, timeout=40)
    finished(api, campaign, token)

    times = sorted(at for at, _ in mailbox.received)
    per_second = Counter(int(at) for at in times)
    took = times[-1] - times[0]
    print(f"120 emails in {took:.1f} s; per calendar second: {sorted(per_second.values(), reverse=True)}")
    assert sorted(mailbox.recipients()) == sorted(p["email"] for p in recipients)
    # Slots are one per 50 ms bucket, aligned on the second, so the workers' clock never sees more than 20
    # in a second. The server notes an email when its MAIL command arrives, a few ms (on a loaded 2-core
    # machine up to ~50 ms) after its slot, so the email of a second's last slot may be counted in the
    # next second: hence 20 + 1.
    assert max(per_second.values()) <= 21
    assert took >= 120 / 20 - 1
