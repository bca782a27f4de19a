"""Clients that send a byte a second do not take the api down: the real `market serve api` (gunicorn) keeps
answering everyone else while they trickle."""

import socket
import threading

from tests.integration.conftest import base_env, free_port, wait_until
from tests.support import answers

SLOW_CLIENTS = 24  # well past the two that stopped the api before, and under one worker's threads
NORMAL_REQUESTS = 20
HEADERS = b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
          b"Content-Length: 200\r\n\r\n"
BODY = b'{"id": "evt_slow", "object": "event", "type": "payment_intent.succeeded", "data": {}}' + b" " * 200


class SlowClient:
    """One connection sending its request a byte a second: the headers, or (`slow_body`) a body."""

    def __init__(self, port: int, slow_body: bool, stop: threading.Event):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sent, self.error, self.stop = 0, None, stop
        self.payload = BODY if slow_body else HEADERS
        if slow_body:
            self.sock.sendall(HEADERS)  # the headers at once, then a body that never quite arrives
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        try:
            while not self.stop.wait(1.0 if self.sent else 0):
                self.sock.send(self.payload[self.sent:self.sent + 1])
                self.sent += 1
        except OSError as exc:
            self.error = exc

    def still_waiting(self) -> bool:
        """Connected, and the server has neither answered nor closed the connection."""
        if self.error is not None:
            return False
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # an answer, or b"" for a closed connection
            return False
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


def test_the_api_answers_normal_requests_while_slow_clients_trickle(tmp_path, databases, processes):
    port = free_port()
    processes.env = base_env(tmp_path, databases, MARKET_API_BIND=f"127.0.0.1:{port}")
    processes.run("migrate")
    processes.start("api-web", "serve", "api")
    healthz = f"http://127.0.0.1:{port}/healthz"
    wait_until("the api to answer", lambda: answers(healthz), timeout=30)

    stop = threading.Event()
    slow = [SlowClient(port, slow_body=i % 2 == 1, stop=stop) for i in range(SLOW_CLIENTS)]
    try:
        wait_until("every slow client to be trickling", lambda: all(c.sent >= 3 for c in slow), timeout=30)
        assert all(c.still_waiting() for c in slow)
        for i in range(NORMAL_REQUESTS):
            wait_until(f"normal request {i + 1} to be answered", lambda: answers(healthz), timeout=20)
        # Served while they held: not one slow connection was answered, timed out or dropped meanwhile.
        assert [c for c in slow if not c.still_waiting()] == []
        assert all(c.sent >= 3 for c in slow)
    finally:
        stop.set()
        for client in slow:
            client.thread.join(timeout=5)
            client.close()
    print(f"{SLOW_CLIENTS} slow connections held while {NORMAL_REQUESTS} normal requests were answered")
