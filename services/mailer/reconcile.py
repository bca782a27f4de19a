"""The sweep that re-queues mail recorded but never delivered: its broker message was lost (a Redis restart
without persistence) after the outbox row was marked sent. Re-queueing cannot double an email: delivery
skips a message no longer queued, and a campaign skips a chunk other than its cursor and a recipient no
longer queued."""

import logging
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from services.mailer.campaigns import ACTIVE, ROUTES, dispatch, lock, progressed
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


class NotHeld(LookupError):
    """The named email is not held (never was, or an operator already settled it)."""


def held(limit: int = 100) -> list[dict]:
    """The sends held for an operator (policy `hold`), oldest attempt first: what each is and who it was for."""
    with transaction(SERVICE) as session:
        rows = [{"id": m.id, "kind": "email", "to": m.to_email, "what": m.subject, "attempted_at": m.attempted_at,
                 "ambiguous": m.ambiguous} for m in session.scalars(
            sa.select(OutboundMessage).where(OutboundMessage.status == "held").limit(limit))]
        rows += [{"id": f"{r.campaign_id}:{r.position}", "kind": "campaign", "to": r.email,
                  "what": f"campaign {r.campaign_id} recipient {r.position}", "attempted_at": r.attempted_at,
                  "ambiguous": r.ambiguous} for r in session.scalars(
            sa.select(CampaignRecipient).where(CampaignRecipient.status == "held").limit(limit))]
        rows += [{"id": f"{c.run_id}:{c.chunk}", "kind": "invoice-chunk", "to": "(a chunk of invoice emails)",
                  "what": f"invoice run {c.run_id} chunk {c.chunk}", "attempted_at": c.attempted_at,
                  "ambiguous": c.ambiguous} for c in session.scalars(
            sa.select(InvoiceChunk).where(InvoiceChunk.status == "held").limit(limit))]
    return sorted(rows, key=lambda row: str(row["attempted_at"]))[:limit]


def release(held_id: str, went_out: bool) -> str:
    """Settle one held send as an operator decided after checking the provider's log: it went out (recorded
    sent, never sent again) or it did not (sent again). Returns what was done; NotHeld when it is not held."""
    with transaction(SERVICE) as session:
        message = session.get(OutboundMessage, held_id, with_for_update=True)
        if message is not None and message.status == "held":
            if went_out:
                message.status, message.sent_at, message.error = "sent", datetime.now(UTC), None
                return f"email {held_id} recorded as sent"
            message.status, message.error = "queued", None
            send(session, SERVICE, "mailer.outbound", "mailer.deliver_message", {"message_id": held_id})
            return f"email {held_id} queued to be sent again"
        owner, _, number = held_id.rpartition(":")
        if not number.isdigit():
            raise NotHeld(held_id)
        recipient = session.get(CampaignRecipient, (owner, int(number)), with_for_update=True)
        if recipient is not None and recipient.status == "held":
            return _release_recipient(session, recipient, went_out)
        chunk = session.get(InvoiceChunk, (owner, int(number)), with_for_update=True)
        if chunk is not None and chunk.status == "held":
            if went_out:
                raise NotHeld(f"{held_id}: the mailer keeps no list of a chunk's invoices to record as sent; "
                              "release it with --resend (billing then asks for it again)")
            chunk.status = "queued"
            return f"invoice run {owner} chunk {number} released: `market send-invoices` resumes the run and sends it"
    raise NotHeld(held_id)


def _release_recipient(session, recipient: CampaignRecipient, went_out: bool) -> str:
    campaign = lock(session, recipient.campaign_id)
    assert campaign is not None  # the recipient's row points at it
    what = f"campaign {campaign.id} recipient {recipient.position}"
    if went_out:
        recipient.status, recipient.sent_at, recipient.error = "sent", datetime.now(UTC), None
        campaign.sent += 1
        progressed(session, campaign)
        return f"{what} recorded as sent"
    recipient.status, recipient.error = "queued", None
    queue, actor = ROUTES["priority" if campaign.route == "priority" else "messages"]
    send(session, SERVICE, queue, actor, {"campaign_id": campaign.id, "position": recipient.position})
    return f"{what} queued to be sent again"
