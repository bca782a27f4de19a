"""Sending a campaign: one chunk, or one recipient's message, over one connection at the shared pace.

Every recipient's outcome is recorded: sent; failed with the reason (a refused address at once, a
temporary refusal once it has had `max_attempts`); or left queued for the message's retry. When the
provider cannot be reached, send_guarded raises ProviderUnavailable before anything went out, the
transaction rolls back and the actor defers the message: an outage fails nobody.
"""

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.mailer.campaigns import ACTIVE, dispatch, lock, progressed
from services.mailer.models import Campaign, CampaignRecipient
from services.mailer.pacing import PacedBatch, Pacer, Unlimited
from services.mailer.personalise import personalise
from services.mailer.senders import Outgoing, ProviderUnavailable, send_guarded
from shared.messaging import PermanentError

log = logging.getLogger(__name__)

# The api validated every address; this only keeps anything that could break a header out of one.
_ADDRESS = re.compile(r'[^@\s,;<>"]+@[^@\s,;<>"]+')


@dataclass(frozen=True)
class Mail:
    sender: object
    pacer: Pacer | Unlimited
    chunk_spacing_s: float
    budget_s: float  # no email is handed out after this long: the transaction commits well inside the time limit
    max_attempts: int = 3


@dataclass(frozen=True)
class Outcome:
    refused: tuple[str, ...] = ()  # reasons of temporary refusals left queued for a retry
    untried: int = 0  # recipients the budget or the rate limiter left no time for


class RecipientsRefused(Exception):
    """Some recipients were refused for now; raising makes Dramatiq retry the message, with backoff."""


def send_chunk(session: Session, campaign_id: str, chunk: int, mail: Mail) -> Outcome:
    """Send chunk `chunk` and, once each of its recipients is sent or failed, schedule the next. Safe twice:
    the campaign row stays locked while the chunk goes out, a chunk other than the cursor is skipped, and
    only recipients still queued are sent."""
    campaign = lock(session, campaign_id)
    if campaign is None:
        raise PermanentError(f"campaign {campaign_id} does not exist")
    if campaign.status not in ACTIVE or chunk != campaign.next_chunk:
        log.info("Campaign %s chunk %d skipped: the campaign is %s at chunk %d.", campaign_id, chunk,
                 campaign.status, campaign.next_chunk)
        return Outcome()
    first = chunk * campaign.chunk_size
    due = list(session.scalars(sa.select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status == "queued",
        CampaignRecipient.position >= first, CampaignRecipient.position < first + campaign.chunk_size)
        .order_by(CampaignRecipient.position)))
    log.info("Campaign %s chunk %d: %d recipients.", campaign_id, chunk, len(due))
    campaign.status = "sending"
    outcome = _send(campaign, due, mail)
    _tally(campaign, due)
    if not outcome.refused and not outcome.untried:
        campaign.next_chunk += 1
        if campaign.next_chunk * campaign.chunk_size >= campaign.total:
            _complete(campaign)
        else:
            dispatch(session, campaign, delay_ms=int(mail.chunk_spacing_s * 1000))
    progressed(session, campaign)
    return outcome


def send_message(session: Session, campaign_id: str, position: int, mail: Mail) -> Outcome:
    """Send one recipient's email. Safe twice: the recipient is claimed (its row locked) only while queued."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise PermanentError(f"campaign {campaign_id} does not exist")
    if campaign.status == "cancelled":
        session.execute(_queued(campaign_id, position).values(status="cancelled"))
    if campaign.status not in ACTIVE:
        return Outcome()  # paused: resuming queues this recipient again
    recipient = _claim(session, campaign_id, position)
    if recipient is None:
        log.info("Campaign %s recipient %d skipped: no longer queued.", campaign_id, position)
        return Outcome()
    outcome = _send(campaign, [recipient], mail)
    # Lock the campaign before the recipient's row is written back: PostgreSQL checks the foreign key of a
    # row this transaction already updated (the claim), taking a share lock on the campaign, and two
    # messages each holding that share lock and asking for the row lock would deadlock.
    with session.no_autoflush:
        campaign = session.get(Campaign, campaign_id, with_for_update=True, populate_existing=True)
    _tally(campaign, [recipient])
    campaign.updated_at = datetime.now(UTC)  # a campaign making progress is not one the sweep re-queues
    if campaign.status == "queued":
        campaign.status = "sending"
    if campaign.status == "sending" and campaign.sent + campaign.failed == campaign.total:
        _complete(campaign)
    progressed(session, campaign)
    return outcome


def _send(campaign: Campaign, recipients: list[CampaignRecipient], mail: Mail) -> Outcome:
    """Send to `recipients` in one batch and record each outcome on its row."""
    ready = []
    for r in recipients:
        if _ADDRESS.fullmatch(r.email):
            ready.append(r)
        else:
            r.status, r.error = "failed", "not a deliverable address"
    batch = PacedBatch([_outgoing(campaign, r) for r in ready], mail.pacer, time.monotonic() + mail.budget_s)
    try:
        outcomes = send_guarded(mail.sender, batch)[:batch.taken] if ready else []
    except ProviderUnavailable as exc:
        log.warning("Campaign %s: the mail provider is unavailable (%s); nothing is recorded, the work waits.",
                    campaign.id, exc)
        raise
    now, refused = datetime.now(UTC), []
    for r, failure in zip(ready, outcomes, strict=False):
        r.attempts += 1
        if failure is None:
            r.status, r.sent_at, r.error = "sent", now, None
        elif failure.permanent or r.attempts >= mail.max_attempts:
            r.status, r.error = "failed", failure.reason
        else:
            r.error = failure.reason
            refused.append(failure.reason)
    if len(outcomes) < len(ready):
        log.info("Campaign %s: %d of %d recipients wait for the next message (rate limit, time budget or a "
                 "dropped connection).", campaign.id, len(ready) - len(outcomes), len(ready))
    return Outcome(tuple(refused), len(ready) - len(outcomes))


def _tally(campaign: Campaign, sent_to: list[CampaignRecipient]) -> None:
    """Count what became of recipients that were queued, on the campaign the caller has locked."""
    campaign.sent += sum(r.status == "sent" for r in sent_to)
    campaign.failed += sum(r.status == "failed" for r in sent_to)


def _outgoing(campaign: Campaign, r: CampaignRecipient) -> Outgoing:
    subject, text, html = personalise(campaign.subject, campaign.body, r.fields)
    return Outgoing(f"campaign.{campaign.id}.{r.position}", r.email, subject, text, html, r.attempts)


def _complete(campaign: Campaign) -> None:
    campaign.status, campaign.finished_at = "completed", datetime.now(UTC)
    log.info("Campaign %s completed: %d sent, %d failed of %d.", campaign.id, campaign.sent, campaign.failed,
             campaign.total)


def _claim(session: Session, campaign_id: str, position: int) -> CampaignRecipient | None:
    """The recipient, its row locked until commit, if still queued (writing first locks it on SQLite too)."""
    claimed = session.execute(_queued(campaign_id, position).values(attempts=CampaignRecipient.attempts)).rowcount
    return session.get(CampaignRecipient, (campaign_id, position), populate_existing=True) if claimed else None


def _queued(campaign_id: str, position: int) -> sa.Update:
    return sa.update(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.position == position,
        CampaignRecipient.status == "queued").execution_options(synchronize_session=False)
