"""Tables the CLI prints: trimmed to fit on a terminal, whole in a pipe.

On a terminal (and without `--wide`) long IDs are cut to a readable prefix
(any unique prefix works as an argument) and rich fits the table to the
window. Anywhere else — a pipe, a file, `--wide` — every cell is printed
whole, one row per line, columns padded with spaces, so `grep`, `awk` and
`cut` see exactly what the API said.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich loads when a table is shown on a terminal, not at import
    from rich.console import Console


@dataclass
class Sheet:
    """Rows of whole cells; `short` says how many characters of a column a
    terminal shows (IDs)."""

    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    short: dict[int, int] = field(default_factory=dict)

    def add(self, *cells: object) -> None:
        self.rows.append(tuple("" if cell is None else " ".join(str(cell).splitlines()) for cell in cells))


def show(sheet: Sheet, *, wide: bool = False, console: Console | None = None, stream: TextIO | None = None) -> None:
    """Print the sheet: rich and trimmed on a terminal, whole otherwise."""
    if console is None:
        from rich.console import Console

        console = Console()
    if console.is_terminal and not wide:
        from rich.table import Table

        table = Table(*sheet.headers, box=None)
        for row in sheet.rows:
            table.add_row(*(cell[: sheet.short[i]] if i in sheet.short else cell for i, cell in enumerate(row)))
        console.print(table)
        return
    out = stream or sys.stdout
    out.write(plain(sheet))
    out.flush()


def plain(sheet: Sheet) -> str:
    """Whole cells, columns separated by at least two spaces, no trailing blanks."""
    lines = [sheet.headers, *sheet.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(sheet.headers))]
    text = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line)]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text) + "\n"
