"""The mailer's queue metrics, for autoscalers (KEDA's metrics-api scaler): how many messages wait on each of its
queues and how long the next of each has waited. Read-only; it serves nothing else."""

from flask import Flask
from pydantic import BaseModel

from services.mailer import actors  # noqa: F401  (declares the mailer's queues on its broker)
from shared import observability
from shared.messaging import MaintainedRedisBroker, broker_for
from shared.openapi import Api
from shared.web import add_probes, harden

api = Api("Marketplace mailer metrics", "The mailer's queue depths and waiting times, for autoscalers.")


class Waiting(BaseModel):
    depth: int
    oldest_wait_s: float


class Queues(Waiting):
    queues: dict[str, Waiting]  # by queue name


def create_app() -> Flask:
    observability.setup("mailer-web")
    app = harden(Flask(__name__, static_folder=None))
    broker = broker_for("mailer")

    @app.get("/queues")
    @api.operation({200: Queues}, errors=[501], tags=["metrics"])
    def queues():
        """Messages waiting on each of the mailer's queues, and how long the oldest has waited (Redis only)."""
        if not isinstance(broker, MaintainedRedisBroker):
            return {"error": "the mailer's broker is not Redis; on RabbitMQ, read queue depths from RabbitMQ"}, 501
        found: dict[str, Waiting] = {}
        for queue in sorted(broker.get_declared_queues()):
            depth, oldest_wait_s = broker.waiting(queue)
            found[queue] = Waiting(depth=depth, oldest_wait_s=oldest_wait_s)
        return Queues(depth=sum(queue.depth for queue in found.values()),
                      oldest_wait_s=max((queue.oldest_wait_s for queue in found.values()), default=0.0),
                      queues=found)

    add_probes(app, api, "mailer", publishes_to=("mailer",))
    api.serve(app)
    return app
