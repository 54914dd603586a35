"""Markdown tables."""

from __future__ import annotations

ALIGN = {"left": "---", "right": "---:", "center": ":---:"}


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A Markdown table: ``header`` cells, then one line per row of ``rows`` (cells as
    given, ``|`` escaped); ``align`` per column: ``left`` (default), ``right`` or
    ``center``.

    Raises:
        ValueError: a row or ``align`` with another number of cells than ``header``.
    """
    align = align or ["left"] * len(header)
    for cells in (align, *rows):
        if len(cells) != len(header):
            raise ValueError(f"table row {cells!r} has {len(cells)} cells, header {len(header)}")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join(
        [line(header), "|" + "|".join(ALIGN[a] for a in align) + "|"] + [line(r) for r in rows]
    )
