"""The envelope an event travels in: its id, name, version and time around its data."""

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from shared.contracts.events import E, Event


class Envelope(BaseModel):
    """What travels as the single argument of an event message."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    event_id: str
    name: str
    version: int
    occurred_at: datetime
    data: dict


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
