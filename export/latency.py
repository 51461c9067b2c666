"""One timing harness for every backend: torch eager, torch.compile, ONNX Runtime fp32/int8, TensorRT.

:func:`measure_latency` warms up, then times N iterations (or a duration) of ``runner(inputs)``,
synchronising CUDA after each when the runner has a ``synchronize`` (or ``sync=``) hook, and reports
mean / p50 / p90 / p99 latency in ms and throughput in samples/s. :func:`bench_latency` runs it for each
backend × batch size on the SAME images (real student-domain test images when the run's data is found),
one backend at a time (its thread pool is torn down before the next starts), with torch and ONNX Runtime
pinned to the same thread count, and writes ``latency.json``, ``latency.md`` and ``latency.png``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from augkd.errors import InputError

if TYPE_CHECKING:
    from augkd.export.source import Source

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "BackendRunner",
    "bench_latency",
    "combine_rounds",
    "measure_latency",
    "ort_backend",
    "take_batch",
    "tensorrt_backend",
    "time_backend",
    "time_interleaved",
    "torch_backend",
    "torch_threads",
    "write_latency_files",
]

BACKENDS = ("torch", "compile", "ort", "ort-int8", "tensorrt")
DEFAULT_BACKENDS = ("torch", "ort", "ort-int8")


def _batch_of(inputs: Any) -> int:
    if hasattr(inputs, "shape") and len(inputs.shape) > 0:
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)) and inputs:
        return _batch_of(inputs[0])
    raise InputError("cannot infer the batch size of the inputs: pass batch_size=")


def measure_latency(
    runner: Callable[[Any], Any],
    inputs: Any,
    *,
    warmup: int = 10,
    iters: int = 100,
    duration: float | None = None,
    batch_size: int | None = None,
    sync: Callable[[], None] | None = None,
    min_iters: int = 5,
) -> dict[str, Any]:
    """Time ``runner(inputs)``: ``warmup`` untimed calls, then ``iters`` timed calls (or until ``duration`` s).

    Args:
        runner: called with ``inputs`` once per iteration.
        inputs: the batch, already in the runner's native form (prepared outside the timed region).
        warmup: untimed calls first (compilation, allocator and thread-pool warm-up).
        iters: timed calls when ``duration`` is None.
        duration: time budget in seconds instead of a fixed count (at least ``min_iters`` calls).
        batch_size: samples per call (default: ``inputs.shape[0]``).
        sync: called after each call before the clock stops (default: ``runner.synchronize`` if present).
        min_iters: lower bound on timed calls with ``duration``.

    Returns:
        ``batch_size, iters, warmup, mean_ms, std_ms, min_ms, p20_ms, p50_ms, p80_ms, p90_ms, p99_ms, throughput``
        (samples/s, from the mean)
        and ``first_call_ms`` (the first warm-up call: compile time for torch.compile).
    """
    if warmup < 0 or iters < 1 or (duration is not None and duration <= 0):
        raise InputError(f"need warmup >= 0, iters >= 1 and duration > 0, got {warmup}, {iters}, {duration}")
    bs = batch_size if batch_size is not None else _batch_of(inputs)
    sync = sync or getattr(runner, "synchronize", None)
    first_call_ms = _warm_up(runner, inputs, warmup, sync)
    times = _timed_calls(runner, inputs, iters, duration, min_iters, sync)
    return _latency_stats(times, bs, warmup, first_call_ms)


def _warm_up(runner: Callable[[Any], Any], inputs: Any, warmup: int, sync: Callable[[], None] | None) -> float | None:
    """``warmup`` untimed calls; the duration of the first one in ms (None without warm-up)."""
    first_call_ms = None
    for i in range(warmup):
        t0 = time.perf_counter_ns()
        runner(inputs)
        if sync is not None:
            sync()
        if i == 0:
            first_call_ms = (time.perf_counter_ns() - t0) / 1e6
    return first_call_ms


def _timed_calls(
    runner: Callable[[Any], Any],
    inputs: Any,
    iters: int,
    duration: float | None,
    min_iters: int,
    sync: Callable[[], None] | None,
) -> list[int]:
    """Nanoseconds of each timed call: ``iters`` calls, or calls until ``duration`` s (at least ``min_iters``)."""
    times: list[int] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        runner(inputs)
        if sync is not None:
            sync()
        times.append(time.perf_counter_ns() - t0)
        if duration is None:
            if len(times) >= iters:
                break
        elif time.perf_counter() - start >= duration and len(times) >= min_iters:
            break
    return times


def _latency_stats(times: list[int], bs: int, warmup: int, first_call_ms: float | None) -> dict[str, Any]:
    ms = np.asarray(times, dtype=np.float64) / 1e6
    mean = float(ms.mean())
    return {
        "batch_size": bs,
        "iters": len(times),
        "warmup": warmup,
        "mean_ms": mean,
        "std_ms": float(ms.std()),
        "min_ms": float(ms.min()),
        "p20_ms": float(np.percentile(ms, 20)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p80_ms": float(np.percentile(ms, 80)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "throughput": bs * 1000.0 / mean if mean > 0 else float("inf"),
        "first_call_ms": first_call_ms,
    }


@dataclass
class BackendRunner:
    """A callable backend plus how to turn uint8 images into its native input."""

    name: str
    fn: Callable[[Any], Any]
    prepare: Callable[[torch.Tensor], Any]
    provider: str
    threads: int | None
    artifact: str | None = None
    sync: Callable[[], None] | None = None
    note: str | None = None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily pin torch's intra-op threads (restored afterwards)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_backend(
    model: torch.nn.Module,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    threads: int | None,
    device: torch.device,
    compile: bool = False,
) -> BackendRunner:
    """torch eager (or ``torch.compile``, compiled on the first warm-up call per batch size) in inference mode."""
    model = model.eval().to(device)
    fn_model: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model, dynamic=False) if compile else model

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fn_model(x)

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    provider = f"torch {device.type}" + (" (inductor)" if compile else "")
    return BackendRunner(
        "compile" if compile else "torch",
        run,
        lambda u: normalize(u).to(device),
        provider,
        threads if device.type == "cpu" else None,
        sync=sync,
        note="first warm-up call per batch size compiles" if compile else None,
    )


def ort_backend(
    name: str,
    path: str | Path,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    threads: int | None,
    provider: str = "cpu",
) -> BackendRunner:
    """An ONNX Runtime session; ``provider`` is what the session REALLY uses (``get_providers()``)."""
    from augkd.export.runtime import OrtRunner

    runner = OrtRunner(path, threads, provider)
    return BackendRunner(
        name, runner, lambda u: runner.prepare(u, normalize), runner.provider, runner.threads, artifact=str(path)
    )


def tensorrt_backend(path: str | Path, normalize: Callable[[torch.Tensor], torch.Tensor]) -> BackendRunner:
    """A TensorRT engine on the GPU (inputs staged on the device before timing)."""
    from augkd.export.tensorrt import TensorRTRunner

    runner = TensorRTRunner(path)

    def prepare(u: torch.Tensor) -> torch.Tensor:
        x = u if runner.input_dtype == torch.uint8 else normalize(u)
        return x.to("cuda", runner.input_dtype).contiguous()

    return BackendRunner(
        "tensorrt", runner, prepare, runner.provider, None, artifact=str(path), sync=runner.synchronize
    )


def time_backend(
    backend: BackendRunner,
    images: torch.Tensor,
    batches: Sequence[int],
    *,
    warmup: int,
    iters: int,
    duration: float | None,
) -> list[dict[str, Any]]:
    """Rows for one backend: the first ``b`` of the same uint8 ``images`` for each batch size ``b``."""
    rows = []
    for b in batches:
        x = backend.prepare(take_batch(images, b))
        stats = measure_latency(
            backend.fn, x, warmup=warmup, iters=iters, duration=duration, batch_size=b, sync=backend.sync
        )
        rows.append(
            {
                "backend": backend.name,
                **{k: v for k, v in stats.items() if k != "first_call_ms"},
                "threads": backend.threads,
                "provider": backend.provider,
                "artifact": backend.artifact,
                "note": _note(backend, stats["first_call_ms"]),
            }
        )
        logger.info(
            "%-9s batch %3d: p50 %.3f ms, %.0f samples/s (%s)",
            backend.name,
            b,
            stats["p50_ms"],
            stats["throughput"],
            backend.provider,
        )
    return rows


def time_interleaved(
    plan: Sequence[tuple[BackendRunner, Sequence[int]]],
    images: torch.Tensor,
    *,
    rounds: int,
    warmup: int,
    iters: int,
    duration: float | None,
) -> list[dict[str, Any]]:
    """Rows for each (backend, batch sizes) of ``plan``, measured in ``rounds`` interleaved rounds.

    Every backend stays alive; each round times every backend × batch once (under ``torch_threads`` of the
    backend's own thread count), so that a burst of load from other processes on a shared CPU falls into one
    round of every cell rather than into all rounds of one cell. Each row holds the median over the rounds of
    each statistic (:func:`combine_rounds`), the per-round p50s (``round_p50_ms``) and the keys of
    :func:`time_backend`'s rows. Inputs are the first ``b`` of the same uint8 ``images``, prepared before timing.
    """
    if rounds < 1:
        raise InputError(f"need rounds >= 1, got {rounds}")
    inputs = [{b: backend.prepare(take_batch(images, b)) for b in batches} for backend, batches in plan]
    per_round: list[dict[int, list[dict[str, Any]]]] = [{b: [] for b in batches} for _, batches in plan]
    for _ in range(rounds):
        for (backend, batches), xs, cells in zip(plan, inputs, per_round, strict=True):
            with torch_threads(backend.threads):
                for b in batches:
                    cells[b].append(
                        measure_latency(
                            backend.fn,
                            xs[b],
                            warmup=warmup,
                            iters=iters,
                            duration=duration,
                            batch_size=b,
                            sync=backend.sync,
                        )
                    )
    rows = []
    for (backend, batches), cells in zip(plan, per_round, strict=True):
        for b in batches:
            stats = combine_rounds(cells[b])
            note = _note(backend, stats.pop("first_call_ms"))
            rows.append(
                {
                    "backend": backend.name,
                    **stats,
                    "threads": backend.threads,
                    "provider": backend.provider,
                    "artifact": backend.artifact,
                    "note": note,
                }
            )
            logger.info(
                "%-9s %s threads, batch %3d: p50 %.3f ms (rounds %s)",
                backend.name,
                backend.threads,
                b,
                stats["p50_ms"],
                ", ".join(f"{v:.3f}" for v in stats["round_p50_ms"]),
            )
    return rows


def combine_rounds(per_round: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`measure_latency` results of several rounds as one: each statistic's median over the rounds.

    ``iters`` is the total, ``rounds`` the count, ``round_p50_ms`` the p50 of each round, ``first_call_ms``
    the first round's.
    """
    import statistics

    if not per_round:
        raise InputError("combine_rounds needs at least one round")
    keys = ("mean_ms", "std_ms", "min_ms", "p20_ms", "p50_ms", "p80_ms", "p90_ms", "p99_ms", "throughput")
    first = per_round[0]
    return {
        "batch_size": first["batch_size"],
        "iters": sum(r["iters"] for r in per_round),
        "warmup": first["warmup"],
        **{k: statistics.median(r[k] for r in per_round) for k in keys},
        "rounds": len(per_round),
        "round_p50_ms": [r["p50_ms"] for r in per_round],
        "first_call_ms": first["first_call_ms"],
    }


def _note(backend: BackendRunner, first_call_ms: float | None) -> str | None:
    """The row's note: for torch.compile, the excluded compile + first call time."""
    if backend.name == "compile" and first_call_ms is not None:
        return f"compile + first call {first_call_ms / 1000:.1f} s (excluded)"
    return backend.note


def take_batch(images: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` images, repeating the set when it is smaller than ``n``."""
    if n < 1:
        raise InputError(f"batch sizes must be >= 1, got {n}")
    if len(images) >= n:
        return images[:n].contiguous()
    reps = -(-n // len(images))
    return images.repeat(reps, 1, 1, 1)[:n].contiguous()


def release(backend: BackendRunner | None) -> None:
    """Drop a backend and its thread pool before the next one is timed."""
    del backend
    gc.collect()


def parse_list(
    value: str | Sequence[str] | None, allowed: Sequence[str] | None = None, what: str = "value"
) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` → ``["a", "b", "c"]``, checked against ``allowed`` (with a close match)."""
    import difflib

    if value is None:
        return []
    parts = [value] if isinstance(value, str) else list(value)
    items = [p.strip() for part in parts for p in str(part).split(",") if p.strip()]
    for item in items:
        if allowed is not None and item not in allowed:
            close = difflib.get_close_matches(item, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"unknown {what} {item!r}: {hint}use one of {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def parse_batches(value: str | Sequence[int | str] | None) -> list[int]:
    """``"1,8,32"`` → ``[1, 8, 32]``; every batch size must be a positive integer."""
    if value is None:
        return [1, 8, 32]
    raw = parse_list(value if isinstance(value, str) else [str(v) for v in value], what="batch size")
    try:
        out = [int(v) for v in raw]
    except ValueError as exc:
        raise InputError(f"batch sizes must be positive integers, got {','.join(raw)!r}") from exc
    if not out or any(b < 1 for b in out):
        raise InputError(f"batch sizes must be positive integers, got {','.join(raw)!r}")
    return out


def bench_latency(
    source: str | Path, backends: str | Sequence[str] | None = None, batches: str | Sequence[int | str] | None = None,
    out_dir: str | Path | None = None, *, data: str | None = None, export_dir: str | Path | None = None,
    threads: int | None = None, warmup: int = 10, iters: int = 50, duration: float | None = None, device: str = "cpu",
    write: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """``augkd bench latency``: time each backend × batch size on the same student-domain images.

    Args:
        source: a run directory or a student checkpoint (as for ``augkd export``).
        backends: any of ``torch, compile, ort, ort-int8, tensorrt`` (default ``torch,ort,ort-int8``).
        batches: batch sizes (default ``1,8,32``).
        out_dir: where ``latency.json/.md/.png`` go (default ``<run dir or checkpoint folder>/bench``).
        data: student-domain dataset when the checkpoint does not record one (images only; labels unused).
        export_dir: where to look for ``model.onnx`` / ``model.int8.onnx`` / ``model.fp16.engine``
            (default ``<source>/export``); missing or stale artifacts are exported on the fly into ``out_dir``.
        threads: torch and ONNX Runtime intra-op threads (default: physical cores available).
        warmup: untimed calls per backend × batch.
        iters: timed calls per backend × batch (ignored with ``duration``).
        duration: seconds per backend × batch instead of ``iters``.
        device: ``cpu`` or ``cuda`` for torch/compile and ONNX Runtime (``auto``: cuda when available).
        write: write the three files.
    """
    from augkd.export.artifacts import ensure_artifacts
    from augkd.export.runtime import physical_cores
    from augkd.export.source import load_source
    from augkd.utils import resolve_device

    names = parse_list(backends, BACKENDS, "backend") if backends else list(DEFAULT_BACKENDS)
    sizes = parse_batches(batches)
    if "tensorrt" in names:
        from augkd.export.tensorrt import require_tensorrt

        require_tensorrt()
    dev = resolve_device(device)
    src = load_source(source)
    out = Path(out_dir) if out_dir is not None else src.default_dir("bench")
    n_threads = threads or physical_cores()
    images, labels_note, evaluation = _bench_images(src, data, max(sizes))
    normalize = evaluation.normalize if evaluation is not None else _normalizer(src)
    artifacts, notes = ensure_artifacts(src, [n for n in names if n in ("ort", "ort-int8", "tensorrt")],
                                        Path(export_dir) if export_dir else None, out / "artifacts", evaluation,
                                        threads=n_threads)  # fmt: skip
    notes.insert(0, labels_note)
    rows: list[dict[str, Any]] = []
    with torch_threads(n_threads):
        for name in names:
            backend = _make_backend(name, src, artifacts, normalize, n_threads, dev)
            rows += time_backend(backend, images, sizes, warmup=warmup, iters=iters, duration=duration)
            release(backend)
    settings = {"backends": names, "batches": sizes, "threads": n_threads, "warmup": warmup, "iters": iters,
                "duration": duration, "device": str(dev)}  # fmt: skip
    result = _latency_result(src, settings, rows, notes)
    if write:
        _write_result(result, out)
    return result


def _latency_result(
    src: Source, settings: dict[str, Any], rows: list[dict[str, Any]], notes: list[str]
) -> dict[str, Any]:
    """What :func:`bench_latency` returns (and writes): the model, the settings, the environment, the rows."""
    from augkd.export.report import environment_info, now_iso

    return {
        "created": now_iso(),
        "source": src.spec,
        "model": {
            "arch": src.meta.arch,
            "model_kwargs": src.meta.model_kwargs,
            "input_size": src.meta.input_size,
            "num_classes": src.meta.num_classes,
        },
        "settings": settings,
        "environment": environment_info(),
        "rows": rows,
        "notes": notes,
    }


def _write_result(result: dict[str, Any], out: Path) -> None:
    """Write the latency files; their paths go into ``result["files"]``."""
    from augkd.errors import StorageError
    from augkd.export.errors import ResultNotSavedError

    try:
        result["files"] = {k: str(v) for k, v in write_latency_files(result, out).items()}
    except StorageError as exc:  # the timings are not lost: the caller prints them, then the error
        raise ResultNotSavedError(exc, result) from exc


def _normalizer(src: Source) -> Callable[[torch.Tensor], torch.Tensor]:
    from augkd.export.data import normalize_images

    return lambda u: normalize_images(u, src.meta.mean, src.meta.std)


def _bench_images(src: Source, data: str | None, n: int) -> tuple[torch.Tensor, str, Any]:
    """Real student-domain test images when the data is found; else seeded random uint8 images (said so)."""
    from augkd.errors import AugKDError
    from augkd.export.data import evaluation_data

    try:
        ev = evaluation_data(src.spec, src.meta, data)
    except AugKDError as exc:
        logger.warning("no student-domain data (%s): timing on random images", exc)
        g = torch.Generator().manual_seed(0)
        s, c = src.meta.input_size, src.meta.in_chans
        return (
            torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g),
            "inputs: seeded random uint8 images (no student-domain data found; pass --data)",
            None,
        )
    images, _ = ev.test_batch(n)
    return (
        images,
        (
            f"inputs: {len(images)} images of the {ev.test_split} split (seeded random subset, repeated up "
            f"to the largest batch), the same for every backend; data from {ev.origin}"
        ),
        ev,
    )


def _make_backend(
    name: str,
    src: Source,
    artifacts: dict[str, Path],
    normalize: Callable[[torch.Tensor], torch.Tensor],
    threads: int,
    dev: torch.device,
) -> BackendRunner:
    import copy

    if name in ("torch", "compile"):
        return torch_backend(copy.deepcopy(src.model), normalize, threads, dev, compile=name == "compile")
    if name in ("ort", "ort-int8"):
        provider = "cuda" if dev.type == "cuda" else "cpu"
        return ort_backend(name, artifacts[name], normalize, threads, provider)
    return tensorrt_backend(artifacts["tensorrt"], normalize)


def write_latency_files(result: dict[str, Any], out_dir: str | Path, stem: str = "latency") -> dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` (p50 latency and throughput per backend × batch)."""
    from augkd.utils import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    files = {
        "json": atomic_write_json(out / f"{stem}.json", result),
        "md": atomic_write_text(out / f"{stem}.md", latency_markdown(result)),
    }
    files["png"] = latency_chart(result, out / f"{stem}.png")
    return files


def latency_markdown(result: dict[str, Any]) -> str:
    """The latency table as Markdown, with the environment and notes."""
    env, s = result.get("environment", {}), result.get("settings", {})
    m = result.get("model", {})
    load = env.get("load_average_1m")
    load = f"{load:.2f}" if isinstance(load, float) else load
    lines = [
        f"# Latency: {m.get('arch')} {m.get('model_kwargs') or ''} at {m.get('input_size')}×{m.get('input_size')}",
        "",
        f"- {result.get('created')}; CPU {env.get('cpu')} ({env.get('physical_cores')} physical cores), GPU "
        f"{env.get('gpu') or 'none'}; load average (1 min) at start {load}",
        f"- torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, "
        f"TensorRT {env.get('tensorrt') or 'not installed'}; "
        f"augkd {env.get('augkd_version')} (git {env.get('git_sha')})",
        f"- threads {s.get('threads')} (torch and ONNX Runtime intra-op), warm-up {s.get('warmup')}, "
        + (f"{s.get('duration')} s per cell" if s.get("duration") else f"{s.get('iters')} timed iterations per cell"),
        "",
        "| backend | batch | p50 ms | p90 ms | p99 ms | mean ms | samples/s | provider | threads | note |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in result.get("rows", []):
        lines.append(
            f"| {r['backend']} | {r['batch_size']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['mean_ms']:.3f} | {r['throughput']:.1f} | {r.get('provider') or '–'} | {r.get('threads') or '–'} | "
            f"{r.get('note') or ''} |"
        )
    if result.get("notes"):
        lines += ["", *[f"- {n}" for n in result["notes"]]]
    return "\n".join(lines) + "\n"


def latency_chart(result: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """A PNG (matplotlib Agg): p50 latency (log scale) and throughput, one bar per backend in each batch group."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from augkd.utils import atomic_write

    rows = result.get("rows", [])
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    batches = sorted({r["batch_size"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(backends))
    for i, name in enumerate(backends):
        by_b = {r["batch_size"]: r for r in rows if r["backend"] == name}
        xs = [j + i * width for j, b in enumerate(batches) if b in by_b]
        axes[0].bar(xs, [by_b[b]["p50_ms"] for b in batches if b in by_b], width, label=name)
        axes[1].bar(xs, [by_b[b]["throughput"] for b in batches if b in by_b], width, label=name)
    for ax, ylabel in zip(axes, ("p50 latency (ms, log)", "throughput (samples/s)"), strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(batches))], [f"batch {b}" for b in batches])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    m, env = result.get("model", {}), result.get("environment", {})
    fig.suptitle(
        title
        or (
            f"{m.get('arch')} {m.get('input_size')}px — {env.get('cpu')}, "
            f"{result.get('settings', {}).get('threads')} threads"
        ),
        fontsize=10,
    )
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return out
