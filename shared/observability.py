"""Logging and Sentry for every process, with secrets and personal data scrubbed."""

import logging
import re
import threading
import time

import sentry_sdk
from dramatiq import Message
from dramatiq.broker import MessageProxy
from gunicorn.glogging import Logger as GunicornBaseLogger
from sentry_sdk.scrubber import DEFAULT_DENYLIST, DEFAULT_PII_DENYLIST, EventScrubber

from shared.settings import get_settings

# Headers and fields the default scrubber does not know about.
EXTRA_DENYLIST = ["stripe-signature", "stripe_signature", "checksumhash", "phone", "phonenumber", "email",
                  "buyer_email", "msisdn", "token", "sig"]
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
# Not inside a longer word: the digit runs of uuids and ids (log lines name events by id) are not phones.
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d -]{8,}\d(?![\w-])")
# Path segments that are credentials: the M-Pesa callback secret and signed download tokens.
_SECRET_PATH = re.compile(r"(/webhooks/mpesa/|/downloads/)[^/?#\s'\"]+")
_BEARER = re.compile(r"(bearer\s+)[^\s'\",;]+", re.IGNORECASE)
SECRET_SETTINGS = ("stripe_webhook_secret", "paytm_merchant_key", "mpesa_callback_secret", "media_signing_secret",
                   "smtp_password")


def setup(process: str) -> None:
    """Configure logging (sentences with ids) and, when a DSN is set, Sentry."""
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [{process}] %(name)s: %(message)s",
    )
    # basicConfig leaves a root logger that has a handler alone: a Dramatiq worker's (set to INFO) would ignore
    # MARKET_LOG_LEVEL, and spend its time scrubbing and writing a line per message.
    logging.getLogger().setLevel(settings.log_level)
    # On the handlers, not a logger: a logger's filters skip records propagated from its children
    # (werkzeug, flask.app, dramatiq). A Dramatiq worker's root handler is Dramatiq's own: scrub it too.
    for handler in logging.getLogger().handlers:
        scrub(handler)
        if not any(isinstance(f, Repeats) for f in handler.filters):
            handler.addFilter(Repeats())
    if settings.sentry_dsn:
        sentry_sdk.init(
            dsn=settings.sentry_dsn,
            send_default_pii=False,
            include_local_variables=False,
            max_request_body_size="never",
            event_scrubber=EventScrubber(denylist=DEFAULT_DENYLIST + DEFAULT_PII_DENYLIST + EXTRA_DENYLIST,
                                         recursive=True),
            # the event is a plain dict at run time; the SDK's `Event` TypedDict types some fields as unions
            before_send=scrub_text,  # type: ignore[arg-type]
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
    value = _BEARER.sub(r"\1[Filtered]", _SECRET_PATH.sub(r"\1[Filtered]", value))
    return _PHONE.sub("[phone]", _EMAIL.sub("[email]", value))


class Repeats(logging.Filter):
    """Lets through one record per minute of each kind (logger, level, message template) from pika, saying how
    many like it were held back: while RabbitMQ is down pika logs several ERROR lines for every refused
    reconnection (7,768 lines from one web process in an 18 s outage), which buried everything else. Our own
    lines always pass."""

    def __init__(self, loggers: tuple[str, ...] = ("pika",), window_s: float = 60.0, clock=time.monotonic):
        super().__init__()
        self.loggers, self.window_s, self.clock = loggers, window_s, clock
        self.seen: dict[tuple, tuple[float, int]] = {}  # kind -> (when one last passed, how many held since)
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == name or record.name.startswith(f"{name}.") for name in self.loggers):
            return True
        kind, now = (record.name, record.levelno, str(record.msg)), self.clock()
        with self.lock:
            passed_at, held = self.seen.get(kind, (None, 0))
            if passed_at is not None and now - passed_at < self.window_s:
                self.seen[kind] = (passed_at, held + 1)
                return False
            self.seen[kind] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.window_s:.0f} s held back)"
        return True


class Scrubber(logging.Filter):
    """Masks emails, phone numbers, bearer tokens, secret path segments and this process's secrets in a record's
    message and exception text; a Dramatiq message appears as its actor and id, never its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            if isinstance(record.args, tuple):
                record.args = tuple(self._clean_arg(arg) for arg in record.args)
            message = record.getMessage()
        except Exception:  # a malformed call: log the template rather than fail the caller
            message, record.args = str(record.msg), None
        if self._clean(message) != message or not isinstance(record.args, tuple):
            # The template itself, or what the arguments make together, needs masking: keep the masked text.
            record.msg, record.args = self._clean(message), None
        # Otherwise the template stays, so Sentry still groups the events of one log call together.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True

    @classmethod
    def _clean_arg(cls, arg):
        if isinstance(arg, Message | MessageProxy):
            return f"{arg.actor_name}[{arg.message_id}]"
        if isinstance(arg, int | float | type(None)):
            return arg
        text = str(arg)
        return arg if cls._clean(text) == text else cls._clean(text)

    @staticmethod
    def _clean(text: str) -> str:
        settings = get_settings()
        for name in SECRET_SETTINGS:
            secret = getattr(settings, name)
            if secret and len(secret) >= 8:  # a short one would mask ordinary words
                text = text.replace(secret, "[Filtered]")
        return _mask(text)


def scrub(handler: logging.Handler) -> None:
    """Put the Scrubber on `handler` (once)."""
    if not any(isinstance(f, Scrubber) for f in handler.filters):
        handler.addFilter(Scrubber())


class GunicornLogger(GunicornBaseLogger):
    """Gunicorn's error and access logs, scrubbed: they have handlers of their own and do not propagate."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                scrub(handler)
