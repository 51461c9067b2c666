"""Output fit for logs: whole tables off a terminal and on a narrow one, rounded floats, per-epoch lines."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from augkd.cli import _util, app

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
EPOCHS = 3
runner = CliRunner()
RAW_FLOAT = re.compile(r"\d\.\d{6,}")  # 0.21641665399999999, 3.07666015625


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``augkd distill`` (kd, smoke preset) with stdout and stderr not terminals: (run dir, CLI result)."""
    run = tmp_path_factory.mktemp("log") / "run"
    res = runner.invoke(
        app,
        [
            "distill",
            "-c",
            SMOKE,
            "--method",
            "kd",
            "--set",
            f"kd.epochs={EPOCHS}",
            "--set",
            "train.save_images=false",
            "--out",
            str(run),
        ],
    )
    assert res.exit_code == 0, res.output
    return run, res


@pytest.fixture(scope="module")
def bench(smoke_run, tmp_path_factory):
    """``augkd bench latency`` on the run (a 10-column table, wider than 80): (result JSON, CLI result)."""
    run, _ = smoke_run
    out = tmp_path_factory.mktemp("bench")
    res = runner.invoke(
        app,
        [
            "bench",
            "latency",
            str(run),
            "--backends",
            "torch",
            "--batch",
            "1,2",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "60"},
    )
    assert res.exit_code == 0, res.output
    return json.loads((out / "latency.json").read_text()), (out / "latency.md").read_text(), res


def _figures(result: dict) -> list[str]:
    """Every figure of the latency table as the table prints it."""
    keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput")
    return [_util._fmt(r[k]) for r in result["rows"] for k in keys] + [str(r["provider"]) for r in result["rows"]]


def test_table_whole_when_stdout_is_not_a_terminal(bench):
    """CliRunner's stdout is not a terminal (COLUMNS=60 as well): the whole table, no cell cut short."""
    result, _, res = bench
    assert "…" not in res.stdout
    header = next(line for line in res.stdout.splitlines() if "backend" in line)
    for col in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "samples/s", "provider", "threads", "note"):
        assert col in header  # every column on one line: not wrapped to the terminal's width either
    rows = [line for line in res.stdout.splitlines() if line.startswith("│ torch")]
    assert len(rows) == 2
    for row, r in zip(rows, result["rows"], strict=True):
        for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput"):
            assert f" {_util._fmt(r[k])} " in row, (k, row)


def test_table_on_a_narrow_terminal_keeps_every_figure(bench, monkeypatch):
    """A 60-column terminal: the columns go into several tables; every figure whole, no line over 60."""
    result, _, _ = bench
    from augkd.cli.bench import _COLUMNS, _table_rows

    buf = io.StringIO()
    monkeypatch.setattr(_util, "out_console", Console(file=buf, width=60, force_terminal=True, color_system=None))
    _util.print_table(_table_rows(result["rows"]), title="latency", columns=_COLUMNS)
    text = buf.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 60
    for fig in _figures(result):
        assert re.search(rf"│ {re.escape(fig)} +│", text), (fig, text)


def test_long_figures_whole_off_a_terminal(capsys):
    """Long cells (figures, paths) in a table wider than 80 columns, stdout captured (not a terminal)."""
    row = {f"column {i}": 372123.456 + i for i in range(8)} | {"path": "/a/long/path/" + "x" * 60 + "/student.onnx"}
    _util.print_table([row], title="t")
    out = capsys.readouterr().out
    assert "…" not in out
    for i in range(8):
        assert f"{372123.456 + i:.0f}" in out
    assert row["path"] in out


def test_log_lines_have_no_raw_floats(smoke_run, bench):
    _, res = smoke_run
    _, md, bres = bench
    lines = res.stderr.splitlines() + bres.stderr.splitlines()
    assert any("kd done" in line for line in lines)
    assert [line for line in lines if RAW_FLOAT.search(line)] == []
    load = next(line for line in md.splitlines() if "load average (1 min) at start" in line)
    assert not RAW_FLOAT.search(load), load


def test_per_epoch_progress_line_when_stderr_is_not_a_terminal(smoke_run):
    _, res = smoke_run
    epochs = [line for line in res.stderr.splitlines() if re.match(r"INFO +kd epoch \d+/\d+ ", line)]
    assert len(epochs) == EPOCHS, res.stderr
    for i, line in enumerate(epochs, start=1):
        assert re.fullmatch(rf"INFO +kd epoch {i}/{EPOCHS}  loss [-\d.e+]+  eval_acc1 [\d.e-]+  \d+\.\d s", line), line
    stderr = res.stderr
    assert stderr.index("kd epoch 1/") < stderr.index(f"kd epoch {EPOCHS}/") < stderr.index("kd done")
