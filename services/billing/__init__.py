"""Billing: the ledger of every sale, and the invoice runs."""

from shared.service import Service

service = Service("billing", __name__)
