"""Plain-text tables: the one formatter behind ``inspect``, the reports, sensitivity and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_table"]


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "+-.") and text != "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, indent: str = "",
                 underline: bool = True) -> str:
    """Aligned columns, numbers right-aligned; the last column is free text (never padded, so
    long reasons stay whole). ``underline`` draws a rule under the header."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for r, row in enumerate(cells):
        parts = [c.rjust(w) if r and _numeric(c) else c.ljust(w) for c, w in zip(row, widths)]
        lines.append((indent + "  ".join(parts)).rstrip())
        if r == 0 and underline:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)
