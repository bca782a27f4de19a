"""Invoice runs (seed 000): seed customers and invoices fast, ask the mailer to send the last
invoice of every customer in chunks, and record what the mailer reports back."""

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import groupby
from operator import itemgetter

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.billing.models import Customer, Invoice, InvoiceRun, reported_chunks, run_items
from shared.contracts import InvoiceEmailsRequested, InvoiceEmailsSent
from shared.db import engine_for, transaction
from shared.outbox import publish

SERVICE = "billing"
CHUNKS_PER_COMMIT = 10

# --- seeding ---------------------------------------------------------------------------------

def seed(users: int, per_user: int, seed: int = 0, batch: int = 100_000) -> None:
    """Add `users` customers with `per_user` invoices each, in bulk (COPY on PostgreSQL)."""
    engine = engine_for(SERVICE)
    with engine.connect() as conn:
        first = (conn.scalar(sa.select(sa.func.max(Customer.id))) or 0) + 1
    rng = random.Random(seed)
    today = date.today()
    for start in range(first, first + users, batch):
        ids = range(start, min(start + batch, first + users))
        customers = [(i, f"user{i}@example.com", f"User {i}") for i in ids]
        invoices = [(i, f"INV-{i:07d}-{k}", rng.randrange(500, 50_000), "USD",
                     datetime(today.year, 1, 1, tzinfo=UTC) + timedelta(days=30 * k),
                     today + timedelta(days=30 * k + 14)) for i in ids for k in range(per_user)]
        _bulk_insert(engine, Customer.__table__, ("id", "email", "name"), customers)
        _bulk_insert(engine, Invoice.__table__, ("customer_id", "number", "amount_minor", "currency", "issued_at",
                                                 "due_date"), invoices)


def _bulk_insert(engine: sa.Engine, table: sa.Table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            cursor = conn.connection.cursor()
            with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


# --- a run -----------------------------------------------------------------------------------

def start_run(chunk_size: int, retry_failed: bool = False) -> InvoiceRun | None:
    """Pick the last invoice of every customer that still needs its email, split into chunks.
    Returns None when there is nothing to send."""
    latest = sa.select(Invoice.id, Invoice.emailed_at, Invoice.email_error, sa.func.row_number().over(
        partition_by=Invoice.customer_id, order_by=(Invoice.issued_at.desc(), Invoice.id.desc())).label("rank")
    ).subquery()
    wanted = (latest.c.email_error.is_not(None)) if retry_failed else latest.c.email_error.is_(None)
    run_id = str(uuid.uuid4())
    ordinal = sa.func.row_number().over(order_by=latest.c.id) - 1
    picked = sa.select(sa.literal(run_id), ordinal // chunk_size, latest.c.id).where(
        latest.c.rank == 1, latest.c.emailed_at.is_(None), wanted)
    with transaction(SERVICE) as session:
        session.execute(run_items.insert().from_select(["run_id", "chunk", "invoice_id"], picked))
        total = session.scalar(sa.select(sa.func.count()).where(run_items.c.run_id == run_id))
        if not total:
            return None
        run = InvoiceRun(id=run_id, total=total, chunks=-(-total // chunk_size), started_at=datetime.now(UTC))
        session.add(run)
    return run


def request_chunks(run: InvoiceRun) -> Iterator[int]:
    """Publish every chunk the mailer has not reported on, a few per transaction; yields how many so far.

    A chunk's event id is derived from (run, chunk), so asking again for a chunk still queued or
    being sent is harmless: the mailer's inbox skips it. That is what makes a re-run resume."""
    reported = sa.select(reported_chunks.c.chunk).where(reported_chunks.c.run_id == run.id)
    with transaction(SERVICE) as session:
        wanted = session.scalars(sa.select(run_items.c.chunk).distinct().where(
            run_items.c.run_id == run.id, run_items.c.chunk.not_in(reported)).order_by(run_items.c.chunk)).all()
    invoices, customers = Invoice.__table__.c, Customer.__table__.c
    # Core columns named as the contract names them: the rows are validated into the event as they come, with
    # no ORM loading and no model or dictionary built by hand per invoice.
    columns = (run_items.c.chunk, invoices.id.label("invoice_id"), invoices.customer_id.label("user_id"),
               customers.email, customers.name, invoices.number, invoices.amount_minor, invoices.currency,
               sa.cast(invoices.due_date, sa.String).label("due_date"))
    for first in range(0, len(wanted), CHUNKS_PER_COMMIT):
        chunks = wanted[first:first + CHUNKS_PER_COMMIT]
        with transaction(SERVICE) as session:
            rows = session.connection().execute(
                sa.select(*columns).join(Invoice.__table__, invoices.id == run_items.c.invoice_id)
                .join(Customer.__table__, customers.id == invoices.customer_id)
                .where(run_items.c.run_id == run.id, run_items.c.chunk.in_(chunks))
                .order_by(run_items.c.chunk, invoices.id)).mappings().all()
            for chunk, group in groupby(rows, key=itemgetter("chunk")):
                event = InvoiceEmailsRequested.model_validate({"run_id": run.id, "chunk": chunk,
                                                               "invoices": list(group)})
                publish(session, event, event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"invoice-run:{run.id}:{chunk}")))
        yield first + len(chunks)


def record_sent(session: Session, event: InvoiceEmailsSent) -> None:
    """Mark invoices emailed or failed and move the run's counters; the inbox makes a repeat a no-op."""
    now = datetime.now(UTC)
    session.execute(reported_chunks.insert().values(run_id=event.run_id, chunk=event.chunk))
    if event.sent:
        session.execute(sa.update(Invoice).where(Invoice.id.in_(event.sent))
                        .values(emailed_at=now, email_error=None))
    by_reason = defaultdict(list)
    for invoice_id, reason in event.failed.items():
        by_reason[reason].append(invoice_id)
    for reason, ids in by_reason.items():
        session.execute(sa.update(Invoice).where(Invoice.id.in_(ids)).values(email_error=reason))
    done = InvoiceRun.sent + InvoiceRun.failed + len(event.sent) + len(event.failed)
    session.execute(sa.update(InvoiceRun).where(InvoiceRun.id == event.run_id).values(
        sent=InvoiceRun.sent + len(event.sent), failed=InvoiceRun.failed + len(event.failed),
        finished_at=sa.case((done >= InvoiceRun.total, now), else_=None)))


def progress(run_id: str) -> InvoiceRun | None:
    with transaction(SERVICE) as session:
        return session.get(InvoiceRun, run_id)


def unfinished_run() -> InvoiceRun | None:
    with transaction(SERVICE) as session:
        return session.scalars(sa.select(InvoiceRun).where(InvoiceRun.finished_at.is_(None))
                               .order_by(InvoiceRun.started_at.desc())).first()
