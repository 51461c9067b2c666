"""Options shared by several commands (declared once, spaCy-style aliases)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ConfigOpt = Annotated[
    Optional[Path],  # typer options keep Optional[...] (UP045 ignored for augkd/cli in pyproject)
    typer.Option("--config", "-c", help="YAML config file (see configs/).", dir_okay=False),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config value, e.g. --set module3.epochs=10 (repeatable)."),
]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")]
