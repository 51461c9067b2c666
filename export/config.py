"""``ExportConfig``: the options of one ``augkd export`` / :func:`~augkd.export.export_model` call, typed and validated.

Pydantic v2 models in the style of the distill config (``augkd.config``): unknown keys are errors, values are
coerced to the field type or rejected, and the models are frozen. :func:`build_export_config` validates a plain
(nested) mapping and turns the first problem into a one-line :class:`~augkd.errors.ConfigError` that names the
``augkd export`` option to change, as the CLI prints it::

    cfg = build_export_config({"formats": "onnx,ort-int8", "checks": {"atol": 1e-4}, "int8": {"method": "entropy"}})
    report = export_model("runs/demo", cfg)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from augkd.errors import ConfigError, InputError
from augkd.export.onnx import DEFAULT_OPSET, EXPORTERS, MIN_OPSET
from augkd.export.quantize import ACTIVATION_TYPES, CALIBRATION_METHODS, QUANT_FORMATS

__all__ = [
    "DEFAULT_FORMATS",
    "EXPORT_FORMATS",
    "ChecksOptions",
    "ExportConfig",
    "Int8Options",
    "LatencyOptions",
    "OnnxOptions",
    "TensorRTOptions",
    "build_export_config",
    "parse_formats",
]

EXPORT_FORMATS = ("onnx", "ort-int8", "tensorrt-fp16", "tensorrt-int8")
DEFAULT_FORMATS = ("onnx", "ort-int8")


def parse_formats(formats: str | Sequence[str] | None) -> list[str]:
    """Validated formats (``"onnx,ort-int8"`` or a list); ``onnx`` always comes first (the others derive from it)."""
    from augkd.export.latency import parse_list

    names = parse_list(formats, EXPORT_FORMATS, "export format") if formats else list(DEFAULT_FORMATS)
    return ["onnx"] + [f for f in names if f != "onnx"]


def _one_of(value: Any, allowed: Sequence[str], what: str) -> Any:
    """``value`` when it is one of ``allowed``; else the message the export steps have always given."""
    if isinstance(value, str) and value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")
    return value


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class OnnxOptions(_Base):
    """How the fp32 ONNX graph is exported."""

    exporter: Literal["auto", "dynamo", "legacy"] = "auto"  # auto: dynamo, the legacy fallback recorded
    opset: int = DEFAULT_OPSET
    with_preprocessing: bool = False  # the graph takes uint8 images and normalises them itself
    softmax: bool = False  # the graph outputs probabilities
    simplify: bool = True  # run onnxslim

    @field_validator("exporter", mode="before")
    @classmethod
    def _exporter(cls, v: Any) -> Any:
        return _one_of(v, EXPORTERS, "ONNX exporter")

    @field_validator("opset")
    @classmethod
    def _opset(cls, v: int) -> int:
        if v < MIN_OPSET:
            raise ValueError(f"ONNX opset {v} is too old: use --opset {MIN_OPSET} or newer")
        return v


class ChecksOptions(_Base):
    """The parity and accuracy gates, and the test images they run on."""

    atol: float = 1e-4  # fp32 parity: largest allowed max |Δ output| against PyTorch
    min_agreement: float = 0.999  # fp32 parity: smallest allowed top-1 agreement (fraction)
    max_acc_drop: float = 1.0  # largest Acc@1 drop (points) of reduced-precision artifacts against fp32 ONNX
    parity_samples: int | None = None  # test images (None: the whole test split, capped at PARITY_CAP)

    @field_validator("atol")
    @classmethod
    def _atol(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"--atol must be >= 0, got {v}")
        return v

    @field_validator("min_agreement")
    @classmethod
    def _min_agreement(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"--min-agreement is a fraction in [0, 1], got {v}")
        return v

    @field_validator("max_acc_drop")
    @classmethod
    def _max_acc_drop(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"--max-acc-drop must be >= 0 points, got {v}")
        return v

    @field_validator("parity_samples")
    @classmethod
    def _parity_samples(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"--parity-samples must be >= 1, got {v}")
        return v


class Int8Options(_Base):
    """Static int8: the calibration images (ONNX Runtime and TensorRT) and ONNX Runtime's quantiser settings."""

    calibration: int = 256  # training images for int8 calibration
    method: Literal["minmax", "percentile", "entropy"] = "minmax"  # ONNX Runtime calibration method
    activation_type: Literal["uint8", "int8"] = "uint8"
    quant_format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True  # per-channel int8 weights
    exclude_first_last: bool = False  # keep the first and last Conv/Gemm in float

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"--calibration must be >= 1 image, got {v}")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        return _one_of(v, CALIBRATION_METHODS, "calibration method")

    @field_validator("activation_type", mode="before")
    @classmethod
    def _activation_type(cls, v: Any) -> Any:
        return _one_of(v, ACTIVATION_TYPES, "activation type")

    @field_validator("quant_format", mode="before")
    @classmethod
    def _quant_format(cls, v: Any) -> Any:
        return _one_of(v, QUANT_FORMATS, "quantisation format")

    def quantize_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~augkd.export.quantize.quantize_ort_int8` these options set."""
        return self.model_dump(exclude={"calibration"})


class TensorRTOptions(_Base):
    """TensorRT engines."""

    max_batch: int = Field(256, ge=1)  # largest batch of the optimisation profile


class LatencyOptions(_Base):
    """The quick latency measurement of every artifact (and torch eager) after the checks."""

    enabled: bool = True
    batches: tuple[int, ...] = (1, 32)
    iters: int = Field(30, ge=1)  # timed iterations per backend × batch

    @field_validator("batches")
    @classmethod
    def _batches(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(b < 1 for b in v):
            raise ValueError(f"latency batch sizes must be >= 1, got {list(v)}")
        return v


class ExportConfig(_Base):
    """Everything ``augkd export`` needs besides the source and the output folder."""

    formats: tuple[str, ...] = DEFAULT_FORMATS  # parsed: known names, ``onnx`` first, no repeats
    data: str | None = None  # student-domain dataset when the checkpoint records none
    threads: int | None = Field(None, ge=1)  # torch and ONNX Runtime intra-op threads (None: physical cores)
    onnx: OnnxOptions = OnnxOptions()
    checks: ChecksOptions = ChecksOptions()
    int8: Int8Options = Int8Options()
    tensorrt: TensorRTOptions = TensorRTOptions()
    latency: LatencyOptions = LatencyOptions()

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> tuple[str, ...]:
        try:
            return tuple(parse_formats(v))
        except InputError as exc:  # the same message, reported by build_export_config as a ConfigError
            raise ValueError(str(exc)) from None

    @property
    def needs_tensorrt(self) -> bool:
        return any(f.startswith("tensorrt") for f in self.formats)

    def report_options(self, threads: int) -> dict[str, Any]:
        """The ``options`` section of ``export_report.json`` (``threads``: the count really used)."""
        o, c, q = self.onnx, self.checks, self.int8
        return {
            "formats": list(self.formats),
            "exporter": o.exporter,
            "opset": o.opset,
            "with_preprocessing": o.with_preprocessing,
            "softmax": o.softmax,
            "simplify": o.simplify,
            "atol": c.atol,
            "min_agreement": c.min_agreement,
            "max_acc_drop": c.max_acc_drop,
            "threads": threads,
            "calibration": q.calibration,
            **q.quantize_kwargs(),
        }


def _unknown_key(exc: ValidationError) -> str | None:
    """The house message for an unknown key (with the closest valid one), or None."""
    err = exc.errors()[0]
    if err["type"] != "extra_forbidden":
        return None
    *parent, key = (str(p) for p in err["loc"])
    model: type[BaseModel] = ExportConfig
    for name in parent:
        model = model.model_fields[name].annotation  # type: ignore[assignment]
    names = list(model.model_fields)
    close = difflib.get_close_matches(key, names, n=1)
    full = ".".join([*parent, key])
    hint = f"; did you mean {'.'.join([*parent, close[0]])!r}?" if close else f"; valid keys: {', '.join(names)}"
    return f"unknown export option {full!r}{hint}"


def _one_line(exc: ValidationError) -> str:
    """The first validation problem as one line: our own checks' messages verbatim, pydantic's with the key."""
    unknown = _unknown_key(exc)
    if unknown is not None:
        return unknown
    err = exc.errors()[0]
    if err["type"] == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err["loc"])
    given = err.get("input")
    given_s = "" if isinstance(given, Mapping) else f" (got {given!r})"
    return f"invalid export option {loc}: {err['msg']}{given_s}"


def build_export_config(options: Mapping[str, Any] | ExportConfig | None = None) -> ExportConfig:
    """Validate ``options`` (a nested mapping, keys as in :class:`ExportConfig`); problems become one ConfigError.

    Missing keys take their defaults; an :class:`ExportConfig` is returned as it is.
    """
    if isinstance(options, ExportConfig):
        return options
    try:
        return ExportConfig.model_validate(dict(options or {}))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc
