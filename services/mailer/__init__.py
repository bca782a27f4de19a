"""The mailer: every email the system sends (notifications, campaigns, invoices), sent once."""

from shared.service import Service

service = Service("mailer", __name__, web_app="services.mailer.web:create_app")
