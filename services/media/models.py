"""Media's tables: every uploaded version of a product's file, and buyers' download grants."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base as KernelBase


class Base(KernelBase):
    __abstract__ = True
    metadata = sa.MetaData()


class ProductFile(Base):
    """One uploaded version; its storage key is content-addressed, so a version's bytes never change."""

    __tablename__ = "product_files"
    storage_key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    product_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    filename: Mapped[str] = mapped_column(sa.String(200))
    content_type: Mapped[str] = mapped_column(sa.String(100))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    download_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    uploaded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class DownloadGrant(Base):
    """A buyer's right to one product, pinned to the version (key and sha256) approved when they bought it;
    unpinned only while the product had no approved file, until its next approval pins it."""

    __tablename__ = "download_grants"
    __table_args__ = (sa.UniqueConstraint("order_id", "product_id"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    product_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    buyer_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    file_key: Mapped[str | None] = mapped_column(sa.String(200))
    file_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    download_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_downloaded_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
