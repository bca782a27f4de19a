"""The events services publish: small JSON objects of ids and primitives, money as integer minor units plus an
ISO 4217 currency. Fields are only ever added; consumers ignore the rest."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.contracts.money import Currency, Minor
from shared.status import Lifecycle


class Event(BaseModel):
    """Base of every event; `name` is the wire name, `version` bumps only on a breaking change."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: ClassVar[str]
    version: ClassVar[int] = 1


E = TypeVar("E", bound=Event)


class PurchaseLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    product_id: int
    seller_id: int
    title: str
    price_minor: Minor
    # The reviewed file version this line bought (None: the product had no approved file at checkout).
    file_key: str | None = None
    file_sha256: str | None = None


class PurchaseCompleted(Event):
    name: ClassVar[str] = "purchase.completed"
    order_id: int
    order_reference: str
    buyer_id: int
    buyer_email: str
    buyer_name: str
    currency: Currency
    total_minor: Minor
    provider: str
    paid_at: datetime
    lines: list[PurchaseLine] = Field(min_length=1)


class ProductFileUploaded(Event):
    name: ClassVar[str] = "product.file_uploaded"
    product_id: int
    storage_key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str


class DownloadLink(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    product_id: int
    title: str
    url: str
    expires_at: datetime


class DownloadsReady(Event):
    name: ClassVar[str] = "downloads.ready"
    order_id: int
    buyer_email: str
    buyer_name: str
    links: list[DownloadLink] = Field(min_length=1)


class LeadCreated(Event):
    name: ClassVar[str] = "lead.created"
    lead_id: int
    lead_name: str
    lead_email: str
    lead_phone: str | None = None
    source: str = ""
    assigned_user_id: int
    assigned_email: str
    assigned_name: str


class ProductApproved(Event):
    name: ClassVar[str] = "product.approved"
    product_id: int
    title: str
    seller_id: int
    seller_email: str
    seller_name: str
    file_key: str | None = None  # the file version that was reviewed, if the product has one
    file_sha256: str | None = None


class ProductRejected(Event):
    name: ClassVar[str] = "product.rejected"
    product_id: int
    title: str
    seller_id: int
    seller_email: str
    seller_name: str
    reason: str


Text = Annotated[str, StringConstraints(max_length=100)]


class Recipient(BaseModel):
    """A campaign's recipient: an address and the values of the placeholders (`#name`, `#pledge` ...), which are
    exactly these fields but the email."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    email: str
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    pledge: Text = ""
    paid_amount: Text = ""
    balance: Text = ""
    days_remain: Text = ""


class CampaignRequested(Event):
    name: ClassVar[str] = "campaign.requested"
    campaign_id: str
    title: str
    subject: str
    body: str
    user_triggered: bool = False
    recipients: list[Recipient] = Field(default_factory=list)
    recipients_key: str | None = None  # large lists travel as a JSON file in storage


class CampaignControlRequested(Event):
    name: ClassVar[str] = "campaign.control_requested"
    campaign_id: str
    action: str  # pause | resume | cancel


class CampaignState(StrEnum):
    """A campaign's status, as the mailer keeps it and reports it (the api's read model shows the same)."""

    QUEUED = "queued"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


CAMPAIGN = Lifecycle({
    CampaignState.QUEUED: {CampaignState.SENDING, CampaignState.PAUSED, CampaignState.CANCELLED,
                           CampaignState.COMPLETED},
    CampaignState.SENDING: {CampaignState.PAUSED, CampaignState.CANCELLED, CampaignState.COMPLETED},
    CampaignState.PAUSED: {CampaignState.SENDING, CampaignState.CANCELLED, CampaignState.COMPLETED},
})
ACTIVE_CAMPAIGN = (CampaignState.QUEUED, CampaignState.SENDING)  # sends go on


class CampaignProgressed(Event):
    name: ClassVar[str] = "campaign.progressed"
    campaign_id: str
    status: CampaignState
    total: int
    sent: int
    failed: int


class InvoiceEmail(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    invoice_id: int
    user_id: int
    email: str
    name: str
    number: str
    amount_minor: Minor
    currency: Currency
    due_date: str


class InvoiceEmailsRequested(Event):
    name: ClassVar[str] = "invoice.emails_requested"
    run_id: str
    chunk: int
    invoices: list[InvoiceEmail]


class InvoiceEmailsSent(Event):
    name: ClassVar[str] = "invoice.emails_sent"
    run_id: str
    chunk: int
    sent: list[int]  # invoice ids
    failed: dict[int, str] = Field(default_factory=dict)  # invoice id -> reason


EVENTS: dict[str, type[Event]] = {e.name: e for e in (
    PurchaseCompleted, ProductFileUploaded, DownloadsReady, LeadCreated, ProductApproved, ProductRejected,
    CampaignRequested, CampaignControlRequested, CampaignProgressed, InvoiceEmailsRequested, InvoiceEmailsSent)}
