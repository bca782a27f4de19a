"""The system's services, as each declares itself (`services/<name>/__init__.py`), for the commands that run,
serve or migrate them."""

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from services import api, billing, mailer, media, reports
from shared.heartbeat import Heartbeat
from shared.messaging import MaintainedRedisBroker, PeriodicDuties, broker_for, middleware_of, require_durable_broker
from shared.outbox import purge, relay
from shared.service import Service
from shared.settings import SERVICES, get_settings

if TYPE_CHECKING:  # Alembic is imported only by the commands that migrate
    from shared.migrations import History, Migrated

DECLARED: dict[str, Service] = {package.service.name: package.service
                                for package in (api, billing, mailer, media, reports)}
# The api and media's download app; the mailer's serves its queue metrics, for autoscalers.
WEB_APPS = {name: service.web_app for name, service in DECLARED.items() if service.web_app}


def web_app(app: str):
    """A new instance of the named web app."""
    module, factory = WEB_APPS[app].split(":")
    return getattr(importlib.import_module(module), factory)()


def openapi(app: str) -> dict:
    """The OpenAPI document of a web app, as it serves it at /openapi.json."""
    flask_app = web_app(app)
    return flask_app.extensions["openapi"].document(flask_app)


def metadata(service: str) -> sa.MetaData:
    return DECLARED[service].metadata()


def load_actors(service: str):
    """Import a service's actors (declaring them on its broker) and return that broker."""
    return DECLARED[service].load_actors()


def queues(service: str) -> list[str]:
    """The queues a service's worker consumes: those of its own actors."""
    return DECLARED[service].queues()


def history(service: str) -> "History":
    """The service's version history: its revision files in `services/<name>/migrations/` and its tables."""
    from shared.migrations import History

    return History(service, metadata(service), DECLARED[service].migrations)


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


def add_worker_duties(service: str) -> None:
    """What a consuming process runs beside its actors: the outbox relay, the heartbeat that its probe reads
    (`market worker-health`) and, on Redis, maintenance."""
    require_durable_broker(service)
    settings = get_settings()
    broker = broker_for(service)
    # a mark on the broker object, which `reaches_workers` reads (Dramatiq's Broker declares no such field)
    broker.consumed_here = True  # type: ignore[attr-defined]
    duties = PeriodicDuties.of(broker)
    duties.add(f"{service}-outbox-relay", settings.outbox_relay_interval_s, lambda: relay(service))
    duties.add(f"{service}-outbox-purge", 3600, lambda: purge(service))
    heartbeat = middleware_of(broker, Heartbeat,
                              lambda: Heartbeat(service, settings.heartbeats_dir, settings.heartbeat_interval_s))
    duties.add(f"{service}-heartbeat", settings.heartbeat_interval_s, heartbeat.beat)
    if isinstance(broker, MaintainedRedisBroker):
        duties.add(f"{service}-redis-maintenance", settings.redis_maintenance_interval_s, broker.maintain)
