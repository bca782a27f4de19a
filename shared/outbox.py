"""Transactional outbox and idempotent inbox.

A service never publishes straight to a broker: it writes outbox rows in the same
transaction as its state change. Right after commit the rows go to this process's
publisher thread (`shared.publisher`), which sends them, one Dramatiq message each, on
the target service's broker; a relay re-sends rows a crash left unsent. Consumers
record each event id in their inbox in the same transaction as their effects, so a
redelivered message changes nothing.
"""

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import cast

import sqlalchemy as sa
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from pydantic import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.contracts import SUBSCRIPTIONS, E, Event, envelope, open_envelope, subscription
from shared.db import after_release, engine_for, inbox, outbox, transaction
from shared.messaging import PermanentError, actor, broker_for, reaches_workers
from shared.publisher import BATCH, Publisher, publish_confirmed
from shared.settings import SERVICES, get_settings

log = logging.getLogger(__name__)


def publish(session: Session, event: Event, event_id: str | None = None) -> str:
    """Write `event` for every subscriber into this session's outbox; returns the event id.
    A deterministic `event_id` makes publishing the same fact again harmless: consumers skip it."""
    env = envelope(event, event_id)
    _write(session, [_row(target.service, target.queue, target.actor, env) for target in SUBSCRIPTIONS[event.name]])
    return env["event_id"]


def send(session: Session, service: str, queue: str, actor: str, payload: dict,
         delay_ms: int | None = None) -> None:
    """Write one message for `actor` on `service`'s broker; it leaves after commit, `delay_ms` later if given.
    (The relay, which only sends what a crash left behind, sends such a row without its delay.)"""
    _write(session, [_row(service, queue, actor, payload)], delay_ms)


def insert_and_send(service: str, table: sa.Table, values: dict, key: str, queue: str, actor: str) -> int:
    """Insert one row of `table` with `values` and write, in the same commit, a message for `actor` whose payload
    is {key: the row's id}; returns the id. On PostgreSQL this is one autocommitted statement: one round trip to
    the database where a transaction takes four (BEGIN, two INSERTs, COMMIT), which under load is most of a
    webhook's answer time. Elsewhere, a transaction."""
    engine = engine_for(service)
    if engine.dialect.name != "postgresql":
        with transaction(service) as session:
            row_id = session.scalar(table.insert().values(**values).returning(table.c.id))
            send(session, service, queue, actor, {key: row_id})
        return row_id
    row = _row(service, queue, actor, {})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        payload = conn.scalar(_inserted_with_message(table, tuple(values), key),
                              values | {f"outbox_{name}": row[name] for name in _MESSAGE_COLUMNS})
    publisher.submit(service, [row | {"payload": payload, "delay_ms": None}])  # its connection is back in the pool
    return payload[key]


_MESSAGE_COLUMNS = ("id", "service", "queue", "actor", "created_at")


@cache
def _inserted_with_message(table: sa.Table, columns: tuple[str, ...], key: str) -> sa.Insert:
    """A data-modifying CTE inserting a row of `table` and an outbox row naming its id, built once: building it
    for every webhook was a third of the web worker's CPU. The values are bound at execution."""
    inserted = table.insert().values({name: sa.bindparam(name) for name in columns}).returning(table.c.id).cte(
        "inserted")
    bound = [sa.bindparam(f"outbox_{name}", type_=outbox.c[name].type) for name in _MESSAGE_COLUMNS]
    return outbox.insert().from_select(
        [*_MESSAGE_COLUMNS, "payload"],
        sa.select(*bound, sa.func.json_build_object(key, inserted.c.id))).returning(outbox.c.payload)


def _row(service: str, queue: str, actor: str, payload: dict) -> dict:
    # created_at is when the row is written, not when its transaction began (PostgreSQL's now()),
    # so the relay does not take a long transaction's fresh rows for leftovers.
    return {"id": str(uuid.uuid4()), "service": service, "queue": queue, "actor": actor, "payload": payload,
            "created_at": datetime.now(UTC)}


def _write(session: Session, rows: list[dict], delay_ms: int | None = None) -> None:
    """One INSERT for all the rows: an executemany, which psycopg sends in one round trip (it pipelines), and the
    cheapest to compile (a multi-row VALUES is compiled anew for each row count)."""
    session.execute(outbox.insert(), rows)
    session.info.setdefault("outbox", []).extend(row | {"delay_ms": delay_ms} for row in rows)


def _send_rows(owner: str, rows: list[dict]) -> None:
    """Publish the rows (RabbitMQ confirms them once per batch), then mark those it took sent in one transaction."""
    sent = _enqueue(rows)
    if sent:
        with engine_for(owner).begin() as conn:
            _mark_sent(conn, sent)


publisher = Publisher(lambda owner, rows: _send_rows(owner, rows),
                      lambda: [broker_for(service) for service in SERVICES])


@sa_event.listens_for(Session, "after_commit")
def _dispatch_after_commit(session: Session) -> None:
    rows = session.info.pop("outbox", None)
    if rows:
        # Handed over once the session's connection is back in the pool: the publisher takes one to mark them.
        after_release(session, partial(publisher.submit, session.info["service"], rows))


@sa_event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop("outbox", None)


def _enqueue(rows: list[dict]) -> list[dict]:
    """Send the rows this process can deliver; returns those their broker took. An in-memory broker reaches only
    the workers of its own process, so a command-line process leaves such rows to the relay of the process that
    runs the workers (`market up` in the embedded mode)."""
    by_service: dict[str, list[dict]] = {}
    for row in rows:
        by_service.setdefault(row["service"], []).append(row)
    sent = []
    for service, group in by_service.items():
        broker = broker_for(service)
        if reaches_workers(broker):
            # Not mutated: the in-process tiers have no RabbitMQ to tell the two apart (see README, Mutation testing).
            taken = (_publish_confirmed(broker, group) if isinstance(broker, RabbitmqBroker)  # pragma: no mutate
                     else _publish(broker, group))
            sent += [row for row in group if row["id"] in taken]
    return sent


def _message(row: dict) -> Message:
    return Message(queue_name=row["queue"], actor_name=row["actor"], args=(row["payload"],), kwargs={}, options={},
                   message_id=row["id"])


# pragma: no mutate start (RabbitMQ only: tests/integration/test_publisher_confirms.py; see README, Mutation testing)
def _publish_confirmed(broker: RabbitmqBroker, rows: list[dict]) -> set[str]:
    """All the rows at once, with one wait for RabbitMQ's confirms; returns the ids it confirmed."""
    taken = publish_confirmed(broker, [(_message(row), row.get("delay_ms")) for row in rows])
    if len(taken) < len(rows):
        log.error("RabbitMQ did not take %d of %d outbox messages for %s; the relay tries again.",
                  len(rows) - len(taken), len(rows), rows[0]["service"])
    return taken


# pragma: no mutate end
def _publish(broker, rows: list[dict]) -> set[str]:
    """One row at a time (Redis, in-memory); returns the ids the broker took."""
    taken = set()
    for row in rows:
        try:
            if row["queue"] not in broker.queues:
                broker.declare_queue(row["queue"])
            broker.enqueue(_message(row), delay=row.get("delay_ms"))
        except Exception:  # one unreachable broker must not hold back the others' messages
            log.exception("Could not send outbox message %s to %s; the relay tries again.", row["id"],
                          row["service"])
            continue
        taken.add(row["id"])
    return taken


def _mark_sent(conn, rows: list[dict]) -> None:
    conn.execute(outbox.update().where(outbox.c.id.in_([r["id"] for r in rows])).values(sent_at=datetime.now(UTC)))


def relay(service: str, older_than_s: float | None = None, batch: int = BATCH) -> int:
    """Send outbox rows of `service` left unsent for a while; returns how many were sent."""
    age = get_settings().outbox_relay_after_s if older_than_s is None else older_than_s
    cutoff = datetime.now(UTC) - timedelta(seconds=age)
    sent = 0
    while True:
        with transaction(service) as session:
            rows = session.execute(
                sa.select(outbox).where(outbox.c.sent_at.is_(None), outbox.c.created_at <= cutoff)
                .order_by(outbox.c.created_at).limit(batch)
                .with_for_update(skip_locked=True)  # pragma: no mutate (PostgreSQL's; SQLite has no row locks)
            ).mappings().all()
            sent_now = _enqueue([dict(r) for r in rows])
            if sent_now:
                _mark_sent(session, sent_now)
        sent += len(sent_now)
        if len(rows) < batch or not sent_now:
            if sent:
                log.warning("Outbox relay of %s sent %d messages left unsent after commit.", service, sent)
            return sent


def purge(service: str) -> tuple[int, int]:
    """Delete sent outbox rows and old inbox rows past their keeping time; returns how many of each."""
    settings, now = get_settings(), datetime.now(UTC)
    with transaction(service) as session:
        sent = cast(sa.CursorResult, session.execute(outbox.delete().where(
            outbox.c.sent_at < now - timedelta(hours=settings.outbox_keep_hours)))).rowcount
        handled = cast(sa.CursorResult, session.execute(inbox.delete().where(
            inbox.c.handled_at < now - timedelta(days=settings.inbox_keep_days)))).rowcount
    return sent, handled


def subscriber(service: str, event_type: type[E], *, time_limit_s: int, **options) -> Callable:
    """Declare `service`'s subscriber to `event_type`, as the subscription table lists it: the actor's name, its
    queue and its inbox key all come from the table's row, so nothing is spelled twice. The decorated function
    handles one event in the consumer's transaction, `handle(session, event, envelope)` (the envelope for its id
    and time); the inbox runs it once per event id, and a payload that is not the event fails at once."""
    target = subscription(event_type, service)

    def declare(handle: Callable[[Session, E, dict], None]):
        def receive(raw: dict) -> None:
            consume(service, target.actor, raw, event_type, lambda session, event: handle(session, event, raw))

        receive.__name__, receive.__qualname__ = handle.__name__, handle.__qualname__
        receive.__module__, receive.__doc__ = handle.__module__, handle.__doc__
        return actor(service, target.actor, queue=target.queue, time_limit_s=time_limit_s, **options)(receive)

    return declare


def consume(service: str, consumer: str, raw: dict, event_type: type[E],
            handler: Callable[[Session, E], None]) -> bool:
    """Run `handler` once per event id for `consumer`; returns False for a duplicate delivery."""
    try:
        event_id, event = open_envelope(raw, event_type)
    except (ValidationError, ValueError) as exc:
        raise PermanentError(f"{consumer} got an invalid {event_type.name} payload: {exc}") from exc
    try:
        with transaction(service) as session:
            session.execute(inbox.insert().values(consumer=consumer, event_id=event_id))
            handler(session, event)
    except IntegrityError as exc:
        if not _already_handled(service, consumer, event_id):
            raise
        log.info("%s skipped event %s: already handled (%s).", consumer, event_id, type(exc).__name__)
        return False
    log.info("%s handled event %s.", consumer, event_id)
    return True


def _already_handled(service: str, consumer: str, event_id: str) -> bool:
    with transaction(service) as session:
        return session.execute(sa.select(sa.func.count()).select_from(inbox).where(
            inbox.c.consumer == consumer, inbox.c.event_id == event_id)).scalar_one() > 0
