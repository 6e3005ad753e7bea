"""A thread-safe circuit breaker with an injected monotonic clock.

The breaker guards a dependency (for the router: the model). It starts ``closed`` and lets every request
through. ``failure_threshold`` consecutive failures open it; while ``open`` it rejects requests. The first
:meth:`CircuitBreaker.allow_request` at least ``recovery_timeout`` seconds after it opened moves it to
``half_open``, where exactly ``half_open_max_calls`` probe requests are let through and the rest rejected.
``success_threshold`` probe successes close it again; one failure reopens it and restarts the timeout.

Time comes only from the injected ``clock`` (``time.monotonic`` by default), so wall-clock jumps change
nothing and tests advance a fake clock by hand. A clock that steps backwards counts as no time elapsed.

The router calls :meth:`~CircuitBreaker.allow_request` and :meth:`~CircuitBreaker.record_success` on every
request, so both have lock-free fast paths in the healthy closed state: a single attribute read decides
(attribute reads and stores are atomic in CPython) and successes are counted with an ``itertools.count``,
whose ``next`` is one C call under the GIL. Every other path takes the breaker's lock. The lock is never held
while guarded work runs, and reading :attr:`~CircuitBreaker.state` never changes the state.

Example::

    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30.0)
    answer = None
    if breaker.allow_request():
        try:
            answer = call_model()
        except ModelError:
            breaker.record_failure()
        else:
            breaker.record_success()
    if answer is None:
        answer = fallback()

    answer = breaker.call(call_model)  # raises CircuitOpenError instead of falling back
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import operator
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from tinydancer.errors import CircuitOpenError, ConfigError

__all__ = [
    "STATE_CLOSED",
    "STATE_OPEN",
    "STATE_HALF_OPEN",
    "BreakerSnapshot",
    "CircuitBreaker",
    "CircuitBreakerListener",
]

STATE_CLOSED = "closed"
STATE_OPEN = "open"
STATE_HALF_OPEN = "half_open"

T = TypeVar("T")

_log = logging.getLogger(__name__)

# Admission tokens returned by CircuitBreaker._admit_slow: rejected, or admitted while closed. Probes admitted in
# half-open get the number of their half-open round (>= 1) so that an abandoned probe can give its slot back.
_REJECTED = -1
_ADMITTED_CLOSED = 0


class CircuitBreakerListener:
    """Base class for objects notified of the breaker's state changes.

    Subclass it and override :meth:`state_change`, then pass instances to the breaker's ``listeners``
    argument or to :meth:`CircuitBreaker.add_listener`. There are no per-request hooks: they would cost
    time on the router's hot path.
    """

    def state_change(self, breaker: CircuitBreaker, old_state: str, new_state: str) -> None:
        """Called after every transition, in order, while the breaker's (re-entrant) lock is held.

        Keep it quick: it delays other threads' transitions (never the closed-state fast paths). It may read
        the breaker. An exception it raises is logged and otherwise ignored.
        """


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A consistent view of a breaker, taken under its lock.

    Attributes:
        state: ``"closed"``, ``"open"`` or ``"half_open"``.
        consecutive_failures: failures counted towards ``failure_threshold`` (closed state only).
        probes_admitted: probes let through in the current half-open round (0 otherwise).
        probe_successes: successes recorded in the current half-open round (0 otherwise).
        retry_after: seconds until the recovery timeout elapses; 0.0 unless the state is ``"open"``.
        total_successes: every success recorded since the breaker was built.
        total_failures: every failure recorded since the breaker was built.
        rejections: every admission refused (by allow_request, call or calling).
        times_opened: how often the breaker moved to ``"open"`` (from closed or half-open).
    """

    state: str
    consecutive_failures: int
    probes_admitted: int
    probe_successes: int
    retry_after: float
    total_successes: int
    total_failures: int
    rejections: int
    times_opened: int


def _count_value(counter: itertools.count[int]) -> int:
    """Read an ``itertools.count`` without advancing it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {number}")
    return number


def _timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0.0:
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


class CircuitBreaker:
    """A circuit breaker: closed -> open -> half_open -> closed (or back to open).

    Args:
        failure_threshold: consecutive failures (in the closed state) that open the breaker; >= 1.
        recovery_timeout: seconds, by ``clock``, the breaker stays open before the next
            :meth:`allow_request` moves it to half-open; finite and >= 0.
        half_open_max_calls: probes admitted per half-open round; >= 1.
        success_threshold: probe successes that close the breaker; 1 <= it <= ``half_open_max_calls``.
        clock: a monotonic clock returning seconds as a float; only differences matter.
        name: an optional label, shown in errors and in ``repr``.
        listeners: :class:`CircuitBreakerListener` objects notified of every state change.
        failures: the exception classes that count as the dependency failing (default: every
            ``Exception``). :meth:`call` and :meth:`calling` record these as failures; any other exception
            is not the dependency's fault (a bug, bad input) and gives the slot back. :meth:`is_failure`
            answers for callers that record outcomes themselves.

    Raises:
        ConfigError: (a ``ValueError``) when a setting is invalid; the message names it.

    Semantics worth knowing:
        * A success in the closed state resets the consecutive-failure count.
        * Outcomes recorded while open (from requests admitted before it opened) are counted in the
          metrics and otherwise ignored; they do not extend the timeout.
        * In half-open any recorded success counts as a probe success and any failure reopens the breaker:
          the breaker cannot tell a probe's outcome from a late one, so it errs towards staying open.
        * :meth:`call` and :meth:`calling` give a probe's slot back when the guarded work ends in an
          exception that is not one of ``failures`` (``KeyboardInterrupt``, task cancellation, and any
          exception outside ``failures``), which is not the dependency's fault. Callers of :meth:`allow_request` do the same with :meth:`release`
          (for example when the request turns out to be invalid), so that every probe slot is either
          resolved by an outcome or given back; a slot that is neither stays taken until the round ends.
    """

    __slots__ = (
        "__weakref__",
        "_failure_threshold",
        "_recovery_timeout",
        "_half_open_max_calls",
        "_success_threshold",
        "_clock",
        "_name",
        "_listeners",
        "_lock",
        "_state",
        "_healthy",
        "_failures",
        "_opened_at",
        "_round",
        "_probes",
        "_probe_successes",
        "_successes",
        "_total_failures",
        "_rejections",
        "_times_opened",
        "_local",
        "_failure_types",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 60.0,
        half_open_max_calls: int = 3,
        success_threshold: int = 1,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str | None = None,
        listeners: Iterable[CircuitBreakerListener] | None = None,
        failures: tuple[type[BaseException], ...] = (Exception,),
    ) -> None:
        self._failure_threshold = _positive_int("failure_threshold", failure_threshold)
        self._recovery_timeout = _timeout("recovery_timeout", recovery_timeout)
        self._half_open_max_calls = _positive_int("half_open_max_calls", half_open_max_calls)
        self._success_threshold = _positive_int("success_threshold", success_threshold)
        if self._success_threshold > self._half_open_max_calls:
            raise ConfigError(
                f"success_threshold ({self._success_threshold}) must not exceed half_open_max_calls "
                f"({self._half_open_max_calls}): the breaker could never close"
            )
        if not callable(clock):
            raise ConfigError(f"clock must be callable (like time.monotonic), got {clock!r}")
        if not (isinstance(failures, tuple) and failures
                and all(isinstance(t, type) and issubclass(t, BaseException) for t in failures)):
            raise ConfigError(f"failures must be a non-empty tuple of exception classes, got {failures!r}")
        self._failure_types = failures
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"name must be a str or None, got {name!r}")
        self._clock = clock
        self._name = name
        self._listeners: list[CircuitBreakerListener] = []
        for listener in listeners or ():
            self._check_listener(listener)
            self._listeners.append(listener)
        # Re-entrant so that a listener may read the breaker (snapshot, retry_after) while notified.
        self._lock = threading.RLock()

        self._state = STATE_CLOSED
        # True exactly when closed with no pending failure: record_success then has nothing to change.
        self._healthy = True
        self._failures = 0
        self._opened_at = 0.0
        self._round = 0
        self._probes = 0
        self._probe_successes = 0
        # Lock-free success counter (next() on it is atomic under the GIL); the others change under the lock.
        self._successes: itertools.count[int] = itertools.count()
        self._total_failures = 0
        self._rejections = 0
        self._times_opened = 0
        # Per thread: the half-open round of this thread's latest probe admission still open, else 0.
        self._local = threading.local()

    # -- settings ---------------------------------------------------------------------------------------

    @property
    def failure_threshold(self) -> int:
        """Consecutive failures that open the breaker."""
        return self._failure_threshold

    @property
    def recovery_timeout(self) -> float:
        """Seconds the breaker stays open before it admits probes."""
        return self._recovery_timeout

    @property
    def half_open_max_calls(self) -> int:
        """Probes admitted per half-open round."""
        return self._half_open_max_calls

    @property
    def success_threshold(self) -> int:
        """Probe successes that close the breaker."""
        return self._success_threshold

    @property
    def name(self) -> str | None:
        """The breaker's label, or None."""
        return self._name

    # -- reading (never changes the state) -------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``.

        A plain read: it stays ``"open"`` after the recovery timeout has elapsed until an
        :meth:`allow_request` moves the breaker to half-open.
        """
        return self._state

    @property
    def is_closed(self) -> bool:
        """True when the breaker is closed (requests flow normally)."""
        return self._state is STATE_CLOSED

    @property
    def failure_count(self) -> int:
        """Consecutive failures counted towards ``failure_threshold`` (0 unless closed)."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until the recovery timeout elapses, by the clock; 0.0 unless the breaker is open.

        0.0 while open means the next :meth:`allow_request` will admit a probe. Half-open with every
        probe out also gives 0.0: when it admits again depends on the probes' outcomes, not on time.
        """
        with self._lock:
            return self._retry_after_locked()

    def snapshot(self) -> BreakerSnapshot:
        """A consistent :class:`BreakerSnapshot` of the state and the lifetime counters."""
        with self._lock:
            return BreakerSnapshot(
                state=self._state,
                consecutive_failures=self._failures,
                probes_admitted=self._probes if self._state is STATE_HALF_OPEN else 0,
                probe_successes=self._probe_successes if self._state is STATE_HALF_OPEN else 0,
                retry_after=self._retry_after_locked(),
                total_successes=_count_value(self._successes),
                total_failures=self._total_failures,
                rejections=self._rejections,
                times_opened=self._times_opened,
            )

    def metrics(self) -> dict[str, Any]:
        """The lifetime counters and the current state as a plain dict, for the router's metrics.

        Keys: ``state``, ``consecutive_failures``, ``total_successes``, ``total_failures``, ``rejections``,
        ``times_opened``. The counters are never reset, not even by :meth:`reset`.
        """
        snap = self.snapshot()
        return {
            "state": snap.state,
            "consecutive_failures": snap.consecutive_failures,
            "total_successes": snap.total_successes,
            "total_failures": snap.total_failures,
            "rejections": snap.rejections,
            "times_opened": snap.times_opened,
        }

    # -- the protocol -----------------------------------------------------------------------------------

    def allow_request(self) -> bool:
        """Whether a request may go to the guarded dependency now.

        Closed: always True (lock-free). Open: False until ``recovery_timeout`` has elapsed; the first call
        after that moves the breaker to half-open and returns True. Half-open: True for exactly
        ``half_open_max_calls`` calls per round, however many threads ask, then False. Every False counts
        as a rejection. An admitted request must report :meth:`record_success` or :meth:`record_failure`.
        """
        if self._state is STATE_CLOSED:
            return True
        return self._admit_slow() != _REJECTED

    def release(self) -> None:
        """Give back this thread's admission when its outcome will never be recorded.

        Use it when a request that :meth:`allow_request` admitted is abandoned without saying anything
        about the dependency (the request was invalid, the client went away). If that admission was a
        half-open probe of the current round, its slot is freed for another probe; otherwise (admitted
        while closed, from an earlier round, already released or reported) it does nothing. It looks only
        at the calling thread's latest admission, so call it from the thread that asked.
        """
        token = getattr(self._local, "round", 0)
        if token:
            self._release(token)

    def record_success(self) -> None:
        """Report that an admitted request succeeded.

        Closed: resets the consecutive-failure count (lock-free when there is none). Half-open: counts a
        probe success; ``success_threshold`` of them close the breaker. Open: only counted.
        """
        if self._healthy:
            next(self._successes)
            return
        self._local.round = 0  # this thread's admission is resolved
        with self._lock:
            next(self._successes)
            state = self._state
            if state is STATE_CLOSED:
                self._failures = 0
                self._healthy = True
            elif state is STATE_HALF_OPEN:
                self._probe_successes += 1
                if self._probe_successes >= self._success_threshold:
                    self._close_locked()

    def record_failure(self) -> None:
        """Report that an admitted request failed.

        Closed: counts a consecutive failure; reaching ``failure_threshold`` opens the breaker. Half-open:
        reopens it and restarts the recovery timeout. Open: only counted.
        """
        self._local.round = 0  # this thread's admission is resolved
        with self._lock:
            self._total_failures += 1
            state = self._state
            if state is STATE_CLOSED:
                self._failures += 1
                self._healthy = False
                if self._failures >= self._failure_threshold:
                    self._open_locked()
            elif state is STATE_HALF_OPEN:
                self._open_locked()

    def reset(self) -> None:
        """Close the breaker and forget pending failures and probes; lifetime counters are kept."""
        with self._lock:
            self._failures = 0
            self._probes = 0
            self._probe_successes = 0
            if self._state is not STATE_CLOSED:
                self._set_state_locked(STATE_CLOSED)
            self._healthy = True

    # -- guarded calls ----------------------------------------------------------------------------------

    @property
    def failures(self) -> tuple[type[BaseException], ...]:
        """The exception classes that count as the dependency failing."""
        return self._failure_types

    def is_failure(self, exc: BaseException) -> bool:
        """Whether ``exc`` counts as the dependency failing (it is one of :attr:`failures`)."""
        return isinstance(exc, self._failure_types)

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker and return its result.

        Raises:
            CircuitOpenError: when the breaker does not admit the call (``fn`` is not run).

        An exception from ``fn`` that is one of :attr:`failures` is recorded as a failure and re-raised;
        any other is re-raised with the slot given back; a return is recorded as a success. No lock is held
        while ``fn`` runs.
        """
        token = _ADMITTED_CLOSED if self._state is STATE_CLOSED else self._admit_slow()
        if token == _REJECTED:
            raise CircuitOpenError(self._rejection_message())
        try:
            result = fn(*args, **kwargs)
        except self._failure_types:
            self.record_failure()
            raise
        except BaseException:
            self._release(token)
            raise
        self.record_success()
        return result

    def calling(self) -> _Guard:
        """A context manager that guards its block like :meth:`call`: ``with breaker.calling(): ...``.

        Entering raises :class:`~tinydancer.errors.CircuitOpenError` when the breaker does not admit the
        block. Use a fresh one per ``with`` statement.
        """
        return _Guard(self)

    # -- listeners --------------------------------------------------------------------------------------

    @property
    def listeners(self) -> tuple[CircuitBreakerListener, ...]:
        """The registered listeners, in notification order."""
        with self._lock:
            return tuple(self._listeners)

    def add_listener(self, listener: CircuitBreakerListener) -> None:
        """Register ``listener`` to be told of every later state change."""
        self._check_listener(listener)
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: CircuitBreakerListener) -> None:
        """Unregister ``listener``; raises ValueError if it is not registered."""
        with self._lock:
            self._listeners.remove(listener)

    def __repr__(self) -> str:
        label = f"name={self._name!r}, " if self._name is not None else ""
        return (
            f"CircuitBreaker({label}state={self._state!r}, failures={self._failures}/"
            f"{self._failure_threshold}, recovery_timeout={self._recovery_timeout})"
        )

    # -- internals --------------------------------------------------------------------------------------

    def _admit_slow(self) -> int:
        """Admission when not closed: an admission token, also remembered for this thread's release()."""
        with self._lock:
            token = self._admit_locked()
        self._local.round = max(token, 0)
        return token

    def _admit_locked(self) -> int:
        state = self._state
        if state is STATE_CLOSED:  # closed by another thread since the caller looked
            return _ADMITTED_CLOSED
        if state is STATE_OPEN:
            elapsed = max(0.0, self._clock() - self._opened_at)
            if elapsed >= self._recovery_timeout:
                self._round += 1
                self._probes = 1
                self._probe_successes = 0
                self._set_state_locked(STATE_HALF_OPEN)
                return self._round
        elif self._probes < self._half_open_max_calls:
            self._probes += 1
            return self._round
        self._rejections += 1
        return _REJECTED

    def _release(self, token: int) -> None:
        """Give back a probe slot of half-open round ``token`` whose outcome will never be recorded."""
        if token <= _ADMITTED_CLOSED:
            return
        self._local.round = 0  # at most one give-back per admission
        with self._lock:
            if self._state is STATE_HALF_OPEN and self._round == token and self._probes > 0:
                self._probes -= 1

    def _open_locked(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._probes = 0
        self._probe_successes = 0
        self._times_opened += 1
        self._healthy = False
        self._set_state_locked(STATE_OPEN)

    def _close_locked(self) -> None:
        self._failures = 0
        self._probes = 0
        self._probe_successes = 0
        self._set_state_locked(STATE_CLOSED)
        self._healthy = True

    def _set_state_locked(self, new_state: str) -> None:
        old_state = self._state
        self._state = new_state
        for listener in tuple(self._listeners):
            try:
                listener.state_change(self, old_state, new_state)
            except Exception:
                _log.exception("circuit breaker listener %r failed on %s -> %s", listener, old_state, new_state)

    def _retry_after_locked(self) -> float:
        if self._state is not STATE_OPEN:
            return 0.0
        elapsed = max(0.0, self._clock() - self._opened_at)
        return max(0.0, self._recovery_timeout - elapsed)

    def _rejection_message(self) -> str:
        label = f"circuit breaker {self._name!r}" if self._name is not None else "circuit breaker"
        with self._lock:
            if self._state is STATE_HALF_OPEN:
                return f"{label} is half-open and all {self._half_open_max_calls} probe calls are taken"
            return f"{label} is open; retry in {self._retry_after_locked():.3g} s"

    @staticmethod
    def _check_listener(listener: object) -> None:
        if not callable(getattr(listener, "state_change", None)):
            raise ConfigError(f"a listener needs a callable state_change method, got {listener!r}")


class _Guard:
    """The context manager returned by :meth:`CircuitBreaker.calling`."""

    __slots__ = ("_breaker", "_token")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._token = _REJECTED

    def __enter__(self) -> CircuitBreaker:
        breaker = self._breaker
        token = _ADMITTED_CLOSED if breaker._state is STATE_CLOSED else breaker._admit_slow()
        if token == _REJECTED:
            raise CircuitOpenError(breaker._rejection_message())
        self._token = token
        return breaker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._breaker.record_success()
        elif issubclass(exc_type, self._breaker._failure_types):
            self._breaker.record_failure()
        else:
            self._breaker._release(self._token)
