"""SmtpSender's failure paths against a real aiosmtpd server that answers, refuses or hangs up as each case needs."""

import socket
import threading
from contextlib import contextmanager

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from services.mailer import senders
from services.mailer.senders import Outgoing, ProviderDown, ProviderUnavailable, SmtpSender, send_guarded
from shared.settings import get_settings
from tests.support import free_port, wait_until


class Scripted:
    """Accepts every message except as `script` says: {(command, recipient): reply or "drop"}. Logs commands."""

    def __init__(self, script: dict | None = None):
        self.script, self.commands, self.delivered = script or {}, [], []

    def _answer(self, server, command: str, to: str | None, ok: str) -> str:
        self.commands.append((command, to))
        reply = self.script.get((command, to), ok)
        if reply == "drop":
            server.transport.close()  # hangs up without a reply, as a crashing server or a cut network would
        return reply

    async def handle_MAIL(self, server, session, envelope, address, options):
        envelope.mail_from = address
        return self._answer(server, "MAIL", None, "250 OK")

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self._answer(server, "RCPT", address, "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        [to] = envelope.rcpt_tos
        reply = self._answer(server, "DATA", to, "250 Message accepted")
        if reply.startswith("250"):
            self.delivered.append(to)
        return reply

    async def handle_RSET(self, server, session, envelope):
        return self._answer(server, "RSET", None, "250 OK")


class Hangups(Controller):
    """A server that, while `down`, hangs up on every connection at once; counts connections."""

    def __init__(self, handler, **kwargs):
        super().__init__(handler, **kwargs)
        self.down, self.connections = False, 0

    def factory(self):
        controller = self

        class Counted(SMTP):
            def connection_made(self, transport):
                controller.connections += 1
                super().connection_made(transport)
                if controller.down:
                    transport.close()

        return Counted(self.handler)


@contextmanager
def server(script: dict | None = None):
    handler = Scripted(script)
    controller = Hangups(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield handler, controller, SmtpSender("127.0.0.1", controller.port, mail_from="from@example.com", timeout=5)
    finally:
        controller.stop()


def batch(count: int) -> list[Outgoing]:
    return [Outgoing(f"m{i}", f"r{i}@example.com", f"Hello {i}", "text") for i in range(count)]


# --- a connection lost mid-batch: nothing after it counts as delivered ------------------------------

@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_a_connection_dropped_mid_batch_reports_the_rest_as_not_sent(command):
    to = None if command == "MAIL" else "r2@example.com"
    script = {(command, to): "drop"} if command != "MAIL" else {}
    with server(script) as (handler, _, sender):
        if command == "MAIL":  # MAIL carries no recipient: drop on the third one
            calls = []
            original = handler._answer

            def third_mail(srv, cmd, rcpt, ok):
                if cmd == "MAIL":
                    calls.append(1)
                    if len(calls) == 3:
                        handler.commands.append((cmd, rcpt))
                        srv.transport.close()
                        return "drop"
                return original(srv, cmd, rcpt, ok)

            handler._answer = third_mail
        outcomes = sender.send_many(batch(5))

    assert handler.delivered == ["r0@example.com", "r1@example.com"]
    assert outcomes[:2] == [None, None]
    assert len(outcomes) == 5
    assert all(o.permanent is False and o.reason.startswith("connection lost: ") for o in outcomes[2:])


def test_a_connection_dropped_on_the_first_message_means_the_provider_is_down():
    with server({("DATA", "r0@example.com"): "drop"}) as (handler, _, sender), \
            pytest.raises(ProviderDown, match="dropped the connection"):
        sender.send_many(batch(3))
    assert handler.delivered == []


# --- reply codes: 4xx is for now, 5xx for good ---------------------------------------------------

CODES = [(421, False), (450, False), (451, False), (452, False), (499, False),
         (500, True), (550, True), (554, True)]


@pytest.mark.parametrize("command", ["RCPT", "DATA"])
@pytest.mark.parametrize(("code", "permanent"), CODES)
def test_a_refusal_is_permanent_exactly_when_its_code_is_5xx(command, code, permanent):
    with server({(command, "r0@example.com"): f"{code} refused"}) as (handler, _, sender):
        outcomes = sender.send_many(batch(3))

    assert len(outcomes) == 3
    assert outcomes[0].permanent is permanent and str(code) in outcomes[0].reason
    if code == 421:  # the server closes the connection: the next messages wait for the next attempt
        assert handler.delivered == []
        assert all(o.permanent is False and o.reason.startswith("connection closed by the server after: ")
                   for o in outcomes[1:])
    else:
        assert outcomes[1:] == [None, None] and handler.delivered == ["r1@example.com", "r2@example.com"]


def test_a_server_that_hangs_up_on_the_reset_after_a_refusal_leaves_the_rest_for_the_next_attempt():
    with server({("RCPT", "r0@example.com"): "550 no", ("RSET", None): "drop"}) as (handler, _, sender):
        outcomes = sender.send_many(batch(3))

    assert outcomes[0].permanent is True and handler.delivered == []
    assert len(outcomes) == 3 and all(
        o.permanent is False and o.reason.startswith("connection closed by the server after: ") for o in outcomes[1:])


@pytest.mark.parametrize("command", ["RCPT", "DATA"])
def test_the_session_is_reset_after_a_refused_message_before_the_next_is_sent(command):
    with server({(command, "r0@example.com"): "550 no"}) as (handler, _, sender):
        outcomes = sender.send_many(batch(2))

    assert outcomes[1] is None and handler.delivered == ["r1@example.com"]
    after_refusal = handler.commands[handler.commands.index((command, "r0@example.com")) + 1:]
    resets = len(after_refusal) - 3  # smtplib resets after a refusal, and SmtpSender checks the session with one
    assert resets >= 1 and after_refusal[:resets] == [("RSET", None)] * resets
    assert after_refusal[resets:] == [("MAIL", None), ("RCPT", "r1@example.com"), ("DATA", "r1@example.com")]


# --- the circuit breaker -------------------------------------------------------------------------

@pytest.fixture
def breaker(monkeypatch):
    monkeypatch.setattr(get_settings(), "breaker_fail_max", 3)
    monkeypatch.setattr(get_settings(), "breaker_reset_s", 0.3)
    senders.breaker.cache_clear()
    yield
    senders.breaker.cache_clear()


def test_the_breaker_opens_at_its_threshold_stops_calling_the_provider_and_closes_after_its_reset(breaker):
    with server() as (handler, controller, sender):
        controller.down, before = True, controller.connections  # start() made one connection of its own
        for _ in range(2):  # below the threshold, each send tries the provider
            with pytest.raises(ProviderUnavailable, match="SMTP"):
                send_guarded(sender, batch(1))
        assert controller.connections - before == 2 and senders.breaker().current_state == "closed"
        with pytest.raises(ProviderUnavailable):
            send_guarded(sender, batch(1))  # the third failure opens the circuit
        assert controller.connections - before == 3 and senders.breaker().current_state == "open"

        for _ in range(5):
            with pytest.raises(ProviderUnavailable, match="(?i)circuit"):
                send_guarded(sender, batch(1))
        assert controller.connections - before == 3  # open: the provider is not called at all

        controller.down = False
        assert wait_until("the breaker to let a trial send through",
                          lambda: _sent(sender), timeout=10, interval=0.05) == [None]
        assert senders.breaker().current_state == "closed" and handler.delivered == ["r0@example.com"]


class Overlapping:
    """A transport whose sends wait for each other: two can only finish if they run at the same time."""

    def __init__(self, parties: int):
        self.together = threading.Barrier(parties, timeout=10)

    def send_many(self, messages):
        self.together.wait()
        return [None] * len(messages)


def test_a_closed_breaker_lets_a_process_s_threads_send_at_the_same_time(breaker):
    sender, outcomes = Overlapping(2), []
    threads = [threading.Thread(target=lambda: outcomes.append(send_guarded(sender, batch(1)))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [[None], [None]] and not sender.together.broken


def _sent(sender):
    try:
        return send_guarded(sender, batch(1))
    except ProviderUnavailable:
        return None


# --- timeouts ------------------------------------------------------------------------------------

def test_a_server_that_never_answers_times_out_as_the_provider_being_down():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts the connection in the kernel and never says a word
        sender = SmtpSender("127.0.0.1", silent.getsockname()[1], mail_from="from@example.com", timeout=0.2)
        raised = []
        worker = threading.Thread(target=lambda: _catch(raised, sender), daemon=True)
        worker.start()
        worker.join(30)  # without a timeout the send would hang here for good
    assert not worker.is_alive()
    [error] = raised
    assert isinstance(error, ProviderDown) and "timed out" in str(error)


def _catch(raised: list, sender: SmtpSender) -> None:
    try:
        sender.send_many(batch(1))
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
        raised.append(exc)


def test_the_configured_smtp_timeout_reaches_the_sender(monkeypatch):
    monkeypatch.setattr(get_settings(), "mail_transport", "smtp")
    monkeypatch.setattr(get_settings(), "smtp_timeout_s", 7.5)
    assert senders.sender_from(get_settings()).timeout == 7.5
