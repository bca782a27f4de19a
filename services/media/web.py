"""Media's small web app: serves a download when its signed link is genuine and unexpired."""

from datetime import UTC, datetime

from flask import Flask, jsonify, send_file
from sqlalchemy import text, update
from werkzeug.exceptions import HTTPException

from services.media.links import LinkExpired, LinkInvalid, signer
from services.media.models import DownloadGrant, ProductFile
from shared import observability
from shared.db import transaction
from shared.settings import get_settings, require_real_secrets
from shared.storage import LocalStorage


def create_app() -> Flask:
    observability.setup("media-web")
    require_real_secrets("media-web")
    app = Flask(__name__)
    storage = LocalStorage(get_settings().storage_dir)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify({"error": exc.description or exc.name}), exc.code

    @app.get("/downloads/<token>")
    def download(token: str):
        try:
            grant_id = signer().grant_id(token)
        except LinkInvalid as exc:
            return {"error": str(exc)}, 403
        except LinkExpired as exc:
            return {"error": str(exc)}, 410
        with transaction("media") as session:
            grant = session.get(DownloadGrant, grant_id)
            if grant is None:
                return {"error": "this download link is not valid"}, 403
            if grant.expires_at.replace(tzinfo=grant.expires_at.tzinfo or UTC) < datetime.now(UTC):
                return {"error": "this download link has expired"}, 410
            file = session.get(ProductFile, grant.product_id)
            if file is None or not storage.exists(file.storage_key):
                return {"error": f"the file for {grant.title!r} is not available yet"}, 404
            session.execute(update(DownloadGrant).where(DownloadGrant.id == grant_id).values(
                download_count=DownloadGrant.download_count + 1, last_downloaded_at=datetime.now(UTC)))
            session.execute(update(ProductFile).where(ProductFile.product_id == file.product_id).values(
                download_count=ProductFile.download_count + 1))
        return send_file(storage.path(file.storage_key), mimetype=file.content_type, as_attachment=True,
                         download_name=file.filename)

    @app.get("/healthz")
    def healthz():
        with transaction("media") as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "service": "media"}

    return app
