"""The api's Flask application factory."""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.api import campaigns, catalog, leads, notifications, orders, review, users, webhooks
from services.api.http import api, init_limiter, register_errors
from shared import observability
from shared.settings import SERVICES, get_settings, require_real_secrets
from shared.web import add_probes, harden


def create_app() -> Flask:
    observability.setup("api")
    require_real_secrets("api-web")
    app = harden(Flask(__name__, static_folder=None))
    register_errors(app)
    init_limiter(app)
    if get_settings().trusted_proxies:
        # Flask's documented way to wrap its WSGI app (mypy sees a method assigned to)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=get_settings().trusted_proxies,  # type: ignore[method-assign]
                                x_proto=get_settings().trusted_proxies)
    for blueprint in (users.bp, catalog.bp, orders.bp, webhooks.bp, leads.bp, review.bp, notifications.bp,
                      campaigns.bp):
        app.register_blueprint(blueprint)
    # Webhooks go to the api's own queue and purchase.completed to every service, so all brokers count.
    add_probes(app, api, "api", publishes_to=SERVICES)
    api.serve(app)
    return app
