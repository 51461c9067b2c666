"""The public entry points: ``augkd.distill`` is always the training function, whatever was imported before."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_augkd_distill_is_the_function_before_and_after_submodule_imports():
    # a fresh interpreter, so no other test has imported the training package first
    code = (
        "import augkd, inspect\n"
        "first = augkd.distill\n"
        "import augkd.training.engine, augkd.training.pipeline, augkd.training.stages\n"
        "from augkd.training import distill\n"
        "assert inspect.isfunction(first) and augkd.distill is first is distill, (first, augkd.distill)\n"
        "print(first.__module__, list(inspect.signature(first).parameters)[:2])\n"
    )
    assert _run(code) == "augkd.training.pipeline ['cfg', 'run_dir']"


def test_augkd_distill_is_the_function_when_training_is_imported_first():
    code = (
        "import augkd.training.stages\n"
        "import augkd, inspect\n"
        "assert inspect.isfunction(augkd.distill), augkd.distill\n"
        "assert inspect.isfunction(augkd.compare) and augkd.DistillResult.__name__ == 'DistillResult'\n"
        "print('ok')\n"
    )
    assert _run(code) == "ok"


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    import augkd

    with pytest.raises(AttributeError, match="no attribute 'not_a_thing'"):
        _ = augkd.not_a_thing
