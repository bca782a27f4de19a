"""Campaigns: bulk email with #placeholders. The api validates, resolves segments, hands the campaign to
the mailer as campaign.requested, and serves its status from a read model the mailer's reports keep."""

import json
import uuid
from typing import Annotated, Any, Literal

from flask import Blueprint, g, request
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, ValidationError, model_validator
from sqlalchemy import select

from services.api import segments
from services.api.campaign_status import FINAL, CampaignOut
from services.api.http import ApiError, Body, Page, api, authenticated, is_admin, json_object, paged, problems, query
from services.api.models import CampaignStatus, User
from shared.contracts import (
    PLACEHOLDERS,
    CampaignControlRequested,
    CampaignRequested,
    CampaignState,
    Recipient,
    unknown_placeholders,
)
from shared.db import transaction
from shared.outbox import publish
from shared.settings import get_settings
from shared.storage import LocalStorage

bp = Blueprint("campaigns", __name__)

MAX_RECIPIENTS = 100_000
INLINE_RECIPIENTS = 1_000  # a longer list travels as a JSON file in storage, never in a message
MAX_BODY_BYTES = 32 * 1024 * 1024  # 100,000 recipients; every other route keeps the small default

class NewRecipient(Recipient):
    # Lenient on purpose: numbers (a pledge of 25) are taken as text.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    email: EmailStr


class NewCampaign(Body):
    title: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    subject: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    body: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
    recipients: list[NewRecipient] | None = Field(default=None, min_length=1)
    segment: Literal["buyers", "all_users"] | None = None
    user_triggered: bool = False

    @model_validator(mode="after")
    def one_audience(self):
        if (self.recipients is None) == (self.segment is None):
            raise ValueError("give either recipients (a non-empty list) or a segment (buyers, all_users)")
        return self


class Accepted(BaseModel):
    id: str
    status: CampaignState
    status_url: str
    total: int


class ControlAccepted(BaseModel):
    id: str
    action: str
    status_url: str


class CampaignPage(BaseModel):
    campaigns: list[CampaignOut]
    next_offset: int | None


@bp.post("/campaigns")
@api.operation({202: Accepted}, body=NewCampaign, auth=True, errors=[403, 409], tags=["campaigns"])
@authenticated
def create_campaign():
    """Accept a campaign and answer at once; the mailer sends it and reports progress to the status URL."""
    with transaction("api") as session:
        # Registration is open: without this, anyone could use the platform to send bulk email. Checked before
        # the (up to 32 MB) body is read, so that only admins can make the server parse that much.
        if not is_admin(session, g.user_id):
            raise ApiError(403, "only an admin can send campaigns")
    campaign, campaign_id = _parse(), str(uuid.uuid4())
    with transaction("api") as session:
        recipients = _recipients(session, campaign)
        session.add(CampaignStatus(id=campaign_id, owner_id=g.user_id, title=campaign.title or campaign.subject[:200],
                                   user_triggered=campaign.user_triggered, status=CampaignState.QUEUED,
                                   total=len(recipients), sent=0, failed=0))
        publish(session, _requested(campaign_id, campaign, recipients))
    return Accepted(id=campaign_id, status=CampaignState.QUEUED, status_url=f"/campaigns/{campaign_id}",
                    total=len(recipients)), 202


@bp.get("/campaigns")
@api.operation({200: CampaignPage}, query=Page, auth=True, tags=["campaigns"])
@authenticated
def list_campaigns():
    """The caller's campaigns (an admin's: everyone's), newest first, a page at a time."""
    asked = query(Page)
    listed = select(CampaignStatus).order_by(CampaignStatus.created_at.desc(), CampaignStatus.id)
    with transaction("api") as session:
        if not is_admin(session, g.user_id):
            listed = listed.where(CampaignStatus.owner_id == g.user_id)
        found, next_offset = paged(session, listed, asked.limit, asked.offset)
        return CampaignPage(campaigns=[CampaignOut.of(row) for row in found], next_offset=next_offset)


@bp.get("/campaigns/<campaign_id>")
@api.operation({200: CampaignOut}, auth=True, errors=[404], tags=["campaigns"])
@authenticated
def get_campaign(campaign_id: str):
    """A campaign's progress."""
    with transaction("api") as session:
        return CampaignOut.of(_visible(session, campaign_id))


@bp.post("/campaigns/<campaign_id>/<any(pause, resume, cancel):action>")
@api.operation({202: ControlAccepted}, auth=True, errors=[404, 409], tags=["campaigns"])
@authenticated
def control_campaign(campaign_id: str, action: str):
    """Ask the mailer to pause, resume or cancel; it applies what fits the campaign's state then."""
    with transaction("api") as session:
        row = _visible(session, campaign_id)
        if row.status in FINAL:
            raise ApiError(409, f"campaign {campaign_id} is {row.status}; it cannot {action}")
        publish(session, CampaignControlRequested(campaign_id=campaign_id, action=action))
    return ControlAccepted(id=campaign_id, action=action, status_url=f"/campaigns/{campaign_id}"), 202


def _parse() -> NewCampaign:
    """The body as a campaign, or a 400 that names each problem (the first few of a long list)."""
    request.max_content_length = MAX_BODY_BYTES
    body = json_object()
    if isinstance(body.get("recipients"), list) and len(body["recipients"]) > MAX_RECIPIENTS:
        raise ApiError(400, f"at most {MAX_RECIPIENTS:,} recipients per campaign, got {len(body['recipients']):,}")
    try:
        campaign = NewCampaign.model_validate(body)
    except ValidationError as exc:
        raise ApiError(400, "invalid campaign", problems(exc)) from None
    found = {field: unknown_placeholders(getattr(campaign, field)) for field in ("subject", "body")}
    names = ", ".join(dict.fromkeys(name for names in found.values() for name in names))
    if names:
        known = ", ".join(f"#{name}" for name in PLACEHOLDERS)
        raise ApiError(400, f"unknown placeholder {names}: use {known}, or ## for a literal #",
                       [{"field": field, "problem": f"unknown placeholder {name}"}
                        for field, names in found.items() for name in names])
    return campaign


def _recipients(session, campaign: NewCampaign) -> list[dict]:
    """The audience as plain dicts, one per address (the first wins when a list repeats one)."""
    if campaign.segment:
        found = segments.recipients(session, campaign.segment)
        if not found:
            raise ApiError(409, f"segment {campaign.segment} has no users yet")
        if len(found) > MAX_RECIPIENTS:
            raise ApiError(409, f"segment {campaign.segment} has {len(found):,} users, over {MAX_RECIPIENTS:,}")
        return found
    unique: dict[str, dict] = {}
    assert campaign.recipients is not None  # NewCampaign holds recipients when it has no segment
    for r in campaign.recipients:
        unique.setdefault(r.email.lower(), r.model_dump())
    return list(unique.values())


def _requested(campaign_id: str, campaign: NewCampaign, recipients: list[dict]) -> CampaignRequested:
    fields: dict[str, Any] = {"campaign_id": campaign_id, "title": campaign.title or campaign.subject[:200],
                              "subject": campaign.subject, "body": campaign.body,
                              "user_triggered": campaign.user_triggered}
    if len(recipients) <= INLINE_RECIPIENTS:
        return CampaignRequested.model_validate({**fields, "recipients": recipients})
    key = f"campaigns/{campaign_id}/recipients.json"
    LocalStorage(get_settings().storage_dir).put(key, json.dumps(recipients).encode())
    return CampaignRequested(**fields, recipients_key=key)


def _visible(session, campaign_id: str) -> CampaignStatus:
    """The campaign, if the caller created it or is an admin; to anyone else it does not exist."""
    row = session.get(CampaignStatus, campaign_id)
    if row is None or (row.owner_id != g.user_id and not session.get(User, g.user_id).is_admin):
        raise ApiError(404, f"campaign {campaign_id} does not exist")
    return row
