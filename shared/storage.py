"""File storage addressed by keys; messages carry keys, never bytes. Names and types of stored files are
made safe here, once, for whoever stores or serves them."""

import contextlib
import os
import re
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import IO, BinaryIO

from pathvalidate import sanitize_filename

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
ABANDONED_AFTER_S = 3600
_INCOMING = ".incoming"  # uploads being received; a leading dot keeps it out of the key space
MAX_FILENAME_BYTES = 150  # in UTF-8; well under the 255 of common file systems
# Types a browser may be told; anything else (text/html, image/svg+xml, scripts...) is served as bytes.
SAFE_CONTENT_TYPES = frozenset({
    "application/pdf", "application/zip", "application/epub+zip", "application/json", "text/plain", "text/csv",
    "audio/mpeg", "audio/ogg", "audio/wav", "video/mp4", "video/webm", "image/png", "image/jpeg", "image/gif",
    "image/webp"})


def product_file_key(product_id: int, sha256: str) -> str:
    """Content-addressed: the same bytes get the same key, a changed byte a new one."""
    return f"products/{product_id}/{sha256}"


def safe_filename(name: str | None, fallback: str = "download") -> str:
    """A name fit for a Content-Disposition header and any file system: the last path segment, control and
    format characters (CR, LF, NUL, bidi overrides) replaced, no leading dots, at most MAX_FILENAME_BYTES with
    the extension kept; non-ASCII letters stay (send_file encodes them per RFC 5987)."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name or ""))[-1]
    base = "".join("_" if unicodedata.category(c).startswith("C") else c for c in base)
    base = sanitize_filename(_shorten(base), replacement_text="_", platform="universal").lstrip(". ")
    return base or fallback


def _shorten(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:
        stem, dot, ext = name, "", ""
    budget = MAX_FILENAME_BYTES - len((dot + ext).encode())
    return stem.encode()[:budget].decode(errors="ignore") + dot + ext


def safe_content_type(content_type: str | None) -> str:
    """The declared type (lower case, without parameters) when it is on the allow-list, else octet-stream."""
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    return mimetype if mimetype in SAFE_CONTENT_TYPES else "application/octet-stream"


class LocalStorage:
    """Keys map to files under one root folder (a shared volume in compose)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key:
            raise ValueError(f"invalid storage key: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write atomically: readers see the old file or the whole new one."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def open(self, key: str) -> BinaryIO:
        """The stored file, open for reading; FileNotFoundError when it is not there."""
        return self.path(key).open("rb")

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def incoming(self) -> IO[bytes]:
        """A new temporary file on the storage volume, so that `move_in` is an atomic rename. Files a crashed
        process left there for over an hour are removed on the way (an upload takes far less)."""
        folder = self.root / _INCOMING
        folder.mkdir(parents=True, exist_ok=True)
        stale = time.time() - ABANDONED_AFTER_S
        for leftover in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if leftover.stat().st_mtime < stale:
                    leftover.unlink()
        return tempfile.NamedTemporaryFile(dir=folder, prefix="upload-", delete=False)  # noqa: SIM115

    def move_in(self, temp_path: str | Path, key: str) -> None:
        """Put a finished temporary file under `key` in one rename: readers see all of it or none."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp_path, target)
