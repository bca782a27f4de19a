"""The sweep that re-queues mail recorded but never delivered: its broker message was lost (a Redis restart
without persistence) after the outbox row was marked sent. Re-queueing cannot double an email: delivery
skips a message no longer queued, and a campaign skips a chunk other than its cursor and a recipient no
longer queued."""

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from services.mailer.campaigns import ACTIVE, dispatch
from services.mailer.models import Campaign, CampaignRecipient, InvoiceChunk, OutboundMessage
from shared.db import transaction
from shared.outbox import send
from shared.settings import get_settings

log = logging.getLogger(__name__)
SERVICE = "mailer"


def sweep(batch: int = 500) -> int:
    """Re-queue, once per call, every email and campaign idle past MARKET_MAIL_RECONCILE_AFTER_S; returns how many."""
    cutoff = datetime.now(UTC) - timedelta(seconds=get_settings().mail_reconcile_after_s)
    count = _requeue_messages(cutoff, batch) + _requeue_campaigns(cutoff, batch)
    if count:
        log.warning("The mail sweep re-queued %d emails or campaigns left undelivered past their time.", count)
    return count


def _requeue_messages(cutoff: datetime, batch: int) -> int:
    # A `sending` row this old has no attempt in flight: delivery counts it ambiguous and applies the policy.
    last_step = sa.func.coalesce(OutboundMessage.attempted_at, OutboundMessage.created_at)
    with transaction(SERVICE) as session:
        ids = session.scalars(sa.select(OutboundMessage.id).where(
            OutboundMessage.status.in_(("queued", "sending")), last_step <= cutoff).limit(batch)).all()
        for message_id in ids:
            send(session, SERVICE, "mailer.outbound", "mailer.deliver_message", {"message_id": message_id})
    return len(ids)


def _requeue_campaigns(cutoff: datetime, batch: int) -> int:
    last_step = sa.func.coalesce(Campaign.updated_at, Campaign.created_at)
    with transaction(SERVICE) as session:
        idle = session.scalars(sa.select(Campaign).where(Campaign.status.in_(ACTIVE), last_step <= cutoff)
                               .limit(batch)).all()
        for campaign in idle:
            campaign.updated_at = datetime.now(UTC)  # once per threshold, not on every pass
            dispatch(session, campaign)
    return len(idle)


def status() -> dict:
    """Outbound emails by status, and how many sends were ambiguous (a worker died between reply and record);
    the same for campaign recipients and invoice chunks."""
    with transaction(SERVICE) as session:
        return {"statuses": _by_status(session, OutboundMessage), "ambiguous": _ambiguous(session, OutboundMessage),
                "campaign_recipients": _by_status(session, CampaignRecipient)
                | {"ambiguous": _ambiguous(session, CampaignRecipient)},
                "invoice_chunks": _by_status(session, InvoiceChunk) | {"ambiguous": _ambiguous(session, InvoiceChunk)}}


def _by_status(session, model) -> dict[str, int]:
    return dict(session.execute(sa.select(model.status, sa.func.count()).group_by(model.status)).all())


def _ambiguous(session, model) -> int:
    return int(session.scalar(sa.select(sa.func.coalesce(sa.func.sum(model.ambiguous), 0))))
