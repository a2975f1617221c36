"""Tables the commands print, readable at 80 columns and in a pipe.

Rich shrinks a table wider than the terminal by cutting cells
with an ellipsis ("laten…", "(pape…"). These tables avoid that: no vertical borders,
short headers (units go in the caption), numbers never wrapped or cut, and text
cells folded onto more lines when they must. In a pipe or a file
(:func:`nas_prune.cli.common.console`) nothing is folded: one line per row.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new_table", "num_column", "text_column"]


def new_table(*, title: str | None = None, caption: str | None = None, footer: bool = False) -> Any:
    """A rich Table with a header rule and no side borders (``title`` / ``caption`` left-aligned)."""
    from rich import box
    from rich.table import Table

    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False, show_footer=footer,
                 title_justify="left", caption_justify="left", show_edge=False, padding=(0, 1), collapse_padding=True)


def num_column(table: Any, header: str, *, footer: str = "") -> None:
    """A right-aligned column whose cells are never wrapped or cut."""
    table.add_column(header, footer=footer, justify="right", no_wrap=True, overflow="fold",
                     min_width=len(header))


def text_column(table: Any, header: str, *, footer: str = "") -> None:
    """A left-aligned column whose long cells fold onto more lines instead of being cut."""
    table.add_column(header, footer=footer, overflow="fold")
