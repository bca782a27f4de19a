"""The embedded server's access log (werkzeug) shows no callback secret and no download token."""

import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from tests.integration.conftest import ROOT, free_port, wait_until


def status(method: str, url: str) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"{}" if method == "POST" else None,
                                                           method=method), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_the_embedded_access_log_masks_the_mpesa_secret_and_download_tokens(tmp_path):
    port, mpesa, token = free_port(), f"mpesa-{secrets.token_urlsafe(24)}", secrets.token_urlsafe(40)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARKET_")} | {
        "MARKET_DATA_DIR": str(tmp_path / "var"), "MARKET_API_BIND": f"127.0.0.1:{port}",
        "MARKET_MPESA_CALLBACK_SECRET": mpesa, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "services", "up"], env=env, cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}"
    try:
        wait_until("the embedded api", lambda: status("GET", f"{api}/healthz") == 200, timeout=30)
        assert status("POST", f"{api}/webhooks/mpesa/{mpesa}") == 400  # the right secret, a bad body
        assert status("GET", f"{api}/downloads/{token}") == 403
        wait_until("both requests in the access log", lambda: log.read_text().count("[Filtered] HTTP/1.1") == 2)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    output = log.read_text()
    assert mpesa not in output and token not in output, output
    assert "POST /webhooks/mpesa/[Filtered] HTTP/1.1" in output  # (werkzeug colours 4xx lines)
    assert "GET /downloads/[Filtered] HTTP/1.1" in output
