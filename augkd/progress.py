"""Console output on stderr shared by the library and the CLI: the stderr console and the progress bars.

The CLI's log handler and the library's progress bars draw on the same :data:`err_console`, so rich keeps
log lines above a live bar instead of tearing it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

err_console = Console(stderr=True)


def make_progress() -> Any:
    """A rich ``Progress`` on :data:`err_console`: description, bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
