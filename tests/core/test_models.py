import os
import pickle

import pytest
import torch

from augkd.checkpoint import ModelMeta, load_model, save_model
from augkd.errors import ConfigError, InputError
from augkd.models import create_model, list_models
from augkd.models.generative import AnchorNet, Encoder, Generator


def _n(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "arch", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "efficientnet_b0", "cnn_small"]
)
def test_registry_builds_classifiers(arch):
    m = create_model(arch, num_classes=7).eval()
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_registry_lists_and_rejects_unknown():
    names = list_models()
    assert {"ccexam-svhn", "mobilenet_v3_large", "resnet34", "resnet50", "augkd_generator"} <= set(names)
    assert list_models("resnet*") == ["resnet18", "resnet34", "resnet50"]
    with pytest.raises(ConfigError, match="unknown architecture 'resnet_34'.*did you mean 'resnet34'"):
        create_model("resnet_34")
    with pytest.raises(ConfigError, match="10 classes"):
        create_model("ccexam-svhn", num_classes=31)


def test_mobilenet_width_mult():
    assert _n(create_model("mobilenet_v3_small", 10, width_mult=0.5)) < _n(create_model("mobilenet_v3_small", 10))


def test_ccexam_teacher_is_pretrained():
    from augkd.data import load_dataset
    from augkd.evaluate import accuracy
    from augkd.models.teacher import FrozenTeacher

    net, meta = load_model("ccexam-svhn")
    assert _n(net) == 815018 and meta.input_size == 32
    t = FrozenTeacher(net, meta.mean, meta.std, meta.input_size)
    ds = load_dataset("digits", 32)
    acc = accuracy(t, ds.subset(list(range(400))), 400)
    assert acc["acc1"] > 0.4  # real SVHN weights transfer to digits far above chance (0.1)


def test_generative_parameter_counts_match_official():
    assert _n(Generator(100, 32, 256)) == 2026051
    assert _n(Encoder(31, 100, 32, 64)) == 3681884
    assert _n(AnchorNet(31, 100)) == 74052


@pytest.mark.parametrize("size", [28, 32, 64, 224])
def test_generator_encoder_shapes_and_ranges(size):
    g, e = Generator(16, size, 32), Encoder(10, 16, size, 8)
    x = g(torch.randn(3, 16))
    assert x.shape == (3, 3, size, size) and x.min() >= 0 and x.max() <= 1
    z, mu, logvar = e(x, torch.tensor([0, 1, 2]))
    assert z.shape == mu.shape == (3, 16) and logvar.min() >= -5 and logvar.max() <= 3
    e.eval()
    assert torch.equal(e(x, torch.tensor([0, 1, 2]))[0], e(x, torch.tensor([0, 1, 2]))[0])  # eval → μ


def test_encoder_sample_override():
    """``sample=True`` draws z ~ q(z|x, y) in eval mode (modules 2/3 ``encoder_z: sample``); False gives μ."""
    torch.manual_seed(0)
    e, y = Encoder(10, 16, 32, 8).eval(), torch.tensor([0, 1, 2, 3])
    x = torch.rand(4, 3, 32, 32)
    z0, mu, logvar = e(x, y)
    assert torch.equal(z0, mu)
    z1, mu1, _ = e(x, y, sample=True)
    z2, _, _ = e(x, y, sample=True)
    assert torch.equal(mu1, mu) and not torch.allclose(z1, z2)
    # a draw is μ + σ·ε: its standardised residual is a plausible N(0, 1) sample
    eps = (z1 - mu) / torch.exp(0.5 * logvar)
    assert eps.abs().max() <= 10 and 0.5 < eps.std() < 1.5
    assert torch.equal(e.train()(x, y, sample=False)[0], e(x, y)[1])


def test_anchor_mask_range_and_class_dependence():
    a = AnchorNet(5, 12)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    z = torch.randn(8, 12)
    z_a, m = a(z, y)
    assert z_a.shape == z.shape and (m >= 0).all() and (m <= 1).all()
    a.eval()
    _, m1 = a(torch.randn(8, 12), y)
    _, m2 = a(torch.randn(8, 12), y)
    assert torch.equal(m1, m2) and torch.equal(m1[0], m1[5])  # depends on y only
    off = AnchorNet(5, 12, mask="official").eval()
    assert off(z, y)[1].max() < 1 / 3


def test_checkpoint_round_trip(tmp_path):
    m = create_model("cnn_small", 4, width=8).eval()
    meta = ModelMeta(arch="cnn_small", num_classes=4, model_kwargs={"width": 8}, class_names=list("abcd"))
    p = save_model(m, tmp_path / "s.safetensors", meta)
    assert p.with_suffix(".json").is_file()
    m2, meta2 = load_model(p)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(m(x), m2(x)) and meta2.class_names == list("abcd")
    torch.save(m.state_dict(), tmp_path / "plain.pt")
    m3, _ = load_model(tmp_path / "plain.pt", arch="cnn_small", num_classes=4, width=8)
    assert torch.equal(m(x), m3(x))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"w": _Evil()}, fh)
    with pytest.raises(InputError, match="refusing to load"):
        load_model(tmp_path / "evil.pt", arch="cnn_tiny", num_classes=10)
    assert not (tmp_path / "pwned_by_pickle").exists()


def test_corrupt_and_missing_checkpoints(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "c.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="not a readable safetensors"):
        load_model(tmp_path / "c.safetensors")
    m = create_model("cnn_tiny", 10)
    p = save_model(m, tmp_path / "w.safetensors", ModelMeta(arch="cnn_small", num_classes=10))
    with pytest.raises(InputError, match="do not fit architecture"):
        load_model(p)


def test_bn_momentum_override():
    m = create_model("mobilenet_v3_small", 10, width_mult=0.5, bn_momentum=0.1)
    moms = {x.momentum for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)}
    assert moms == {0.1}
    assert {
        x.momentum for x in create_model("mobilenet_v3_small", 10).modules() if isinstance(x, torch.nn.BatchNorm2d)
    } == {0.01}


def test_generator_channels_last_is_the_same_function():
    """A channels_last generator gives the same images (its first activation is made channels_last too)."""
    from augkd.models import create_model

    g = create_model("augkd_generator", latent_dim=16, image_size=32, width=32).eval()
    z = torch.randn(4, 16)
    ref = g(z)
    g.to(memory_format=torch.channels_last)
    out = g(z)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_keep_fp32_runs_outside_autocast_and_keeps_weights():
    """train.fp32_nets: the net computes in fp32 under bf16 autocast; state_dict and deep copies unaffected."""
    import copy

    from augkd.models import create_model
    from augkd.training.engine import keep_fp32

    net = create_model("cnn_tiny", 10, width=8).eval()
    keys = list(net.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert net(x).dtype == torch.bfloat16
        keep_fp32(net)
        out = net(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(x.bfloat16().float()), atol=0.0, rtol=0.0)  # same fp32 math
    assert list(net.state_dict()) == keys
    twin = copy.deepcopy(net)
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert twin(x).dtype == torch.float32
    assert not torch.equal(twin(x), net(x))  # the copy's forward is bound to the copy
    lin = keep_fp32(torch.nn.Linear(4, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(input=torch.rand(3, 4).bfloat16()).dtype == torch.float32  # keyword inputs are cast too


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hw", [(4, 4), (5, 7), (1, 1)])
def test_upsample_conv_matches_upsample_then_conv(channels_last, bias, hw):
    """UpsampleConv2d (four 2×2 phase kernels) = nearest ×2 then the 3×3 conv: values and both gradients."""
    from augkd.models.generative import UpsampleConv2d

    torch.manual_seed(0)
    m = UpsampleConv2d(6, 5, bias=bias).double()
    if bias:
        torch.nn.init.normal_(m.bias)
    x = torch.randn(3, 6, *hw, dtype=torch.float64, requires_grad=True)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    out = m(xin)
    ref = torch.nn.functional.conv2d(
        torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), m.weight, m.bias, padding=1
    )
    assert out.shape == (3, 5, 2 * hw[0], 2 * hw[1])
    assert out.is_contiguous(memory_format=torch.channels_last) == (channels_last and hw != (1, 1))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(out, [x, m.weight], g)
    want = torch.autograd.grad(ref, [x, m.weight], g)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_frozen_teacher_folds_bn_only_without_autograd():
    """No-grad calls run the conv–BN-folded copy (same logits up to rounding, no BN left, no state_dict entry);
    calls with autograd run the original net, so BN hooks fire and gradients reach the input."""
    from augkd.checkpoint import load_model
    from augkd.models.teacher import FrozenTeacher

    net, _ = load_model("ccexam-svhn")
    t = FrozenTeacher(net, (0.5,) * 3, (0.5,) * 3, 32)
    keys = set(t.state_dict())
    seen = []
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.register_forward_hook(lambda *a: seen.append(1))
    x = torch.rand(6, 3, 32, 32, requires_grad=True)
    with_grad = t(x)
    assert seen and x.grad is None
    with_grad.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    seen.clear()
    with torch.no_grad():
        folded = t(x)
    assert not seen  # the folded copy has no BN layers
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in t.folded().modules())
    torch.testing.assert_close(folded, with_grad.detach(), rtol=1e-4, atol=1e-4)
    assert set(t.state_dict()) == keys
    # changed weights (load_state_dict on the wrapper or the inner net) are refolded, not served stale
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    for k in sd:
        if k.endswith("running_mean"):
            sd[k] += 0.5
    net.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(t(x), t.net(t.norm(x)), rtol=1e-4, atol=1e-4)
    t.double()  # moving the teacher refolds from the moved network
    with torch.no_grad():
        assert t(x.double()).dtype == torch.float64


def test_flat_linear_and_head_read_channels_last_maps_in_place():
    """flat_linear/flat_head on a channels_last map = Linear on the (C, H, W) flattening, values and gradients;
    the gradient reaching the map stays channels_last."""
    from augkd.models.layers import flat_head, flat_linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(6 * 3 * 4, 5).double()
    head = torch.nn.Sequential(torch.nn.Dropout(0.3), lin, torch.nn.ReLU())
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(flat_linear(x, lin), lin(torch.flatten(x, 1)))
    torch.testing.assert_close(flat_head(x, head.eval()), head(torch.flatten(x, 1)))
    for fn in (lambda t: flat_linear(t, lin), lambda t: flat_head(t, head.eval())):
        ref_in = x.clone().requires_grad_()
        ref = fn(ref_in)
        cl_in = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        out = fn(cl_in)
        torch.testing.assert_close(out, ref)
        g = torch.randn_like(out)
        (gr,) = torch.autograd.grad(ref, ref_in, g)
        (gc,) = torch.autograd.grad(out, cl_in, g)
        torch.testing.assert_close(gc, gr)
        assert gc.is_contiguous(memory_format=torch.channels_last)
    head.train()
    big = torch.ones(64, 6, 3, 4).contiguous(memory_format=torch.channels_last)
    ident = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(72, 72, bias=False))
    torch.nn.init.eye_(ident[1].weight)
    zeros = float((flat_head(big, ident) == 0).float().mean())
    assert 0.4 < zeros < 0.6  # dropout still applied in training mode


def test_encoder_and_svhn_teacher_same_function_channels_last():
    from augkd.checkpoint import load_model

    enc = Encoder(10, latent_dim=8, image_size=32, width=8).eval()
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 4, 9])
    ref = enc(x, y)[1]
    out = enc.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last), y)[1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    net, _ = load_model("ccexam-svhn")
    ref = net(x)
    out = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_adam_helper_keeps_param_groups_from_generators():
    from augkd.training.engine import adam

    net = torch.nn.Linear(3, 2)
    opt = adam([{"params": net.parameters(), "lr": 0.1}])
    assert len(opt.param_groups[0]["params"]) == 2 and opt.param_groups[0]["lr"] == 0.1
    assert opt.defaults["fused"] is True


@pytest.mark.parametrize("channels_last", [False, True])
def test_flat_linears_is_the_separate_linears_in_one_product(channels_last):
    """flat_linears(x, a, b) = (a(flatten x), b(flatten x)), values and gradients (inputs and all weights);
    a Linear without bias mixes with one that has one."""
    from augkd.models.layers import flat_linears

    torch.manual_seed(0)
    a, b = torch.nn.Linear(72, 5).double(), torch.nn.Linear(72, 3, bias=False).double()
    x = torch.randn(4, 6, 3, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = flat_linears(x1, a, b)
    assert ya.shape == (4, 5) and yb.shape == (4, 3)
    ra, rb = a(torch.flatten(x2, 1)), b(torch.flatten(x2, 1))
    torch.testing.assert_close(ya, ra)
    torch.testing.assert_close(yb, rb)
    ga, gb = torch.randn_like(ya), torch.randn_like(yb)
    params = [x1, a.weight, a.bias, b.weight]
    got = torch.autograd.grad((ya * ga).sum() + (yb * gb).sum(), params)
    want = torch.autograd.grad((ra * ga).sum() + (rb * gb).sum(), [x2, a.weight, a.bias, b.weight])
    for g1, g2 in zip(got, want, strict=True):
        torch.testing.assert_close(g1, g2)
