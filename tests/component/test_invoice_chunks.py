"""A chunk of invoice emails: retries within the chunk, and an outage that starts after the first attempt."""

from datetime import date

from services.mailer import invoices
from services.mailer.senders import ProviderDown, SendFailed
from shared.contracts import InvoiceEmail, InvoiceEmailsRequested, envelope
from shared.settings import get_settings
from shared.storage import LocalStorage


class FlakyProvider:
    """Refuses every message of the first attempt whose id ends in 1 for now, then goes down."""

    def __init__(self):
        self.calls = []

    def send_many(self, messages):
        self.calls.append([m.message_id for m in messages])
        if len(self.calls) > 1:
            raise ProviderDown("connection refused")
        return [SendFailed("451 try later", permanent=False) if m.message_id.split("-")[1].endswith("1") else None
                for m in messages]


def chunk() -> InvoiceEmailsRequested:
    return InvoiceEmailsRequested(run_id="00000000-run", chunk=0, invoices=[
        InvoiceEmail(invoice_id=i, user_id=i, email=f"u{i}@example.com", name=f"U {i}", number=f"INV-{i}",
                     amount_minor=1000, currency="USD", due_date=date(2027, 1, 1).isoformat())
        for i in range(1, 13)])


def test_an_outage_after_the_first_attempt_keeps_what_was_sent_and_reports_the_rest_failed(system):
    provider = FlakyProvider()
    storage = LocalStorage(get_settings().storage_dir)
    invoices.send_chunk(envelope(chunk()), provider, storage, get_settings())

    sent_first = [i for i in range(1, 13) if not str(i).endswith("1")]
    assert len(provider.calls) == 2 and len(provider.calls[1]) == 2  # invoices 1 and 11 tried again
    [row] = system.rows("mailer", "SELECT sent, failed FROM invoice_chunks")
    assert row == {"sent": len(sent_first), "failed": 2}
    text = (get_settings().storage_dir / "emails" / "00000000-run" / "chunk-000000.txt").read_text()
    assert "10 sent, 2 failed" in text and "provider unavailable on attempt 2" in text
