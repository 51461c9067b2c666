"""benchmarks/merge_accuracy.py: parts of a multi-seed table combine into the table of all seeds."""

import statistics

import pytest
from bench_scripts import load_benchmark

merge_accuracy = load_benchmark("merge_accuracy")


def _doc(seeds, acc, sha):
    row = {"seeds": seeds, "acc1_runs": [a[0] for a in acc], "total_s_mean": 10.0 * len(seeds)}
    for i, k in enumerate(("acc1", "acc3", "acc5")):
        vals = [a[i] for a in acc]
        row[f"{k}_mean"] = statistics.fmean(vals)
        row[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {
        "preset": "p",
        "methods": {"m": row},
        "teacher_source_only": {"acc1": 0.5},
        "machine": {},
        "torch": "t",
        "augkd": "a",
        "git_sha": sha,
        "overrides": [],
        "timestamp": "now",
        "wall_time_per_module_s": {"m": {"total_s": 10.0 * len(seeds)}},
    }


def test_merge_equals_the_statistics_of_all_seeds():
    acc = [(0.80, 0.95, 0.99), (0.82, 0.96, 0.98), (0.85, 0.97, 1.0), (0.79, 0.93, 0.97), (0.88, 0.99, 1.0)]
    out = merge_accuracy.merge(
        [_doc([0, 1, 2], acc[:3], "x"), _doc([3], acc[3:4], "y"), _doc([4], acc[4:], "y")], ["a", "b", "c"]
    )
    row = out["methods"]["m"]
    assert row["seeds"] == [0, 1, 2, 3, 4]
    for i, k in enumerate(("acc1", "acc3", "acc5")):
        vals = [a[i] for a in acc]
        assert row[f"{k}_mean"] == pytest.approx(statistics.fmean(vals))
        assert row[f"{k}_std"] == pytest.approx(statistics.stdev(vals))
    assert out["wall_time_per_module_s"]["m"]["total_s"] == pytest.approx((30 * 3 + 10 + 10) / 5)
    assert [p["git_sha"] for p in out["parts"]] == ["x", "y", "y"]


def test_merge_refuses_a_repeated_seed():
    with pytest.raises(SystemExit, match="seed appears in two parts"):
        merge_accuracy.merge([_doc([0], [(0.8, 0.9, 1.0)], "x"), _doc([0], [(0.8, 0.9, 1.0)], "y")], ["a", "b"])


def test_merge_keeps_a_method_missing_from_a_part():
    a, b = _doc([0], [(0.8, 0.9, 1.0)], "x"), _doc([1], [(0.7, 0.9, 1.0)], "y")
    b["methods"]["extra"] = b["methods"]["m"]
    b["wall_time_per_module_s"]["extra"] = {"total_s": 5.0}
    out = merge_accuracy.merge([a, b], ["a", "b"])
    assert out["methods"]["m"]["seeds"] == [0, 1] and out["methods"]["extra"]["seeds"] == [1]
    assert out["wall_time_per_module_s"]["extra"]["total_s"] == 5.0


def test_a_part_can_contribute_only_some_methods(tmp_path):
    """FILE:m1,m2 takes those methods from the part (re-run methods replace the old part's results)."""
    import json

    old, new = _doc([0], [(0.8, 0.9, 1.0)], "x"), _doc([0], [(0.7, 0.9, 1.0)], "y")
    old["methods"]["base"] = old["methods"]["m"]
    old["wall_time_per_module_s"]["base"] = {"total_s": 5.0}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    docs = [
        merge_accuracy.read_part(f"{tmp_path / 'old.json'}:base"),
        merge_accuracy.read_part(str(tmp_path / "new.json")),
    ]
    out = merge_accuracy.merge(docs, ["old", "new"])
    assert out["methods"]["m"]["acc1_runs"] == [0.7] and out["methods"]["base"]["acc1_runs"] == [0.8]
    assert set(out["wall_time_per_module_s"]) == {"m", "base"}
    with pytest.raises(SystemExit, match="has no results for nope"):
        merge_accuracy.read_part(f"{tmp_path / 'old.json'}:nope")


def test_part_spec_parsing(tmp_path):
    import json

    doc = _doc([0], [(0.8, 0.9, 1.0)], "x")
    odd = tmp_path / "a:b.json"  # a colon inside the file name is not a method list
    odd.write_text(json.dumps(doc))
    assert merge_accuracy.read_part(str(odd))["methods"].keys() == {"m"}
    assert merge_accuracy.read_part(f"{odd}:m")["methods"].keys() == {"m"}
    with pytest.raises(SystemExit, match="no methods"):
        merge_accuracy.read_part(f"{odd}:")
