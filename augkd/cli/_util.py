"""CLI helpers: logging on stderr, progress bars, printing results on stdout."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from augkd.progress import err_console

out_console = Console()


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Logging on stderr; -v → DEBUG, -q → WARNING.

    Rich lines on a terminal; plain ``LEVEL    message`` lines, never wrapped or padded, when stderr is a log
    file or a pipe.
    """
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    else:
        handler = _PlainStderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("augkd").setLevel(level)


class _PlainStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler on whatever ``sys.stderr`` is when a record is emitted (as the rich console does)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def show_progress(quiet: bool) -> bool:
    """Progress bars only on an interactive stderr and without --quiet."""
    return not quiet and sys.stderr.isatty()


def print_json(obj: Any) -> None:
    """Machine-readable result on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


_WIDE = 10_000  # "no limit" for a table printed into a log or a pipe


def print_table(rows: list[dict[str, Any]], title: str | None = None, columns: list[str] | None = None) -> None:
    """A rich table of ``rows`` on stdout, never cut short.

    Not a terminal (a CI log, a pipe): the whole table at its natural width, whatever ``COLUMNS`` says. A
    terminal narrower than the table: the columns are split over several tables, each repeating the first
    column, so every figure stays whole on one line (a column too wide even alone folds, never ellipsizes).
    """
    from rich.text import Text

    if not rows:
        out_console.print("(no rows)")
        return
    cols = columns or list(rows[0].keys())
    cells = [[Text(_fmt(r.get(c))) for c in cols] for r in rows]
    if not out_console.is_terminal:
        natural = 1 + sum(_column_width(cols, cells, i) for i in range(len(cols)))
        wide = Console(file=out_console.file, width=max(natural, out_console.width, 1), color_system=None)
        if title:  # its own line: a long title (a path) is never folded into the table's width
            wide.print(Text(title), soft_wrap=True)
        wide.print(_table(None, cols, cells, range(len(cols))))
        return
    for n, group in enumerate(_column_groups(cols, cells, out_console.width)):
        out_console.print(_table(title if n == 0 else None, cols, cells, group))


def _column_width(cols: list[str], cells: list[list[Any]], i: int) -> int:
    """Cells of column ``i`` unwrapped, plus its padding and right border."""
    from rich.cells import cell_len

    return max([cell_len(cols[i])] + [cell.cell_len for row in cells for cell in [row[i]]]) + 3


def _column_groups(cols: list[str], cells: list[list[Any]], width: int) -> list[list[int]]:
    """Column indices packed into tables of at most ``width`` characters, each starting with column 0."""
    widths = [_column_width(cols, cells, i) for i in range(len(cols))]
    groups: list[list[int]] = [[0]]
    used = 1 + widths[0]
    for i in range(1, len(cols)):
        if used + widths[i] > width and len(groups[-1]) > 1:
            groups.append([0])
            used = 1 + widths[0]
        groups[-1].append(i)
        used += widths[i]
    return groups


def _table(title: str | None, cols: list[str], cells: list[list[Any]], group: Any) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for i in group:
        table.add_column(cols[i], overflow="fold", no_wrap=False)
    for row in cells:
        table.add_row(*[row[i] for i in group])
    return table


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"  # 372123 rather than 3.721e+05
    return "" if v is None else str(v)


def print_user_error(exc: BaseException) -> None:
    """One red line on stderr (what, the value, how to fix), plus the AUGKD_DEBUG hint."""
    text = str(exc).strip()
    msg = text.splitlines()[0] if text else exc.__class__.__name__
    err_console.print(f"[bold red]error:[/bold red] {_escape(msg)}", markup=True, highlight=False, soft_wrap=True)
    err_console.print("[dim]set AUGKD_DEBUG=1 for the full traceback[/dim]", markup=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: an AugKDError, or an OSError with an errno, becomes one line on stderr and exit 1.

    ``AUGKD_DEBUG=1`` re-raises it with the traceback. Any other exception is a bug and keeps its
    traceback. Ctrl-C exits 130 with a note that completed checkpoints are kept.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer

        from augkd.errors import AugKDError, storage_error

        try:
            return fn(*args, **kwargs)
        except AugKDError as exc:
            if os.environ.get("AUGKD_DEBUG", "") not in ("", "0"):
                raise
            print_user_error(exc)
            raise typer.Exit(1) from None
        except OSError as exc:  # a filesystem error outside atomic_write (mkdir of --out, ...): one line too
            err = storage_error(exc)
            if err is None or os.environ.get("AUGKD_DEBUG", "") not in ("", "0"):
                raise
            print_user_error(err)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print_user_error(
                KeyboardInterrupt("interrupted: checkpoints of completed epochs are kept; resume with --resume")
            )
            raise typer.Exit(130) from None

    return wrapper
