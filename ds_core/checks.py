"""Argument checks shared by the engine's public functions: a clear ValueError naming what is allowed."""

from __future__ import annotations

from numbers import Integral


def check_int(what: str, value, low: int, high: int | None = None) -> int:
    """value as an int in [low, high] (no upper bound if high is None), or ValueError naming `what`."""
    # bool is an int in Python, but window=True is a mistake, not a window of 1
    if (not isinstance(value, Integral) or isinstance(value, bool) or value < low
            or (high is not None and value > high)):
        allowed = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{what} must be an integer {allowed}, got {value!r}")
    return int(value)
