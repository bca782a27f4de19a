"""pika's repeated lines while RabbitMQ is down: one a minute of each kind, with the count held back; our own
lines always pass."""

import logging

import pytest

from shared.observability import Repeats


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def record(name: str, msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, (), None)


# (what is logged, at which second) -> which pass, and what the passing ones say
CASES = [
    ("a flood of one kind",
     [("pika.adapters.utils.connection_workflow", "refused", t) for t in (0, 1, 2, 30, 59)],
     ["refused"]),
    ("the next minute says how many were held",
     [("pika.adapters.base_connection", "refused", t) for t in (0, 1, 2, 61)],
     ["refused", "refused (2 more like this in the last 60 s held back)"]),
    ("kinds are counted apart",
     [("pika.a", "refused", 0), ("pika.a", "closed", 0), ("pika.b", "refused", 0), ("pika.a", "refused", 1)],
     ["refused", "closed", "refused"]),
    ("our own lines always pass",
     [("shared.publisher", "The publishing connection to RabbitMQ was lost", t) for t in (0, 0, 1)],
     ["The publishing connection to RabbitMQ was lost"] * 3),
    ("a logger merely starting with the letters is not pika's",
     [("pikachu", "x", 0), ("pikachu", "x", 1)], ["x", "x"]),
]


@pytest.mark.parametrize(("name", "logged", "passed"), CASES, ids=[c[0] for c in CASES])
def test_pikas_repeats_pass_once_a_minute_with_a_count(name, logged, passed):
    clock = Clock()
    repeats = Repeats(clock=clock)
    out = []
    for logger, msg, second in logged:
        clock.now = 1000.0 + second
        entry = record(logger, msg)
        if repeats.filter(entry):
            out.append(entry.getMessage())
    assert out == passed
