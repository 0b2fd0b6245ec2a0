"""What the benchmark commands share: the shipped model as the default checkpoint, the options every benchmark
takes (--repeats, --threads, --json), torch's thread count for the length of a run, and a report that is printed
as a table and written as the same rows to --json."""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from ..cli import add_json_argument

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "ds-tiny"


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """--model PATH, defaulting to the shipped assets/ds-tiny."""
    parser.add_argument("--model", metavar="PATH", default=str(SHIPPED),
                        help="Hugging Face DeepSeek-V2/V3 checkpoint directory (default: the shipped assets/ds-tiny)")


def add_run_arguments(parser: argparse.ArgumentParser, repeats: int, what: str) -> None:
    """--repeats (of `what`, default `repeats`), --threads (default 1) and --json PATH."""
    parser.add_argument("--repeats", type=int, default=repeats, help=f"timed {what} (default {repeats})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_json_argument(parser)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch.set_num_threads(n) inside the block; the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class Report:
    """What a benchmark measured, as its command shows it: the text it prints, and for --json the rows of the
    text's table (one dict per printed row, unrounded) with the settings they were measured under."""
    text: str
    settings: dict
    rows: list[dict]

    def as_json(self) -> str:
        return json.dumps({**self.settings, "torch": torch.__version__, "rows": self.rows}, indent=2) + "\n"

    def show(self, json_path: str | Path | None = None) -> None:
        """Print the text; write the rows to json_path too, if given."""
        print(self.text)
        if json_path is not None:
            Path(json_path).write_text(self.as_json())
