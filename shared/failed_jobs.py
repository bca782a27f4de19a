"""Operator actions on a service's failed-jobs store (list, retry, forget, flush)."""

from typing import cast

import sqlalchemy as sa

from shared.db import failed_jobs, transaction
from shared.outbox import send


def listing(service: str) -> list[dict]:
    with transaction(service) as session:
        return [dict(r) for r in session.execute(sa.select(failed_jobs).order_by(failed_jobs.c.id)).mappings()]


def retry(service: str, ids: list[int], everything: bool) -> int:
    """Send the original payloads again, with a fresh retry budget, through the outbox: the rows
    leave the store in the same transaction that queues the new messages."""
    query = sa.select(failed_jobs).with_for_update()
    if not everything:
        query = query.where(failed_jobs.c.id.in_(ids))
    with transaction(service) as session:
        rows = session.execute(query).mappings().all()
        for row in rows:
            send(session, service, row["queue"], row["actor"], row["message"]["args"][0])
            session.execute(failed_jobs.delete().where(failed_jobs.c.id == row["id"]))
    return len(rows)


def forget(service: str, ids: list[int] | None) -> int:
    """Delete the named failed jobs, or all of them when `ids` is None."""
    query = failed_jobs.delete()
    if ids is not None:
        query = query.where(failed_jobs.c.id.in_(ids))
    with transaction(service) as session:
        return cast(sa.CursorResult, session.execute(query)).rowcount
