"""The api's tables: users, catalog, carts, orders, raw webhook events, leads and in-app notifications."""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from shared.db import Base as KernelBase
from shared.status import Lifecycle


class ProductStatus(StrEnum):
    PENDING = "pending"  # awaiting review
    APPROVED = "approved"  # listed; buyers get the reviewed file
    REJECTED = "rejected"


# An admin's decision may reverse an earlier one; a new file takes an approved product back to review.
PRODUCT = Lifecycle({ProductStatus.PENDING: {ProductStatus.APPROVED, ProductStatus.REJECTED},
                     ProductStatus.APPROVED: {ProductStatus.REJECTED, ProductStatus.PENDING},
                     ProductStatus.REJECTED: {ProductStatus.APPROVED}})


class OrderStatus(StrEnum):
    PENDING = "pending"  # waiting for the provider's webhook
    PAID = "paid"
    FAILED = "failed"  # the provider said the payment failed; a later successful one still pays it


ORDER = Lifecycle({OrderStatus.PENDING: {OrderStatus.PAID, OrderStatus.FAILED},
                   OrderStatus.FAILED: {OrderStatus.PAID, OrderStatus.FAILED}})


class WebhookStatus(StrEnum):
    RECEIVED = "received"  # stored, not yet processed
    PROCESSED = "processed"
    IGNORED = "ignored"  # a kind of event that needs no action
    REJECTED = "rejected"  # genuine, but it does not match an order


WEBHOOK = Lifecycle({WebhookStatus.RECEIVED: {WebhookStatus.PROCESSED, WebhookStatus.IGNORED,
                                              WebhookStatus.REJECTED}})


class Base(KernelBase):
    __abstract__ = True
    metadata = sa.MetaData()


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    password_hash: Mapped[str | None] = mapped_column(sa.String(256))  # None: signs in only with a token given out
    is_admin: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class ApiToken(Base):
    """A bearer token, stored as its hash: it expires, and signing out revokes it."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    seller_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    price_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    file_key: Mapped[str | None] = mapped_column(sa.String(200))  # the current version, content-addressed
    file_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), default=ProductStatus.PENDING, server_default="pending",
                                        index=True)
    rejection_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class CartItem(Base):
    __tablename__ = "cart_items"
    buyer_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("products.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    product: Mapped[Product] = relationship(lazy="joined")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(sa.String(64), unique=True)  # what the provider echoes back
    buyer_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), default=OrderStatus.PENDING)
    provider: Mapped[str] = mapped_column(sa.String(16))
    provider_checkout_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)  # M-Pesa STK request
    provider_payment_id: Mapped[str | None] = mapped_column(sa.String(128))
    total_minor: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    paid_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    lines: Mapped[list["OrderLine"]] = relationship(lazy="selectin", order_by="OrderLine.id")


class OrderLine(Base):
    __tablename__ = "order_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"), index=True)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("products.id"))
    seller_id: Mapped[int] = mapped_column(sa.Integer)
    title: Mapped[str] = mapped_column(sa.String(200))
    price_minor: Mapped[int] = mapped_column(sa.BigInteger)
    # The reviewed file version bought, frozen at checkout (or at the product's next approval if it had none):
    # the buyer downloads exactly this, and storage keeps it while a line pins it.
    file_key: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    file_sha256: Mapped[str | None] = mapped_column(sa.String(64))


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (sa.UniqueConstraint("provider", "event_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(sa.String(16))
    event_id: Mapped[str] = mapped_column(sa.String(128))
    event_type: Mapped[str] = mapped_column(sa.String(64))
    payload: Mapped[str] = mapped_column(sa.Text)  # the raw body, exactly as signed
    status: Mapped[str] = mapped_column(sa.String(16), default=WebhookStatus.RECEIVED)
    detail: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    processed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Lead(Base):
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    email: Mapped[str] = mapped_column(sa.String(254))
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    source: Mapped[str] = mapped_column(sa.String(64), default="")
    product_id: Mapped[int | None] = mapped_column(sa.ForeignKey("products.id"))
    assigned_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_by_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class Notification(Base):
    """The database channel of a notification: what a user sees in the app."""

    __tablename__ = "notifications"
    __table_args__ = (sa.Index("ix_notifications_user_unread", "user_id", "read_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(sa.String(64))  # product_approved | product_rejected
    title: Mapped[str] = mapped_column(sa.String(300))
    body: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    read_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())


class CampaignStatus(Base):
    """The api's read model of a campaign the mailer sends, fed by campaign.progressed events."""

    __tablename__ = "campaign_statuses"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    owner_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    user_triggered: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")  # as the mailer last reported it
    total: Mapped[int] = mapped_column(sa.Integer)
    sent: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    progressed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))  # of the report applied
