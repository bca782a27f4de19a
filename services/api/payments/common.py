"""What every provider's reading shares: errors, strict models, amounts, and JSON read exactly as sent."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from shared.web import json_loads


class WebhookRejected(Exception):
    """The request is not a genuine, well-formed provider notification."""


class InvalidPayment(ValueError):
    """A genuine notification whose payment cannot be read: rejecting it is final, retrying cannot help."""


class Strict(BaseModel):
    """A provider's object read by type, never converted (`bool` is not an int, "1999" not a number);
    fields we do not use are ignored, as providers add them freely."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


M = TypeVar("M", bound=Strict)


def _json_number(value: object) -> object:
    # bool is an int in Python, and text would be converted by Decimal: neither is a number the provider sent.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError("must be a JSON number")
    return value


Count = Annotated[int, Field(ge=0)]
# An amount in major units as a JSON number (read as Decimal, see json_object): at most two decimals.
JsonAmount = Annotated[Decimal, BeforeValidator(_json_number), Field(strict=False, ge=0, decimal_places=2,
                                                                     max_digits=15)]
# A plain decimal string: no sign, exponent, spaces, Infinity/NaN or non-ASCII digits (which Decimal accepts).
TextAmount = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]


@dataclass(frozen=True)
class Received:
    event_id: str
    event_type: str
    payload: str


@dataclass(frozen=True)
class Payment:
    """What a notification says about a payment; `reference` is ours, echoed back by the provider."""

    reference: str
    amount_minor: int
    currency: str
    payment_id: str
    succeeded: bool
    detail: str = ""



def json_object(body: bytes) -> dict:
    """The body as a JSON object; fractions are read as Decimal, exactly as sent."""
    try:
        value = json_loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as exc:  # providers send UTF-8; anything else is refused
        raise WebhookRejected(f"body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WebhookRejected("body is not a JSON object")
    return value


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON value")


def stored_json(payload: str) -> dict:
    """A stored body: it was read once at the edge, so failing now is final."""
    try:
        return json_object(payload.encode())
    except WebhookRejected as exc:
        raise InvalidPayment(str(exc)) from None


def read_as(model: type[M], value: object, what: str) -> M:
    """`value` as `model`, or an InvalidPayment naming each bad field."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidPayment(f"invalid {what}: {problems}") from None


def minor_units(amount: Decimal) -> int:
    """25.50 -> 2550; the types above already allow at most two decimals."""
    return int(amount * 100)
