from __future__ import annotations

import numpy as np
import pytest

from tinydancer import kernels

ISAS = kernels.available_isas()


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest):
    """Run the test once per ISA this machine can run, forced through set_isa."""
    before = kernels.active_isa()
    kernels.set_isa(request.param)
    try:
        yield request.param
    finally:
        kernels.set_isa(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261127)


class FakeClock:
    """A clock that moves only when told to (``now`` is its reading; ``advance`` moves it).

    With ``spin`` > 0 each reading first runs a short Python loop, during which CPython may switch
    threads: code that reads the clock inside a critical section then lets other threads pile into any
    window a missing lock would leave open. It costs time, never correctness.
    """

    def __init__(self, now: float = 1000.0, spin: int = 0) -> None:
        self.now = now
        self.spin = spin
        self.calls = 0

    def __call__(self) -> float:
        for _ in range(self.spin):
            pass
        self.calls += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
