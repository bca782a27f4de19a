"""Where email goes: an SMTP server, or .eml files in a folder (the embedded default)."""

import os
import smtplib
import tempfile
from email.message import EmailMessage
from pathlib import Path

from shared.settings import Settings


class SmtpSender:
    """Delivers over SMTP, with STARTTLS and login when configured."""

    def __init__(self, host: str, port: int, *, username: str | None = None, password: str | None = None,
                 starttls: bool = False, timeout: float = 10.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.username, self.password, self.starttls = username, password, starttls

    def send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


class FileSender:
    """Writes each message as an .eml file, atomically, named by its Message-ID."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def send(self, message: EmailMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = message["Message-ID"].strip("<>").split("@")[0]
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".mail-")
        with os.fdopen(fd, "wb") as f:
            f.write(message.as_bytes())
        os.replace(tmp, self.folder / f"{name}.eml")


def sender_from(settings: Settings) -> SmtpSender | FileSender:
    if settings.mail_transport == "smtp":
        return SmtpSender(settings.smtp_host, settings.smtp_port, username=settings.smtp_username,
                          password=settings.smtp_password, starttls=settings.smtp_starttls,
                          timeout=settings.smtp_timeout_s)
    if settings.mail_transport == "file":
        return FileSender(settings.mail_dir)
    raise ValueError(f"unknown MARKET_MAIL_TRANSPORT {settings.mail_transport!r} (use smtp or file)")
