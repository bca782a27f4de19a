"""Billing's tables: purchase lines and a double-entry-style ledger with running balances."""

from datetime import datetime

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
