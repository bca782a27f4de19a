"""Settings from the environment, read once per process; the defaults run with no servers."""

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

SERVICES = ("api", "billing", "mailer", "media", "reports")

# The secrets each process uses. Outside the embedded mode a process refuses to start while one of its
# secrets is empty or a development value: anyone who reads this repository knows those.
SECRETS_BY_PROCESS = {
    "api-web": ("stripe_webhook_secret", "paytm_merchant_key", "mpesa_callback_secret"),  # verifies webhooks
    "media-web": ("media_signing_secret",),  # checks download links
    "media-worker": ("media_signing_secret",),  # signs download links
}
SECRETS_BY_PROCESS["up"] = tuple(dict.fromkeys(f for fields in SECRETS_BY_PROCESS.values() for f in fields))
# The defaults below, the values compose used to fall back to, and the unit tests' values.
DEVELOPMENT_SECRETS = frozenset({
    "whsec_dev_only_change_me", "devkey_16bytes!!", "dev-mpesa-secret", "dev-media-secret-change-me",
    "whsec_dev", "dev_paytm_key_16", "mpesa_dev_secret", "media_dev_signing_secret",
    "whsec_unit_test_secret", "unitTestKey12345", "mpesa-unit",
})
_PLACEHOLDER = re.compile(r"change.?me|replace.?me", re.IGNORECASE)
MIN_SECRET_LENGTH = 24  # secrets.token_urlsafe(32) gives 43 characters; Stripe's whsec_ secrets are longer still
PAYTM_KEY_BYTES = (16, 24, 32)  # Paytm's checksum is AES-CBC keyed with the merchant key
MAKE_ONE = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'


class InsecureSecrets(RuntimeError):
    """A process outside the embedded mode was given an empty, development or too weak secret."""


class Settings(BaseSettings):
    """Every variable is `MARKET_<FIELD>`; per-service URLs override the shared templates."""

    model_config = SettingsConfigDict(env_prefix="MARKET_", extra="ignore")

    data_dir: Path = Path("var")
    # `{service}` and `{data_dir}` are filled in per service.
    database_url: str = "sqlite:///{data_dir}/{service}.db"
    broker_url: str = "memory://"
    api_database_url: str | None = None
    billing_database_url: str | None = None
    mailer_database_url: str | None = None
    media_database_url: str | None = None
    reports_database_url: str | None = None
    api_broker_url: str | None = None
    billing_broker_url: str | None = None
    mailer_broker_url: str | None = None
    media_broker_url: str | None = None
    reports_broker_url: str | None = None
    # Connections per service database in each process. A thread holds at most one, so the pool covers the
    # threads that use it (gunicorn's, a worker's MARKET_WORKER_THREADS plus its relay, purge and upkeep
    # threads); they open only on demand. A thread waiting longer than the timeout gets an error, not a hang.
    db_pool_size: int = 20
    db_max_overflow: int = 20  # with the pool, more than the 32 web threads that may each hold one
    db_pool_timeout_s: float = 5.0
    # PostgreSQL: the ping is a round trip on every checkout (~60 µs here, bench/pool_checkout.py). Without it, a
    # connection that died (a database restart) fails the one transaction that meets it, which a web request
    # answers 503 with Retry-After and an actor retries, and the pool then drops every connection as old as it.
    db_pre_ping: bool = True
    db_pool_recycle_s: int = 1800  # connections older than this are replaced: idle timeouts of proxies, firewalls

    # Payment providers
    stripe_webhook_secret: str = "whsec_dev_only_change_me"
    stripe_tolerance_seconds: int = 300
    paytm_merchant_key: str = "devkey_16bytes!!"
    mpesa_callback_secret: str = "dev-mpesa-secret"
    webhook_max_bytes: int = 256 * 1024

    # Messaging
    redis_heartbeat_timeout_ms: int = 10_000
    redis_maintenance_interval_s: float = 2.0
    outbox_relay_interval_s: float = 2.0
    outbox_relay_after_s: float = 5.0
    outbox_keep_hours: float = 24  # sent outbox rows are deleted after this
    inbox_keep_days: float = 14  # the window in which a redelivered event is recognised
    worker_processes: int = 1
    worker_threads: int = 8
    worker_shutdown_timeout_ms: int = 25_000
    # How long Dramatiq's parent waits for its worker processes to say they booted (its --worker-fork-timeout,
    # 30 s by default) before it watches them. A child killed while booting never says so, and the parent sat
    # out the whole wait before noticing and exiting. The wait only orders "fork" processes after the workers,
    # and no middleware of ours has any, so a short one costs nothing.
    worker_boot_wait_ms: int = Field(default=1000, ge=10, le=1_800_000)
    # A worker refuses a broker Redis that keeps no append-only file (a restart would lose every queued
    # message); set this to run on one anyway, e.g. a development machine's Redis.
    allow_volatile_redis: bool = False
    # Each worker process touches a file here while its consumers hear from the broker (`market worker-health`
    # reads them). Default <data_dir>/heartbeats; in Kubernetes the pod's own emptyDir, since the data volume is
    # shared by every pod.
    heartbeat_dir: Path | None = None
    heartbeat_interval_s: float = 5.0

    # Mail
    mail_transport: str = "file"  # file | smtp | simulated
    mail_from: str = "Marketplace <no-reply@marketplace.local>"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    smtp_ca_file: str | None = None  # CA bundle to verify the server's STARTTLS certificate (default: system CAs)
    # The seed-000 mock provider (MARKET_MAIL_TRANSPORT=simulated)
    simulated_min_delay_ms: float = 20
    simulated_max_delay_ms: float = 80
    simulated_error_rate: float = 0.01
    simulated_seed: int = 0
    # Provider protection: a rate limit shared by every worker (needs a Redis URL; unset = no limit)
    mail_rate_limit_per_s: int = 0
    rate_limit_redis_url: str | None = None
    breaker_fail_max: int = 3
    breaker_reset_s: float = 10.0
    # Exactly-once around faults: a message found `sending` with no outcome (the worker died between the
    # server's 250 and the commit) is resent, or held for an operator (`market mail status`).
    ambiguous_send_policy: Literal["resend", "hold"] = "resend"
    mail_ambiguous_after_s: float = 90.0  # a `sending` row older than this has no attempt in flight (limit 60 s)
    mail_bookkeeping_retry_s: float = 20.0  # how long recording an outcome is retried before it is carried on
    mail_reconcile_interval_s: float = 60.0  # the sweep re-queues mail recorded but not delivered ...
    mail_reconcile_after_s: float = 900.0  # ... this long after its last step (above the 300 s max backoff)
    # Campaign routing (seed 002)
    campaign_bulk_threshold: int = 100
    campaign_chunk_size: int = 50
    campaign_chunk_spacing_s: float = 10.0
    # Invoice runs (seed 000)
    invoice_chunk_size: int = 1000

    # Money and media
    platform_fee_bps: int = 1000
    media_signing_secret: str = "dev-media-secret-change-me"
    download_link_ttl_s: int = 7 * 24 * 3600
    download_base_url: str | None = None  # default: where this run mode serves downloads
    upload_max_bytes: int = 100 * 1024 * 1024  # one product file
    seller_quota_bytes: int = 1024**3  # every stored file of one seller's products, kept versions included

    # HTTP
    api_bind: str = "127.0.0.1:8000"
    media_bind: str = "127.0.0.1:8001"
    mailer_bind: str = "127.0.0.1:8002"  # the mailer's queue metrics (`market serve mailer`), read by autoscalers
    web_workers: int = 2
    trusted_proxies: int = 0  # proxies in front of the api whose X-Forwarded-For/-Proto are believed
    token_ttl_hours: float = 30 * 24  # a bearer token works this long; signing in again gives a new one
    # Rate limits (https://limits.readthedocs.io notation), per client address, or per token for leads;
    # shared by every api process through RATE_LIMIT_REDIS_URL when it is set.
    rate_limit_register: str = "10/minute;100/hour"
    rate_limit_sign_in: str = "10/minute;50/hour"
    rate_limit_leads: str = "20/minute;200/hour"
    # gthread workers: a slow client holds one thread, not a whole worker (see README, "Slow clients").
    web_threads: int = 32

    sentry_dsn: str | None = None
    log_level: str = "INFO"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, data_dir: Path) -> Path:
        """Resolved once against the working directory at start-up: Flask's send_file would take a relative
        path against the app's root_path, and a thread or library may later change directory."""
        return data_dir.expanduser().resolve()

    def database_url_for(self, service: str) -> str:
        url = getattr(self, f"{service}_database_url") or self.database_url
        return url.format(service=service, data_dir=self.data_dir)

    def database_fingerprint(self, service: str) -> str:
        """A short digest naming the database a process uses, so that two processes can tell whether they
        share one (without showing its URL or password)."""
        url = make_url(self.database_url_for(service)).set(password=None)
        return hashlib.sha256(url.render_as_string().encode()).hexdigest()[:16]

    def broker_url_for(self, service: str) -> str:
        return getattr(self, f"{service}_broker_url") or self.broker_url

    @property
    def embedded(self) -> bool:
        """True when every service runs on the in-memory broker, so one process must host them all."""
        return all(self.broker_url_for(s).startswith("memory://") for s in SERVICES)

    @property
    def downloads_url(self) -> str:
        """Embedded mode serves downloads beside the api; otherwise media's own web app does."""
        if self.download_base_url:
            return self.download_base_url.rstrip("/")
        return f"http://{self.api_bind if self.embedded else self.media_bind}/downloads"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def heartbeats_dir(self) -> Path:
        return (self.heartbeat_dir or self.data_dir / "heartbeats").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def secret_problem(field: str, value: str) -> str | None:
    """Why `value` cannot be a real `field`, or None."""
    if not value.strip():
        return "is empty"
    if value in DEVELOPMENT_SECRETS or _PLACEHOLDER.search(value):
        return "is a development value from the repository"
    if field == "paytm_merchant_key":
        if len(value.encode()) not in PAYTM_KEY_BYTES:
            return "must be 16, 24 or 32 bytes long (Paytm's checksum uses it as an AES key)"
    elif len(value) < MIN_SECRET_LENGTH:
        return f"is too short to be real (under {MIN_SECRET_LENGTH} characters)"
    return None


def require_real_secrets(process: str) -> None:
    """Refuse to run `process` ("api-web", "media-worker", "up", ...) with a secret anyone could know,
    unless the system is a private demo: embedded (in-memory brokers) and listening on loopback only."""
    settings = get_settings()
    if settings.embedded and settings.api_bind.rpartition(":")[0].strip("[]") in LOOPBACK:
        return
    bad = {field: problem for field in SECRETS_BY_PROCESS.get(process, ())
           if (problem := secret_problem(field, getattr(settings, field)))}
    if not bad:
        return
    issued = " The Stripe webhook secret and the Paytm merchant key are the ones the providers issue." if (
        {"stripe_webhook_secret", "paytm_merchant_key"} & set(bad)) else ""
    raise InsecureSecrets(
        f"{process} will not start with development secrets where others can reach it (real brokers, or "
        f"an address other than loopback):\n"
        + "".join(f"  MARKET_{field.upper()} {problem}\n" for field, problem in bad.items())
        + f"Set each in the environment (or compose/.env). Make a secret with:  {MAKE_ONE}{issued}")


def exit_unless_real_secrets(process: str) -> None:
    """require_real_secrets for a process's entry point: a sentence for the operator, not a traceback."""
    try:
        require_real_secrets(process)
    except InsecureSecrets as refused:
        raise SystemExit(f"Error: {refused}") from None
