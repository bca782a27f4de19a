"""Where each service's parts live, for the commands that run or migrate them all."""

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from shared.settings import SERVICES, get_settings

if TYPE_CHECKING:  # Alembic is imported only by the commands that migrate
    from shared.migrations import History, Migrated

WEB_APPS = {"api": "services.api.app:create_app", "media": "services.media.web:create_app",
            "mailer": "services.mailer.web:create_app"}  # the mailer's: its queue metrics, for autoscalers


def openapi(app: str) -> dict:
    """The OpenAPI document of a web app, as it serves it at /openapi.json."""
    module, factory = WEB_APPS[app].split(":")
    flask_app = getattr(importlib.import_module(module), factory)()
    return flask_app.extensions["openapi"].document(flask_app)


def metadata(service: str) -> sa.MetaData:
    return importlib.import_module(f"services.{service}.models").Base.metadata


def load_actors(service: str):
    """Import a service's actors (declaring them on its broker) and return that broker."""
    from shared.messaging import broker_for

    importlib.import_module(f"services.{service}.actors")
    return broker_for(service)


def queues(service: str) -> list[str]:
    """The queues a service's worker consumes: those of its own actors."""
    broker = load_actors(service)
    return sorted({broker.get_actor(name).queue_name for name in broker.get_declared_actors()
                   if name.startswith(f"{service}.")})


def history(service: str) -> "History":
    """The service's version history: its revision files in `services/<name>/migrations/` and its tables."""
    from shared.migrations import History

    return History(service, metadata(service), Path(__file__).parent / service / "migrations")


def migrate(service: str) -> "Migrated":
    """Upgrade the service's database to its newest revision; returns what was done."""
    from shared.db import engine_for
    from shared.migrations import upgrade

    return upgrade(history(service), engine_for(service))


def migrate_all() -> list["Migrated"]:
    return [migrate(service) for service in SERVICES]


def revise(service: str, message: str) -> Path:
    """Write the service's next revision from its models (compared on a scratch database of its kind)."""
    from shared.migrations import revise

    return revise(history(service), message, sa.make_url(get_settings().database_url_for(service)))
