"""In-app notifications: a user lists and marks read their own, never anyone else's."""

from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Blueprint, g, request
from sqlalchemy.orm import Session

from services.api.http import ApiError, authenticated, page, paged
from services.api.models import Notification
from shared.db import transaction

bp = Blueprint("notifications", __name__)


def notification_json(n: Notification) -> dict:
    return {"id": n.id, "kind": n.kind, "title": n.title, "body": n.body, "data": n.data,
            "read_at": n.read_at.isoformat() if n.read_at else None, "created_at": n.created_at.isoformat()}


@bp.get("/notifications")
@authenticated
def list_notifications():
    """Newest first, a page at a time (`limit`, `offset`); `?unread=true` lists only unread ones."""
    limit, offset = page()
    query = sa.select(Notification).where(Notification.user_id == g.user_id)
    if request.args.get("unread", "").lower() == "true":
        query = query.where(Notification.read_at.is_(None))
    with transaction("api") as session:
        found, next_offset = paged(session, query.order_by(Notification.created_at.desc(), Notification.id.desc()),
                                   limit, offset)
        return {"notifications": [notification_json(n) for n in found], "unread_count": _unread(session),
                "next_offset": next_offset}


@bp.post("/notifications/<int:notification_id>/read")
@authenticated
def mark_read(notification_id: int):
    with transaction("api") as session:
        notification = session.get(Notification, notification_id)
        if notification is None or notification.user_id != g.user_id:
            raise ApiError(404, f"notification {notification_id} does not exist")
        notification.read_at = notification.read_at or datetime.now(UTC)
        return notification_json(notification) | {"unread_count": _unread(session)}


@bp.post("/notifications/read-all")
@authenticated
def mark_all_read():
    with transaction("api") as session:
        marked = session.execute(sa.update(Notification).where(
            Notification.user_id == g.user_id, Notification.read_at.is_(None)).values(read_at=datetime.now(UTC)))
        return {"marked": marked.rowcount, "unread_count": 0}


def _unread(session: Session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Notification).where(
        Notification.user_id == g.user_id, Notification.read_at.is_(None)))
