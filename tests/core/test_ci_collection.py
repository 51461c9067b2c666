""".ci/check_collected.py: a test module that pytest does not collect fails CI, naming the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = Path(__file__).resolve().parents[2] / ".ci" / "check_collected.py"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True, timeout=300)


def test_a_folder_named_dist_is_reported(tmp_path):
    root = _tree(
        tmp_path,
        {"tests/dist/test_a.py": "def test_a():\n    pass\n", "tests/ok/test_b.py": "def test_b():\n    pass\n"},
    )
    res = _check(root)
    assert res.returncode == 1, res.stdout
    assert "not collected: tests/dist/test_a.py" in res.stdout and "tests/ok/test_b.py" not in res.stdout
    (root / "tests" / "dist").rename(root / "tests" / "distributed")
    res = _check(root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all 2 test modules under tests/ collected" in res.stdout


def test_a_module_that_fails_to_import_is_reported(tmp_path):
    root = _tree(
        tmp_path,
        {"tests/test_ok.py": "def test_ok():\n    pass\n", "tests/test_broken.py": "import not_a_module_anywhere\n"},
    )
    res = _check(root)
    assert res.returncode == 1
    assert "not collected: tests/test_broken.py" in res.stdout


def test_the_repository_itself_passes():
    res = _check(CHECK.parents[1])
    assert res.returncode == 0, res.stdout[-3000:]
