"""PyTorch → ONNX: the dynamo exporter with a recorded legacy fallback, checked, shape-inferred, simplified.

The graph takes a dynamic batch (``input`` ``[batch, C, S, S]``) and returns ``logits`` ``[batch, classes]``
(or ``probabilities`` with ``softmax=True``). With ``with_preprocessing=True`` it takes uint8 RGB images at the
model's input size and normalises them inside the graph (cast → /255 → (x − mean) / std; no resize).
Class names, input size, mean/std and the augkd version go into the model's ``metadata_props``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from augkd.errors import InputError, MissingDependencyError
from augkd.export.errors import ExportError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

__all__ = ["EXPORTERS", "ExportWrapper", "OnnxExportInfo", "export_onnx", "onnx_metadata", "count_nodes"]

EXPORTERS = ("auto", "dynamo", "legacy")
MIN_OPSET = 17
DEFAULT_OPSET = 18
INPUT_NAME = "input"


class ExportWrapper(nn.Module):
    """The exported module: optional in-graph preprocessing, the model, optional softmax.

    With ``mean``/``std`` given, the input is a uint8 image batch ``[N, C, S, S]`` and the graph computes
    ``(x.float() / 255 − mean) / std`` before the model. With ``softmax=True`` it returns probabilities.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, model: nn.Module, mean: list[float] | None = None, std: list[float] | None = None, softmax: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.softmax = softmax
        self.preprocess = mean is not None and std is not None
        if self.preprocess:
            assert mean is not None and std is not None
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess:
            x = (x.to(torch.float32) / 255.0 - self.mean) / self.std
        y = self.model(x)
        return torch.softmax(y, dim=1) if self.softmax else y


@dataclass
class OnnxExportInfo:
    """What :func:`export_onnx` did, for the export report."""

    path: str
    exporter: str  # "dynamo" or "legacy": the one that produced the file
    requested_exporter: str
    fallback_reason: str | None
    opset: int
    nodes_exported: int  # after the exporter (and its own optimiser)
    nodes_final: int  # after onnxslim
    simplified: bool
    simplify_note: str | None
    input_name: str
    output_name: str
    input_dtype: str  # "float32" or "uint8"
    input_shape: list[int | str]
    with_preprocessing: bool
    softmax: bool
    export_seconds: float
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_nodes(model: onnx.ModelProto) -> int:
    """Nodes in the main graph plus the nodes of its local functions (the dynamo exporter may emit some)."""
    return len(model.graph.node) + sum(len(f.node) for f in model.functions)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")[:300]


def _export_dynamo(module: nn.Module, example: torch.Tensor, opset: int, output_name: str) -> onnx.ModelProto:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as exc:
        raise MissingDependencyError("the dynamo ONNX exporter needs onnxscript: pip install onnxscript") from exc
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
            optimize=True,
        )
    if program is None:
        raise ExportError("the dynamo exporter returned no program")
    return program.model_proto


def _export_legacy(module: nn.Module, example: torch.Tensor, opset: int, output_name: str) -> onnx.ModelProto:
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory(prefix="augkd-onnx-") as tmp:
        path = Path(tmp) / "legacy.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[output_name],
                dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
                do_constant_folding=True,
            )
        return onnx.load(str(path))


def _check(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` (full check) then strict shape inference; returns the shape-inferred model."""
    import onnx

    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    try:
        import onnxslim
    except ImportError:
        return model, "onnxslim not installed: pip install onnxslim"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model)
        return _check(slim), None
    except Exception as exc:  # onnxslim is best effort: keep the checked graph and say why
        logger.warning("onnxslim failed, keeping the unsimplified graph: %s", _first_line(exc))
        return model, f"onnxslim failed: {_first_line(exc)}"


def _run_exporter(name: str, module: nn.Module, example: torch.Tensor, opset: int, output_name: str) -> onnx.ModelProto:
    fn = _export_dynamo if name == "dynamo" else _export_legacy
    with torch.no_grad():
        model = fn(module, example, opset, output_name)
    return _check(model)


def _input_shape(model: onnx.ModelProto) -> list[int | str]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def export_onnx(
    model: nn.Module, path: str | Path, input_size: int, *, in_chans: int = 3, mean: list[float] | None = None,
    std: list[float] | None = None, with_preprocessing: bool = False, softmax: bool = False, exporter: str = "auto",
    opset: int = DEFAULT_OPSET, simplify: bool = True, class_names: list[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> OnnxExportInfo:  # fmt: skip
    """Export ``model`` (taking normalised float NCHW input) to an ONNX file with a dynamic batch axis.

    Args:
        model: the classifier; put in ``eval()`` mode here.
        path: the ``.onnx`` file to write (atomically).
        input_size: image side S of the ``[batch, in_chans, S, S]`` input.
        in_chans: input channels.
        mean: per-channel mean the model was trained with (needed for ``with_preprocessing``, stored in metadata).
        std: per-channel std, as ``mean``.
        with_preprocessing: bake normalisation into the graph; the input becomes uint8 images.
        softmax: output probabilities instead of logits.
        exporter: ``"dynamo"``, ``"legacy"`` or ``"auto"`` (dynamo, then legacy with the reason recorded).
        opset: ONNX opset (≥ 17).
        simplify: run onnxslim after export (node counts before/after are reported).
        class_names: stored in the metadata as a JSON list.
        metadata: extra ``metadata_props`` entries.

    Returns:
        An :class:`OnnxExportInfo` with the exporter used, the fallback reason and node counts.
    """
    _check_export_args(exporter, opset, with_preprocessing, mean, std)
    mean_c = list(mean)[:in_chans] if mean is not None else None
    std_c = list(std)[:in_chans] if std is not None else None
    model = model.eval()
    module = ExportWrapper(
        model, mean_c if with_preprocessing else None, std_c if with_preprocessing else None, softmax
    ).eval()
    output_name = "probabilities" if softmax else "logits"
    example = _example_input(in_chans, input_size, with_preprocessing)

    t0 = time.perf_counter()
    proto, used, fallback_reason = _export_first_that_works(exporter, module, example, opset, output_name)
    nodes_exported = count_nodes(proto)
    simplify_note: str | None = "disabled"
    if simplify:
        proto, simplify_note = _simplify(proto)

    meta = _graph_metadata(used, input_size, in_chans, with_preprocessing, output_name, class_names, mean_c, std_c)
    meta.update(metadata or {})
    path = _save_graph(proto, meta, Path(path))
    info = OnnxExportInfo(
        path=str(path), exporter=used, requested_exporter=exporter, fallback_reason=fallback_reason, opset=opset,
        nodes_exported=nodes_exported, nodes_final=count_nodes(proto), simplified=simplify and simplify_note is None,
        simplify_note=simplify_note, input_name=INPUT_NAME, output_name=output_name,
        input_dtype="uint8" if with_preprocessing else "float32", input_shape=_input_shape(proto),
        with_preprocessing=with_preprocessing, softmax=softmax, export_seconds=time.perf_counter() - t0, metadata=meta,
    )  # fmt: skip
    logger.info("ONNX (%s exporter, opset %d): %d → %d nodes after onnxslim, %s", used, opset, nodes_exported,
                info.nodes_final, path)  # fmt: skip
    return info


def _save_graph(proto: onnx.ModelProto, meta: dict[str, str], path: Path) -> Path:
    """Set the graph's metadata and producer, then write it to ``path`` atomically."""
    import onnx

    from augkd.utils import atomic_write, augkd_version

    onnx.helper.set_model_props(proto, meta)
    proto.producer_name, proto.producer_version = "augkd", augkd_version()
    atomic_write(path, lambda p: onnx.save_model(proto, str(p)))
    return path


def _check_export_args(
    exporter: str, opset: int, with_preprocessing: bool, mean: list[float] | None, std: list[float] | None
) -> None:
    if exporter not in EXPORTERS:
        raise InputError(f"unknown ONNX exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
    if opset < MIN_OPSET:
        raise InputError(f"ONNX opset {opset} is too old: use --opset {MIN_OPSET} or newer")
    if with_preprocessing and (mean is None or std is None):
        raise InputError("--with-preprocessing needs the model's mean and std (they are in the checkpoint sidecar)")


def _example_input(in_chans: int, input_size: int, with_preprocessing: bool) -> torch.Tensor:
    """A seeded batch of two inputs to trace with: uint8 images, or normalised floats."""
    dtype = torch.uint8 if with_preprocessing else torch.float32
    gen = torch.Generator().manual_seed(0)
    if with_preprocessing:
        return torch.randint(0, 256, (2, in_chans, input_size, input_size), dtype=dtype, generator=gen)
    return torch.randn(2, in_chans, input_size, input_size, generator=gen)


def _export_first_that_works(
    exporter: str, module: nn.Module, example: torch.Tensor, opset: int, output_name: str
) -> tuple[onnx.ModelProto, str, str | None]:
    """(graph, exporter used, why the first one failed): ``auto`` tries dynamo, then legacy."""
    order = ["dynamo", "legacy"] if exporter == "auto" else [exporter]
    reasons: list[str] = []
    proto: onnx.ModelProto | None = None
    used = order[0]
    for name in order:
        try:
            proto = _run_exporter(name, module, example, opset, output_name)
            used = name
            break
        except Exception as exc:  # any exporter failure: record it, try the next one
            reasons.append(f"{name}: {_first_line(exc)}")
            logger.warning("%s ONNX exporter failed: %s", name, _first_line(exc))
    if proto is None:
        raise ExportError(f"ONNX export failed ({'; '.join(reasons)}); try --exporter legacy or --opset 17")
    return proto, used, reasons[0] if reasons else None


def _graph_metadata(
    used: str,
    input_size: int,
    in_chans: int,
    with_preprocessing: bool,
    output_name: str,
    class_names: list[str] | None,
    mean_c: list[float] | None,
    std_c: list[float] | None,
) -> dict[str, str]:
    """The ``augkd.*`` ``metadata_props`` of an exported graph."""
    from augkd.utils import augkd_version

    return {
        "augkd.version": augkd_version(),
        "augkd.exporter": used,
        "augkd.input_size": str(input_size),
        "augkd.in_chans": str(in_chans),
        "augkd.input_format": (
            "uint8 NCHW RGB 0-255, normalised inside the graph"
            if with_preprocessing
            else "float32 NCHW, (x/255 - mean)/std"
        ),
        "augkd.output": output_name,
        "augkd.class_names": json.dumps(class_names or []),
        "augkd.num_classes": str(len(class_names) if class_names else ""),
        "augkd.mean": json.dumps(mean_c),
        "augkd.std": json.dumps(std_c),
    }


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (weights are not loaded)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{str(path)!r} is not a readable ONNX file ({_first_line(exc)})") from exc
    return {p.key: p.value for p in proto.metadata_props}
