"""The module the dramatiq command loads for the media's worker: observability, broker, then actors."""

import dramatiq

from shared import observability
from shared.messaging import add_worker_duties, broker_for
from shared.settings import exit_unless_real_secrets

observability.setup("media-worker")
exit_unless_real_secrets("media-worker")
dramatiq.set_broker(broker_for("media"))
add_worker_duties("media")

from services.media import actors  # noqa: E402,F401  (declares the actors on the broker above)
