"""The module the dramatiq command loads for the billing's worker: observability, broker, then actors."""

import dramatiq

from shared import observability
from shared.messaging import add_worker_duties, broker_for
from shared.settings import exit_unless_real_secrets

observability.setup("billing-worker")
exit_unless_real_secrets("billing-worker")
dramatiq.set_broker(broker_for("billing"))
add_worker_duties("billing")

from services.billing import actors  # noqa: E402,F401  (declares the actors on the broker above)
