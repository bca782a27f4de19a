"""SMTP with STARTTLS and login against a real aiosmtpd server that demands both."""

import datetime
import ipaddress
import socket
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.mailer.senders import Outgoing, ProviderDown, SmtpSender


def self_signed(folder) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class Mailbox:
    def __init__(self):
        self.received, self.logins = [], []

    async def handle_DATA(self, server, session, envelope):
        self.received.append((session.authenticated, envelope.rcpt_tos))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def secure_server(tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(server, session, envelope, mechanism, auth_data):
        mailbox.logins.append((auth_data.login, auth_data.password))
        ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
        return AuthResult(success=ok, handled=False)

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_require_tls=True, authenticator=authenticate)
    controller.start()
    yield controller.port, cert, mailbox
    controller.stop()


def message(n: int) -> Outgoing:
    return Outgoing(f"m{n}", f"r{n}@example.com", f"Hello {n}", "text")


def test_a_batch_is_sent_over_one_verified_starttls_connection_after_login(secure_server):
    port, cert, mailbox = secure_server
    sender = SmtpSender("127.0.0.1", port, mail_from="from@example.com", username="mailer", password="s3cret",
                        starttls=True, ca_file=cert, timeout=5)
    assert sender.send_many([message(1), message(2), message(3)]) == [None, None, None]
    assert mailbox.received == [(True, ["r1@example.com"]), (True, ["r2@example.com"]), (True, ["r3@example.com"])]


def test_a_server_certificate_that_cannot_be_verified_counts_as_the_provider_being_down(secure_server):
    port, _, mailbox = secure_server
    sender = SmtpSender("127.0.0.1", port, mail_from="from@example.com", username="mailer", password="s3cret",
                        starttls=True, timeout=5)  # system CAs only: the self-signed certificate fails
    with pytest.raises(ProviderDown, match="refused the session"):
        sender.send_many([message(1)])
    assert mailbox.received == []


def test_a_wrong_password_counts_as_the_provider_being_down(secure_server):
    port, cert, mailbox = secure_server
    sender = SmtpSender("127.0.0.1", port, mail_from="from@example.com", username="mailer", password="wrong",
                        starttls=True, ca_file=cert, timeout=5)
    with pytest.raises(ProviderDown, match="refused the session"):
        sender.send_many([message(1)])
    assert mailbox.received == []


def test_a_username_without_a_password_logs_in_with_an_empty_one(secure_server):
    port, cert, mailbox = secure_server
    sender = SmtpSender("127.0.0.1", port, mail_from="from@example.com", username="mailer", starttls=True,
                        ca_file=cert, timeout=5)
    with pytest.raises(ProviderDown, match="refused the session"):
        sender.send_many([message(1)])
    assert set(mailbox.logins) == {(b"mailer", b"")}  # smtplib tries each mechanism the server offers


def test_a_server_that_demands_starttls_refuses_a_plain_session(secure_server):
    port, cert, mailbox = secure_server
    sender = SmtpSender("127.0.0.1", port, mail_from="from@example.com", timeout=5)
    outcomes = sender.send_many([message(1)])
    assert outcomes[0] is not None and "STARTTLS" in outcomes[0].reason.upper()
    assert mailbox.received == []
