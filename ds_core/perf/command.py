"""What the benchmark commands share: the shipped model as the default checkpoint, torch's thread count for the
length of a run, and bad input printed as one `error: ...` line with exit code 2."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "ds-tiny"
EXIT_BAD_INPUT = 2


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """--model PATH, defaulting to the shipped assets/ds-tiny."""
    parser.add_argument("--model", metavar="PATH", default=str(SHIPPED),
                        help="Hugging Face DeepSeek-V2/V3 checkpoint directory (default: the shipped assets/ds-tiny)")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch.set_num_threads(n) inside the block; the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def print_report(make_report: Callable[[], str]) -> int:
    """Print make_report()'s text -> 0. Bad input (a ValueError or OSError: a wrong setting, a path that is no
    checkpoint; CheckpointError and ConfigError are ValueErrors) -> `error: ...` on stderr, EXIT_BAD_INPUT."""
    try:
        report = make_report()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report)
    return 0
