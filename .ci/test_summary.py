"""Per-folder counts from a pytest JUnit XML file, so a CI log shows which parts of the suite ran.

    python .ci/test_summary.py build/ci/junit.xml [--require tests/distributed]

``--require FOLDER`` fails (exit 1) when no test under FOLDER passed.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict


def folder_of(classname: str) -> str:
    parts = classname.split(".")  # tests.core.test_x[.Class]
    mods = [i for i, p in enumerate(parts) if p.startswith("test_")]
    return "/".join(parts[: mods[0]]) if mods else "/".join(parts[:-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("junit")
    ap.add_argument("--require", action="append", default=[])
    args = ap.parse_args()
    counts: dict[str, Counter] = defaultdict(Counter)
    for case in ET.parse(args.junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        counts[folder_of(case.get("classname", ""))][outcome] += 1
    width = max(len(f) for f in counts) if counts else 10
    print(f"{'folder'.ljust(width)}  passed  skipped  failed")
    for folder in sorted(counts):
        c = counts[folder]
        print(f"{folder.ljust(width)}  {c['passed']:6d}  {c['skipped']:7d}  {c['failure'] + c['error']:6d}")
    missing = [f for f in args.require if counts.get(f, Counter())["passed"] == 0]
    for f in missing:
        print(f"no test passed under {f}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
