"""``rag table`` on a terminal: a rich progress bar while the rows finish, then the table.

`make_with_progress` runs `rag.table.maker.TableMaker.make` behind a bar of cells (each finished row
said on ``console``, the stderr console); `print_table` prints the overview, the table and the reason
for each empty cell. `table_turn` is ``rag ask`` / ``rag chat`` given a message that asks for a
table (`rag.table.requests`): the same bar and printing over `rag.table.chat.requested_table`, the
table then a turn of the conversation.
Left out: the commands' options (`rag.cli`) and the extraction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.text import Text

from rag.table.cells import Cell, Row
from rag.table.export import to_rich
from rag.table.maker import Table, TableMaker


def make_with_progress(maker: TableMaker, console: Console, **kwargs: Any) -> Table:
    """The table, with a progress bar of its cells on ``console`` (removed when done)."""
    return with_progress(console, len(kwargs["columns"]), lambda **hooks: maker.make(**kwargs, **hooks))


def with_progress(console: Console, columns: int, make: Callable[..., Table]) -> Table:
    """``make(on_papers=, on_row=, on_cell=)`` behind a progress bar of its cells on ``console``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = [TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*bar, console=console, transient=True) as progress:
        task = progress.add_task("cells", total=None)

        def on_papers(papers: list[Any]) -> None:
            progress.update(task, total=len(papers) * columns)

        def on_row(row: Row) -> None:
            seconds = sum(c.seconds for c in row.cells.values() if not c.cached)
            progress.console.print(Text(f"row {row.number}: {row.paper.title} ({seconds:.1f}s)", style="dim"))

        def on_cell(_: Cell) -> None:
            progress.advance(task)

        return make(on_papers=on_papers, on_row=on_row, on_cell=on_cell)


def print_table(table: Table, out: Console) -> None:
    """Overview, table, then a line per empty cell with its reason and a line of provenance."""
    if not table.rows:
        out.print("no papers to compare", markup=False)
        return
    if table.overview.answer:
        out.print(Text(table.overview.answer))
    out.print(to_rich(table))
    for row in table.rows:
        for column in table.columns:
            cell = row.cells[column.key]
            if not cell.supported:
                out.print(Text.assemble(("\u26a0 ", "yellow"), f"[{row.number}] {column.label}: {cell.reason}"))
    out.print(Text(f"{table.model} · {len(table.rows)} x {len(table.columns)} cells in "
                   f"{table.timings.get('total_s', 0):.1f}s (--json gives each cell's evidence sentence)", style="dim"))


def table_turn(conversation: Any, message: str, console: Console, out: Console | None,
               **kwargs: Any) -> Table | None:
    """When ``message`` asks for a table: make it behind the bar ("them": the `rag.chat.Conversation`'s last
    turn's papers), say its notes on ``console``, print it on ``out`` (None: the caller prints its
    JSON), record it as a turn of ``conversation`` (`rag.chat.Conversation.add_table`) and return it;
    else None (an answer is asked for). ``kwargs``: `requested_table`'s ``k``, ``filters``, ``backend``."""
    from rag.table.chat import in_conversation, requested_table
    from rag.table.requests import table_request

    request = table_request(message)
    if request is None:
        return None
    maker = TableMaker(conversation.answerer)
    columns = len(request.chosen_columns())
    table = with_progress(console, columns, lambda **hooks: requested_table(
        maker, request, **in_conversation(conversation), **kwargs, **hooks))
    for note in table.notes:
        console.print(Text.assemble(("note: ", "cyan"), note))
    if out is not None:
        print_table(table, out)
    conversation.add_table(message, table)
    return table


__all__ = ["make_with_progress", "print_table", "table_turn", "with_progress"]
