"""Event contracts and the subscription table: the map of who talks to whom.

Payloads are small JSON objects of ids and primitives, money as integer minor units
plus an ISO 4217 currency. Fields are only ever added; consumers ignore the rest.
"""

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Minor = Annotated[int, Field(ge=0)]


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

EVENTS: dict[str, type[Event]] = {e.name: e for e in (PurchaseCompleted, ProductFileUploaded, DownloadsReady)}


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
}


def envelope(event: Event) -> dict:
    """Wrap an event for the wire: a fresh event id, its name, version and JSON-safe data."""
    return Envelope(
        event_id=str(uuid.uuid4()),
        name=event.name,
        version=event.version,
        occurred_at=datetime.now(UTC),
        data=event.model_dump(mode="json"),
    ).model_dump(mode="json")


def open_envelope(raw: dict, event_type: type[E]) -> tuple[str, E]:
    """Validate a received envelope; raises pydantic.ValidationError or ValueError when it is not one."""
    env = Envelope.model_validate(raw)
    if env.name != event_type.name:
        raise ValueError(f"expected a {event_type.name} event, got {env.name}")
    if env.version > event_type.version:
        raise ValueError(f"{env.name} version {env.version} is newer than this consumer understands")
    return env.event_id, event_type.model_validate(env.data)
