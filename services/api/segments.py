"""Campaign segments: the api owns users and orders, so it turns a segment into recipients."""

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.api.models import Order, OrderStatus, User
from shared.contracts import money

SEGMENTS = ("buyers", "all_users")  # buyers: every user with a paid order


def recipients(session: Session, segment: str) -> list[dict]:
    """The segment's users as campaign recipients, by user id: email, name and what they paid
    (the sum of their paid orders, per currency, e.g. "19.99 USD" or "19.99 USD, 500 JPY")."""
    if segment not in SEGMENTS:
        raise ValueError(f"unknown segment {segment!r}")
    paid = defaultdict(list)
    totals = (sa.select(Order.buyer_id, Order.currency, sa.func.sum(Order.total_minor))
              .where(Order.status == OrderStatus.PAID).group_by(Order.buyer_id, Order.currency)
              .order_by(Order.buyer_id, Order.currency))
    for buyer_id, currency, total in session.execute(totals):
        paid[buyer_id].append(money(int(total), currency))
    users = sa.select(User.id, User.email, User.name).order_by(User.id)
    if segment == "buyers":
        users = users.where(User.id.in_(sa.select(Order.buyer_id).where(Order.status == OrderStatus.PAID)))
    return [{"email": email, "name": name, "paid_amount": ", ".join(paid.get(user_id, []))}
            for user_id, email, name in session.execute(users)]
