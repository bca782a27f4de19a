"""Logging and Sentry for every process, with secrets and personal data scrubbed."""

import logging
import re

import sentry_sdk
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber

from shared.settings import get_settings

# Headers and fields the default scrubber does not know about.
EXTRA_DENYLIST = ["stripe-signature", "stripe_signature", "checksumhash", "phone", "phonenumber", "email",
                  "buyer_email", "msisdn", "token", "sig"]
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"\+?\d[\d -]{8,}\d")


def setup(process: str) -> None:
    """Configure logging (sentences with ids) and, when a DSN is set, Sentry."""
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [{process}] %(name)s: %(message)s",
    )
    if settings.sentry_dsn:
        sentry_sdk.init(
            dsn=settings.sentry_dsn,
            send_default_pii=False,
            include_local_variables=False,
            max_request_body_size="never",
            event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + DEFAULT_PII_DENYLIST + EXTRA_DENYLIST,
                                         recursive=True),
            before_send=scrub_text,
            server_name=process,
        )


def scrub_text(event: dict, _hint: dict) -> dict:
    """Mask emails and phone numbers that slipped into messages and exception values."""
    for exc in event.get("exception", {}).get("values", []):
        if isinstance(exc.get("value"), str):
            exc["value"] = _mask(exc["value"])
    if isinstance(event.get("logentry", {}).get("message"), str):
        event["logentry"]["message"] = _mask(event["logentry"]["message"])
    return event


def _mask(text: str) -> str:
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", text))
