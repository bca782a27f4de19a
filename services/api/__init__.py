"""The api: the HTTP front door (catalog, cart and checkout, payment webhooks, leads, campaigns, review) and the
actors that process stored webhooks and keep its read models."""

from shared.service import Service

service = Service("api", __name__, web_app="services.api.app:create_app")
