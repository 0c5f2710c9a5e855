"""Concurrent Redis admissions share round trips, and every count stays exact."""

import threading
import time

import pytest

from billing import limits
from billing.coalesce import Coalescer
from tests.concurrency import run_together

_COUNT = "return redis.call('incrby', KEYS[1], 1)"


def test_calls_made_while_a_round_trip_is_in_flight_go_out_together() -> None:
    coalescer = Coalescer()
    batches: list[int] = []

    def slow_send(calls: list[limits._ScriptCall]) -> None:
        batches.append(len(calls))
        time.sleep(0.05)
        for call in calls:
            call.result = call.args[0]

    results = run_together(12, lambda i: coalescer.call(limits._ScriptCall(source="", keys=[], args=[i]), slow_send))
    assert results == list(range(12))
    assert sum(batches) == 12
    assert len(batches) < 12
    assert max(batches) > 1


def test_a_failed_round_trip_fails_every_call_it_carried_and_the_next_one_works() -> None:
    coalescer = Coalescer()
    calls = {"n": 0}

    def flaky_send(batch: list[limits._ScriptCall]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.05)
            raise ConnectionError("redis went away")
        for call in batch:
            call.result = "ok"

    results = run_together(6, lambda i: coalescer.call(limits._ScriptCall(source="", keys=[], args=[i]), flaky_send))
    failed = [r for r in results if isinstance(r, ConnectionError)]
    assert failed, "the first round trip's calls must see its error"
    assert all(r in ("ok",) or isinstance(r, ConnectionError) for r in results)
    assert coalescer.call(limits._ScriptCall(source="", keys=[], args=[0]), flaky_send) == "ok"


@pytest.mark.django_db
def test_forty_threads_counting_on_real_redis_get_forty_distinct_counts() -> None:
    client = limits.link.client()
    assert client is not None, "the test suite runs against Redis"
    client.delete("mm:test:coalesce")
    results = run_together(40, lambda i: limits.link.evalsha(_COUNT, ["mm:test:coalesce"], []))
    assert sorted(int(r) for r in results) == list(range(1, 41))
    assert int(client.get("mm:test:coalesce") or 0) == 40


@pytest.mark.django_db
def test_a_script_redis_forgot_is_loaded_again_within_a_grouped_round_trip() -> None:
    client = limits.link.client()
    assert client is not None
    client.delete("mm:test:reload")
    assert int(limits.link.evalsha(_COUNT, ["mm:test:reload"], [])) == 1
    client.script_flush()
    results = run_together(8, lambda i: limits.link.evalsha(_COUNT, ["mm:test:reload"], []))
    assert sorted(int(r) for r in results) == list(range(2, 10))


def test_a_call_that_waits_too_long_in_the_queue_is_withdrawn_and_the_queue_keeps_moving() -> None:
    coalescer: Coalescer[limits._ScriptCall] = Coalescer()
    sent: list[list[int]] = []
    release = threading.Event()

    def send(calls: list[limits._ScriptCall]) -> None:
        sent.append([c.args[0] for c in calls])
        if calls[0].args[0] == 0:
            release.wait(5)  # the first round trip hangs until the test lets it go
        for call in calls:
            call.result = call.args[0]

    first = threading.Thread(target=lambda: coalescer.call(limits._ScriptCall(args=[0]), send))
    first.start()
    time.sleep(0.05)
    with pytest.raises(TimeoutError):
        coalescer.call(limits._ScriptCall(args=[1]), send, timeout=0.1)
    release.set()
    first.join()
    assert coalescer.call(limits._ScriptCall(args=[2]), send, timeout=1) == 2
    assert sent == [[0], [2]], "the withdrawn call was never sent"


def test_equal_calls_are_still_separate_calls() -> None:
    coalescer: Coalescer[limits._ScriptCall] = Coalescer()

    def send(calls: list[limits._ScriptCall]) -> None:
        time.sleep(0.02)
        for number, call in enumerate(calls):
            call.result = number

    results = run_together(8, lambda i: coalescer.call(limits._ScriptCall(source="same", keys=["k"], args=[1]), send))
    assert len(results) == 8
    assert all(isinstance(r, int) for r in results)
