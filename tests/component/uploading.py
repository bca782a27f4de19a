"""Product-file uploads as a client sends them: raw multipart bodies, so any filename or type can be sent."""

import io
from pathlib import Path
from urllib.parse import quote

from shared.settings import get_settings

BOUNDARY = "unit-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(data: bytes, filename: str | None = "book.pdf", content_type: str | None = "application/pdf",
              field: str = "file") -> bytes:
    """One part; the filename goes as RFC 5987 `filename*`, so CR, LF and NUL arrive as the client meant them."""
    disposition = f'form-data; name="{field}"'
    if filename is not None:
        disposition += f"; filename*=UTF-8''{quote(filename, safe='')}"
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return (head + "\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


class Body(io.BytesIO):
    """A request body that records how much of it the server read; only `sent` bytes of it arrive (then the
    client is gone, while the declared length promised more)."""

    def __init__(self, data: bytes, sent: int | None = None):
        super().__init__(data[:sent] if sent is not None else data)
        self.read_bytes = 0

    def _count(self, result):
        self.read_bytes = max(self.read_bytes, self.tell())
        return result

    def read(self, size=-1):
        return self._count(super().read(size))

    def read1(self, size=-1):
        return self._count(super().read1(size))

    def readline(self, size=-1):
        return self._count(super().readline(size))

    def readinto(self, buffer):
        return self._count(super().readinto(buffer))


def put_file(system, product_id: int, token: str | None, body: bytes | Body, content_type: str = MULTIPART,
             length: int | None = None, app=None):
    """PUT /products/<id>/file with exactly this body (and declared length, if given)."""
    stream = body if isinstance(body, Body) else Body(body)
    size = length if length is not None else len(stream.getbuffer())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = app.test_client() if app is not None else system.client
    # The declared length goes in the environ itself: the test client would measure the stream instead.
    return client.put(f"/products/{product_id}/file", input_stream=stream, content_type=content_type,
                      headers=headers, environ_overrides={"CONTENT_LENGTH": str(size)})


def stored_files() -> list[str]:
    """Every file under storage, temporary ones included, relative to its root."""
    root = get_settings().storage_dir
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())
