"""The contracts between services: the events (`events`), the envelope they travel in (`envelope`), the map of
who hears what (`subscriptions`), money on the wire (`money`) and the campaign placeholder language
(`placeholders`). Everything is importable from here."""

from shared.contracts.envelope import Envelope, envelope, open_envelope
from shared.contracts.events import (
    ACTIVE_CAMPAIGN,
    CAMPAIGN,
    EVENTS,
    CampaignControlRequested,
    CampaignProgressed,
    CampaignRequested,
    CampaignState,
    DownloadLink,
    DownloadsReady,
    E,
    Event,
    InvoiceEmail,
    InvoiceEmailsRequested,
    InvoiceEmailsSent,
    LeadCreated,
    ProductApproved,
    ProductFileUploaded,
    ProductRejected,
    PurchaseCompleted,
    PurchaseLine,
    Recipient,
)
from shared.contracts.money import EXPONENTS, NOT_MONEY, Currency, Minor, money
from shared.contracts.placeholders import PLACEHOLDERS, fill_placeholders, unknown_placeholders
from shared.contracts.subscriptions import SUBSCRIPTIONS, Target, subscription

__all__ = [
    "ACTIVE_CAMPAIGN", "CAMPAIGN", "CampaignControlRequested", "CampaignProgressed", "CampaignRequested",
    "CampaignState", "Currency", "DownloadLink", "DownloadsReady", "E", "EVENTS", "EXPONENTS", "Envelope", "Event",
    "InvoiceEmail", "InvoiceEmailsRequested", "InvoiceEmailsSent", "LeadCreated", "Minor", "NOT_MONEY",
    "PLACEHOLDERS", "ProductApproved", "ProductFileUploaded", "ProductRejected", "PurchaseCompleted", "PurchaseLine",
    "Recipient", "SUBSCRIPTIONS", "Target", "envelope", "fill_placeholders", "money", "open_envelope",
    "subscription", "unknown_placeholders",
]
