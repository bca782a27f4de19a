"""The mailer: safe templates, money as people read it, and delivery to a real SMTP server."""

import email
import logging
import socket
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from email import policy

import pytest
from aiosmtpd.controller import Controller

from services.mailer import actors, delivery
from services.mailer.models import OutboundMessage
from services.mailer.senders import Outgoing, SmtpSender, as_email
from services.mailer.templates import render
from shared.contracts import DownloadLink, DownloadsReady, PurchaseCompleted, PurchaseLine, envelope, money
from shared.db import transaction
from shared.settings import get_settings

MAIL_FROM = "Marketplace <from@example.com>"


# --- a real SMTP server -------------------------------------------------------------------------

class Collector:
    """An aiosmtpd handler that keeps every envelope, or refuses recipients with `refuse_rcpt`."""

    def __init__(self, refuse_rcpt: str | None = None, refuse_data: str | None = None):
        self.refuse_rcpt, self.refuse_data = refuse_rcpt, refuse_data
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_data:
            return self.refuse_data
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_server(refuse_rcpt: str | None = None, refuse_data: str | None = None):
    collector = Collector(refuse_rcpt, refuse_data)
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield collector, SmtpSender("127.0.0.1", controller.port, mail_from=MAIL_FROM, timeout=5)
    finally:
        controller.stop()


def received(envelope) -> email.message.EmailMessage:
    return email.message_from_bytes(envelope.original_content, policy=policy.default)


# --- stored messages ----------------------------------------------------------------------------

def purchase(**changes) -> PurchaseCompleted:
    data = {"order_id": 7, "order_reference": "ord_abc123", "buyer_id": 3, "buyer_email": "buyer@example.com",
            "buyer_name": "Ann Buyer", "currency": "USD", "total_minor": 1999, "provider": "stripe",
            "paid_at": datetime.now(UTC),
            "lines": [PurchaseLine(product_id=1, seller_id=2, title="Field Guide", price_minor=1999)]} | changes
    return PurchaseCompleted(**data)


def stored_message(status: str = "queued", to: str = "buyer@example.com") -> str:
    subject, text, html = render("order_confirmation", purchase().model_dump())
    message_id = str(uuid.uuid4())
    with transaction("mailer") as session:
        session.add(OutboundMessage(id=message_id, dedupe_key=f"test:{message_id}", template="order_confirmation",
                                    to_email=to, subject=subject, text=text, html=html, status=status))
    return message_id


def deliver(message_id: str, sender) -> str | None:
    return delivery.deliver(message_id, sender, get_settings())


def message_row(message_id: str) -> dict:
    [row] = [r for r in _rows() if r["id"] == message_id]
    return row


def _rows() -> list[dict]:
    with transaction("mailer") as session:
        return [{"id": m.id, "status": m.status, "error": m.error, "attempts": m.attempts, "sent_at": m.sent_at,
                 "ambiguous": m.ambiguous}
                for m in session.query(OutboundMessage)]


# --- templates --------------------------------------------------------------------------------------

def test_a_buyer_name_with_markup_is_escaped_in_the_html_part_of_the_order_confirmation():
    context = purchase(buyer_name="<script>alert(1)</script>",
                       lines=[PurchaseLine(product_id=1, seller_id=2, title='<img src=x onerror="pwn()">',
                                           price_minor=1999)]).model_dump()
    _, text, html = render("order_confirmation", context)

    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=&#34;pwn()&#34;&gt;" in html
    assert "Hello <script>alert(1)</script>," in text  # plain text is shown as text, never interpreted


def test_a_buyer_name_with_markup_is_escaped_in_the_html_part_of_the_downloads_email():
    context = DownloadsReady(order_id=7, buyer_email="b@example.com", buyer_name="<b>Ann</b>", links=[
        DownloadLink(product_id=1, title="<i>Atlas</i>", url='http://x/downloads/t"><script>',
                     expires_at=datetime(2030, 1, 1, tzinfo=UTC))]).model_dump()
    _, _, html = render("downloads_ready", context)

    assert "<b>Ann</b>" not in html and "&lt;b&gt;Ann&lt;/b&gt;" in html
    assert "<i>Atlas</i>" not in html and '"><script>' not in html


@pytest.mark.parametrize("breaker", ["\r\n", "\n", "\r", "\u2028", "\x85", "\x0b", "\x0c"])
def test_the_subject_never_holds_a_line_break_whatever_the_order_reference_holds(breaker):
    reference = f"ord_1{breaker}Bcc: x@example.com"
    subject, _, _ = render("order_confirmation", purchase(order_reference=reference).model_dump())

    assert "\r" not in subject and "\n" not in subject and len(subject.splitlines()) == 1
    assert subject == "Order ord_1 Bcc: x@example.com confirmed: 19.99 USD"

    message = Outgoing(str(uuid.uuid4()), "buyer@example.com", subject, "t", "<p>h</p>")
    parsed = email.message_from_bytes(as_email(message, MAIL_FROM).as_bytes(), policy=policy.default)
    assert parsed["Bcc"] is None and parsed["To"] == "buyer@example.com"


@pytest.mark.parametrize(("subject", "text"), [
    ("Order ord_1 confirmed: 19.99 USD", "plain words"),
    ("Commande ord_1 confirmée : 19,99 €", "Merci, Zoë — à bientôt"),
    ("注文 ord_1 確認", "ありがとう"),
])
def test_an_email_reads_back_with_its_subject_text_and_html_whatever_its_characters(subject, text):
    message = Outgoing(str(uuid.uuid4()), "buyer@example.com", subject, text, f"<p>{text}</p>")
    raw = as_email(message, MAIL_FROM).as_bytes()
    assert raw.isascii()  # 7-bit on the wire, headers encoded: no server has to speak SMTPUTF8
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert (parsed["Subject"], parsed["From"], parsed["Message-ID"]) == (
        subject, MAIL_FROM, f"<{message.message_id}@marketplace>")
    assert parsed.get_body(("plain",)).get_content().rstrip("\n") == text
    assert parsed.get_body(("html",)).get_content().rstrip("\n") == f"<p>{text}</p>"


@pytest.mark.parametrize("subject", ["Hi\nBcc: x@example.com", "Hi\r\nBcc: x@example.com", "Hi\rBcc: x@example.com"])
def test_an_email_whose_subject_holds_another_header_is_never_written(subject):
    message = Outgoing(str(uuid.uuid4()), "buyer@example.com", subject, "t")
    with pytest.raises(email.errors.HeaderParseError):
        as_email(message, MAIL_FROM).as_bytes()


@pytest.mark.parametrize(("minor", "currency", "shown"), [
    (1999, "USD", "19.99 USD"), (500, "JPY", "500 JPY"), (5, "EUR", "0.05 EUR"), (100, "INR", "1.00 INR"),
    (12345, "KWD", "12.345 KWD"),
    (123456789, "USD", "1,234,567.89 USD"), (1234567, "KRW", "1,234,567 KRW"), (0, "USD", "0.00 USD")])
def test_money_is_shown_in_major_units_with_the_currencys_decimals(minor, currency, shown):
    assert money(minor, currency) == shown


def test_the_confirmation_shows_the_total_and_each_line_as_money():
    context = purchase(currency="JPY", total_minor=500,
                       lines=[PurchaseLine(product_id=1, seller_id=2, title="Atlas", price_minor=500)]).model_dump()
    subject, text, html = render("order_confirmation", context)

    assert subject == "Order ord_abc123 confirmed: 500 JPY"
    assert "- Atlas: 500 JPY" in text and "<strong>500 JPY</strong>" in html


# --- SMTP delivery --------------------------------------------------------------------------------

def test_the_smtp_sender_delivers_a_message_with_text_and_html_parts_to_a_real_server():
    message = Outgoing(str(uuid.uuid4()), "buyer@example.com", "Hello there", "plain words", "<p>html words</p>")
    with smtp_server() as (server, sender):
        assert sender.send_many([message]) == [None]

    [envelope] = server.envelopes
    assert envelope.mail_from == "from@example.com" and envelope.rcpt_tos == ["buyer@example.com"]
    mail = received(envelope)
    assert mail["Subject"] == "Hello there" and mail["Message-ID"] == f"<{message.message_id}@marketplace>"
    assert mail.get_content_type() == "multipart/alternative"
    assert mail.get_body(("plain",)).get_content().strip() == "plain words"
    assert mail.get_body(("html",)).get_content().strip() == "<p>html words</p>"


def test_delivering_a_stored_message_over_smtp_marks_it_sent(system):
    message_id = stored_message()
    with smtp_server() as (server, sender):
        deliver(message_id, sender)

    [envelope] = server.envelopes
    mail = received(envelope)
    assert mail["Subject"] == "Order ord_abc123 confirmed: 19.99 USD"
    assert "19.99 USD" in mail.get_body(("plain",)).get_content()
    assert "<strong>19.99 USD</strong>" in mail.get_body(("html",)).get_content()
    row = message_row(message_id)
    assert (row["status"], row["attempts"], row["error"]) == ("sent", 1, None) and row["sent_at"] is not None


def test_a_recipient_the_server_refuses_fails_the_message_with_the_reason_and_does_not_raise(system):
    message_id = stored_message(to="nobody@example.com")
    with smtp_server(refuse_rcpt="550 no such user") as (server, sender):
        deliver(message_id, sender)

    assert server.envelopes == []
    row = message_row(message_id)
    assert row["status"] == "failed" and row["sent_at"] is None
    assert "SMTPRecipientsRefused" in row["error"] and "no such user" in row["error"]


def test_a_recipient_refused_only_for_now_leaves_the_message_queued_for_a_retry(system):
    """A 4xx reply (greylisting, full mailbox) is temporary: the message must not fail for good."""
    message_id = stored_message()
    with smtp_server(refuse_rcpt="450 4.7.1 greylisted, try again later") as (server, sender):
        refused_for_now = deliver(message_id, sender)  # the actor raises on it, after the commit

    assert server.envelopes == [] and "greylisted" in refused_for_now
    row = message_row(message_id)
    assert (row["status"], row["attempts"]) == ("queued", 1) and "greylisted" in row["error"]


@pytest.mark.parametrize(("reply", "status"), [("554 5.6.0 message rejected as spam", "failed"),
                                                ("451 4.3.0 try again later", "queued")])
def test_a_message_refused_after_its_data_fails_for_good_only_on_a_5xx_reply(system, reply, status):
    message_id = stored_message()
    with smtp_server(refuse_data=reply) as (server, sender):
        refused_for_now = deliver(message_id, sender)
    assert message_row(message_id)["status"] == status
    assert (refused_for_now is not None) == (status == "queued")


@pytest.mark.parametrize("status", ["sent", "failed"])
def test_a_message_no_longer_queued_is_not_sent_again(system, status):
    message_id = stored_message(status=status)
    with smtp_server() as (server, sender):
        deliver(message_id, sender)

    assert server.envelopes == []
    row = message_row(message_id)
    assert (row["status"], row["attempts"]) == (status, 0)


def test_a_server_that_answers_421_mid_batch_keeps_the_messages_already_sent_as_sent():
    """421 closes the connection: what went before is sent, what comes after is tried again later."""

    class ClosesOnThird(Collector):
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("r2@"):
                return "421 4.7.0 too busy, closing connection"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    collector = ClosesOnThird()
    controller = Controller(collector, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        sender = SmtpSender("127.0.0.1", controller.port, mail_from=MAIL_FROM, timeout=5)
        outcomes = sender.send_many([Outgoing(f"m{i}", f"r{i}@example.com", "s", "t") for i in range(5)])
    finally:
        controller.stop()
    assert outcomes[:2] == [None, None]
    assert all(o is not None and not o.permanent for o in outcomes[2:])
    assert [e.rcpt_tos for e in collector.envelopes] == [["r0@example.com"], ["r1@example.com"]]


# --- the same email announced twice --------------------------------------------------------------

def downloads_ready() -> DownloadsReady:
    return DownloadsReady(order_id=7, buyer_email="buyer@example.com", buyer_name="Ann", links=[
        DownloadLink(product_id=1, title="Atlas", url="http://x/downloads/t",
                     expires_at=datetime(2030, 1, 1, tzinfo=UTC))])


@pytest.mark.parametrize(("consumer", "event"), [(actors.on_purchase_completed, purchase),
                                                 (actors.on_downloads_ready, downloads_ready)])
def test_an_email_announced_again_under_a_new_event_id_is_recognised_as_recorded_and_sent_once(
        system, caplog, consumer, event):
    """Its dedupe key names the order, not the event: a republished event is the same email, not an error."""
    consumer.fn(envelope(event()))
    with caplog.at_level(logging.INFO, logger="services.mailer.handlers"):
        consumer.fn(envelope(event()))  # a new event id: the inbox does not know it
    system.drain()

    assert len(_rows()) == 1 and len(system.mails()) == 1
    assert system.rows("mailer", "SELECT count(*) AS n FROM outbox WHERE actor = 'mailer.deliver_message'") == [
        {"n": 1}]
    assert [r.levelno for r in caplog.records if "already recorded" in r.getMessage()] == [logging.INFO]
