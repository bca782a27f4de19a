"""Mailer's tables: every outbound message and its delivery status."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from shared.db import Base as KernelBase


class Base(KernelBase):
    __abstract__ = True
    metadata = sa.MetaData()


class OutboundMessage(Base):
    __tablename__ = "outbound_messages"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    template: Mapped[str] = mapped_column(sa.String(64))
    to_email: Mapped[str] = mapped_column(sa.String(254))
    subject: Mapped[str] = mapped_column(sa.String(300))
    html: Mapped[str] = mapped_column(sa.Text)
    text: Mapped[str] = mapped_column(sa.Text)
    # queued -> sending (attempt recorded, before the send) -> sent | failed | queued (refused for now);
    # held: an ambiguous send kept for an operator (MARKET_AMBIGUOUS_SEND_POLICY=hold). Indexed: the sweep looks
    # for the few queued and sending rows every minute among every email ever sent.
    status: Mapped[str] = mapped_column(sa.String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    attempted_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    ambiguous: Mapped[int] = mapped_column(sa.Integer, default=0)  # attempts whose outcome was never recorded
    error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class InvoiceChunk(Base):
    """One chunk of an invoice run, its attempt recorded before it is sent; billing keeps each invoice's own status."""

    __tablename__ = "invoice_chunks"
    run_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    chunk: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    # queued (an attempt gave back: nothing went out) | sending (attempt recorded, before the send) -> done;
    # held: an ambiguous send kept for an operator (MARKET_AMBIGUOUS_SEND_POLICY=hold)
    status: Mapped[str] = mapped_column(sa.String(16), default="sending")
    attempted_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    ambiguous: Mapped[int] = mapped_column(sa.Integer, default=0)  # attempts whose outcome was never recorded
    sent: Mapped[int | None] = mapped_column(sa.Integer)  # the outcome, once done
    failed: Mapped[int | None] = mapped_column(sa.Integer)
    summary_key: Mapped[str | None] = mapped_column(sa.String(200))
    completed_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class Campaign(Base):
    """A campaign (seed 002): one template, many recipients, sent message by message or chunk by chunk.

    status: queued -> sending -> completed; queued|sending <-> paused; queued|sending|paused -> cancelled.
    """

    __tablename__ = "campaigns"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    subject: Mapped[str] = mapped_column(sa.Text)
    body: Mapped[str] = mapped_column(sa.Text)
    user_triggered: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    route: Mapped[str] = mapped_column(sa.String(16))  # messages | priority | chunks
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    total: Mapped[int] = mapped_column(sa.Integer)
    sent: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    chunk_size: Mapped[int] = mapped_column(sa.Integer)  # fixed at creation: chunk k is positions [k*size, (k+1)*size)
    next_chunk: Mapped[int] = mapped_column(sa.Integer, default=0)  # the chain's cursor (chunks route)
    controlled_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))  # latest control request
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    updated_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class CampaignRecipient(Base):
    """One recipient of a campaign and what happened to their email."""

    __tablename__ = "campaign_recipients"
    __table_args__ = (sa.Index("ix_campaign_recipients_status", "campaign_id", "status"),)
    campaign_id: Mapped[str] = mapped_column(sa.ForeignKey("campaigns.id"), primary_key=True)
    position: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254))
    fields: Mapped[dict] = mapped_column(sa.JSON)  # the placeholder values: name, pledge, paid_amount, ...
    # queued -> sending (attempt recorded, before the send) -> sent | failed | queued (refused for now, or never
    # handed to the transport) | cancelled; held: an ambiguous send kept for an operator
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    attempted_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    ambiguous: Mapped[int] = mapped_column(sa.Integer, default=0)  # attempts whose outcome was never recorded
    sent_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
