"""A service declares itself once, in its package's `__init__`: its name, and where its web app is if it has one.
Everything else is found where every service keeps it (`models`, `actors`, `migrations/`), and the entry point
(`services.market`), the workers, the migrations and the contract test all read the declaration."""

import importlib
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import sqlalchemy as sa


@dataclass(frozen=True)
class Service:
    name: str
    package: str  # the service's package (its __name__), e.g. "services.api"
    web_app: str | None = None  # "module:factory" of its Flask app, if it serves HTTP

    @property
    def folder(self) -> Path:
        init = importlib.import_module(self.package).__file__
        assert init is not None  # a service is a regular package, with its __init__.py
        return Path(init).parent

    @property
    def migrations(self) -> Path:
        return self.folder / "migrations"

    def metadata(self) -> sa.MetaData:
        """Its tables, as its models declare them."""
        return importlib.import_module(f"{self.package}.models").Base.metadata

    def load_actors(self) -> dramatiq.Broker:
        """Import its actors (declaring them, subscribers included, on its broker) and return that broker."""
        from shared.messaging import broker_for

        importlib.import_module(f"{self.package}.actors")
        return broker_for(self.name)

    def queues(self) -> list[str]:
        """The queues its worker consumes: those of its own actors."""
        broker = self.load_actors()
        return sorted({broker.get_actor(name).queue_name for name in broker.get_declared_actors()
                       if name.startswith(f"{self.name}.")})
