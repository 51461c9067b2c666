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

err_console = Console(stderr=True)
out_console = Console()


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Rich logging on stderr; -v → DEBUG, -q → WARNING."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("augkd").setLevel(level)


def show_progress(quiet: bool) -> bool:
    """Progress bars only on an interactive stderr and without --quiet."""
    return not quiet and sys.stderr.isatty()


def print_json(obj: Any) -> None:
    """Machine-readable result on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(rows: list[dict[str, Any]], title: str | None = None, columns: list[str] | None = None) -> None:
    """A rich table of ``rows`` on stdout."""
    from rich.table import Table

    if not rows:
        out_console.print("(no rows)")
        return
    cols = columns or list(rows[0].keys())
    table = Table(title=title)
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_fmt(r.get(c)) for c in cols])
    out_console.print(table)


def _fmt(v: Any) -> str:
    from rich.markup import escape

    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else escape(str(v))


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
    """Decorator for commands: an AugKDError becomes one line on stderr and exit code 1.

    ``AUGKD_DEBUG=1`` re-raises it with the traceback. Any other exception is a bug and keeps its
    traceback. Ctrl-C exits 130 with a note that completed checkpoints are kept.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer

        from augkd.errors import AugKDError

        try:
            return fn(*args, **kwargs)
        except AugKDError as exc:
            if os.environ.get("AUGKD_DEBUG", "") not in ("", "0"):
                raise
            print_user_error(exc)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print_user_error(
                KeyboardInterrupt("interrupted: checkpoints of completed epochs are kept; resume with --resume")
            )
            raise typer.Exit(130) from None

    return wrapper
