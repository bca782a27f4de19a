"""In-app notifications: a user lists and marks read their own, never anyone else's."""

from datetime import UTC, datetime
from typing import cast

import sqlalchemy as sa
from flask import Blueprint, g
from pydantic import BaseModel
from sqlalchemy.orm import Session

from services.api.http import ApiError, Page, api, authenticated, paged, query
from services.api.models import Notification
from shared.db import transaction

bp = Blueprint("notifications", __name__)


class NotificationOut(BaseModel):
    id: int
    kind: str
    title: str
    body: str
    data: dict
    read_at: str | None
    created_at: str

    @classmethod
    def of(cls, n: Notification) -> "NotificationOut":
        return cls(id=n.id, kind=n.kind, title=n.title, body=n.body, data=n.data,
                   read_at=n.read_at.isoformat() if n.read_at else None, created_at=n.created_at.isoformat())


class NotificationRead(NotificationOut):
    unread_count: int


class NotificationPage(BaseModel):
    notifications: list[NotificationOut]
    unread_count: int
    next_offset: int | None


class Inbox(Page):
    unread: bool = False  # only the unread ones


class MarkedRead(BaseModel):
    marked: int
    unread_count: int


@bp.get("/notifications")
@api.operation({200: NotificationPage}, query=Inbox, auth=True, tags=["notifications"])
@authenticated
def list_notifications():
    """Newest first, a page at a time (`limit`, `offset`); `?unread=true` lists only unread ones."""
    asked = query(Inbox)
    mine = sa.select(Notification).where(Notification.user_id == g.user_id)
    if asked.unread:
        mine = mine.where(Notification.read_at.is_(None))
    with transaction("api") as session:
        found, next_offset = paged(session, mine.order_by(Notification.created_at.desc(), Notification.id.desc()),
                                   asked.limit, asked.offset)
        return NotificationPage(notifications=[NotificationOut.of(n) for n in found], unread_count=_unread(session),
                                next_offset=next_offset)


@bp.post("/notifications/<int:notification_id>/read")
@api.operation({200: NotificationRead}, auth=True, errors=[404], tags=["notifications"])
@authenticated
def mark_read(notification_id: int):
    """Mark one notification read."""
    with transaction("api") as session:
        notification = session.get(Notification, notification_id)
        if notification is None or notification.user_id != g.user_id:
            raise ApiError(404, f"notification {notification_id} does not exist")
        notification.read_at = notification.read_at or datetime.now(UTC)
        return NotificationRead(**NotificationOut.of(notification).model_dump(), unread_count=_unread(session))


@bp.post("/notifications/read-all")
@api.operation({200: MarkedRead}, auth=True, tags=["notifications"])
@authenticated
def mark_all_read():
    """Mark every notification read."""
    with transaction("api") as session:
        marked = cast(sa.CursorResult, session.execute(sa.update(Notification).where(
            Notification.user_id == g.user_id, Notification.read_at.is_(None)).values(read_at=datetime.now(UTC))))
        return MarkedRead(marked=marked.rowcount, unread_count=0)


def _unread(session: Session) -> int:
    return session.execute(sa.select(sa.func.count()).select_from(Notification).where(
        Notification.user_id == g.user_id, Notification.read_at.is_(None))).scalar_one()
