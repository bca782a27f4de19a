"""What the benchmarks share: the servers' addresses and fresh databases they drop afterwards."""

import os
import secrets
import socket
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_database_template() -> str:
    """A `MARKET_DATABASE_URL` naming databases no one else uses (created by `market migrate`)."""
    return f"{PG}/mkt_bench_{uuid.uuid4().hex[:8]}_{{service}}"


def real_secrets() -> dict:
    """Fresh secrets: with real brokers the processes refuse the repository's development values."""
    return {"MARKET_STRIPE_WEBHOOK_SECRET": f"whsec_{secrets.token_urlsafe(32)}",
            "MARKET_PAYTM_MERCHANT_KEY": secrets.token_urlsafe(12),  # 16 characters: an AES-128 key
            "MARKET_MPESA_CALLBACK_SECRET": secrets.token_urlsafe(32),
            "MARKET_MEDIA_SIGNING_SECRET": secrets.token_urlsafe(32)}


def clean_env(**settings: str) -> dict:
    """This process's environment without any MARKET_ variable, with fresh secrets, plus `settings`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")} | real_secrets() | settings


def drop_databases(template: str) -> None:
    prefix = template.rsplit("/", 1)[1].replace("{service}", "")
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in conn.scalars(sa.text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                                 {"p": f"{prefix}%"}).all():
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
