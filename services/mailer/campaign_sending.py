"""Sending a campaign: one chunk, or one recipient's message, over one connection at the shared pace.

Three steps, as for a single email (delivery.py), so a fault in the bookkeeping never sends anyone twice:
claim the batch (its recipients `sending`, in a commit of its own, the campaign locked only for that),
send without any lock, then record each recipient's outcome in a second transaction, retried alone when
it fails. A recipient found `sending` was claimed by another attempt: moments ago, that attempt is in flight
and the batch is left to it; long ago, its worker died between the server's reply and the record, so the
send is ambiguous, counted, and resent or held as MARKET_AMBIGUOUS_SEND_POLICY says.

Every recipient's outcome is recorded: sent; failed with the reason (a refused address at once, a
temporary refusal once it has had `max_attempts`); or queued again for the message's retry (cancelled
instead when the campaign was cancelled meanwhile). When the provider cannot be reached, send_guarded
raises ProviderUnavailable before anything went out, the claim is given back and the actor defers the
message: an outage fails nobody.
"""

import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.mailer.campaigns import ACTIVE, dispatch, lock, progressed
from services.mailer.delivery import as_outcome, bookkeep, from_outcome, retrying
from services.mailer.handlers import SendInFlight
from services.mailer.models import Campaign, CampaignRecipient
from services.mailer.pacing import PacedBatch, Pacer, Unlimited
from services.mailer.personalise import personalise
from services.mailer.senders import Outgoing, ProviderUnavailable, Sender, SendFailed, send_guarded
from shared.contracts import CAMPAIGN, CampaignState
from shared.db import transaction
from shared.messaging import PermanentError

log = logging.getLogger(__name__)
SERVICE = "mailer"

# The api validated every address; this only keeps anything that could break a header out of one.
_ADDRESS = re.compile(r'[^@\s,;<>"]+@[^@\s,;<>"]+')


@dataclass(frozen=True)
class Mail:
    sender: Sender
    pacer: Pacer | Unlimited
    chunk_spacing_s: float
    budget_s: float  # no email is handed out after this long, so the outcome is recorded inside the time limit
    max_attempts: int = 3
    policy: str = "resend"  # an ambiguous send is resent, or held for an operator
    ambiguous_after_s: float = 90.0  # a recipient `sending` for longer has no attempt in flight
    bookkeeping_retry_s: float = 20.0


@dataclass(frozen=True)
class Outcome:
    refused: tuple[str, ...] = ()  # reasons of temporary refusals left queued for a retry
    untried: int = 0  # recipients the budget or the rate limiter left no time for


class RecipientsRefused(Exception):
    """Some recipients were refused for now; raising makes Dramatiq retry the message, with backoff."""


def send_chunk(campaign_id: str, chunk: int, mail: Mail, answers: dict | None = None) -> Outcome:
    """Send chunk `chunk` and, once each of its recipients is sent or failed, schedule the next. Safe twice:
    a chunk other than the cursor is skipped, and only recipients still queued (or ambiguous) are sent."""
    return _send(campaign_id, f"chunk {chunk}", lambda session: _claim_chunk(session, campaign_id, chunk, mail),
                 partial(_record_chunk, campaign_id=campaign_id, chunk=chunk, mail=mail), mail, answers)


def send_message(campaign_id: str, position: int, mail: Mail, answers: dict | None = None) -> Outcome:
    """Send one recipient's email. Safe twice: the recipient is claimed only while queued (or ambiguous)."""
    return _send(campaign_id, f"recipient {position}",
                 lambda session: _claim_message(session, campaign_id, position, mail),
                 partial(_record_message, campaign_id=campaign_id, mail=mail), mail, answers)


def _send(campaign_id: str, part: str, claim, record, mail: Mail, answers: dict | None) -> Outcome:
    """Claim, transmit, record. Given the `answers` of an earlier send whose record failed, only records them."""
    if answers is None:
        with transaction(SERVICE) as session:
            claimed = claim(session)
        if claimed is None:
            return Outcome()
        answers = _answers(claimed, _transmit(campaign_id, claimed, mail))
    outcomes = [from_outcome(o) for o in answers["outcomes"]]
    return bookkeep(lambda session: record(session, positions=answers["positions"], outcomes=outcomes),
                    f"campaign {campaign_id} {part}", answers, mail.bookkeeping_retry_s)


def _answers(claimed: dict[int, Outgoing], outcomes: list[SendFailed | None]) -> dict:
    """The recipients handed to the transport and what it answered for each, as JSON a message can carry."""
    return {"positions": list(claimed), "outcomes": [as_outcome(o) for o in outcomes]}


def _claim_chunk(session: Session, campaign_id: str, chunk: int, mail: Mail) -> dict[int, Outgoing] | None:
    campaign = lock(session, campaign_id)
    if campaign is None:
        raise PermanentError(f"campaign {campaign_id} does not exist")
    if campaign.status not in ACTIVE or chunk != campaign.next_chunk:
        log.info("Campaign %s chunk %d skipped: the campaign is %s at chunk %d.", campaign_id, chunk,
                 campaign.status, campaign.next_chunk)
        return None
    first = chunk * campaign.chunk_size
    due = list(session.scalars(_unsettled(campaign_id).where(
        CampaignRecipient.position >= first, CampaignRecipient.position < first + campaign.chunk_size)))
    log.info("Campaign %s chunk %d: %d recipients.", campaign_id, chunk, len(due))
    return _claim(campaign, due, mail)


def _claim_message(session: Session, campaign_id: str, position: int, mail: Mail) -> dict[int, Outgoing] | None:
    # The campaign is locked before the recipient's row is written: PostgreSQL checks the foreign key of a row
    # this transaction updates, taking a share lock on the campaign, and two messages each holding that share
    # lock and asking for the row lock would deadlock.
    campaign = lock(session, campaign_id)
    if campaign is None:
        raise PermanentError(f"campaign {campaign_id} does not exist")
    if campaign.status == CampaignState.CANCELLED:
        session.execute(sa.update(CampaignRecipient).where(
            CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.position == position,
            CampaignRecipient.status == "queued").values(status="cancelled")
            .execution_options(synchronize_session=False))
    if campaign.status in (CampaignState.PAUSED, CampaignState.CANCELLED):
        return None  # paused: resuming queues this recipient again (a completed campaign sends one released)
    due = list(session.scalars(_unsettled(campaign_id).where(CampaignRecipient.position == position)))
    if not due:
        log.info("Campaign %s recipient %d skipped: no longer queued.", campaign_id, position)
        return None
    return _claim(campaign, due, mail)  # may be empty (held, or not an address): recorded all the same


def _claim(campaign: Campaign, due: list[CampaignRecipient], mail: Mail) -> dict[int, Outgoing]:
    """Record the attempt on each recipient of `due` before it is made; the batch to send, by position."""
    now, in_flight_until = datetime.now(UTC), timedelta(seconds=mail.ambiguous_after_s)
    if any(r.status == "sending" and r.attempted_at is not None and now - _utc(r.attempted_at) < in_flight_until
           for r in due):
        raise SendInFlight(f"campaign {campaign.id}: an attempt begun moments ago is sending these recipients")
    if campaign.status == CampaignState.QUEUED:
        campaign.status = CAMPAIGN(campaign.status, CampaignState.SENDING)
    claimed = {}
    for r in due:
        if r.status == "sending":
            r.ambiguous += 1
            log.warning("Campaign %s recipient %d was being sent when its worker stopped; whether it went out is "
                        "unknown (policy: %s).", campaign.id, r.position, mail.policy)
            if mail.policy == "hold":
                r.status, r.error = "held", "ambiguous send held for an operator"
                continue
        if not _ADDRESS.fullmatch(r.email):
            r.status, r.error = "failed", "not a deliverable address"
            campaign.failed += 1
            continue
        claimed[r.position] = _outgoing(campaign, r)
        r.status, r.attempts, r.attempted_at = "sending", r.attempts + 1, now
    return claimed


def _transmit(campaign_id: str, claimed: dict[int, Outgoing], mail: Mail) -> list[SendFailed | None]:
    """Hand the batch to the transport at the shared pace; one outcome per email it took, in order."""
    if not claimed:
        return []
    batch = PacedBatch(list(claimed.values()), mail.pacer, time.monotonic() + mail.budget_s)
    try:
        return send_guarded(mail.sender, batch)[:batch.taken]
    except ProviderUnavailable as exc:
        log.warning("Campaign %s: the mail provider is unavailable (%s); nothing went out, the work waits.",
                    campaign_id, exc)
        # Nothing went out: give the attempts back (if even that fails, they become ambiguous later).
        retrying(lambda session: _record(session, _locked(session, campaign_id), list(claimed), [], mail),
                 mail.bookkeeping_retry_s)
        raise
    except Exception as exc:
        # A transport bug, not an answer from the server: counted as a refusal for now (as when the rollback
        # left these recipients queued, before the attempt was recorded), so a retry sends them and the rows say why.
        log.exception("Campaign %s: the transport failed.", campaign_id)
        return [SendFailed(f"{type(exc).__name__}: {exc}", permanent=False)] * batch.taken


def _record_chunk(session: Session, *, campaign_id: str, chunk: int, positions: list[int],
                  outcomes: list[SendFailed | None], mail: Mail) -> Outcome:
    campaign = _locked(session, campaign_id)
    outcome = _record(session, campaign, positions, outcomes, mail)
    # Once every recipient is settled the cursor moves on, even when paused (resuming sends the next chunk);
    # compared with `chunk`, so recording twice moves it once.
    if not outcome.refused and not outcome.untried and chunk == campaign.next_chunk:
        campaign.next_chunk += 1
        if campaign.status in ACTIVE and campaign.next_chunk * campaign.chunk_size >= campaign.total:
            _complete(campaign)
        elif campaign.status in ACTIVE:
            dispatch(session, campaign, delay_ms=int(mail.chunk_spacing_s * 1000))
    progressed(session, campaign)
    return outcome


def _record_message(session: Session, *, campaign_id: str, positions: list[int],
                    outcomes: list[SendFailed | None], mail: Mail) -> Outcome:
    campaign = _locked(session, campaign_id)
    outcome = _record(session, campaign, positions, outcomes, mail)
    if campaign.status == CampaignState.SENDING and _settled(session, campaign):
        _complete(campaign)
    progressed(session, campaign)
    return outcome


def _locked(session: Session, campaign_id: str) -> Campaign:
    """The campaign whose recipients were claimed, locked (`lock`); claiming found it, and it stays."""
    campaign = lock(session, campaign_id)
    if campaign is None:
        raise PermanentError(f"campaign {campaign_id} does not exist")
    return campaign


def _record(session: Session, campaign: Campaign, positions: list[int], outcomes: list[SendFailed | None],
            mail: Mail) -> Outcome:
    """Record what became of the claimed recipients still `sending` (so recording twice changes nothing); those
    beyond `outcomes` never went to the transport and are given back. Cancel wins for all but the sent."""
    answered = dict(zip(positions, outcomes, strict=False))
    rows = list(session.scalars(sa.select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign.id, CampaignRecipient.position.in_(positions),
        CampaignRecipient.status == "sending")))
    now, cancelled, refused, untried = datetime.now(UTC), campaign.status == CampaignState.CANCELLED, [], 0
    for r in rows:
        if r.position not in answered:
            r.status, r.attempts = "cancelled" if cancelled else "queued", r.attempts - 1
            untried += not cancelled
        elif (failure := answered[r.position]) is None:
            r.status, r.sent_at, r.error = "sent", now, None
        elif failure.permanent or r.attempts >= mail.max_attempts:
            r.status, r.error = "failed", failure.reason
        else:
            r.status, r.error = "cancelled" if cancelled else "queued", failure.reason
            refused += [] if cancelled else [failure.reason]
    _tally(campaign, rows)
    if untried:
        log.info("Campaign %s: %d of %d recipients wait for the next message (rate limit, time budget or a "
                 "dropped connection).", campaign.id, untried, len(positions))
    return Outcome(tuple(refused), untried)


def _tally(campaign: Campaign, sent_to: list[CampaignRecipient]) -> None:
    """Count what became of recipients that were queued, on the campaign the caller has locked."""
    campaign.sent += sum(r.status == "sent" for r in sent_to)
    campaign.failed += sum(r.status == "failed" for r in sent_to)


def _outgoing(campaign: Campaign, r: CampaignRecipient) -> Outgoing:
    subject, text, html = personalise(campaign.subject, campaign.body, r.fields)
    return Outgoing(f"campaign.{campaign.id}.{r.position}", r.email, subject, text, html, r.attempts)


def _complete(campaign: Campaign) -> None:
    campaign.status, campaign.finished_at = CAMPAIGN(campaign.status, CampaignState.COMPLETED), datetime.now(UTC)
    log.info("Campaign %s completed: %d sent, %d failed of %d.", campaign.id, campaign.sent, campaign.failed,
             campaign.total)


def _settled(session: Session, campaign: Campaign) -> bool:
    """Every recipient sent, failed or held (held ones wait for an operator, not for this campaign)."""
    if campaign.sent + campaign.failed >= campaign.total:
        return True
    held = session.execute(sa.select(sa.func.count()).where(CampaignRecipient.campaign_id == campaign.id,
                                                            CampaignRecipient.status == "held")).scalar_one()
    return campaign.sent + campaign.failed + held >= campaign.total


def _unsettled(campaign_id: str) -> sa.Select:
    """The campaign's recipients still to send, or claimed by an attempt; their rows locked until commit."""
    return sa.select(CampaignRecipient).where(
        CampaignRecipient.campaign_id == campaign_id, CampaignRecipient.status.in_(("queued", "sending"))
    ).order_by(CampaignRecipient.position).with_for_update()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands datetimes back naive
