"""The module the dramatiq command loads for the reports's worker: observability, broker, then actors."""

import dramatiq

from shared import observability
from shared.messaging import add_worker_duties, broker_for
from shared.settings import exit_unless_real_secrets

observability.setup("reports-worker")
exit_unless_real_secrets("reports-worker")
dramatiq.set_broker(broker_for("reports"))
add_worker_duties("reports")

from services.reports import actors  # noqa: E402,F401  (declares the actors on the broker above)
