"""The subscription table and the event contracts agree with the actors that exist."""

from datetime import UTC, datetime

import pytest

from services.market import registry
from shared.contracts import (
    EVENTS,
    SUBSCRIPTIONS,
    LeadCreated,
    PurchaseCompleted,
    PurchaseLine,
    envelope,
    open_envelope,
    subscription,
)
from shared.outbox import subscriber
from shared.settings import SERVICES


def purchase(**overrides) -> PurchaseCompleted:
    fields = dict(order_id=1, order_reference="ord_1", buyer_id=2, buyer_email="b@example.com", buyer_name="B",
                  currency="USD", total_minor=500, provider="stripe", paid_at=datetime.now(UTC),
                  lines=[PurchaseLine(product_id=3, seller_id=4, title="T", price_minor=500)])
    return PurchaseCompleted(**(fields | overrides))


def test_every_subscription_target_is_a_declared_actor_on_its_queue():
    for event, targets in SUBSCRIPTIONS.items():
        assert event in EVENTS
        for target in targets:
            broker = registry.load_actors(target.service)
            actor = broker.get_actor(target.actor)
            assert actor.queue_name == target.queue, f"{target.actor} listens on {actor.queue_name}"
            assert target.actor.startswith(f"{target.service}.")


def test_every_event_consuming_actor_is_in_the_subscription_table():
    subscribed = {t.actor for targets in SUBSCRIPTIONS.values() for t in targets}
    for service in SERVICES:
        broker = registry.load_actors(service)
        consumers = {name for name in broker.get_declared_actors()
                     if name.startswith(f"{service}.on_")}
        assert consumers <= subscribed, f"{sorted(consumers - subscribed)} consume events nobody sends them"


def test_every_actor_declares_retries_a_time_limit_and_permanent_errors():
    for service in SERVICES:
        broker = registry.load_actors(service)
        for name in broker.get_declared_actors():
            options = broker.get_actor(name).options
            assert {"max_retries", "time_limit", "min_backoff", "throws"} <= set(options), name


def test_an_envelope_round_trips_and_carries_money_as_integers():
    env = envelope(purchase())
    event_id, event = open_envelope(env, PurchaseCompleted)
    assert env["name"] == "purchase.completed" and env["version"] == 1 and event_id == env["event_id"]
    assert event.total_minor == 500 and isinstance(env["data"]["total_minor"], int)


def test_consumers_ignore_fields_they_do_not_know():
    env = envelope(purchase())
    env["data"]["loyalty_points"] = 7
    assert open_envelope(env, PurchaseCompleted)[1] == purchase(paid_at=datetime.fromisoformat(env["data"]["paid_at"]))


@pytest.mark.parametrize("change", [{"currency": "usd"}, {"total_minor": -1}, {"lines": []}])
def test_an_invalid_event_cannot_be_built(change):
    with pytest.raises(ValueError):
        purchase(**change)


def test_an_envelope_of_another_event_or_a_newer_version_is_refused():
    env = envelope(purchase())
    with pytest.raises(ValueError, match="newer"):
        open_envelope(env | {"version": 2}, PurchaseCompleted)
    with pytest.raises(ValueError, match="expected a purchase.completed"):
        open_envelope(env | {"name": "downloads.ready"}, PurchaseCompleted)


def test_a_subscriber_takes_its_name_queue_and_inbox_key_from_its_row_of_the_table():
    from services.billing import actors

    row = subscription(PurchaseCompleted, "billing")
    assert (actors.on_purchase_completed.actor_name, actors.on_purchase_completed.queue_name) == (row.actor, row.queue)


@pytest.mark.parametrize(("event_type", "service"), [(LeadCreated, "billing"), (PurchaseCompleted, "nobody")])
def test_a_subscriber_the_table_does_not_list_cannot_be_declared(event_type, service):
    with pytest.raises(LookupError, match=f"{service} must subscribe to {event_type.name} exactly once"):
        subscriber(service, event_type, time_limit_s=1)


def test_each_service_hears_each_event_by_one_row_at_most():
    rows = [(event, target.service) for event, targets in SUBSCRIPTIONS.items() for target in targets]
    assert len(rows) == len(set(rows))
