"""benchmarks/collect_runs.py and results_io.py: run directories become one results table, machine named."""

import csv
import json
from pathlib import Path

from bench_scripts import load_benchmark

collect_runs = load_benchmark("collect_runs")


def _run(root: Path, rel: str, method: str, seed: int, acc: float, lr: float, evals: list[float]) -> None:
    d = root / rel
    d.mkdir(parents=True)
    summary = {"method": method, "seed": seed, "test": {"acc1": acc}, "best_eval_acc1": max(evals), "lr": 1e-05}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.yaml").write_text(f"method: {method}\nmodule3:\n  lr: {lr}\n")
    lines = ["stage,epoch,loss,eval_acc1"] + [f"kd,{i},1.0,0.0" for i in range(2)]
    lines += [f"module3,{i},1.0,{v}" for i, v in enumerate(evals)]
    (d / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_rows_carry_summary_config_and_curve_figures(tmp_path):
    _run(tmp_path, "a/seed0", "augkd", 0, 0.61, 0.003, [0.2, 0.5, 0.4, 0.6, 0.3])
    _run(tmp_path, "b/seed1", "kd", 1, 0.55, 0.001, [0.1, 0.2])
    (tmp_path / "summary.json").write_text(json.dumps({"methods": {}}))  # a compare overview: skipped
    rows = collect_runs.collect(
        [tmp_path], ["test.acc1", "missing.key", "lr"], ["module3.lr"], ["module3:eval_acc1"], 3
    )
    assert [r["run"] for r in rows] == ["a/seed0", "b/seed1"]
    a, b = rows
    assert (a["method"], a["seed"], a["test.acc1"], a["missing.key"], a["module3.lr"]) == ("augkd", 0, 0.61, "", 0.003)
    assert a["lr"] == 1e-05  # a float in exponent notation stays a float
    assert a["module3.eval_acc1.best"] == 0.6 and a["module3.eval_acc1.last"] == 0.3
    assert abs(a["module3.eval_acc1.tail_mean"] - (0.4 + 0.6 + 0.3) / 3) < 1e-12  # the kd rows are not counted
    assert abs(b["module3.eval_acc1.tail_mean"] - 0.15) < 1e-12  # fewer epochs than the tail: all of them


def test_cli_writes_csv_and_json_with_the_machine(tmp_path, capsys):
    _run(tmp_path / "runs", "x", "scratch", 2, 0.5, 0.001, [0.3])
    out = tmp_path / "res" / "probe-u0.99"  # a dot in the stem is kept, not taken for a suffix
    assert collect_runs.main([str(tmp_path / "runs"), "--cfg", "module3.lr", "--out", str(out)]) == 0
    with Path(f"{out}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {
            "run": "x",
            "method": "scratch",
            "seed": "2",
            "test.acc1": "0.5",
            "best_eval_acc1": "0.3",
            "timings.total_s": "",
            "precision": "",
            "threads": "",
            "module3.lr": "0.001",
        }
    ]
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["cpu"] and meta["cpu_count"] >= 1 and meta["rows"][0]["method"] == "scratch"
    assert meta["roots"] == [str(tmp_path / "runs")]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert collect_runs.main([str(tmp_path / "absent"), "--out", str(tmp_path / "o")]) == 2
    assert collect_runs.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "o.csv").exists()
