"""Event contracts and the subscription table: the map of who talks to whom.

Payloads are small JSON objects of ids and primitives, money as integer minor units
plus an ISO 4217 currency. Fields are only ever added; consumers ignore the rest.
"""

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, ClassVar, NamedTuple, TypeVar

import pycountry
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# ISO 4217 codes that are not money a buyer pays in: precious metals, IMF units, bond units, testing, "none".
NOT_MONEY = frozenset({"XAG", "XAU", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XTS", "XXX"})


@lru_cache(maxsize=512)  # a chunk of invoices checks the same few codes a thousand times
def _iso_4217(code: str) -> str:
    if pycountry.currencies.get(alpha_3=code) is None:
        raise ValueError(f"{code} is not an ISO 4217 currency code")
    if code in NOT_MONEY:
        raise ValueError(f"{code} is an ISO 4217 code, but not a currency anyone pays in")
    return code


Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_iso_4217)]
Minor = Annotated[int, Field(ge=0)]


# ISO 4217 minor-unit exponents that are not 2.
EXPONENTS = {c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
                            "VUV", "XAF", "XOF", "XPF")} | {c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR",
                                                                            "TND")}


def money(minor: int, currency: str) -> str:
    """'1999, USD' -> '19.99 USD', with the currency's own number of decimals."""
    exponent = EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{minor:,} {currency}"
    whole, fraction = divmod(minor, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d} {currency}"


class Event(BaseModel):
    """Base of every event; `name` is the wire name, `version` bumps only on a breaking change."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: ClassVar[str]
    version: ClassVar[int] = 1


class Envelope(BaseModel):
    """What travels as the single argument of an event message."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    event_id: str
    name: str
    version: int
    occurred_at: datetime
    data: dict


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


E = TypeVar("E", bound=Event)

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


# Campaign personalisation: `#name` in a subject or body becomes the recipient's value. `#` followed by a
# lowercase identifier is a placeholder; `##` is a literal `#`; any other `#` (`#1`, `#Sale`) is just a `#`.
PLACEHOLDERS = ("name", "pledge", "paid_amount", "balance", "days_remain")
_TOKEN = re.compile(r"#(#|[a-z_][a-z0-9_]*)")


def unknown_placeholders(text: str) -> list[str]:
    """The placeholders in `text` that are not known, as written (`#foo`), each once, in order."""
    found = (f"#{token}" for token in _TOKEN.findall(text) if token != "#" and token not in PLACEHOLDERS)
    return list(dict.fromkeys(found))


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    """`text` with each known placeholder replaced by its value and `##` by `#`, in one pass: a value
    holding `#name` stays as it is."""

    def one(match: re.Match) -> str:
        token = match.group(1)
        if token == "#":
            return "#"
        return str(values.get(token, "")) if token in PLACEHOLDERS else match.group(0)

    return _TOKEN.sub(one, text)



class Recipient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    email: str
    name: str = ""
    pledge: str = ""
    paid_amount: str = ""
    balance: str = ""
    days_remain: str = ""


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


class CampaignProgressed(Event):
    name: ClassVar[str] = "campaign.progressed"
    campaign_id: str
    status: str  # queued | sending | paused | cancelled | completed
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


class Target(NamedTuple):
    service: str
    queue: str
    actor: str


SUBSCRIPTIONS: dict[str, tuple[Target, ...]] = {
    "purchase.completed": (
        Target("api", "api.events", "api.on_purchase_completed"),
        Target("billing", "billing.events", "billing.on_purchase_completed"),
        Target("mailer", "mailer.events", "mailer.on_purchase_completed"),
        Target("media", "media.events", "media.on_purchase_completed"),
        Target("reports", "reports.events", "reports.on_purchase_completed"),
    ),
    "product.file_uploaded": (Target("media", "media.events", "media.on_product_file_uploaded"),),
    "downloads.ready": (Target("mailer", "mailer.events", "mailer.on_downloads_ready"),),
    "lead.created": (Target("mailer", "mailer.events", "mailer.on_lead_created"),),
    "product.approved": (Target("mailer", "mailer.events", "mailer.on_product_approved"),
                         Target("media", "media.events", "media.on_product_approved")),
    "product.rejected": (Target("mailer", "mailer.events", "mailer.on_product_rejected"),),
    "campaign.requested": (Target("mailer", "mailer.events", "mailer.on_campaign_requested"),),
    "campaign.control_requested": (Target("mailer", "mailer.events", "mailer.on_campaign_control_requested"),),
    "campaign.progressed": (Target("api", "api.events", "api.on_campaign_progressed"),),
    "invoice.emails_requested": (Target("mailer", "mailer.invoices", "mailer.on_invoice_emails_requested"),),
    "invoice.emails_sent": (Target("billing", "billing.events", "billing.on_invoice_emails_sent"),),
}


def subscription(event_type: type[Event], service: str) -> Target:
    """The row of SUBSCRIPTIONS by which `service` hears `event_type`: its actor's name and queue."""
    found = [t for t in SUBSCRIPTIONS.get(event_type.name, ()) if t.service == service]
    if len(found) != 1:
        raise LookupError(f"{service} must subscribe to {event_type.name} exactly once in SUBSCRIPTIONS "
                          f"(shared/contracts.py), found {len(found)}")
    return found[0]


def envelope(event: Event, event_id: str | None = None) -> dict:
    """Wrap an event for the wire: its id (fresh unless given), name, version and JSON-safe data."""
    # The data is dumped once, beside the envelope's fields: dumping it inside the Envelope walks it again.
    return Envelope(event_id=event_id or str(uuid.uuid4()), name=event.name, version=event.version,
                    occurred_at=datetime.now(UTC), data={}).model_dump(mode="json") | {
        "data": event.model_dump(mode="json")}


def open_envelope(raw: dict, event_type: type[E]) -> tuple[str, E]:
    """Validate a received envelope; raises pydantic.ValidationError or ValueError when it is not one."""
    env = Envelope.model_validate(raw)
    if env.name != event_type.name:
        raise ValueError(f"expected a {event_type.name} event, got {env.name}")
    if env.version > event_type.version:
        raise ValueError(f"{env.name} version {env.version} is newer than this consumer understands")
    return env.event_id, event_type.model_validate(env.data)
