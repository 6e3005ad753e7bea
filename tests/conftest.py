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
