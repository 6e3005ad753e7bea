# ---------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------


cdef list _names(unsigned mask):
    return [name for name in _ISA_ORDER if mask & ck.td_isa_from_name(name.encode())]


def available_isas():
    """The ISAs this CPU can run and this build contains, slowest first (``"scalar"`` is always there)."""
    return _names(ck.td_isa_usable())


def compiled_isas():
    """The ISAs compiled into this build, whether or not this CPU can run them."""
    return _names(ck.td_isa_compiled())


def detected_isas():
    """The ISAs this CPU and operating system support, whether or not this build contains them."""
    return _names(ck.td_isa_detected())


def best_isa():
    """The fastest ISA available here: the one selected at import unless ``TINYDANCER_ISA`` says otherwise."""
    return ck.td_isa_name(ck.td_isa_best()).decode()


def active_isa():
    """The ISA the kernels run now."""
    return ck.td_isa_name(ck.td_isa_active()).decode()


def set_isa(name):
    """Make every kernel run ``name`` (``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``).

    A hook for tests and benchmarks: do not call it while other threads are running kernels.

    Raises:
        ConfigError: ``name`` is not an ISA, or this CPU or build cannot run it.
    """
    if not isinstance(name, str):
        raise ConfigError(f"ISA name must be a string, not {type(name).__name__}")
    cdef unsigned isa = ck.td_isa_from_name(name.lower().encode())
    if isa == 0:
        raise ConfigError(f"unknown ISA {name!r}; known: {', '.join(_ISA_ORDER)}")
    if ck.td_isa_select(isa) != 0:
        raise ConfigError(
            f"ISA {name!r} is not available here (available: {', '.join(available_isas())})"
        )


