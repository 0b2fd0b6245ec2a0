"""Numbers and tables as text, for the CLI, the benchmarks, the lessons and the app's captions."""

from __future__ import annotations

from typing import Any, Iterable


def human_count(n: float) -> str:
    """8_270_000 -> '8.27M', 671_026_419_200 -> '671.0B' (two decimals under 10, one above)."""
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            x = n / div
            return f"{x:.2f}{unit}" if abs(x) < 10 else f"{x:.1f}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.2f}"


def human_bytes(n: float) -> str:
    """Binary units: 1152 -> '1.12 KiB'."""
    for div, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= div:
            x = n / div
            return f"{x:.2f} {unit}" if abs(x) < 10 else f"{x:.1f} {unit}"
    return f"{int(n)} B"


def table(rows: Iterable[tuple[Any, ...]], align: str = "", sep: str = "  ") -> str:
    """Rows of cells -> lines with every column padded to its widest cell.

    align: one letter per column, 'l' or 'r' (columns past its end are left-aligned).
    """
    rows = [tuple("None" if c is None else str(c) for c in r) for r in rows]
    if not rows:
        return ""
    width = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]

    def cell(text: str, i: int) -> str:
        return text.rjust(width[i]) if align[i:i + 1] == "r" else text.ljust(width[i])

    return "\n".join(sep.join(cell(c, i) for i, c in enumerate(r)).rstrip() for r in rows)
