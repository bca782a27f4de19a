"""The module the dramatiq command loads for the mailer's worker: observability, broker, then actors."""

import dramatiq

from shared import observability
from shared.messaging import add_worker_duties, broker_for
from shared.settings import exit_unless_real_secrets

observability.setup("mailer-worker")
exit_unless_real_secrets("mailer-worker")
dramatiq.set_broker(broker_for("mailer"))
add_worker_duties("mailer")

from services.mailer import actors  # noqa: E402,F401  (declares the actors on the broker above)
