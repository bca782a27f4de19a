"""Each transport answers one outcome per message: the SMTP reply classes, .eml files, and the seeded mock provider."""

import email
import smtplib
from email import policy
from pathlib import Path

import pytest

from services.mailer import senders
from services.mailer.senders import FileSender, Outgoing, SendFailed, SimulatedSender, SmtpSender, smtp_failure
from shared.settings import get_settings


def batch(count: int, attempt: int = 0) -> list[Outgoing]:
    return [Outgoing(f"m{i}", f"r{i}@example.com", f"Hello {i}", f"text {i}", attempt=attempt) for i in range(count)]


# --- what an SMTP exception says: permanent exactly when every reply is 5xx ----------------------

def refused(*codes: int) -> smtplib.SMTPRecipientsRefused:
    return smtplib.SMTPRecipientsRefused({f"r{i}@example.com": (code, b"no") for i, code in enumerate(codes)})


FAILURES = [
    (smtplib.SMTPDataError(550, b"rejected"), True),
    (smtplib.SMTPDataError(500, b"syntax"), True),
    (smtplib.SMTPDataError(599, b"last 5xx"), True),
    (smtplib.SMTPDataError(499, b"busy"), False),
    (smtplib.SMTPDataError(451, b"try later"), False),
    (smtplib.SMTPDataError(600, b"not an SMTP class"), False),
    (smtplib.SMTPSenderRefused(553, b"bad sender", "from@example.com"), True),
    (smtplib.SMTPSenderRefused(452, b"full", "from@example.com"), False),
    (refused(550), True),
    (refused(550, 554), True),
    (refused(550, 451), False),  # the 4xx recipient can be tried again
    (refused(451), False),
    (refused(600), False),
    (refused(499), False),
    (refused(500), True),
    (smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server"), True),  # the same message fails again
    (smtplib.SMTPServerDisconnected("gone"), False),
    (smtplib.SMTPException("unknown"), False),
]


@pytest.mark.parametrize(("exc", "permanent"), FAILURES, ids=lambda v: repr(v)[:40])
def test_a_failure_is_permanent_exactly_when_the_server_refused_for_good(exc, permanent):
    failure = smtp_failure(exc)
    assert failure.permanent is permanent
    assert failure.reason == f"{type(exc).__name__}: {exc}"


# --- the .eml folder ------------------------------------------------------------------------------

def test_the_file_sender_writes_each_message_as_one_eml_file_named_by_its_id_in_a_folder_it_makes(tmp_path):
    folder = tmp_path / "not" / "there" / "yet"
    sender = FileSender(folder, "from@example.com")
    messages = [*batch(2), Outgoing("m2", "r2@example.com", "Hi", "text 2", "<p>html 2</p>")]

    assert sender.send_many(messages) == [None, None, None]
    assert sender.send_many(batch(1)) == [None]  # the folder exists now: written again, in place

    assert sorted(p.name for p in folder.iterdir()) == ["m0.eml", "m1.eml", "m2.eml"]  # no temporary file left
    mail = email.message_from_bytes((folder / "m2.eml").read_bytes(), policy=policy.default)
    assert (mail["From"], mail["To"], mail["Subject"]) == ("from@example.com", "r2@example.com", "Hi")
    assert mail["Message-ID"] == "<m2@marketplace>" and mail["Date"].endswith("-0000")  # UTC, whatever the zone
    assert mail.get_body(("plain",)).get_content().strip() == "text 2"
    assert mail.get_body(("html",)).get_content().strip() == "<p>html 2</p>"
    plain = email.message_from_bytes((folder / "m0.eml").read_bytes(), policy=policy.default)
    assert plain.get_content_type() == "text/plain" and plain.get_content().strip() == "text 0"


def test_a_message_is_written_under_a_hidden_name_beside_its_final_one_then_renamed(tmp_path, monkeypatch):
    renames, real = [], senders.os.replace

    def rename(src, dst):
        renames.append((Path(src), Path(dst)))
        real(src, dst)

    monkeypatch.setattr(senders.os, "replace", rename)
    FileSender(tmp_path, "from@example.com").send_many(batch(1))

    [(written, final)] = renames
    assert final == tmp_path / "m0.eml"
    # Same folder, so the rename is atomic (not a copy across file systems); a reader never sees half a message.
    assert written.parent == tmp_path and written.name.startswith(".mail-") and not written.name.endswith(".eml")


# --- the seeded mock provider ---------------------------------------------------------------------

def test_the_simulated_provider_answers_the_same_outcomes_for_the_same_seed_message_and_attempt():
    def outcomes(seed: int, attempt: int = 0):
        return SimulatedSender(0, 0, error_rate=0.5, seed=seed).send_many(batch(40, attempt))

    first = outcomes(seed=7)
    assert first == outcomes(seed=7)
    assert first != outcomes(seed=8) and first != outcomes(seed=7, attempt=1)
    failed = [o for o in first if o is not None]
    assert 5 < len(failed) < 35  # about half
    assert all(o == SendFailed("simulated provider error 451", permanent=False) for o in failed)


@pytest.mark.parametrize(("error_rate", "failed"), [(0.0, 0), (1.0, 20)])
def test_the_simulated_provider_fails_at_its_error_rate(error_rate, failed):
    outcomes = SimulatedSender(0, 0, error_rate=error_rate).send_many(batch(20))
    assert len(outcomes) == 20 and sum(o is not None for o in outcomes) == failed


def test_the_simulated_provider_is_the_seeds_mock_unless_told_otherwise():
    sender = SimulatedSender()  # 20-80 ms a send, 1% temporary errors
    assert (sender.min_delay, sender.max_delay, sender.error_rate, sender.seed, sender.concurrency) == (
        0.02, 0.08, 0.01, 0, 5000)


def test_an_smtp_sender_made_without_settings_never_waits_unbounded_and_sends_in_the_clear():
    sender = SmtpSender("127.0.0.1", 25, mail_from="from@example.com")
    assert (sender.timeout, sender.starttls, sender.username, sender.password, sender.ca_file) == (
        10.0, False, None, None, None)


# --- the transport the settings name ---------------------------------------------------------------

def test_the_settings_choose_the_transport_and_hand_it_its_settings(monkeypatch, tmp_path):
    settings = get_settings()
    monkeypatch.setattr(settings, "mail_from", "shop@example.com")
    for name, value in {"mail_transport": "smtp", "smtp_host": "mx.example.com", "smtp_port": 2525,
                        "smtp_username": "u", "smtp_password": "p", "smtp_starttls": True,
                        "smtp_ca_file": "/ca.pem"}.items():
        monkeypatch.setattr(settings, name, value)
    smtp = senders.sender_from(settings)
    assert isinstance(smtp, SmtpSender)
    assert (smtp.host, smtp.port, smtp.mail_from, smtp.username, smtp.password, smtp.starttls, smtp.ca_file) == (
        "mx.example.com", 2525, "shop@example.com", "u", "p", True, "/ca.pem")

    monkeypatch.setattr(settings, "mail_transport", "file")
    files = senders.sender_from(settings)
    assert isinstance(files, FileSender) and (files.folder, files.mail_from) == (settings.mail_dir, "shop@example.com")

    monkeypatch.setattr(settings, "mail_transport", "simulated")
    for name, value in {"simulated_min_delay_ms": 5, "simulated_max_delay_ms": 9, "simulated_error_rate": 0.25,
                        "simulated_seed": 3}.items():
        monkeypatch.setattr(settings, name, value)
    simulated = senders.sender_from(settings)
    assert isinstance(simulated, SimulatedSender)
    assert (simulated.min_delay, simulated.max_delay, simulated.error_rate, simulated.seed) == (0.005, 0.009, 0.25, 3)

    monkeypatch.setattr(settings, "mail_transport", "carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon"):
        senders.sender_from(settings)
