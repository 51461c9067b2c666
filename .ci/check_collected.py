"""Fail when a test module under tests/ is not collected by pytest, so a folder can never silently drop out.

pytest skips folders that match ``norecursedirs`` (its default includes ``dist`` and ``build``), and a module
that fails to import or skips itself at import time yields no test either. This lists every ``test_*.py`` /
``*_test.py`` file under ``tests/`` and compares it with the files of the node ids ``pytest --collect-only``
reports (no marker filter, so GPU-only tests count as collected where they are skipped at run time).

    python .ci/check_collected.py [ROOT]      # exit 0: all collected; 1: the missing files are listed
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_files(root: Path) -> list[str]:
    tests = root / "tests"
    found = {p for pattern in ("test_*.py", "*_test.py") for p in tests.rglob(pattern)}
    return sorted(p.relative_to(root).as_posix() for p in found if "__pycache__" not in p.parts)


def collected_files(root: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    return {line.split("::", 1)[0] for line in proc.stdout.splitlines() if "::" in line}, proc


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else ".").resolve()
    files = test_files(root)
    got, proc = collected_files(root)
    missing = [f for f in files if f not in got]
    if proc.returncode not in (0, 5) or missing:
        if proc.returncode not in (0, 5):
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            print(f"pytest --collect-only exited {proc.returncode}")
        for f in missing:
            print(f"not collected: {f}")
        print(f"collection check FAILED: {len(missing)} of {len(files)} test modules not collected")
        return 1
    print(f"collection check: all {len(files)} test modules under tests/ collected ({len(got)} files with tests)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
