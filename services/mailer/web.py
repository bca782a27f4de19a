"""The mailer's queue metrics, for autoscalers (KEDA's metrics-api scaler): how many messages wait on each of its
queues and how long the next of each has waited. Read-only; it serves nothing else."""

from flask import Flask

from services.mailer import actors  # noqa: F401  (declares the mailer's queues on its broker)
from shared import observability
from shared.messaging import MaintainedRedisBroker, broker_for
from shared.web import add_probes, harden


def create_app() -> Flask:
    observability.setup("mailer-web")
    app = harden(Flask(__name__))
    broker = broker_for("mailer")

    @app.get("/queues")
    def queues():
        if not isinstance(broker, MaintainedRedisBroker):
            return {"error": "the mailer's broker is not Redis; on RabbitMQ, read queue depths from RabbitMQ"}, 501
        found = {queue: dict(zip(("depth", "oldest_wait_s"), broker.waiting(queue), strict=True))
                 for queue in sorted(broker.get_declared_queues())}
        return {"depth": sum(queue["depth"] for queue in found.values()),
                "oldest_wait_s": max((queue["oldest_wait_s"] for queue in found.values()), default=0.0),
                "queues": found}

    add_probes(app, "mailer", publishes_to=("mailer",))
    return app
