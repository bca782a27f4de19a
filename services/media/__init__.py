"""Media: product files, download grants and the signed links that serve them."""

from shared.service import Service

service = Service("media", __name__, web_app="services.media.web:create_app")
