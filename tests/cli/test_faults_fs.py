"""Filesystem faults through the CLI: no space left, read-only, permission denied, ``--out`` that is a file.

Each case: a non-zero exit, ONE ``error:`` line on stderr naming the path and the reason, no traceback, and
the directory it was writing into unchanged (same files, same bytes: no temp file left behind, the old
checkpoint intact). A full disk and a read-only place are simulated by patching the write path (the tests
may run as root, where ``chmod`` blocks nothing); ``--out`` that is an existing file is real.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from augkd.cli import app

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
KD = ["-c", SMOKE, "--method", "kd", "--set", "kd.epochs=3", "--set", "train.save_images=false"]
TEACHER = ["--set", "model.arch=cnn_tiny", "--set", "data.dataset=digits", "--set", "epochs=1"]
runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with the SHA-256 of its bytes."""
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def block_writes(monkeypatch, root: Path, code: int) -> None:
    """Make creating folders and opening files for writing under ``root`` fail with ``code`` (EROFS, EACCES)."""
    prefix = os.path.abspath(root)
    real_mkdir, real_open = os.mkdir, os.open

    def inside(path: object) -> bool:
        p = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
        return p == prefix or p.startswith(prefix + os.sep)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)


def little_free_space(monkeypatch, free: int = 4096) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - free, free))


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> Path:
    """A kd smoke run stopped during its second epoch: ``checkpoints/state.pt`` holds epoch 1 of 3."""
    from augkd.config import load_config
    from augkd.training import distill

    cfg = load_config(SMOKE, ["method=kd", "kd.epochs=3", "train.save_images=false"])
    run = tmp_path_factory.mktemp("interrupted") / "run"

    def stop(row: dict) -> None:
        if row["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        distill(cfg, run, on_epoch_end=[stop])
    assert (run / "checkpoints" / "state.pt").is_file() and not (run / "student.safetensors").exists()
    return run


@pytest.fixture(scope="module")
def finished_run(interrupted_run, tmp_path_factory) -> Path:
    """The same run resumed to its end (student.safetensors + sidecar)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(interrupted_run, run)
    res = _run("distill", "--resume", run, "-q", "--json")
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture
def run_copy(interrupted_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    return run


# --- no space left on the device ------------------------------------------------------------------------------
def test_distill_disk_full_torch_save_error(run_copy, monkeypatch):
    """torch.save on a full disk raises an errno-less RuntimeError (the old 142-line traceback)."""
    before = snapshot(run_copy)

    def full_disk_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")  # torch.save gets part of the file out, then fails
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 792960 vs 792852")

    monkeypatch.setattr(torch, "save", full_disk_save)
    little_free_space(monkeypatch)
    res = _run("distill", "--resume", run_copy)
    assert_one_line_error(res, str(run_copy / "checkpoints" / "state.pt"), "no space left")
    assert snapshot(run_copy) == before  # no temp file, state.pt and metrics.csv as they were


def test_distill_disk_full_enospc(run_copy, monkeypatch):
    """An OSError(ENOSPC) once the checkpoint's bytes are out (here from fsync)."""
    before = snapshot(run_copy)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    res = _run("distill", "--resume", run_copy)
    assert_one_line_error(res, str(run_copy / "checkpoints" / "state.pt"), "no space left")
    assert snapshot(run_copy) == before


def test_teacher_disk_full(tmp_path, monkeypatch):
    """safetensors reports ENOSPC inside its own error type; the teacher already in --out stays intact."""
    import safetensors.torch
    from safetensors import SafetensorError

    out = tmp_path / "teacher"
    out.mkdir()
    (out / "teacher.safetensors").write_bytes(b"an earlier teacher")
    (out / "teacher.json").write_text("{}")
    before = snapshot(out)

    def full_disk_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk_save_file)
    res = _run("teacher", *TEACHER, "--out", out, "-q")
    assert_one_line_error(res, str(out / "teacher.safetensors"), "no space left")
    after = snapshot(out)
    assert {k: after.get(k) for k in before} == before  # the earlier teacher intact
    # config.yaml and split.json at the start, the engine's per-epoch checkpoint and metrics: whole, no temp file
    assert set(after) - set(before) == {
        "config.yaml",
        "split.json",
        "metrics.csv",
        "checkpoints",
        "checkpoints/state.pt",
    }


def test_export_disk_full(finished_run, tmp_path, monkeypatch):
    import onnx

    out = tmp_path / "export"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an earlier export")
    before = snapshot(out)

    def full_disk_save_model(proto, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnx, "save_model", full_disk_save_model)
    res = _run("export", finished_run, "--format", "onnx", "--exporter", "legacy", "--no-latency", "--out", out, "-q")
    assert_one_line_error(res, str(out / "model.onnx"), "no space left")
    assert snapshot(out) == before


# --- read-only place, permission denied -----------------------------------------------------------------------
def test_distill_read_only_out(tmp_path, monkeypatch):
    before = snapshot(tmp_path)
    block_writes(monkeypatch, tmp_path, errno.EROFS)
    res = _run("distill", *KD, "--out", tmp_path / "run")
    assert_one_line_error(res, str(tmp_path / "run"), "read-only file system")
    assert snapshot(tmp_path) == before


def test_distill_read_only_existing_out(tmp_path, monkeypatch):
    """--out an existing folder on a read-only filesystem: the first file (config.yaml) cannot be written."""
    before = snapshot(tmp_path)
    block_writes(monkeypatch, tmp_path, errno.EROFS)
    res = _run("distill", *KD, "--out", tmp_path)
    assert_one_line_error(res, str(tmp_path / "config.yaml"), "read-only file system")
    assert snapshot(tmp_path) == before


def test_teacher_read_only_out(tmp_path, monkeypatch):
    block_writes(monkeypatch, tmp_path, errno.EROFS)
    res = _run("teacher", *TEACHER, "--out", tmp_path / "t", "-q")
    assert_one_line_error(res, str(tmp_path / "t"), "read-only file system")
    assert snapshot(tmp_path) == {}


def test_export_read_only_out(finished_run, tmp_path, monkeypatch):
    block_writes(monkeypatch, tmp_path, errno.EROFS)
    res = _run("export", finished_run, "--format", "onnx", "--no-latency", "--out", tmp_path / "exp", "-q")
    assert_one_line_error(res, str(tmp_path / "exp"), "read-only file system")
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize("json_out", [False, True], ids=["table", "json"])
def test_bench_latency_read_only_run_prints_results_first(finished_run, tmp_path, monkeypatch, json_out):
    """A run in a read-only place: everything is timed, the results are printed, THEN the one-line error."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(run)
    block_writes(monkeypatch, run, errno.EROFS)
    res = _run(
        "bench",
        "latency",
        run,
        "--backends",
        "torch",
        "--batch",
        "1,2",
        "--iters",
        "2",
        "--warmup",
        "0",
        *(["--json"] if json_out else []),
        "-q",
    )
    line = assert_one_line_error(res, str(run / "bench" / "latency.json"), "read-only file system")
    if json_out:
        result = json.loads(res.stdout)
        assert [(r["backend"], r["batch_size"]) for r in result["rows"]] == [("torch", 1), ("torch", 2)]
        assert "files" not in result
        first = res.output.index('"rows"')
    else:
        assert "p50 ms" in res.stdout and "samples/s" in res.stdout
        assert len([ln for ln in res.stdout.splitlines() if ln.startswith("│ torch")]) == 2
        first = res.output.index("p50 ms")
    assert first < res.output.index(line)  # the figures come before the error
    assert snapshot(run) == before


def test_distill_permission_denied(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes through any mode bits: patch the write path instead
        block_writes(monkeypatch, locked, errno.EACCES)
    else:
        locked.chmod(0o555)
    try:
        res = _run("distill", *KD, "--out", locked / "run")
    finally:
        locked.chmod(0o755)
    assert_one_line_error(res, str(locked / "run"), "permission denied")
    assert snapshot(tmp_path) == {"locked": "dir"}


# --- --out is an existing file (real) -------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["distill", "teacher", "export", "bench"])
def test_out_is_an_existing_file(command, finished_run, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("not a directory\n")
    args = {
        "distill": ["distill", *KD],
        "teacher": ["teacher", *TEACHER, "-q"],
        "export": ["export", finished_run, "--format", "onnx", "--no-latency", "-q"],
        "bench": [
            "bench",
            "latency",
            finished_run,
            "--backends",
            "torch",
            "--batch",
            "1",
            "--iters",
            "2",
            "--warmup",
            "0",
            "-q",
        ],
    }[command]
    res = _run(*args, "--out", target)
    assert_one_line_error(res, str(target), "not a directory")
    assert snapshot(tmp_path) == {"notes.txt": hashlib.sha256(b"not a directory\n").hexdigest()}


def test_bench_kernels_read_only_out_prints_table_first(tmp_path, monkeypatch):
    block_writes(monkeypatch, tmp_path, errno.EROFS)
    res = _run(
        "bench",
        "kernels",
        "--quick",
        "--ops",
        "kd_loss",
        "--providers",
        "torch",
        "--modes",
        "forward",
        "--out",
        tmp_path / "k.csv",
        "-q",
    )
    line = assert_one_line_error(res, str(tmp_path / "k.csv"), "read-only file system")
    assert "│ kd_loss" in res.stdout
    assert res.output.index("│ kd_loss") < res.output.index(line)
    assert snapshot(tmp_path) == {}
