"""Billing's tables: purchase lines and a double-entry-style ledger with running balances."""

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base as KernelBase


class Base(KernelBase):
    __abstract__ = True
    metadata = sa.MetaData()


class PurchaseLine(Base):
    __tablename__ = "purchase_lines"
    __table_args__ = (sa.UniqueConstraint("order_id", "product_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    product_id: Mapped[int] = mapped_column(sa.Integer)
    seller_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    buyer_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    price_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    purchased_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class LedgerEntry(Base):
    """One movement of money into an account; the amounts of an order's entries sum to what was paid."""

    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(sa.String(64), index=True)  # seller:<id> | platform:fees
    order_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    product_id: Mapped[int] = mapped_column(sa.Integer)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    memo: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class Balance(Base):
    __tablename__ = "balances"
    account: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    balance_minor: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class Customer(Base):
    """Whom billing invoices: its own copy of a buyer's contact details."""

    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254))
    name: Mapped[str] = mapped_column(sa.String(120))


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.Integer)
    number: Mapped[str] = mapped_column(sa.String(32))
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    issued_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    due_date: Mapped[date] = mapped_column(sa.Date)
    emailed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    email_error: Mapped[str | None] = mapped_column(sa.Text)


# Each customer's latest invoice in one index scan. Written with columns rather than text, so that autogenerate can
# compare it on SQLite as well as on PostgreSQL.
sa.Index("ix_invoices_latest", Invoice.customer_id, Invoice.issued_at.desc(), Invoice.id.desc())


class InvoiceRun(Base):
    """One `send-invoices` run: what was requested of the mailer and what it reported back."""

    __tablename__ = "invoice_runs"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    total: Mapped[int] = mapped_column(sa.Integer)
    chunks: Mapped[int] = mapped_column(sa.Integer)
    sent: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


run_items = sa.Table(
    "invoice_run_items", Base.metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
    sa.Column("invoice_id", sa.Integer, primary_key=True),
)

reported_chunks = sa.Table(
    "invoice_run_reports", Base.metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
)
