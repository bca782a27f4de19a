"""Campaign and invoice chunks sent exactly once around faults, as single emails are: the batch's attempt is
committed before the send, only the bookkeeping is retried, and a batch found `sending` is either in flight
(left alone) or ambiguous (resent or held, as the policy says)."""

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from services.mailer import actors, campaign_sending, campaigns
from services.mailer.models import Campaign, CampaignRecipient, InvoiceChunk
from services.mailer.pacing import Unlimited
from services.mailer.senders import SendFailed
from services.market import cli
from shared.contracts import CampaignControlRequested, InvoiceEmail, InvoiceEmailsRequested, envelope
from shared.db import transaction
from shared.settings import get_settings
from tests.component.test_mail_delivery import commits_fail
from tests.component.test_mailer import smtp_server
from tests.support import TwoSlots

AN_HOUR_AGO = timedelta(hours=1)


@pytest.fixture
def smtp(monkeypatch):
    """A real aiosmtpd server that the mailer's actors send to; yields its collector."""
    with smtp_server() as (collector, sender):
        monkeypatch.setattr(actors, "sender_from", lambda settings: sender)
        yield collector


@pytest.fixture
def deferred(monkeypatch) -> list[int]:
    """The delays of the messages the actors put back on their queue (outside a worker there is none)."""
    delays = []
    monkeypatch.setattr(actors, "defer", lambda service, delay_ms: delays.append(delay_ms))
    return delays


def stored_campaign(route: str, count: int, chunk_size: int = 50) -> str:
    with transaction("mailer") as session:
        session.add(Campaign(id=f"c-{route}", title="t", subject="Hi #name", body="Dear #name", route=route,
                             status="queued", total=count, sent=0, failed=0, chunk_size=chunk_size, next_chunk=0))
        session.flush()
        session.add_all(CampaignRecipient(campaign_id=f"c-{route}", position=i, email=f"p{i}@example.com",
                                          fields={"name": f"P{i}"}, status="queued", attempts=0)
                        for i in range(count))
    return f"c-{route}"


def invoice_chunk(count: int = 3) -> dict:
    return envelope(InvoiceEmailsRequested(run_id="00000000-run", chunk=0, invoices=[
        InvoiceEmail(invoice_id=i, user_id=i, email=f"u{i}@example.com", name=f"U {i}", number=f"INV-{i}",
                     amount_minor=1000, currency="USD", due_date=date(2027, 1, 1).isoformat())
        for i in range(1, count + 1)]))


def recipients(campaign_id: str) -> list[dict]:
    with transaction("mailer") as session:
        return [dict(r) for r in session.execute(sa.text(
            "SELECT status, attempts, ambiguous FROM campaign_recipients WHERE campaign_id = :id ORDER BY position"),
            {"id": campaign_id}).mappings()]


def campaign_row(campaign_id: str) -> dict:
    with transaction("mailer") as session:
        return dict(session.execute(sa.text("SELECT status, sent, failed, next_chunk FROM campaigns WHERE id = :id"),
                                    {"id": campaign_id}).mappings().one())


def chunk_row() -> dict:
    with transaction("mailer") as session:
        return dict(session.execute(sa.text("SELECT status, sent, failed, ambiguous FROM invoice_chunks"))
                    .mappings().one())


def redelivered(run, times: int = 3) -> None:
    """Run an actor as the broker would: again, on the same message, after each exception."""
    for _ in range(times):
        try:
            run()
            return
        except Exception:  # noqa: BLE001 - any failure means the broker delivers the message again
            continue


# The three kinds of batch: how to send one, and how to find it in the middle of an attempt.

def campaign_part(route: str):
    campaign_id = stored_campaign(route, count=1)
    if route == "chunks":
        return lambda: actors.send_campaign_chunk.fn({"campaign_id": campaign_id, "chunk": 0})
    return lambda: actors.send_campaign_message.fn({"campaign_id": campaign_id, "position": 0})


def attempted_campaign(route: str, ago: timedelta):
    run = campaign_part(route)
    with transaction("mailer") as session:
        session.execute(sa.update(CampaignRecipient).where(CampaignRecipient.campaign_id == f"c-{route}")
                        .values(status="sending", attempts=1, attempted_at=datetime.now(UTC) - ago))
    return run, lambda: recipients(f"c-{route}")[0]


def attempted_invoice_chunk(ago: timedelta):
    raw = invoice_chunk(count=1)
    with transaction("mailer") as session:
        session.add(InvoiceChunk(run_id="00000000-run", chunk=0, status="sending", ambiguous=0,
                                 attempted_at=datetime.now(UTC) - ago))
    return lambda: actors.on_invoice_emails_requested.fn(raw), chunk_row


ATTEMPTED = {"campaign chunk": lambda ago: attempted_campaign("chunks", ago),
             "campaign message": lambda ago: attempted_campaign("messages", ago),
             "invoice chunk": attempted_invoice_chunk}
DONE = {"campaign chunk": "sent", "campaign message": "sent", "invoice chunk": "done"}


# --- a failed commit after the server's 250 ---------------------------------------------------------------

@pytest.mark.parametrize(("route", "count"), [("chunks", 3), ("messages", 1)])
def test_a_failed_commit_of_a_campaign_batch_after_the_server_accepted_it_sends_each_recipient_once(
        system, smtp, route, count):
    campaign_id = stored_campaign(route, count)
    payload = {"campaign_id": campaign_id} | ({"chunk": 0} if route == "chunks" else {"position": 0})
    actor = actors.send_campaign_chunk if route == "chunks" else actors.send_campaign_message
    with commits_fail(when=lambda: len(smtp.envelopes) == count) as left:
        redelivered(lambda: actor.fn(payload))

    assert left == [0]  # the fault did happen
    assert sorted(e.rcpt_tos[0] for e in smtp.envelopes) == [f"p{i}@example.com" for i in range(count)]
    assert recipients(campaign_id) == [{"status": "sent", "attempts": 1, "ambiguous": 0}] * count
    assert campaign_row(campaign_id) == {"status": "completed", "sent": count, "failed": 0,
                                         "next_chunk": 1 if route == "chunks" else 0}


BATCHES = {  # each kind of batch: its actor, a message for it, and how many emails it sends
    "campaign chunk": lambda: (actors.send_campaign_chunk,
                               {"campaign_id": stored_campaign("chunks", 3), "chunk": 0}, 3),
    "campaign message": lambda: (actors.send_campaign_message,
                                 {"campaign_id": stored_campaign("messages", 1), "position": 0}, 1),
    "invoice chunk": lambda: (actors.on_invoice_emails_requested, invoice_chunk(count=3), 3),
}


@pytest.mark.parametrize("kind", BATCHES)
def test_bookkeeping_that_keeps_failing_carries_the_answers_to_a_new_message_which_records_and_does_not_send(
        system, smtp, monkeypatch, kind):
    monkeypatch.setattr(get_settings(), "mail_bookkeeping_retry_s", 0.2)
    carried = []
    monkeypatch.setattr(actors, "carry_on", lambda delay_ms, *args: carried.append(args))
    actor, message, count = BATCHES[kind]()
    with commits_fail(when=lambda: len(smtp.envelopes) == count, times=1000):
        actor.fn(message)

    [again] = carried  # the database stayed down past the window: the answers travel on
    assert "answers" in again[0] or len(again) == 2
    actor.fn(*again)  # the new message, once the database is back

    assert len(smtp.envelopes) == count
    if kind == "invoice chunk":
        assert chunk_row() == {"status": "done", "sent": 3, "failed": 0, "ambiguous": 0}
    else:
        campaign_id = message["campaign_id"]
        assert recipients(campaign_id) == [{"status": "sent", "attempts": 1, "ambiguous": 0}] * count
        assert campaign_row(campaign_id)["status"] == "completed"


def test_a_failed_commit_of_an_invoice_chunk_after_the_server_accepted_it_sends_each_invoice_once(system, smtp):
    raw = invoice_chunk(count=3)
    with commits_fail(when=lambda: len(smtp.envelopes) == 3) as left:
        redelivered(lambda: actors.on_invoice_emails_requested.fn(raw))

    assert left == [0]
    assert sorted(e.rcpt_tos[0] for e in smtp.envelopes) == ["u1@example.com", "u2@example.com", "u3@example.com"]
    assert chunk_row() == {"status": "done", "sent": 3, "failed": 0, "ambiguous": 0}
    assert system.rows("mailer", "SELECT count(*) AS n FROM outbox WHERE actor = 'billing.on_invoice_emails_sent'"
                       ) == [{"n": 1}]


# --- a batch found in the middle of an attempt ------------------------------------------------------------

@pytest.mark.parametrize("kind", ATTEMPTED)
@pytest.mark.parametrize(("ago", "policy", "emails", "status", "ambiguous"), [
    (AN_HOUR_AGO, "resend", 1, "done", 1),  # its worker died between the server's reply and the record
    (AN_HOUR_AGO, "hold", 0, "held", 1),
    (timedelta(0), "resend", 0, "sending", 0),  # an attempt is in flight: left to it
    (timedelta(0), "hold", 0, "sending", 0),
])
def test_a_batch_found_sending_is_in_flight_or_ambiguous_and_the_policy_decides(
        system, smtp, monkeypatch, deferred, kind, ago, policy, emails, status, ambiguous):
    monkeypatch.setattr(get_settings(), "ambiguous_send_policy", policy)
    run, row = ATTEMPTED[kind](ago)

    run()

    assert len(smtp.envelopes) == emails
    found = row()
    assert (found["status"], found["ambiguous"]) == (DONE[kind] if status == "done" else status, ambiguous)
    in_flight = ago < timedelta(seconds=get_settings().mail_ambiguous_after_s)
    # In flight: looked at again once that attempt would count as ambiguous, spending no retry.
    assert deferred == ([int(get_settings().mail_ambiguous_after_s * 1000)] if in_flight else [])


def test_mail_status_counts_ambiguous_and_held_campaign_and_invoice_sends(system, smtp, monkeypatch):
    monkeypatch.setattr(get_settings(), "ambiguous_send_policy", "hold")
    for kind in ATTEMPTED:
        run, _ = ATTEMPTED[kind](AN_HOUR_AGO)
        run()

    result = CliRunner().invoke(cli.cli, ["mail", "status"])

    assert result.exit_code == 0, result.output
    assert "campaign recipients: sending 0, held 2, ambiguous sends 2" in result.output
    assert "invoice chunks: sending 0, held 1, ambiguous sends 1" in result.output


# --- pause and cancel while a chunk is out ------------------------------------------------------------------

class ControlledMidSend:
    """A provider that, while the batch is out, lets the campaign be paused or cancelled (as a control
    message would, on another worker), then accepts the first email and refuses the others for now."""

    def __init__(self, campaign_id: str | None = None, action: str | None = None):
        self.campaign_id, self.action, self.sent = campaign_id, action, []

    def send_many(self, messages):
        if self.action:
            with transaction("mailer") as session:  # the chunk holds no lock nor transaction while it sends
                campaigns.on_campaign_control_requested(
                    session, CampaignControlRequested(campaign_id=self.campaign_id, action=self.action),
                    datetime.now(UTC).isoformat())
        outcomes = []
        for message in messages:
            self.sent.append(message.to)
            outcomes.append(SendFailed("451 try later", permanent=False) if outcomes else None)
        return outcomes


@pytest.mark.parametrize(("action", "left_as", "campaign", "cursor"), [
    ("cancel", "cancelled", "cancelled", 1),  # nobody is left to send in chunk 0
    ("pause", "queued", "paused", 0),  # resuming sends chunk 0's last three
])
def test_recipients_of_a_chunk_not_sent_when_it_is_paused_or_cancelled_are_left_as_the_request_says(
        system, action, left_as, campaign, cursor):
    campaign_id = stored_campaign("chunks", count=4)
    provider = ControlledMidSend(campaign_id, action)
    # p0 is accepted, p1 refused for now, p2 and p3 never handed to the transport (the rate limit).
    mail = campaign_sending.Mail(provider, TwoSlots(), chunk_spacing_s=0, budget_s=60)

    campaign_sending.send_chunk(campaign_id, 0, mail)

    assert provider.sent == ["p0@example.com", "p1@example.com"]
    assert [r["status"] for r in recipients(campaign_id)] == ["sent", left_as, left_as, left_as]
    assert campaign_row(campaign_id) == {"status": campaign, "sent": 1, "failed": 0, "next_chunk": cursor}


def test_recipients_a_chunk_had_no_time_for_are_given_back_queued_with_no_attempt_spent(system):
    campaign_id = stored_campaign("chunks", count=2)
    mail = campaign_sending.Mail(ControlledMidSend(), Unlimited(), chunk_spacing_s=0, budget_s=-1)

    outcome = campaign_sending.send_chunk(campaign_id, 0, mail)

    assert outcome.untried == 2
    assert recipients(campaign_id) == [{"status": "queued", "attempts": 0, "ambiguous": 0}] * 2
    assert campaign_row(campaign_id)["next_chunk"] == 0


# --- an operator settles what was held -------------------------------------------------------------------

HELD_IDS = {"campaign chunk": "c-chunks:0", "campaign message": "c-messages:0", "invoice chunk": "00000000-run:0"}


@pytest.mark.parametrize("kind", ATTEMPTED)
@pytest.mark.parametrize(("choice", "emails", "status"), [("--resend", 1, "done"), ("--sent", 0, "done")])
def test_an_operator_lists_held_sends_and_settles_each_as_sent_or_to_send_again(
        system, smtp, monkeypatch, deferred, kind, choice, emails, status):
    monkeypatch.setattr(get_settings(), "ambiguous_send_policy", "hold")
    run, row = ATTEMPTED[kind](AN_HOUR_AGO)
    run()
    assert row()["status"] == "held"
    listed = CliRunner().invoke(cli.cli, ["mail", "held"])
    assert HELD_IDS[kind] in listed.output and "1 held." in listed.output

    released = CliRunner().invoke(cli.cli, ["mail", "release", HELD_IDS[kind], choice])

    if kind == "invoice chunk" and choice == "--sent":  # the mailer cannot say which invoices: refused, unchanged
        assert released.exit_code == 1 and "--resend" in released.output
        assert row()["status"] == "held"
        return
    assert released.exit_code == 0, released.output
    if kind == "invoice chunk":
        run()  # billing asks for the chunk again when `market send-invoices` resumes the run
    else:
        system.drain()
    assert len(smtp.envelopes) == emails
    assert (row()["status"], row()["ambiguous"]) == (DONE[kind] if status == "done" else status, 1)
    if kind != "invoice chunk":
        assert campaign_row(HELD_IDS[kind].split(":")[0])["sent"] == 1
    again = CliRunner().invoke(cli.cli, ["mail", "release", HELD_IDS[kind], choice])  # settled once only
    assert again.exit_code == 1 and "not held" in again.output
    assert CliRunner().invoke(cli.cli, ["mail", "held"]).output.strip() == "Nothing is held."


def test_release_needs_a_decision_and_names_ids_it_does_not_know(system):
    assert "--sent" in CliRunner().invoke(cli.cli, ["mail", "release", "x"]).output
    unknown = CliRunner().invoke(cli.cli, ["mail", "release", "nope", "c-x:7", "--resend"])
    assert unknown.exit_code == 1 and "nope" in unknown.output and "c-x:7" in unknown.output
