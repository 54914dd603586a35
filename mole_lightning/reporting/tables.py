"""The Markdown table writer: every Markdown table the package and its scripts write goes
through ``markdown_table``."""

from __future__ import annotations

import numpy as np

ALIGN = {"l": "---", "r": "---:", "c": ":---:"}


def markdown_table(
    header: list[str], rows: list[list], align: str | None = None, decimals: int | None = None
) -> str:
    """A Markdown table: the ``header`` line, the alignment line, one line per row of
    ``rows`` (``|`` in a cell escaped).

    Args:
        align: one letter per column, ``l`` (left), ``r`` (right) or ``c`` (centre), e.g.
            ``"ll" + "r" * 3``; default every column left.
        decimals: digits of float cells (``float`` and numpy floats); default ``str(value)``,
            as every other cell.

    Raises:
        ValueError: a row or ``align`` with another number of cells than ``header``, or an
            ``align`` letter other than ``l``, ``r``, ``c``.
    """
    align = align or "l" * len(header)
    for cells in (align, *rows):
        if len(cells) != len(header):
            raise ValueError(f"table row {cells!r} has {len(cells)} cells, header {len(header)}")
    if set(align) - set(ALIGN):
        raise ValueError(f"table align {align!r}: one of {sorted(ALIGN)} per column")

    def text(value) -> str:
        if decimals is not None and isinstance(value, float | np.floating):
            return f"{value:.{decimals}f}"
        return str(value).replace("|", "\\|")

    def line(cells: list) -> str:
        return "| " + " | ".join(text(c) for c in cells) + " |"

    return "\n".join(
        [line(header), "|" + "|".join(ALIGN[a] for a in align) + "|"] + [line(r) for r in rows]
    )
