"""Billing's work as plain functions: money in integer minor units, never floats."""

from collections import Counter
from collections.abc import Callable

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.billing.models import Balance, LedgerEntry, PurchaseLine
from shared.contracts import PurchaseCompleted

PLATFORM = "platform:fees"
_UPSERT: dict[str, Callable[..., postgresql.Insert | sqlite.Insert]] = {"postgresql": postgresql.insert,
                                                                       "sqlite": sqlite.insert}


def record_purchase(session: Session, event: PurchaseCompleted, fee_bps: int) -> None:
    """Write purchase lines, split each price into seller share and platform fee, and move balances."""
    credits: Counter[str] = Counter()
    for line in event.lines:
        fee = line.price_minor * fee_bps // 10_000
        session.add(PurchaseLine(order_id=event.order_id, product_id=line.product_id, seller_id=line.seller_id,
                                 buyer_id=event.buyer_id, price_minor=line.price_minor, currency=event.currency,
                                 purchased_at=event.paid_at))
        for account, amount, memo in ((f"seller:{line.seller_id}", line.price_minor - fee, "sale"),
                                      (PLATFORM, fee, "platform fee")):
            session.add(LedgerEntry(account=account, order_id=event.order_id, product_id=line.product_id,
                                    amount_minor=amount, currency=event.currency,
                                    memo=f"{memo} of order {event.order_id}"))
            credits[account] += amount
    # One upsert per account, in a fixed order, so concurrent purchases cannot deadlock.
    insert = _UPSERT[session.get_bind().dialect.name]
    for account in sorted(credits):
        stmt = insert(Balance).values(account=account, currency=event.currency, balance_minor=credits[account])
        session.execute(stmt.on_conflict_do_update(
            index_elements=["account", "currency"],
            set_={"balance_minor": Balance.balance_minor + credits[account]}))
