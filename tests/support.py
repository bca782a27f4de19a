"""Helpers every test tier uses: free ports and polling with a deadline."""

import socket
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, probe, timeout: float = 60, interval: float = 0.1):
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def answers(url: str, timeout: float = 5) -> bool:
    """Whether a GET of `url` is answered 200 (a server that is not up yet answers False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


class TwoSlots:
    """A rate limit that lets two emails of a batch go, then no more in time."""

    def __init__(self):
        self.left = 2

    def take(self, deadline: float) -> bool:
        self.left -= 1
        return self.left >= 0
