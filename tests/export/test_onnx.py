"""ONNX export: both exporters, the architectures augkd students use, dynamic batch, preprocessing/softmax graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from augkd.errors import InputError  # noqa: E402
from augkd.export.onnx import export_onnx, onnx_metadata  # noqa: E402
from augkd.models import create_model  # noqa: E402

pytestmark = pytest.mark.export

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

# (arch, kwargs, exporter): every architecture family with both exporters, kept small (32×32).
_MODELS = [
    ("mobilenet_v3_small", {"width_mult": 0.5}, "dynamo"),  # hardswish / hardsigmoid
    ("mobilenet_v3_small", {"width_mult": 0.5}, "legacy"),
    ("resnet18", {}, "dynamo"),
    ("resnet18", {}, "legacy"),
    ("cnn_small", {"width": 8}, "dynamo"),
    ("cnn_small", {"width": 8}, "legacy"),
    ("cnn_tiny", {}, "dynamo"),
    ("cnn_tiny", {}, "legacy"),
]


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm layers non-trivial running statistics, as a trained model has."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.mark.parametrize("arch, kwargs, exporter", _MODELS)
def test_export_onnx_matches_torch_dynamic_batch(tmp_path, arch, kwargs, exporter):
    model = _bn_stats(create_model(arch, 10, **kwargs))
    path = tmp_path / "m.onnx"
    info = export_onnx(model, path, 32, mean=MEAN, std=STD, exporter=exporter, class_names=list("abcdefghij"))
    assert info.exporter == exporter and info.fallback_reason is None
    assert info.input_shape[0] == "batch" and info.input_shape[1:] == [3, 32, 32]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = _session(path)
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = model(x)
        out = sess.run(None, {"input": x.numpy()})[0]
        assert out.shape == (batch, 10)
        torch.testing.assert_close(torch.from_numpy(out), ref, atol=1e-4, rtol=1e-4)
        assert (out.argmax(1) == ref.argmax(1).numpy()).all()


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_export_onnx_preprocessing_and_softmax(tmp_path, exporter):
    """uint8 images in, probabilities out: the graph does cast → /255 → (x − mean)/std and softmax itself."""
    model = _bn_stats(create_model("mobilenet_v3_small", 10, width_mult=0.5))
    path = tmp_path / "pre.onnx"
    info = export_onnx(model, path, 32, mean=MEAN, std=STD, with_preprocessing=True, softmax=True, exporter=exporter)
    assert info.input_dtype == "uint8" and info.output_name == "probabilities"
    sess = _session(path)
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # The reference applies the documented preprocessing by hand, independently of the export wrapper.
    x = (images.float() / 255.0 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = torch.softmax(model(x), dim=1)
    out = torch.from_numpy(sess.run(None, {"input": images.numpy()})[0])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.sum(1), torch.ones(5), atol=1e-5, rtol=0)


def test_export_onnx_metadata(tmp_path):
    model = create_model("cnn_tiny", 3).eval()
    path = tmp_path / "m.onnx"
    export_onnx(
        model,
        path,
        16,
        mean=MEAN,
        std=STD,
        exporter="legacy",
        class_names=["cat", "dog", "eel"],
        metadata={"augkd.arch": "cnn_tiny"},
    )
    meta = onnx_metadata(path)
    assert json.loads(meta["augkd.class_names"]) == ["cat", "dog", "eel"]
    assert meta["augkd.input_size"] == "16" and meta["augkd.arch"] == "cnn_tiny"
    assert json.loads(meta["augkd.mean"]) == MEAN and json.loads(meta["augkd.std"]) == STD
    assert meta["augkd.version"] and meta["augkd.exporter"] == "legacy"
    assert meta["augkd.input_format"].startswith("float32")


def test_export_onnx_auto_records_fallback(tmp_path, monkeypatch):
    """When the dynamo exporter fails, auto mode uses the legacy exporter and records why."""
    import augkd.export.onnx as onnx_mod

    def broken(*args, **kwargs):
        raise RuntimeError("simulated dynamo failure\nsecond line")

    monkeypatch.setattr(onnx_mod, "_export_dynamo", broken)
    model = create_model("cnn_tiny", 10).eval()
    info = export_onnx(model, tmp_path / "m.onnx", 16, exporter="auto")
    assert info.exporter == "legacy"
    assert info.fallback_reason == "dynamo: RuntimeError: simulated dynamo failure"
    with pytest.raises(Exception, match="ONNX export failed"):
        export_onnx(model, tmp_path / "n.onnx", 16, exporter="dynamo")


def test_export_onnx_simplify_counts(tmp_path):
    model = _bn_stats(create_model("cnn_small", 10, width=8))
    info = export_onnx(model, tmp_path / "m.onnx", 32, exporter="legacy", simplify=True)
    raw = export_onnx(model, tmp_path / "raw.onnx", 32, exporter="legacy", simplify=False)
    assert raw.simplify_note == "disabled" and raw.nodes_final == raw.nodes_exported
    assert info.simplified and info.nodes_final <= info.nodes_exported
    assert info.nodes_final == len(onnx.load(str(tmp_path / "m.onnx")).graph.node)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"opset": 16}, "opset 16 is too old"),
        ({"exporter": "jit"}, "unknown ONNX exporter 'jit'"),
        ({"with_preprocessing": True}, "needs the model's mean and std"),
    ],
)
def test_export_onnx_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        export_onnx(create_model("cnn_tiny", 10), tmp_path / "m.onnx", 16, **kwargs)


def test_onnx_metadata_of_a_non_onnx_file(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not a readable ONNX file"):
        onnx_metadata(bad)
