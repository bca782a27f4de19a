"""The floor for bench/webhook_load.py: a Flask app with one trivial JSON view, served the same way."""

from flask import Flask


def create_app() -> Flask:
    """An app that answers every webhook at once, touching nothing."""
    app = Flask(__name__)

    @app.post("/webhooks/stripe")
    def stripe():
        return {"status": "accepted"}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return app
