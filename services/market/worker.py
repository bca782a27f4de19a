"""The module the dramatiq command loads for a service's worker (`market worker SERVICE` names the service in
MARKET_WORKER_SERVICE): observability, broker and worker duties, then the service's actors."""

import os

import dramatiq

from services.market.registry import DECLARED, add_worker_duties
from shared import observability
from shared.messaging import broker_for
from shared.settings import exit_unless_real_secrets

SERVICE = os.environ.get("MARKET_WORKER_SERVICE", "")
if SERVICE not in DECLARED:
    raise SystemExit(f"Error: MARKET_WORKER_SERVICE must name a service ({', '.join(DECLARED)}), "
                     f"not {SERVICE!r}: start workers with `market worker SERVICE`.")
observability.setup(f"{SERVICE}-worker")
exit_unless_real_secrets(f"{SERVICE}-worker")
dramatiq.set_broker(broker_for(SERVICE))
add_worker_duties(SERVICE)
DECLARED[SERVICE].load_actors()
