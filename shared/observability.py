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
# Path segments that are credentials: the M-Pesa callback secret and signed download tokens.
_SECRET_PATH = re.compile(r"(/webhooks/mpesa/|/downloads/)[^/?#\s'\"]+")


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
    """Mask emails, phone numbers and secret URL segments in every free-text field the SDK sends.

    The logging integration sends the template (`logentry.message`), the interpolated text
    (`logentry.formatted`) and the arguments (`logentry.params`); breadcrumbs repeat earlier log lines.
    """
    for exc in event.get("exception", {}).get("values", []):
        _mask_keys(exc, "value")
    _mask_keys(event, "message")
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        _mask_keys(logentry, "message", "formatted")
        params = logentry.get("params")
        if isinstance(params, list | tuple):
            logentry["params"] = [_mask(p) for p in params]
        elif isinstance(params, dict):
            logentry["params"] = {k: _mask(v) for k, v in params.items()}
    for crumb in (event.get("breadcrumbs") or {}).get("values", []):
        _mask_keys(crumb, "message")
    if isinstance(event.get("request"), dict):
        _mask_keys(event["request"], "url", "query_string")
    return event


def _mask_keys(data: dict, *keys: str) -> None:
    for key in keys:
        if isinstance(data.get(key), str):
            data[key] = _mask(data[key])


def _mask(value):
    if not isinstance(value, str):
        return value
    return _SECRET_PATH.sub(r"\1[Filtered]", _PHONE.sub("[phone]", _EMAIL.sub("[email]", value)))
