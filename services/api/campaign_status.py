"""The api's read model of campaign status, fed by the mailer's campaign.progressed events."""

import logging
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.api.models import CampaignStatus
from shared.contracts import CampaignProgressed, CampaignState

log = logging.getLogger(__name__)

FINAL = (CampaignState.COMPLETED, CampaignState.CANCELLED)


def on_campaign_progressed(session: Session, event: CampaignProgressed, occurred_at: str) -> None:
    """Apply a progress report unless a newer one is applied already; safe twice and in any order."""
    row = session.get(CampaignStatus, event.campaign_id, with_for_update=True)
    if row is None:
        log.warning("Progress of unknown campaign %s ignored.", event.campaign_id)
        return
    reported_at = _utc(datetime.fromisoformat(occurred_at))
    if not _newer(row, event, reported_at):
        log.info("Campaign %s: an older progress report (%s, %d done) arrived late and was ignored.",
                 event.campaign_id, event.status, event.sent + event.failed)
        return
    row.status, row.total, row.sent, row.failed = event.status, event.total, event.sent, event.failed
    row.progressed_at = reported_at


def _newer(row: CampaignStatus, event: CampaignProgressed, reported_at: datetime) -> bool:
    """Sent and failed only grow, so more done is newer; at equal counts (pause, resume) the later report
    wins; and a finished campaign never goes back to an unfinished status."""
    if row.status in FINAL and event.status not in FINAL:
        return False
    applied_at = _utc(row.progressed_at) if row.progressed_at else datetime.min.replace(tzinfo=UTC)
    return (event.sent + event.failed, reported_at) > (row.sent + row.failed, applied_at)


class CampaignOut(BaseModel):
    """What GET /campaigns/<id> answers: counts, and the delivery rate of the emails attempted so far."""

    id: str
    title: str
    status: CampaignState
    total: int
    sent: int
    failed: int
    queued: int
    cancelled: int
    delivery_rate: float | None
    user_triggered: bool
    status_url: str

    @classmethod
    def of(cls, row: CampaignStatus) -> "CampaignOut":
        left = row.total - row.sent - row.failed
        attempted = row.sent + row.failed
        return cls(id=row.id, title=row.title, status=CampaignState(row.status), total=row.total, sent=row.sent,
                   failed=row.failed,
                   queued=0 if row.status == "cancelled" else left, cancelled=left if row.status == "cancelled" else 0,
                   delivery_rate=round(row.sent / attempted, 4) if attempted else None,
                   user_triggered=row.user_triggered, status_url=f"/campaigns/{row.id}")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands datetimes back naive
