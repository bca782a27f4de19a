"""Media's small web app: serves a download when its signed link is genuine and unexpired."""

import os
from datetime import UTC, datetime
from typing import BinaryIO

from flask import Flask, send_file
from sqlalchemy import update

from services.media.links import LinkExpired, LinkInvalid, signer
from services.media.models import DownloadGrant, ProductFile
from shared import observability
from shared.db import transaction
from shared.openapi import Api
from shared.settings import get_settings, require_real_secrets
from shared.storage import LocalStorage, safe_content_type, safe_filename
from shared.web import add_probes, harden

api = Api("Marketplace downloads", "Media's download links: a signed, expiring link per purchased file.")


def create_app() -> Flask:
    observability.setup("media-web")
    require_real_secrets("media-web")
    app = harden(Flask(__name__, static_folder=None))
    storage = LocalStorage(get_settings().storage_dir)

    @app.get("/downloads/<token>")
    @api.operation({200: None}, errors=[403, 404, 410], tags=["downloads"])
    def download(token: str):
        """The file of a purchase, when the signed link is genuine and unexpired."""
        try:
            grant_id = signer().grant_id(token)
        except LinkInvalid as exc:
            return {"error": str(exc)}, 403
        except LinkExpired as exc:
            return {"error": str(exc)}, 410
        with transaction("media") as session:
            grant = session.get(DownloadGrant, grant_id)
            refusal = _refusal(grant)
            if refusal:
                return refusal
            assert grant is not None  # else `_refusal` answered 403
            file = _pinned_file(session, grant)
        stream = _open(storage, file)
        if stream is None:
            return {"error": f"the file for {grant.title!r} is not available yet"}, 404
        assert file is not None  # else `_open` found nothing to open
        try:
            _count(grant_id, file.storage_key)
        except BaseException:
            stream.close()
            raise
        return _attachment(stream, file)

    add_probes(app, api, "media", publishes_to=())  # it serves files and counts them: it publishes nothing
    api.serve(app)
    return app


def _refusal(grant: DownloadGrant | None) -> tuple[dict, int] | None:
    if grant is None:
        return {"error": "this download link is not valid"}, 403
    if grant.expires_at.replace(tzinfo=grant.expires_at.tzinfo or UTC) < datetime.now(UTC):
        return {"error": "this download link has expired"}, 410
    return None


def _pinned_file(session, grant: DownloadGrant) -> ProductFile | None:
    """The exact version the grant bought: same key and same content hash, or none."""
    file = session.get(ProductFile, grant.file_key) if grant.file_key else None
    return file if file is not None and file.sha256 == grant.file_sha256 else None


def _open(storage: LocalStorage, file: ProductFile | None) -> BinaryIO | None:
    # Opened before counting, so only a download that can be served is counted.
    try:
        return storage.open(file.storage_key) if file is not None else None
    except FileNotFoundError:
        return None


def _count(grant_id: str, storage_key: str) -> None:
    with transaction("media") as session:
        session.execute(update(DownloadGrant).where(DownloadGrant.id == grant_id).values(
            download_count=DownloadGrant.download_count + 1, last_downloaded_at=datetime.now(UTC)))
        session.execute(update(ProductFile).where(ProductFile.storage_key == storage_key).values(
            download_count=ProductFile.download_count + 1))


def _attachment(stream: BinaryIO, file: ProductFile):
    """Always a download, never a page: a safe name, an allow-listed type, and no sniffing by the browser."""
    response = send_file(stream, mimetype=safe_content_type(file.content_type), as_attachment=True,
                         download_name=safe_filename(file.filename), conditional=False, etag=False)
    response.content_length = os.fstat(stream.fileno()).st_size
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
