"""/history's table: rich's Table layout, drawn without rich's cost per cell for the rows that need none of it.

A rich Table renders every cell through a padded Text (measured twice, wrapped, cropped, padded): on a context of
10,000 exchanges, /history took 7 s to print. This table lays out its columns as rich does, from a table of the
few rows that decide the widths, and writes a row whose cells are single lines that fit (most rows) as the text
rich writes for it; a row it would fold, or whose text rich changes (tabs, line ends), is rendered
by rich itself, as a table of that one row at the same widths. The output is rich's Table's, character for
character (tests/test_chat.py compares them).
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.segment import Segment
from rich.table import Table

from ..safe_text import encodable, shows_unicode

# What rich changes in a cell's text: tabs (expanded), whitespace but spaces at a line's end (stripped, then padded
# with spaces), and the line breaks that are not \n (its measure splits lines there). Not `:name:`: every console
# yi-chat makes has rich's emoji codes off (render.make_console).
_RICH_CHANGES = re.compile(r"\t|[^\S\n ]$|[\u2028\u2029]", re.M)


class HistoryTable:
    """Table(show_header=True, header_style="bold", box=None) with `columns`, every one overflow="fold"."""

    def __init__(self, *columns: str):
        self.columns = columns
        self.rows: list[tuple[str, ...]] = []
        self._decided: tuple[int, Table] | None = None  # (rows then, the table): measured, then drawn

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells + ("",) * (len(self.columns) - len(cells)))  # as rich fills a short row

    def _table(self, rows, widths=None, header: bool = True) -> Table:
        t = Table(show_header=header, header_style="bold", box=None)
        for i, col in enumerate(self.columns):
            t.add_column(col, overflow="fold", width=None if widths is None else widths[i] - 2)
        for row in rows:
            t.add_row(*row)
        return t

    def _deciding(self) -> Table:
        """A table of the rows that decide the column widths: each column's widest line and longest word, and
        every row whose text rich changes before it measures it."""
        if self._decided is not None and self._decided[0] == len(self.rows):
            return self._decided[1]
        picked: set[int] = set()
        for c in range(len(self.columns)):
            widest = longest = None
            for i, row in enumerate(self.rows):
                text = row[c]
                if _RICH_CHANGES.search(text):
                    picked.add(i)
                    continue
                line = max(map(cell_len, text.split("\n")))
                word = max(map(cell_len, text.split()), default=line)
                if widest is None or line > widest[0]:
                    widest = (line, i)
                if longest is None or word > longest[0]:
                    longest = (word, i)
            picked.update(i for _, i in filter(None, (widest, longest)))
        table = self._table([self.rows[i] for i in sorted(picked)])
        self._decided = (len(self.rows), table)
        return table

    def _shown_as(self, encoding: str | None) -> None:
        """Each cell as a terminal of `encoding` shows it (safe_text.encodable): with PYTHONIOENCODING=ascii a CJK
        cell was measured 2 columns a character and written as 6-column escapes, its rows wrapping past the
        screen. A UTF terminal shows them all: no pass over the rows (10,000 exchanges, at each measure)."""
        if shows_unicode(encoding):
            return
        rows = [tuple(encodable(c, encoding) for c in row) for row in self.rows]
        if rows != self.rows:
            self.rows, self._decided = rows, None

    def __rich_measure__(self, console, options):
        self._shown_as(console.encoding)
        return console.measure(self._deciding(), options=options)

    def __rich_console__(self, console, options):
        self._shown_as(console.encoding)
        deciding = self._deciding()
        try:
            widths = deciding._calculate_column_widths(console, options)  # as rich lays out the whole table
        except AttributeError:  # a rich without it: the whole table through rich, slow but the same
            yield self._table(self.rows)
            return
        yield self._table([], widths)  # the header, styled
        for row in self.rows:
            lines = [text.split("\n") for text in row]
            if any(_RICH_CHANGES.search(text) for text in row) or any(
                cell_len(line) > w - 2 for cell, w in zip(lines, widths, strict=True) for line in cell
            ):
                yield self._table([row], widths, header=False)
                continue
            for k in range(max(map(len, lines))):
                out = []
                for cell, w in zip(lines, widths, strict=True):
                    line = cell[k] if k < len(cell) else ""
                    out.append(" " + line + " " * (w - 1 - cell_len(line)))
                yield Segment("".join(out))
                yield Segment.line()
