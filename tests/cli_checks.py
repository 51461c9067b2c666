"""Assertions shared by the CLI tests (importable because pytest puts ``tests/`` on sys.path for its conftest)."""

from __future__ import annotations


def assert_one_line_error(res, *needles: str) -> str:
    """Non-zero exit, exactly one ``error:`` line on stderr holding every needle, no traceback; returns the line."""
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
