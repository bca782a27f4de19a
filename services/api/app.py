"""The api's Flask application factory."""

from flask import Flask
from sqlalchemy import text

from services.api import campaigns, catalog, leads, notifications, orders, review, users, webhooks
from services.api.http import register_errors
from shared import observability
from shared.db import transaction
from shared.settings import require_real_secrets


def create_app() -> Flask:
    observability.setup("api")
    require_real_secrets("api-web")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 200 * 1024 * 1024
    app.json.sort_keys = False
    register_errors(app)
    for blueprint in (users.bp, catalog.bp, orders.bp, webhooks.bp, leads.bp, review.bp, notifications.bp,
                      campaigns.bp):
        app.register_blueprint(blueprint)

    @app.get("/healthz")
    def healthz():
        with transaction("api") as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "service": "api"}

    return app
