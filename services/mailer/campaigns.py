"""Campaigns (seed 002) stored, routed and steered through their states.

Routing: under `bulk_threshold` recipients, one message per recipient on mailer.messages (or
mailer.high_priority when a user triggered the campaign); from the threshold on, chunks on
mailer.bulk_messages sent as a chain: chunk k, once done, schedules chunk k+1 `spacing` seconds later.
Nothing is enqueued far ahead, so no delayed message sits unacknowledged near RabbitMQ's 30 min limit.

States: queued -> sending -> completed; queued|sending -> paused -> sending (resume);
queued|sending|paused -> cancelled. completed and cancelled are final.
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.mailer.models import Campaign, CampaignRecipient
from shared.contracts import (
    ACTIVE_CAMPAIGN,
    CAMPAIGN,
    CampaignControlRequested,
    CampaignProgressed,
    CampaignRequested,
    CampaignState,
    Recipient,
)
from shared.messaging import PermanentError
from shared.outbox import publish, send
from shared.storage import LocalStorage

log = logging.getLogger(__name__)

ROUTES = {"messages": ("mailer.messages", "mailer.send_campaign_message"),
          "priority": ("mailer.high_priority", "mailer.send_campaign_message_priority"),
          "chunks": ("mailer.bulk_messages", "mailer.send_campaign_chunk")}
ACTIVE = ACTIVE_CAMPAIGN
FIELDS = frozenset(Recipient.model_fields) - {"email"}


@dataclass(frozen=True)
class Routing:
    bulk_threshold: int
    chunk_size: int
    storage: LocalStorage


class CampaignNotStored(Exception):
    """A control request overtook its campaign on mailer.events; a retry lets the campaign land first."""


def on_campaign_requested(session: Session, event: CampaignRequested, routing: Routing) -> None:
    """Store the campaign and its recipients, then queue the first sends. Safe twice: the inbox drops a
    redelivered event, and a campaign id already stored is left alone."""
    if session.get(Campaign, event.campaign_id) is not None:
        log.warning("Campaign %s is already stored; its request is ignored.", event.campaign_id)
        return
    recipients = event.recipients or _stored_recipients(routing.storage, event.recipients_key)
    if not recipients:
        raise PermanentError(f"campaign {event.campaign_id} has no recipients")
    route = "chunks" if len(recipients) >= routing.bulk_threshold else (
        "priority" if event.user_triggered else "messages")
    campaign = Campaign(id=event.campaign_id, title=event.title[:200], subject=event.subject, body=event.body,
                        user_triggered=event.user_triggered, route=route, status=CampaignState.QUEUED,
                        total=len(recipients),
                        sent=0, failed=0, chunk_size=routing.chunk_size, next_chunk=0)
    session.add(campaign)
    session.flush()
    # pydantic's `include` takes any set of names, though annotated with `set`
    session.execute(sa.insert(CampaignRecipient), [
        {"campaign_id": campaign.id, "position": position, "email": r.email,
         "fields": r.model_dump(include=FIELDS),  # type: ignore[arg-type]
         "status": "queued", "attempts": 0} for position, r in enumerate(recipients)])
    dispatch(session, campaign)
    log.info("Campaign %s stored with %d recipients; it goes by %s on %s.", campaign.id, campaign.total, route,
             ROUTES[route][0])


def on_campaign_control_requested(session: Session, event: CampaignControlRequested, requested_at: str) -> None:
    """Pause, resume or cancel. Safe twice: the inbox drops a redelivery, an action that does not apply to
    the campaign's state (pausing a paused one, anything on a finished one) changes nothing, and a request
    older than one already handled (two consumers can take them out of order) is ignored: the last wins."""
    if event.action not in ("pause", "resume", "cancel"):
        raise PermanentError(f"unknown campaign action {event.action!r}")
    campaign = lock(session, event.campaign_id)
    if campaign is None:
        raise CampaignNotStored(f"campaign {event.campaign_id} is not stored (yet)")
    at = _utc(datetime.fromisoformat(requested_at))
    # Cancel always wins; otherwise the later request does.
    if event.action != "cancel" and campaign.controlled_at and at < _utc(campaign.controlled_at):
        log.info("Campaign %s: %s requested at %s is older than the last request handled; ignored.",
                 campaign.id, event.action, requested_at)
        return
    campaign.controlled_at, before = at, campaign.status
    if event.action == "pause" and before in ACTIVE:
        # The chunk or message being sent finishes; nothing after it starts.
        campaign.status = CAMPAIGN(before, CampaignState.PAUSED)
    elif event.action == "resume" and before == CampaignState.PAUSED:
        if campaign.sent + campaign.failed >= campaign.total:  # the last sends finished during the pause
            campaign.status, campaign.finished_at = CAMPAIGN(before, CampaignState.COMPLETED), datetime.now(UTC)
        else:
            campaign.status = CAMPAIGN(before, CampaignState.SENDING)
            dispatch(session, campaign)
    elif event.action == "cancel" and not CAMPAIGN.final(before):
        campaign.status, campaign.finished_at = CAMPAIGN(before, CampaignState.CANCELLED), datetime.now(UTC)
        _cancel_queued(session, campaign.id)
    else:
        log.info("Campaign %s is %s; %s changes nothing.", campaign.id, before, event.action)
        return
    log.info("Campaign %s: %s, %s -> %s.", campaign.id, event.action, before, campaign.status)
    progressed(session, campaign)


def dispatch(session: Session, campaign: Campaign, delay_ms: int | None = None) -> None:
    """Queue what the campaign sends next: its next chunk, or one message per recipient still to send."""
    queue, actor = ROUTES[campaign.route]
    if campaign.route == "chunks":
        send(session, "mailer", queue, actor, {"campaign_id": campaign.id, "chunk": campaign.next_chunk}, delay_ms)
        return
    # `sending` too: a recipient whose worker died mid-send is in flight or ambiguous, and its message decides.
    positions = session.scalars(sa.select(CampaignRecipient.position).where(
        CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.status.in_(("queued", "sending")))
        .order_by(CampaignRecipient.position))
    for position in positions:
        send(session, "mailer", queue, actor, {"campaign_id": campaign.id, "position": position}, delay_ms)


def lock(session: Session, campaign_id: str) -> Campaign | None:
    """The campaign, its row locked until commit (writing first takes SQLite's write lock too)."""
    session.execute(sa.update(Campaign).where(Campaign.id == campaign_id).values(updated_at=datetime.now(UTC))
                    .execution_options(synchronize_session=False))
    return session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)


def progressed(session: Session, campaign: Campaign) -> None:
    publish(session, CampaignProgressed(campaign_id=campaign.id, status=CampaignState(campaign.status),
                                        total=campaign.total, sent=campaign.sent, failed=campaign.failed))


def _cancel_queued(session: Session, campaign_id: str) -> None:
    # Recipients locked by a message being sent right now are skipped, not waited for: that message
    # records them itself, and waiting for it while holding the campaign row could deadlock.
    queued = sa.select(CampaignRecipient.position).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status == "queued"
    ).with_for_update(skip_locked=True)
    session.execute(sa.update(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status == "queued",
        CampaignRecipient.position.in_(queued)).values(status="cancelled").execution_options(
        synchronize_session=False))


def _stored_recipients(storage: LocalStorage, key: str | None) -> list[Recipient]:
    if key is None:
        return []
    return [Recipient.model_validate(r) for r in json.loads(storage.path(key).read_bytes())]


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands datetimes back naive
