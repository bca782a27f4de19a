"""A dependency that is down: the api under gunicorn answers 503 with Retry-After, never 500; /healthz
still says the process is alive and /readyz names what is down."""

import json
import urllib.error
import urllib.request

import stripe

from tests.integration.conftest import SECRETS, base_env, free_port, wait_until

WEBHOOK = {"id": "evt_down_1", "object": "event", "type": "payment_intent.succeeded",
           "data": {"object": {"id": "pi_down_1", "object": "payment_intent", "amount_received": 100,
                               "currency": "eur", "metadata": {"order_reference": "none"}}}}


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, JSON body) of one request, errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read() or b"{}")


def post_webhook(api: str):
    payload = json.dumps(WEBHOOK)
    signature = stripe.WebhookSignature.generate_signature_header(payload, SECRETS["MARKET_STRIPE_WEBHOOK_SECRET"])
    return http("POST", f"{api}/webhooks/stripe", payload.encode(),
                {"Stripe-Signature": signature, "Content-Type": "application/json"})


def serve_api(processes, env: dict) -> str:
    port = free_port()
    processes.env = env
    processes.start("api", "serve", "api", "--bind", f"127.0.0.1:{port}", "--workers", "1")
    api = f"http://127.0.0.1:{port}"
    wait_until("the api to be alive", lambda: _status(f"{api}/healthz") == 200, timeout=60)
    return api


def _status(url: str) -> int | None:
    try:
        return http("GET", url)[0]
    except OSError:
        return None


def test_a_database_that_is_down_is_a_503_with_retry_after_on_a_webhook_and_readyz_while_healthz_is_200(
        tmp_path, databases, processes):
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/market_{{service}}"
    api = serve_api(processes, base_env(tmp_path, databases, MARKET_DATABASE_URL=nowhere))

    status, headers, body = post_webhook(api)
    assert (status, headers["Retry-After"]) == (503, "5"), body
    status, headers, body = http("GET", f"{api}/readyz")
    assert (status, headers["Retry-After"], body["down"]) == (503, "5", ["database"])
    assert http("GET", f"{api}/healthz")[0] == 200


def test_a_broker_that_is_down_makes_readyz_a_503_naming_it_while_healthz_and_webhooks_still_answer(
        tmp_path, databases, processes, redis_server):
    mailer_redis = redis_server()
    closed_amqp = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    env = base_env(tmp_path, databases, MARKET_MAILER_BROKER_URL=f"{mailer_redis.url}/0",
                   MARKET_BILLING_BROKER_URL=closed_amqp)
    processes.env = env
    processes.run("migrate")
    api = serve_api(processes, env)

    status, headers, body = http("GET", f"{api}/readyz")
    assert (status, headers["Retry-After"], body["down"]) == (503, "5", ["broker of billing"])
    assert body["checks"]["broker of mailer"] == "ok"

    mailer_redis.stop()
    status, _, body = http("GET", f"{api}/readyz")
    assert (status, body["down"]) == (503, ["broker of billing", "broker of mailer"])
    assert http("GET", f"{api}/healthz")[0] == 200
    # The webhook is stored with its message in the outbox, which the relay sends once the brokers are back.
    assert post_webhook(api)[:3:2] == (200, {"status": "accepted", "event_id": "evt_down_1"})
