"""Tests of tinydancer.breaker: every transition on a hand-advanced fake clock, thread races, and a
Hypothesis state machine against a small reference model. No sleeps and no wall-clock assertions."""

from __future__ import annotations

import inspect
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tinydancer.breaker import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    BreakerSnapshot,
    CircuitBreaker,
    CircuitBreakerListener,
)
from conftest import FakeClock
from tinydancer.errors import CircuitOpenError, ConfigError, TinyDancerError

T = TypeVar("T")


class Recorder(CircuitBreakerListener):
    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []

    def state_change(self, breaker: CircuitBreaker, old_state: str, new_state: str) -> None:
        self.changes.append((old_state, new_state))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **kwargs: Any) -> CircuitBreaker:
    settings_: dict[str, Any] = {"failure_threshold": 3, "recovery_timeout": 10.0, "half_open_max_calls": 2}
    settings_.update(kwargs)
    return CircuitBreaker(clock=clock, **settings_)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state == STATE_OPEN


@pytest.fixture
def slow_clock() -> FakeClock:
    return FakeClock(spin=20_000)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as CPython allows, to make races likely."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


# -- construction -------------------------------------------------------------------------------------


def test_defaults_and_constants() -> None:
    breaker = CircuitBreaker()
    assert (STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN) == ("closed", "open", "half_open")
    assert breaker.failure_threshold == 5
    assert breaker.recovery_timeout == 60.0
    assert breaker.half_open_max_calls == 3
    assert breaker.success_threshold == 1
    assert breaker.state == STATE_CLOSED
    assert breaker.is_closed
    assert breaker.name is None
    assert inspect.signature(CircuitBreaker).parameters["clock"].default is time.monotonic
    assert breaker.metrics() == {
        "state": "closed",
        "consecutive_failures": 0,
        "total_successes": 0,
        "total_failures": 0,
        "rejections": 0,
        "times_opened": 0,
    }


def test_positional_arguments_follow_the_spec(clock: FakeClock) -> None:
    breaker = CircuitBreaker(2, 5.0, 4, 3, clock)
    assert (breaker.failure_threshold, breaker.recovery_timeout) == (2, 5.0)
    assert (breaker.half_open_max_calls, breaker.success_threshold) == (4, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": -1}, "failure_threshold"),
        ({"failure_threshold": 2.5}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"failure_threshold": "5"}, "failure_threshold"),
        ({"recovery_timeout": -0.001}, "recovery_timeout"),
        ({"recovery_timeout": math.nan}, "recovery_timeout"),
        ({"recovery_timeout": math.inf}, "recovery_timeout"),
        ({"recovery_timeout": -math.inf}, "recovery_timeout"),
        ({"recovery_timeout": "60"}, "recovery_timeout"),
        ({"recovery_timeout": None}, "recovery_timeout"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"half_open_max_calls": -3}, "half_open_max_calls"),
        ({"success_threshold": 0}, "success_threshold"),
        ({"success_threshold": -1}, "success_threshold"),
        ({"success_threshold": 4, "half_open_max_calls": 3}, "success_threshold"),
        ({"clock": 12.0}, "clock"),
        ({"clock": None}, "clock"),
        ({"name": 3}, "name"),
        ({"listeners": [object()]}, "listener"),
    ],
)
def test_invalid_settings_raise_config_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        CircuitBreaker(**kwargs)
    assert isinstance(info.value, ValueError)


def test_edge_settings_are_valid(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 0, 1, 1, clock)  # an int timeout of zero is fine
    assert breaker.recovery_timeout == 0.0
    assert isinstance(breaker.recovery_timeout, float)
    breaker = CircuitBreaker(half_open_max_calls=4, success_threshold=4, clock=clock)
    assert breaker.success_threshold == 4


# -- closed -------------------------------------------------------------------------------------------


def test_opens_at_exactly_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == STATE_CLOSED
    assert breaker.failure_count == 2
    assert breaker.allow_request()
    breaker.record_failure()
    assert breaker.state == STATE_OPEN
    assert not breaker.is_closed
    assert not breaker.allow_request()
    assert breaker.snapshot().times_opened == 1


def test_threshold_of_one_opens_on_first_failure(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    breaker.record_failure()
    assert breaker.state == STATE_OPEN


def test_success_in_closed_resets_the_count(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
        assert breaker.failure_count == 0
    assert breaker.state == STATE_CLOSED
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == STATE_OPEN


def test_closed_fast_paths_do_not_read_the_clock(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(100):
        assert breaker.allow_request()
        breaker.record_success()
    assert clock.calls == 0
    assert breaker.snapshot().total_successes == 100


# -- open -> half_open --------------------------------------------------------------------------------


def test_recovery_timeout_boundary(clock: FakeClock) -> None:
    clock.now = 0.0
    breaker = make(clock, recovery_timeout=10.0)
    trip(breaker)
    clock.now = 9.999
    assert not breaker.allow_request()
    assert breaker.state == STATE_OPEN
    assert breaker.retry_after() == pytest.approx(0.001)
    clock.now = 10.0
    assert breaker.retry_after() == 0.0
    assert breaker.state == STATE_OPEN
    assert breaker.allow_request()
    assert breaker.state == STATE_HALF_OPEN


def test_rejections_while_open_do_not_extend_the_timeout(clock: FakeClock) -> None:
    breaker = make(clock, recovery_timeout=10.0)
    trip(breaker)
    for _ in range(9):
        clock.advance(1.0)
        assert not breaker.allow_request()
        breaker.record_failure()  # a late failure of a request admitted before it opened
        breaker.record_success()  # and a late success: neither changes anything while open
    assert breaker.state == STATE_OPEN
    clock.advance(1.0)
    assert breaker.allow_request()
    snap = breaker.snapshot()
    assert snap.rejections == 9
    assert snap.times_opened == 1
    assert snap.total_failures == 3 + 9


def test_reading_state_never_changes_it(clock: FakeClock) -> None:
    breaker = make(clock, recovery_timeout=10.0)
    trip(breaker)
    clock.advance(1000.0)
    for _ in range(50):
        assert breaker.state == STATE_OPEN
        assert not breaker.is_closed
        assert breaker.retry_after() == 0.0
        assert breaker.snapshot().state == STATE_OPEN
        assert breaker.metrics()["state"] == STATE_OPEN
        assert "open" in repr(breaker)
    assert breaker.snapshot().rejections == 0
    assert breaker.allow_request()
    for _ in range(50):
        assert breaker.state == STATE_HALF_OPEN


def test_zero_timeout_half_opens_on_the_next_request(clock: FakeClock) -> None:
    breaker = make(clock, recovery_timeout=0.0)
    trip(breaker)
    assert breaker.state == STATE_OPEN
    assert breaker.allow_request()
    assert breaker.state == STATE_HALF_OPEN


def test_clock_going_backwards_counts_as_no_time(clock: FakeClock) -> None:
    clock.now = 100.0
    breaker = make(clock, recovery_timeout=10.0)
    trip(breaker)
    clock.now = 50.0
    assert not breaker.allow_request()
    assert breaker.retry_after() == 10.0
    clock.now = 109.0
    assert not breaker.allow_request()
    clock.now = 110.0
    assert breaker.allow_request()


def test_wall_clock_jumps_change_nothing(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = make(clock, recovery_timeout=10.0)
    trip(breaker)
    monkeypatch.setattr(time, "time", lambda: 4e9)  # the wall clock jumps by decades
    assert not breaker.allow_request()
    monkeypatch.setattr(time, "time", lambda: 0.0)
    assert not breaker.allow_request()
    clock.advance(10.0)
    assert breaker.allow_request()


def test_default_monotonic_clock_works() -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=0.0)
    breaker.record_failure()
    assert breaker.state == STATE_OPEN
    assert breaker.allow_request()
    assert breaker.state == STATE_HALF_OPEN
    breaker.record_success()
    assert breaker.state == STATE_CLOSED


# -- half_open ----------------------------------------------------------------------------------------


def test_half_open_admits_exactly_n_probes(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=3, success_threshold=3)
    trip(breaker)
    clock.advance(10.0)
    assert [breaker.allow_request() for _ in range(10)] == [True] * 3 + [False] * 7
    snap = breaker.snapshot()
    assert snap.state == STATE_HALF_OPEN
    assert snap.probes_admitted == 3
    assert snap.rejections == 7
    clock.advance(1e6)  # time alone never admits more probes
    assert not breaker.allow_request()


def test_one_probe_success_closes_by_default(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state == STATE_CLOSED
    assert breaker.failure_count == 0
    assert all(breaker.allow_request() for _ in range(10))
    # Closing forgot the old failures: it takes a full threshold again to open.
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == STATE_CLOSED


def test_success_threshold_above_one(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=3, success_threshold=3)
    trip(breaker)
    clock.advance(10.0)
    for _ in range(3):
        assert breaker.allow_request()
    breaker.record_success()
    breaker.record_success()
    assert breaker.state == STATE_HALF_OPEN
    assert breaker.snapshot().probe_successes == 2
    assert not breaker.allow_request()
    breaker.record_success()
    assert breaker.state == STATE_CLOSED


def test_probe_failure_reopens_and_restarts_the_timeout(clock: FakeClock) -> None:
    clock.now = 0.0
    breaker = make(clock, recovery_timeout=10.0, half_open_max_calls=3, success_threshold=2)
    trip(breaker)
    clock.now = 15.0
    assert breaker.allow_request()
    breaker.record_success()
    clock.now = 17.0
    breaker.record_failure()
    assert breaker.state == STATE_OPEN
    assert breaker.snapshot().times_opened == 2
    assert breaker.retry_after() == 10.0
    clock.now = 26.999
    assert not breaker.allow_request()
    clock.now = 27.0
    assert breaker.allow_request()
    # A fresh round: the success of the failed round does not carry over.
    snap = breaker.snapshot()
    assert (snap.state, snap.probes_admitted, snap.probe_successes) == (STATE_HALF_OPEN, 1, 0)
    breaker.record_success()
    assert breaker.state == STATE_HALF_OPEN
    breaker.record_success()
    assert breaker.state == STATE_CLOSED


def test_full_cycle_notifies_listeners_in_order(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make(clock, listeners=[recorder])
    trip(breaker)
    clock.advance(10.0)
    breaker.allow_request()
    breaker.record_failure()
    clock.advance(10.0)
    breaker.allow_request()
    breaker.record_success()
    assert recorder.changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    trip(breaker)
    breaker.reset()
    assert recorder.changes[-2:] == [("closed", "open"), ("open", "closed")]
    breaker.reset()  # already closed: no notification
    assert len(recorder.changes) == 7


def test_listener_registration_and_failures(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(CircuitBreakerListener):
        def state_change(self, breaker: CircuitBreaker, old_state: str, new_state: str) -> None:
            raise RuntimeError("listener bug")

    broken, recorder = Broken(), Recorder()
    breaker = make(clock)
    breaker.add_listener(broken)
    breaker.add_listener(recorder)
    assert breaker.listeners == (broken, recorder)
    with caplog.at_level(logging.ERROR, logger="tinydancer.breaker"):
        trip(breaker)
    assert recorder.changes == [("closed", "open")]
    assert "listener bug" in caplog.text
    breaker.remove_listener(broken)
    assert list(breaker.listeners) == [recorder]
    with pytest.raises(ConfigError):
        breaker.add_listener(object())  # type: ignore[arg-type]
    CircuitBreakerListener().state_change(breaker, "closed", "open")  # the base class does nothing


def test_listener_may_read_the_breaker(clock: FakeClock) -> None:
    seen: list[BreakerSnapshot] = []

    class Reader(CircuitBreakerListener):
        def state_change(self, breaker: CircuitBreaker, old_state: str, new_state: str) -> None:
            seen.append(breaker.snapshot())

    breaker = make(clock, listeners=[Reader()])
    trip(breaker)
    assert seen[0].state == STATE_OPEN
    assert seen[0].times_opened == 1


# -- reset --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["closed_with_failures", "open", "half_open"])
def test_reset(clock: FakeClock, where: str) -> None:
    breaker = make(clock)
    if where == "closed_with_failures":
        breaker.record_failure()
        breaker.record_failure()
    else:
        trip(breaker)
        if where == "half_open":
            clock.advance(10.0)
            assert breaker.allow_request()
    breaker.reset()
    assert breaker.state == STATE_CLOSED
    assert breaker.failure_count == 0
    assert breaker.allow_request()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == STATE_CLOSED  # the count started again from zero
    # Lifetime counters survive a reset.
    assert breaker.snapshot().total_failures >= 4


# -- call() and calling() -----------------------------------------------------------------------------


def test_call_success_and_failure(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2)
    assert breaker.call(lambda a, fn=0: a + fn, 1, fn=2) == 3  # kwargs may use any name, even fn
    with pytest.raises(KeyError):
        breaker.call({}.__getitem__, "missing")
    assert breaker.failure_count == 1
    snap = breaker.snapshot()
    assert (snap.total_successes, snap.total_failures) == (1, 1)
    with pytest.raises(KeyError):
        breaker.call({}.__getitem__, "missing")
    assert breaker.state == STATE_OPEN


def test_only_the_declared_failures_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 10.0, 1, clock=clock, failures=(KeyError,))
    assert breaker.failures == (KeyError,) and breaker.is_failure(KeyError("k")) and not breaker.is_failure(ValueError())
    for _ in range(3):
        with pytest.raises(ValueError):
            breaker.call(int, "not a number")  # not a declared failure: propagates, counts nothing
        with pytest.raises(ValueError), breaker.calling():
            raise ValueError("a bug")
    assert breaker.state == STATE_CLOSED and breaker.snapshot().total_failures == 0
    with pytest.raises(KeyError):
        breaker.call({}.__getitem__, "missing")
    assert breaker.state == STATE_OPEN
    clock.advance(10.0)
    with pytest.raises(ValueError):  # the half-open probe ends in a non-failure: its slot is given back
        breaker.call(int, "x")
    assert breaker.call(int, "7") == 7 and breaker.state == STATE_CLOSED
    for bad in ((), [KeyError], (KeyError, "x"), (int,)):
        with pytest.raises(ConfigError, match="failures must be a non-empty tuple of exception classes"):
            CircuitBreaker(failures=bad)  # type: ignore[arg-type]


def test_call_raises_when_open_without_running_fn(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 10.0, 2, clock=clock, name="model")
    trip(breaker)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError, match=r"'model' is open; retry in 10 s") as info:
        breaker.call(ran.append, 1)
    assert isinstance(info.value, TinyDancerError)
    assert isinstance(info.value, RuntimeError)
    assert ran == []
    assert breaker.snapshot().rejections == 1


def test_call_in_half_open(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2, success_threshold=2)
    trip(breaker)
    clock.advance(10.0)

    def probe() -> str:
        # While this first probe runs, a second caller takes the other slot and a third is refused.
        assert breaker.allow_request()
        with pytest.raises(CircuitOpenError, match="half-open and all 2 probe calls are taken"):
            breaker.call(str)
        return "ok"

    assert breaker.call(probe) == "ok"
    assert breaker.state == STATE_HALF_OPEN  # one of the two successes needed
    breaker.record_success()  # the second caller reports
    assert breaker.state == STATE_CLOSED


def test_no_lock_is_held_while_guarded_work_runs(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    finished = threading.Event()

    def other_thread() -> None:
        breaker.record_failure()  # needs the lock
        finished.set()

    def work() -> int:
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(timeout=30)  # a safety net against a deadlock, not a timing assertion
        return 7

    assert breaker.call(work) == 7
    assert finished.is_set()
    assert breaker.state == STATE_OPEN  # the late success of the call did not close it
    breaker.reset()
    with breaker.calling():
        worker = threading.Thread(target=breaker.reset)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive()


def test_calling_context_manager(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2)
    with breaker.calling() as guarded:
        assert guarded is breaker
    assert breaker.snapshot().total_successes == 1
    for _ in range(2):
        with pytest.raises(ValueError), breaker.calling():
            raise ValueError("dependency failed")
    assert breaker.state == STATE_OPEN
    with pytest.raises(CircuitOpenError), breaker.calling():
        pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize("form", ["call", "calling"])
def test_interrupted_probe_gives_its_slot_back(clock: FakeClock, form: str) -> None:
    breaker = make(clock, half_open_max_calls=1)
    trip(breaker)
    clock.advance(10.0)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        if form == "call":
            breaker.call(interrupted)
        else:
            with breaker.calling():
                interrupted()
    snap = breaker.snapshot()
    assert (snap.state, snap.probes_admitted, snap.total_failures) == (STATE_HALF_OPEN, 0, 3)
    assert breaker.allow_request()  # the slot is free again
    assert not breaker.allow_request()


def in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in another thread and return its result."""
    return run_together(1, fn)[0]


def test_release_gives_back_this_threads_probe(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow_request()
    breaker.release()  # e.g. the request was invalid
    assert breaker.snapshot().probes_admitted == 0
    breaker.release()  # a second release gives nothing more back
    assert breaker.snapshot().probes_admitted == 0
    assert breaker.allow_request()  # this thread holds one slot again

    def admit_then_release() -> bool:
        admitted = breaker.allow_request()
        breaker.release()
        return admitted

    assert in_thread(admit_then_release)  # another thread frees the slot it took, not this thread's
    assert breaker.snapshot().probes_admitted == 1
    in_thread(breaker.release)  # a thread that was admitted nothing frees nothing
    assert breaker.snapshot().probes_admitted == 1
    assert in_thread(breaker.allow_request)
    assert not in_thread(breaker.allow_request)
    assert breaker.state == STATE_HALF_OPEN


def test_release_after_an_outcome_or_while_closed_does_nothing(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2, success_threshold=2)
    breaker.allow_request()
    breaker.release()
    assert breaker.snapshot() == make(clock).snapshot()  # closed, nothing changed
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow_request()
    breaker.record_success()  # one of two successes needed
    breaker.release()
    assert breaker.snapshot().probes_admitted == 1


def test_release_of_an_earlier_round_does_nothing(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=1)
    trip(breaker)
    clock.advance(10.0)
    assert breaker.allow_request()  # this thread's probe; its outcome gets lost
    in_thread(breaker.record_failure)  # another request fails: the round ends, the breaker reopens
    clock.advance(10.0)
    assert in_thread(breaker.allow_request)  # the new round's only probe
    breaker.release()
    assert breaker.snapshot().probes_admitted == 1
    assert not in_thread(breaker.allow_request)


def test_stale_release_does_not_free_a_newer_rounds_slot(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=1)
    trip(breaker)
    clock.advance(10.0)
    with ThreadPoolExecutor(max_workers=1) as worker:  # one thread: its probe of round 1 stays its own
        assert worker.submit(breaker.allow_request).result()
        breaker.record_failure()  # the round ends; a new one starts after the timeout
        clock.advance(10.0)
        assert breaker.allow_request()
        worker.submit(breaker.release).result()  # round 1's probe, released late
    assert not breaker.allow_request()


# -- threads ------------------------------------------------------------------------------------------


def run_together(threads_n: int, work: Callable[[], T]) -> list[T]:
    """Run ``work`` in ``threads_n`` threads released at once by a barrier; return their results.

    An exception in any thread is re-raised here, so an assert inside ``work`` fails the test.
    """
    barrier = threading.Barrier(threads_n)
    results: list[Any] = [None] * threads_n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work()
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return results


def hammer_half_open(clock: FakeClock, max_calls: int, threads_n: int, attempts: int) -> None:
    breaker = make(clock, half_open_max_calls=max_calls)
    trip(breaker)
    clock.advance(10.0)  # due, but still "open": the threads race for the transition too
    admitted = run_together(threads_n, lambda: sum(breaker.allow_request() for _ in range(attempts)))
    assert sum(admitted) == max_calls
    snap = breaker.snapshot()
    assert snap.state == STATE_HALF_OPEN
    assert snap.probes_admitted == max_calls
    assert snap.rejections == threads_n * attempts - max_calls


@pytest.mark.parametrize("max_calls", [1, 3, 7])
def test_concurrent_probes_are_exactly_n(slow_clock: FakeClock, fast_switching: None, max_calls: int) -> None:
    for _ in range(5):
        hammer_half_open(slow_clock, max_calls, threads_n=32, attempts=200)


def fail_together(clock: FakeClock, threads_n: int, per_thread: int) -> None:
    recorder = Recorder()
    breaker = make(clock, failure_threshold=5, listeners=[recorder])

    def fail() -> None:
        for _ in range(per_thread):
            breaker.record_failure()

    run_together(threads_n, fail)
    snap = breaker.snapshot()
    assert snap.state == STATE_OPEN
    assert snap.times_opened == 1
    assert snap.total_failures == threads_n * per_thread
    assert recorder.changes == [("closed", "open")]


def test_concurrent_failures_open_exactly_once(slow_clock: FakeClock, fast_switching: None) -> None:
    for _ in range(5):
        fail_together(slow_clock, threads_n=32, per_thread=50)


def test_concurrent_fast_path_successes_are_all_counted(slow_clock: FakeClock, fast_switching: None) -> None:
    threads_n, per_thread = 8, 5000
    breaker = make(slow_clock)

    def succeed() -> None:
        for _ in range(per_thread):
            assert breaker.allow_request()
            breaker.record_success()

    run_together(threads_n, succeed)
    assert breaker.snapshot().total_successes == threads_n * per_thread
    assert breaker.state == STATE_CLOSED


def test_concurrent_half_open_successes_close_exactly_once(slow_clock: FakeClock, fast_switching: None) -> None:
    threads_n = 16
    recorder = Recorder()
    breaker = make(slow_clock, half_open_max_calls=threads_n, success_threshold=threads_n, listeners=[recorder])
    trip(breaker)
    slow_clock.advance(10.0)

    def probe() -> bool:
        allowed = breaker.allow_request()
        breaker.record_success()
        return allowed

    assert all(run_together(threads_n, probe))
    assert breaker.state == STATE_CLOSED
    assert recorder.changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


# -- a reference model --------------------------------------------------------------------------------


class ReferenceBreaker:
    """The state machine of SPEC section 8, written as plainly as possible."""

    def __init__(self, failure_threshold: int, recovery_timeout: float, max_calls: int, successes: int) -> None:
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.max_calls = max_calls
        self.success_threshold = successes
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.probes = 0
        self.probe_successes = 0
        self.round = 0
        self.held = 0  # the round of the caller's latest probe admission not yet resolved, else 0
        self.total_successes = 0
        self.total_failures = 0
        self.rejections = 0
        self.times_opened = 0

    def open(self, now: float) -> None:
        self.state, self.opened_at, self.failures = "open", now, 0
        self.times_opened += 1

    def allow(self, now: float) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and max(0.0, now - self.opened_at) >= self.recovery_timeout:
            self.state, self.probes, self.probe_successes = "half_open", 0, 0
            self.round += 1
        if self.state == "half_open" and self.probes < self.max_calls:
            self.probes += 1
            self.held = self.round
            return True
        self.rejections += 1
        self.held = 0
        return False

    def release(self) -> None:
        if self.held and self.state == "half_open" and self.held == self.round and self.probes > 0:
            self.probes -= 1
        self.held = 0

    def success(self) -> None:
        self.held = 0
        self.total_successes += 1
        if self.state == "closed":
            self.failures = 0
        elif self.state == "half_open":
            self.probe_successes += 1
            if self.probe_successes >= self.success_threshold:
                self.state = "closed"

    def failure(self, now: float) -> None:
        self.held = 0
        self.total_failures += 1
        if self.state == "closed":
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.open(now)
        elif self.state == "half_open":
            self.open(now)

    def reset(self) -> None:
        self.state, self.failures = "closed", 0

    def retry_after(self, now: float) -> float:
        if self.state != "open":
            return 0.0
        return max(0.0, self.recovery_timeout - max(0.0, now - self.opened_at))


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)

    @initialize(
        failure_threshold=st.integers(1, 4),
        recovery_timeout=st.sampled_from([0.0, 1.0, 2.5, 10.0]),
        max_calls=st.integers(1, 4),
        data=st.data(),
    )
    def build(self, failure_threshold: int, recovery_timeout: float, max_calls: int, data: st.DataObject) -> None:
        successes = data.draw(st.integers(1, max_calls), label="success_threshold")
        self.breaker = CircuitBreaker(failure_threshold, recovery_timeout, max_calls, successes, self.clock)
        self.model = ReferenceBreaker(failure_threshold, recovery_timeout, max_calls, successes)

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 10.0, -1.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)  # includes steps backwards

    @rule()
    def allow(self) -> None:
        assert self.breaker.allow_request() == self.model.allow(self.clock.now)

    @rule()
    def success(self) -> None:
        self.breaker.record_success()
        self.model.success()

    @rule()
    def failure(self) -> None:
        self.breaker.record_failure()
        self.model.failure(self.clock.now)

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.reset()

    @rule()
    def release(self) -> None:
        self.breaker.release()
        self.model.release()

    @rule(fails=st.booleans())
    def call(self, fails: bool) -> None:
        def work() -> str:
            if fails:
                raise OSError("dependency down")
            return "done"

        allowed = self.model.allow(self.clock.now)
        if not allowed:
            with pytest.raises(CircuitOpenError):
                self.breaker.call(work)
        elif fails:
            with pytest.raises(OSError):
                self.breaker.call(work)
            self.model.failure(self.clock.now)
        else:
            assert self.breaker.call(work) == "done"
            self.model.success()

    @precondition(lambda self: hasattr(self, "model"))
    @invariant()
    def same_state(self) -> None:
        snap = self.breaker.snapshot()
        model = self.model
        assert self.breaker.state == snap.state == model.state
        assert snap.consecutive_failures == model.failures
        assert snap.probes_admitted == (model.probes if model.state == "half_open" else 0)
        assert snap.probe_successes == (model.probe_successes if model.state == "half_open" else 0)
        assert snap.retry_after == model.retry_after(self.clock.now)
        assert (snap.total_successes, snap.total_failures) == (model.total_successes, model.total_failures)
        assert (snap.rejections, snap.times_opened) == (model.rejections, model.times_opened)


BreakerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_breaker_matches_reference_model = BreakerMachine.TestCase


def test_public_names() -> None:
    import tinydancer.breaker as module

    assert all(hasattr(module, name) for name in module.__all__)
    assert set(module.__all__) == {
        "STATE_CLOSED",
        "STATE_OPEN",
        "STATE_HALF_OPEN",
        "BreakerSnapshot",
        "CircuitBreaker",
        "CircuitBreakerListener",
    }
