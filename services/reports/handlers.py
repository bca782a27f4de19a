"""Reports' work as plain functions."""

from sqlalchemy.orm import Session

from services.reports.models import Sale
from shared.contracts import PurchaseCompleted


def record_sales(session: Session, event: PurchaseCompleted) -> None:
    """One row per product sold, for sales reports by day, seller and provider."""
    for line in event.lines:
        session.add(Sale(order_id=event.order_id, product_id=line.product_id, seller_id=line.seller_id,
                         amount_minor=line.price_minor, currency=event.currency, provider=event.provider,
                         day=event.paid_at.date()))
