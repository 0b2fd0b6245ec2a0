"""Argument checks shared by the engine, the labs, the CLI and the tabs: each returns the checked value or raises a
ValueError that names the argument, what is allowed, and what it got. Also the one table of dtype names."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Callable

import torch

# The dtypes the engine runs in, by the short names the CLI, the tabs and the labs use.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_int(what: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """value as an int in [low, high] (no upper bound if high is None), or ValueError naming `what`.
    why: a note on the range, e.g. ' (0 turns it off)'."""
    # bool is an int in Python, but window=True is a mistake, not a window of 1
    if (not isinstance(value, Integral) or isinstance(value, bool) or value < low
            or (high is not None and value > high)):
        allowed = f">= {low}" if high is None else f"from {low} to {high}"
        raise ValueError(f"{what} must be an integer {allowed}{why}, got {value!r}")
    return int(value)


def check_index(what: str, value, n: int, why: str = "") -> int:
    """value as an int index into n items, negative ones counting from the end ([-n, n)), or ValueError."""
    if not isinstance(value, Integral) or isinstance(value, bool) or not -n <= value < n:
        raise ValueError(f"{what} must be an integer in [-{n}, {n}){why}, got {value!r}")
    return int(value)


def check_number(what: str, value, low: float, high: float | None = None, *, low_open: bool = False,
                 why: str = "") -> float:
    """value as a finite float >= low (> low if low_open), and <= high if given; or ValueError naming `what`."""
    ok = (isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (high is None or value <= high))
    if not ok:
        if high is None:
            allowed = f"{'>' if low_open else '>='} {low:g}"
        else:
            allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise ValueError(f"{what} must be a finite number {allowed}{why}, got {value!r}")
    return float(value)


def parse_list(what: str, text, parse: Callable[[str], Any] = int) -> tuple:
    """'3, 10' -> (3, 10) with parse=int (parse=float for '0.5, 1'); '' or None -> (). ValueError on bad text."""
    if text is None:
        return ()
    if not isinstance(text, str):
        raise ValueError(f"{what} must be text: a comma-separated list, got {type(text).__name__}")
    kind = "whole numbers" if parse is int else "numbers"
    try:
        return tuple(parse(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{what} must be a comma-separated list of {kind} (like '3, 10'), got {text!r}") from None


def dtype_name(dtype) -> str:
    """'fp32' | 'bf16' | 'fp16' from that short name, a torch dtype or its long name ('bfloat16'); else ValueError."""
    long_names = {str(t).removeprefix("torch."): name for name, t in DTYPES.items()}
    name = str(dtype).removeprefix("torch.")
    name = long_names.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return name
