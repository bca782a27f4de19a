"""Sends in flight together on the process's event loop (`Overlap`), and the simulated provider that uses it."""

import threading

import pytest

from services.mailer.senders import Outgoing, Overlap, SendFailed, SimulatedSender, overlap


def messages(count: int, attempt: int = 0) -> list[Outgoing]:
    return [Outgoing(f"invoice-{i}-run00000", f"u{i}@example.com", "Invoice", "Dear U", attempt=attempt)
            for i in range(count)]


def test_every_reply_reaches_its_own_batch_in_order_when_threads_send_at_once():
    sender = SimulatedSender(min_delay_ms=1, max_delay_ms=5, error_rate=0.3, seed=3)
    batches = [messages(200)[k::4] for k in range(4)]
    expected = [[sender._outcome(m)[1] for m in batch] for batch in batches]
    got: dict[int, list] = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, sender.send_many(batches[k]))) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [got[k] for k in range(4)] == expected
    assert any(expected[0]) and not all(expected[0])  # both outcomes occur, so a mix-up would show


def test_no_more_sends_are_in_flight_than_the_limit_and_the_waiting_ones_go_as_slots_free():
    lane, in_flight = Overlap(3), []
    start = lane._start

    def counted(batch, sends):
        start(batch, sends)
        in_flight.append(lane.limit - lane.free)

    lane._start = counted
    assert lane.replies([(0.002, i) for i in range(20)]) == list(range(20))
    assert max(in_flight) == 3 and len(in_flight) == 1 + 17  # the batch, then each waiting send in turn
    assert lane.free == 3 and not lane.waiting and not lane.due


def test_batches_from_several_threads_share_the_slots_and_each_gets_all_its_replies():
    lane = overlap(50)
    results: dict[int, list] = {}
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(
        k, lane.replies([(0.001 * (i % 7), (k, i)) for i in range(120)]))) for k in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {k: [(k, i) for i in range(120)] for k in range(5)}
    assert lane.free == 50 and not lane.waiting


@pytest.mark.parametrize(("min_ms", "max_ms", "rate"), [(20, 80, 0.01), (0, 0, 0.05), (5, 5, 0.0), (1, 2, 1.0)])
def test_the_simulated_provider_keeps_its_delay_range_and_error_rate_and_repeats_exactly(min_ms, max_ms, rate):
    sender = SimulatedSender(min_ms, max_ms, rate, seed=11)
    outcomes = [sender._outcome(m) for m in messages(20_000)]
    delays = [delay for delay, _ in outcomes]
    failures = sum(failure is not None for _, failure in outcomes)
    assert min_ms / 1000 <= min(delays) and max(delays) <= max_ms / 1000
    assert abs(failures / len(outcomes) - rate) < 0.005
    assert outcomes == [sender._outcome(m) for m in messages(20_000)]
    retried = [SimulatedSender(min_ms, max_ms, rate, seed=11)._outcome(m) for m in messages(20_000, attempt=1)]
    if 0 < rate < 1:
        assert retried != outcomes  # a retry is a new draw, not the same refusal again


def test_a_refusal_from_the_simulated_provider_is_temporary():
    sender = SimulatedSender(0, 0, error_rate=1.0)
    assert sender.send_many(messages(2)) == [SendFailed("simulated provider error 451", permanent=False)] * 2
