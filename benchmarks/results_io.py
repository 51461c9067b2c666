"""What every results file of the benchmarks carries, and how a table of rows is written.

``machine_meta()`` is the header of every results JSON (the CPU it ran on, the thread count, the code and
library versions, the load at the end, the time), so that figures from different machines are never
compared as if they came from one. ``write_rows()`` writes ``<stem>.csv`` (one row per run or variant) and
``<stem>.json`` (the same rows under the header and any extra fields of the benchmark).
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any


def machine_meta() -> dict[str, Any]:
    """The machine and code a result comes from."""
    import torch

    from augkd.utils import cpu_name, git_sha

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "git_sha": git_sha(),
        "load_avg_at_end": os.getloadavg(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_rows(stem: Path, rows: list[dict[str, Any]], **extra: Any) -> tuple[Path, Path]:
    """Write ``rows`` to ``<stem>.csv`` and ``<stem>.json`` (with :func:`machine_meta` and ``extra``)."""
    if not rows:
        raise ValueError(f"no rows to write to {stem}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for r in rows:  # the union of the rows' keys, in first-seen order
        fields += [k for k in r if k not in fields]
    csv_path, json_path = Path(f"{stem}.csv"), Path(f"{stem}.json")  # a stem may hold dots (u0.99)
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)
    json_path.write_text(json.dumps({**extra, **machine_meta(), "rows": rows}, indent=2) + "\n")
    return csv_path, json_path
