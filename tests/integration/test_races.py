"""State changes that race on PostgreSQL: single conditional updates or handled conflicts, never a 500 or a
doubled effect."""

import json
import os
import subprocess
import sys

from tests.integration.conftest import ROOT

# One api process on PostgreSQL: concurrent adds of one cart item, concurrent approvals of one product.
RACE = """
import json, threading
from services.market import registry
from services.api.app import create_app
from services.api.users import create_admin
from shared.db import transaction
import sqlalchemy as sa

registry.migrate("api")
client = create_app().test_client()
def user(name):
    return client.post("/users", json={"email": f"{name}@example.com", "name": name,
                                       "password": "correct horse battery"}).json["token"]
seller, buyer, admin = user("seller"), user("buyer"), create_admin("ada@example.com", "Ada")[1]
auth = lambda token: {"Authorization": f"Bearer {token}"}
def product():
    return client.post("/products", json={"title": "G", "price_minor": 100, "currency": "USD"},
                       headers=auth(seller)).json["id"]

def at_once(count, call):
    barrier, results = threading.Barrier(count), [None] * count
    def one(i):
        barrier.wait()
        results[i] = call()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results

pending = product()
approvals = at_once(4, lambda: client.post(f"/admin/products/{pending}/approve", headers=auth(admin)).status_code)
adds = at_once(8, lambda: client.post("/cart/items", json={"product_id": pending}, headers=auth(buyer)).status_code)
with transaction("api") as session:
    counts = {t: session.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in ("notifications", "cart_items")}
    counts["approved_events"] = session.scalar(
        sa.text("SELECT count(*) FROM outbox WHERE actor = 'mailer.on_product_approved'"))
print(json.dumps({"approvals": sorted(approvals), "adds": adds, "counts": counts}))
"""


def test_concurrent_approvals_and_cart_adds_on_postgresql_take_effect_once_without_errors(tmp_path, databases):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update({"MARKET_DATA_DIR": str(tmp_path), "MARKET_DATABASE_URL": databases.template,
                "MARKET_RATE_LIMIT_REGISTER": "1000/minute"})
    done = subprocess.run([sys.executable, "-c", RACE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["approvals"] == [200, 409, 409, 409]
    assert result["adds"] == [201] * 8
    assert result["counts"] == {"notifications": 1, "cart_items": 1, "approved_events": 1}


def test_insert_ignore_says_whether_it_inserted_on_postgresql(databases):
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from shared.db import insert_ignore
    from shared.migrations import _create_database

    url = sa.engine.make_url(databases.url("api"))
    _create_database(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    table = sa.Table("pairs", sa.MetaData(), sa.Column("a", sa.Integer, primary_key=True))
    table.create(engine)
    with Session(engine) as session, session.begin():
        assert [insert_ignore(session, table, a=1), insert_ignore(session, table, a=1)] == [True, False]


# One api process on PostgreSQL: one Stripe webhook delivered six times at once, and a second one.
DELIVERIES = """
import hashlib, hmac, json, threading, time
import sqlalchemy as sa
from services.market import registry
from services.api.app import create_app
from shared.db import transaction

registry.migrate("api")
client = create_app().test_client()
def signed(event_id):
    body = json.dumps({"id": event_id, "type": "payment_intent.succeeded", "data": {"object": {}}}).encode()
    ts = int(time.time())
    sig = hmac.new(b"whsec_race_secret_0123456789abcdef", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={ts},v1={sig}", "Content-Type": "application/json"}

barrier, answers = threading.Barrier(6), []
def deliver():
    body, headers = signed("evt_race")
    barrier.wait()
    answers.append(client.post("/webhooks/stripe", data=body, headers=headers).json["status"])
threads = [threading.Thread(target=deliver) for _ in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
body, headers = signed("evt_other")
answers.append(client.post("/webhooks/stripe", data=body, headers=headers).json["status"])
with transaction("api") as session:
    events = dict(session.execute(sa.text("SELECT event_id, id FROM webhook_events")).all())
    messages = [json.loads(p) if isinstance(p, str) else p for p in session.scalars(
        sa.text("SELECT payload FROM outbox WHERE actor = 'api.process_webhook'"))]
print(json.dumps({"answers": sorted(answers), "events": events, "messages": messages}))
"""


def test_a_webhook_delivered_many_times_at_once_on_postgresql_is_stored_once_with_one_message(tmp_path, databases):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")}
    env.update({"MARKET_DATA_DIR": str(tmp_path), "MARKET_DATABASE_URL": databases.template,
                "MARKET_STRIPE_WEBHOOK_SECRET": "whsec_race_secret_0123456789abcdef"})
    done = subprocess.run([sys.executable, "-c", DELIVERIES], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["answers"] == ["accepted", "accepted"] + ["duplicate"] * 5
    assert sorted(result["events"]) == ["evt_other", "evt_race"]
    assert sorted(m["webhook_event_id"] for m in result["messages"]) == sorted(result["events"].values())
