"""Campaign segments: the api owns users and orders, so it turns a segment into recipients."""

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.api.models import Order, User

SEGMENTS = ("buyers", "all_users")  # buyers: every user with a paid order

# ISO 4217 minor-unit exponents that are not 2 (the mailer's templates know the same ones).
_EXPONENTS = {c: 0 for c in ("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND",
                             "VUV", "XAF", "XOF", "XPF")} | {c: 3 for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR",
                                                                             "TND")}


def recipients(session: Session, segment: str) -> list[dict]:
    """The segment's users as campaign recipients, by user id: email, name and what they paid
    (the sum of their paid orders, per currency, e.g. "19.99 USD" or "19.99 USD, 500 JPY")."""
    if segment not in SEGMENTS:
        raise ValueError(f"unknown segment {segment!r}")
    paid = defaultdict(list)
    for buyer_id, currency, total in session.execute(
            sa.select(Order.buyer_id, Order.currency, sa.func.sum(Order.total_minor)).where(Order.status == "paid")
            .group_by(Order.buyer_id, Order.currency).order_by(Order.buyer_id, Order.currency)):
        paid[buyer_id].append(money(int(total), currency))
    users = sa.select(User.id, User.email, User.name).order_by(User.id)
    if segment == "buyers":
        users = users.where(User.id.in_(sa.select(Order.buyer_id).where(Order.status == "paid")))
    return [{"email": email, "name": name, "paid_amount": ", ".join(paid.get(user_id, []))}
            for user_id, email, name in session.execute(users)]


def money(minor: int, currency: str) -> str:
    exponent = _EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{minor:,} {currency}"
    whole, fraction = divmod(minor, 10**exponent)
    return f"{whole:,}.{fraction:0{exponent}d} {currency}"
