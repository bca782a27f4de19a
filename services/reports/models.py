"""Reports' read model, fed only by events."""

from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base as KernelBase


class Base(KernelBase):
    __abstract__ = True
    metadata = sa.MetaData()


class Sale(Base):
    __tablename__ = "sales"
    __table_args__ = (sa.UniqueConstraint("order_id", "product_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.Integer)
    product_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    seller_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    amount_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    provider: Mapped[str] = mapped_column(sa.String(16))
    day: Mapped[date] = mapped_column(sa.Date, index=True)
