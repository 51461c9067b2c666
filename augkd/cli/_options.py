"""Options shared by several commands (declared once, spaCy-style aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[
    Optional[Path],  # noqa: UP045 (typer needs Optional here)
    typer.Option("--config", "-c", help="YAML config file (see configs/).", dir_okay=False),
]
SetOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--set", "-s", help="Override a config value, e.g. --set module3.epochs=10 (repeatable)."),
]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.")]  # noqa: UP045
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")]
