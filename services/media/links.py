"""Signed, expiring download links (itsdangerous), bound to one grant."""

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from shared.settings import get_settings


class LinkInvalid(Exception):
    pass


class LinkExpired(Exception):
    pass


class LinkSigner:
    def __init__(self, secret: str, base_url: str, ttl_s: int):
        self._serializer = URLSafeTimedSerializer(secret, salt="download-grant")
        self.base_url, self.ttl_s = base_url.rstrip("/"), ttl_s

    def url(self, grant_id: str) -> str:
        return f"{self.base_url}/{self._serializer.dumps(grant_id)}"

    def grant_id(self, token: str) -> str:
        """The grant a token names; raises LinkInvalid (forged) or LinkExpired."""
        try:
            grant_id = self._serializer.loads(token, max_age=self.ttl_s)
        except SignatureExpired:
            raise LinkExpired("this download link has expired") from None
        except BadSignature:
            raise LinkInvalid("this download link is not valid") from None
        if not isinstance(grant_id, str):
            # Genuinely signed but not by `url` (another signer with this secret and salt, or an old format).
            raise LinkInvalid("this download link is not valid")
        return grant_id


def signer() -> LinkSigner:
    """The signer configured for this process (secret, public base URL, lifetime)."""
    settings = get_settings()
    return LinkSigner(settings.media_signing_secret, settings.downloads_url, settings.download_link_ttl_s)
