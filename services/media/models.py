"""Media's tables: the file behind each product, and buyers' download grants."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base as KernelBase


class Base(KernelBase):
    __abstract__ = True
    metadata = sa.MetaData()


class ProductFile(Base):
    __tablename__ = "product_files"
    product_id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    storage_key: Mapped[str] = mapped_column(sa.String(200))
    filename: Mapped[str] = mapped_column(sa.String(200))
    content_type: Mapped[str] = mapped_column(sa.String(100))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    download_count: Mapped[int] = mapped_column(sa.Integer, default=0)


class DownloadGrant(Base):
    __tablename__ = "download_grants"
    __table_args__ = (sa.UniqueConstraint("order_id", "product_id"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    product_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    buyer_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    download_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_downloaded_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
