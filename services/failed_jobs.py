"""Operator actions on a service's failed-jobs store (list, retry, forget, flush)."""

import sqlalchemy as sa
from dramatiq import Message

from shared.db import failed_jobs, transaction
from shared.messaging import broker_for


def listing(service: str) -> list[dict]:
    with transaction(service) as session:
        return [dict(r) for r in session.execute(sa.select(failed_jobs).order_by(failed_jobs.c.id)).mappings()]


def retry(service: str, ids: list[int], everything: bool) -> int:
    """Re-enqueue the original messages with a fresh retry budget, then drop them from the store."""
    query = sa.select(failed_jobs).with_for_update()
    if not everything:
        query = query.where(failed_jobs.c.id.in_(ids))
    broker = broker_for(service)
    with transaction(service) as session:
        rows = session.execute(query).mappings().all()
        for row in rows:
            message = Message(**row["message"])
            options = {k: v for k, v in message.options.items()
                       if k not in ("retries", "traceback", "requeue_timestamp", "redis_message_id", "eta")}
            if row["queue"] not in broker.queues:
                broker.declare_queue(row["queue"])
            broker.enqueue(message.copy(queue_name=row["queue"], options=options))
            session.execute(failed_jobs.delete().where(failed_jobs.c.id == row["id"]))
    return len(rows)


def forget(service: str, ids: list[int] | None) -> int:
    """Delete the named failed jobs, or all of them when `ids` is None."""
    query = failed_jobs.delete()
    if ids is not None:
        query = query.where(failed_jobs.c.id.in_(ids))
    with transaction(service) as session:
        return session.execute(query).rowcount
