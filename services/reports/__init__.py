"""Reports: the sales read model."""

from shared.service import Service

service = Service("reports", __name__)
