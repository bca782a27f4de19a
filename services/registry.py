"""Where each service's parts live, for the commands that run or migrate them all."""

import importlib

import sqlalchemy as sa

from shared.settings import SERVICES

WEB_APPS = {"api": "services.api.app:create_app", "media": "services.media.web:create_app"}


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


def migrate_all() -> None:
    from shared.db import migrate

    for service in SERVICES:
        migrate(service, metadata(service))
