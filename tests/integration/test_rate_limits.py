"""Rate limits are shared by every api process through Redis, so more processes do not mean more tries."""

import json
import os
import subprocess
import sys
import uuid

from tests.integration.conftest import REDIS, ROOT

# One api process: registers `count` users from one client address with the test client, prints the statuses.
REGISTER = """
import json, sys
from services.api.app import create_app
from services.market import registry
registry.migrate("api")
client = create_app().test_client()
address, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
codes = [client.post("/users", json={"email": f"u{i}@example.com", "name": "U", "password": "correct horse battery"},
                     environ_base={"REMOTE_ADDR": address}).status_code for i in range(start, start + count)]
print(json.dumps(codes))
"""


def register_in_a_process(env: dict, address: str, start: int, count: int) -> list[int]:
    done = subprocess.run([sys.executable, "-c", REGISTER, address, str(start), str(count)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_api_processes_share_one_registration_limit_through_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update({"MARKET_DATA_DIR": str(tmp_path), "MARKET_RATE_LIMIT_REDIS_URL": f"{REDIS}/3",
                "MARKET_RATE_LIMIT_REGISTER": "3/minute"})
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"

    first = register_in_a_process(env, address, 0, 2)
    second = register_in_a_process(env, address, 2, 2)

    assert (first, second) == ([201, 201], [201, 429])
