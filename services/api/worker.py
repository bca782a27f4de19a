"""The module the dramatiq command loads for the api's worker: observability, broker, then actors."""

import dramatiq

from shared import observability
from shared.messaging import add_worker_duties, broker_for
from shared.settings import exit_unless_real_secrets

observability.setup("api-worker")
exit_unless_real_secrets("api-worker")
dramatiq.set_broker(broker_for("api"))
add_worker_duties("api")

from services.api import actors  # noqa: E402,F401  (declares the actors on the broker above)
