"""Delivering a stored email exactly once around faults: the attempt is recorded before the send, only the
bookkeeping is retried, an ambiguous send follows a stated policy, and a message lost in the broker is swept up."""

import json
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from services.mailer import actors, delivery, reconcile
from services.mailer.models import Campaign, CampaignRecipient
from services.mailer.senders import ProviderDown, ProviderUnavailable, SendFailed
from services.market import cli
from shared.db import engine_for, transaction
from shared.settings import get_settings
from tests.component.test_mailer import message_row, smtp_server, stored_message


@pytest.fixture
def smtp(monkeypatch):
    """A real aiosmtpd server that the mailer's actors send to; yields its collector."""
    with smtp_server() as (collector, sender):
        monkeypatch.setattr(actors, "sender_from", lambda settings: sender)
        yield collector


@contextmanager
def commits_fail(when, times: int = 1):
    """The mailer database refuses `times` commits made while `when()` holds, as a restarting server would."""
    left = [times]

    def refuse(conn):
        if when() and left[0] > 0:
            left[0] -= 1
            raise sa.exc.OperationalError("COMMIT", None, ConnectionError("the database is restarting"))

    engine = engine_for("mailer")
    sa.event.listen(engine, "commit", refuse)
    try:
        yield left
    finally:
        sa.event.remove(engine, "commit", refuse)


def redelivered(payload: dict, times: int = 3) -> None:
    """Run the deliver actor as the broker would: again, on the same payload, after each exception."""
    for _ in range(times):
        try:
            actors.deliver_message.fn(payload)
            return
        except Exception:  # noqa: BLE001 - any failure means the broker delivers the message again
            continue


def age(message_id: str, **values) -> None:
    with transaction("mailer") as session:
        session.execute(sa.text("UPDATE outbound_messages SET status = :status, attempts = 1, attempted_at = :at "
                                "WHERE id = :id"), {"id": message_id, **values})


def test_a_failed_commit_of_sent_after_the_server_accepted_does_not_send_the_email_again(system, smtp):
    message_id = stored_message()
    with commits_fail(when=lambda: len(smtp.envelopes) == 1) as left:
        redelivered({"message_id": message_id})

    assert left == [0]  # the fault did happen
    assert len(smtp.envelopes) == 1
    assert message_row(message_id)["status"] == "sent"


def test_bookkeeping_that_keeps_failing_leaves_the_outcome_to_the_redelivery_which_does_not_send(system, smtp,
                                                                                                monkeypatch):
    monkeypatch.setattr(get_settings(), "mail_bookkeeping_retry_s", 0.2)
    message_id = stored_message()
    carried = []
    monkeypatch.setattr(actors, "carry_on", lambda delay_ms, *args: carried.append(args))
    with commits_fail(when=lambda: len(smtp.envelopes) == 1, times=1000):
        actors.deliver_message.fn({"message_id": message_id})

    [(payload,)] = carried
    assert payload == {"message_id": message_id, "outcome": {"accepted": True}}
    assert message_row(message_id)["status"] == "sending"
    actors.deliver_message.fn(payload)  # the redelivery, once the database is back

    assert len(smtp.envelopes) == 1
    assert message_row(message_id)["status"] == "sent"


@pytest.mark.parametrize(("policy", "status", "emails"), [("resend", "sent", 1), ("hold", "held", 0)])
def test_a_message_found_sending_with_no_outcome_is_counted_ambiguous_and_the_policy_decides(
        system, smtp, monkeypatch, policy, status, emails):
    monkeypatch.setattr(get_settings(), "ambiguous_send_policy", policy)
    message_id = stored_message()
    age(message_id, status="sending", at=datetime.now(UTC) - timedelta(hours=1))  # died between 250 and commit

    actors.deliver_message.fn({"message_id": message_id})

    assert len(smtp.envelopes) == emails
    row = message_row(message_id)
    assert (row["status"], row["ambiguous"]) == (status, 1)


def test_a_message_found_sending_moments_ago_is_left_to_the_attempt_in_flight(system, smtp):
    message_id = stored_message()
    age(message_id, status="sending", at=datetime.now(UTC))

    with pytest.raises(actors.handlers.SendInFlight):
        actors.deliver_message.fn({"message_id": message_id})

    assert smtp.envelopes == []
    assert (message_row(message_id)["status"], message_row(message_id)["ambiguous"]) == ("sending", 0)


def test_mail_status_shows_operators_the_ambiguous_and_held_sends(system, smtp, monkeypatch):
    monkeypatch.setattr(get_settings(), "ambiguous_send_policy", "hold")
    held = stored_message()
    age(held, status="sending", at=datetime.now(UTC) - timedelta(hours=1))
    actors.deliver_message.fn({"message_id": held})
    stored_message()

    result = CliRunner().invoke(cli.cli, ["mail", "status"])

    assert result.exit_code == 0, result.output
    assert "queued 1" in result.output and "held 1" in result.output
    assert "ambiguous sends 1" in result.output and "policy hold" in result.output


def test_the_sweep_requeues_a_message_the_broker_lost_and_it_is_sent_once(system, monkeypatch):
    monkeypatch.setattr(get_settings(), "mail_reconcile_after_s", 60)
    lost, fresh = stored_message(), stored_message()  # stored with no broker message: as if Redis lost it
    with transaction("mailer") as session:
        session.execute(sa.text("UPDATE outbound_messages SET created_at = :at WHERE id = :id"),
                        {"id": lost, "at": datetime.now(UTC) - timedelta(minutes=5)})

    assert reconcile.sweep() == 1
    system.drain()
    actors.deliver_message.send({"message_id": lost})  # the "lost" message was only late after all
    system.drain()

    assert [m["Message-ID"] for m in system.mails()] == [f"<{lost}@marketplace>"]
    assert reconcile.sweep() == 0
    assert message_row(lost)["status"] == "sent" and message_row(fresh)["status"] == "queued"


@pytest.mark.parametrize(("route", "count"), [("chunks", 5), ("messages", 3)])
def test_the_sweep_requeues_a_campaign_whose_send_the_broker_lost_and_each_recipient_gets_one_email(
        system, monkeypatch, route, count):
    monkeypatch.setattr(get_settings(), "mail_reconcile_after_s", 60)
    monkeypatch.setattr(get_settings(), "campaign_chunk_spacing_s", 0.01)
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    with transaction("mailer") as session:  # stored, its first send lost with the broker's queue
        session.add(Campaign(id="c-lost", title="t", subject="Hi #name", body="Dear #name", route=route,
                             status="queued", total=count, sent=0, failed=0, chunk_size=2, next_chunk=0,
                             created_at=long_ago))
        session.flush()
        session.add_all(CampaignRecipient(campaign_id="c-lost", position=i, email=f"p{i}@example.com",
                                          fields={"name": f"P{i}"}, status="queued", attempts=0)
                        for i in range(count))

    assert reconcile.sweep() == 1
    assert reconcile.sweep() == 0  # swept once per threshold, not on every pass
    system.drain()

    assert sorted(m["To"] for m in system.mails()) == [f"p{i}@example.com" for i in range(count)]
    assert system.rows("mailer", "SELECT status, sent FROM campaigns") == [{"status": "completed", "sent": count}]


@pytest.mark.parametrize(("choice", "emails"), [("--resend", 1), ("--sent", 0)])
def test_an_operator_settles_a_held_email_as_sent_or_to_send_again(system, smtp, monkeypatch, choice, emails):
    monkeypatch.setattr(get_settings(), "ambiguous_send_policy", "hold")
    message_id = stored_message()
    age(message_id, status="sending", at=datetime.now(UTC) - timedelta(hours=1))
    actors.deliver_message.fn({"message_id": message_id})
    assert message_id in CliRunner().invoke(cli.cli, ["mail", "held"]).output

    released = CliRunner().invoke(cli.cli, ["mail", "release", message_id, choice])
    system.drain()

    assert released.exit_code == 0, released.output
    assert len(smtp.envelopes) == emails
    assert message_row(message_id)["status"] == "sent"


class Clock:
    """Stands in for `delivery.time`: sleeping moves the clock on at once, and the pauses are recorded."""

    def __init__(self):
        self.now, self.pauses = 1000.0, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, pause: float) -> None:
        self.pauses.append(pause)
        self.now += pause


# (window in seconds, failed commits before one succeeds or None for never) -> pauses, then whether it gave up
RETRIES = [
    (1.0, 0, [], False),
    (1.0, 2, [0.05, 0.1], False),
    (1.0, None, [0.05, 0.1, 0.2, 0.4], True),  # 0.75 s in, the next pause (0.8) would pass the window: give up
    (0.05, None, [0.05], True),  # a pause that ends right at the deadline is still taken
    (0.0, None, [], True),
    (9.0, None, [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0], True),  # doubling, at most 2 s apart
]


@pytest.mark.parametrize(("window", "failures", "pauses", "gives_up"), RETRIES)
def test_the_bookkeeping_is_retried_with_doubling_pauses_until_its_window_is_spent(
        system, monkeypatch, caplog, window, failures, pauses, gives_up):
    clock, calls = Clock(), []
    monkeypatch.setattr(delivery, "time", clock)

    def step(session):
        calls.append(session.execute(sa.text("SELECT 1")).scalar())
        if failures is None or len(calls) <= failures:
            raise sa.exc.OperationalError("UPDATE", None, ConnectionError("the database is restarting"))
        return "recorded"

    if gives_up:
        with pytest.raises(delivery.OutcomeUnrecorded) as raised:
            delivery.bookkeep(step, "outbound message m1", {"accepted": True}, window)
        assert raised.value.outcome == {"accepted": True} and "outbound message m1" in str(raised.value)
    else:
        assert delivery.bookkeep(step, "outbound message m1", {"accepted": True}, window) == "recorded"
    assert clock.pauses == pauses and len(calls) == len(pauses) + 1
    assert [m for m in caplog.messages if m.startswith("Recording a mail outcome failed")] == [
        f"Recording a mail outcome failed (OperationalError); trying again in {pause:.2f} s." for pause in pauses]


def test_an_error_that_is_not_the_databases_is_not_retried(system, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(delivery, "time", clock)
    with pytest.raises(ZeroDivisionError):
        delivery.retrying(lambda session: 1 / 0, 10)
    assert clock.pauses == []


def test_an_outcome_that_cannot_be_recorded_names_its_message_and_carries_the_outcome_on(system, monkeypatch):
    monkeypatch.setattr(get_settings(), "mail_bookkeeping_retry_s", 0)
    message_id, sent = stored_message(), []

    class Accepting:
        def send_many(self, messages):
            sent.extend(messages)
            return [None] * len(messages)

    with commits_fail(when=lambda: bool(sent), times=1000), \
            pytest.raises(delivery.OutcomeUnrecorded, match=f"outbound message {message_id}") as raised:
        delivery.deliver(message_id, Accepting(), get_settings())
    assert raised.value.outcome == {"accepted": True} and len(sent) == 1


class Unreachable:
    def send_many(self, messages):
        raise ProviderDown("SMTP 127.0.0.1:1 unreachable")


class Broken:
    def send_many(self, messages):
        raise KeyError("a transport bug")


def test_a_provider_that_cannot_be_reached_gives_the_attempt_back(system):
    message_id = stored_message()
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        delivery.deliver(message_id, Unreachable(), get_settings())
    row = message_row(message_id)
    assert (row["status"], row["attempts"], row["error"]) == ("queued", 0, None)


def test_a_transport_bug_is_recorded_as_a_temporary_refusal_and_raised(system):
    message_id = stored_message()
    with pytest.raises(KeyError):
        delivery.deliver(message_id, Broken(), get_settings())
    row = message_row(message_id)
    assert (row["status"], row["attempts"], row["error"]) == ("queued", 1, "KeyError: 'a transport bug'")


def test_a_transport_bug_whose_record_fails_carries_a_temporary_refusal_on(system, monkeypatch):
    monkeypatch.setattr(get_settings(), "mail_bookkeeping_retry_s", 0)
    message_id, claimed = stored_message(), []

    class BrokenAfterClaim:
        def send_many(self, messages):
            claimed.append(True)
            raise KeyError("a transport bug")

    with commits_fail(when=lambda: bool(claimed), times=1000), pytest.raises(delivery.OutcomeUnrecorded) as raised:
        delivery.deliver(message_id, BrokenAfterClaim(), get_settings())
    assert raised.value.outcome == {"accepted": False, "reason": "KeyError: 'a transport bug'", "permanent": False}


@pytest.mark.parametrize(("failure", "outcome"), [
    (None, {"accepted": True}),
    (SendFailed("550 no such user", permanent=True), {"accepted": False, "reason": "550 no such user",
                                                      "permanent": True}),
    (SendFailed("451 later", permanent=False), {"accepted": False, "reason": "451 later", "permanent": False}),
])
def test_an_outcome_travels_as_json_and_comes_back_the_same(failure, outcome):
    assert delivery.as_outcome(failure) == outcome
    assert delivery.from_outcome(json.loads(json.dumps(outcome))) == failure
