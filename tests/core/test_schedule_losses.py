import pytest
import torch

from augkd.config import Module1Config
from augkd.models import create_model
from augkd.training.losses import BNStatsHook, generator_loss, mask_penalty
from augkd.training.schedule import cosine_factor, stage_factor, warmup_factor


def test_stage_factor_table_from_spec():
    got = [stage_factor(e, 200, a=0.6, b=0.2) for e in (0, 30, 60, 90, 120, 150, 199)]
    assert got == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    assert [stage_factor(e, 200, 0.6, 0.2, "step") for e in (0, 11, 12, 119, 120)] == pytest.approx(
        [0.2, 0.2, 0.28, 0.92, 1.0]
    )


def test_warmup_is_constantlr_defaults():
    assert [warmup_factor(s) for s in range(7)] == pytest.approx([1 / 3] * 5 + [1.0, 1.0])


def test_generator_loss_term_signs():
    cfg = Module1Config()
    t = torch.randn(8, 10, requires_grad=True)
    s = torch.randn(8, 10, requires_grad=True)
    out = generator_loss(t, s, None, cfg)
    assert out["kl"] > 0 and out["ce"] >= 0 and out["balance"] <= 0
    expected = -out["kl"] + out["ce"] + 20 * out["balance"]
    assert torch.allclose(out["loss"], expected)
    # the adversarial term is negated: increasing the T/S gap lowers the loss
    s2 = s.detach() * 3
    assert generator_loss(t, s2, None, cfg)["kl"] > out["kl"]
    # uniform teacher predictions maximise the balance entropy (most negative term)
    flat = generator_loss(torch.zeros(8, 10), s, None, cfg)["balance"]
    peaked = generator_loss(torch.eye(10)[[0] * 8] * 10, s, None, cfg)["balance"]
    assert flat < peaked


def test_bn_hook_vector_length_and_loss():
    r34 = create_model("resnet34", 31)
    assert BNStatsHook(r34).num_channels == 8512  # the spec's count for ResNet-34
    t, meta = __import__("augkd.checkpoint", fromlist=["load_model"]).load_model("ccexam-svhn")
    hook = BNStatsHook(t)
    hook.enabled = True
    t(torch.rand(16, 3, 32, 32))
    loss = hook.loss()
    assert loss.ndim == 0 and loss > 0


def test_mask_penalty_forms():
    m = torch.full((4, 10), 0.75)
    assert mask_penalty(m, 0.25, "per_sample") == pytest.approx(0.0)
    assert mask_penalty(m, 0.25, "batch_total") == pytest.approx(abs(30 - 7.5) / 4)


@pytest.mark.parametrize("channels_last", [False, True])
def test_bn_hook_statistics_are_mean_and_unbiased_variance(channels_last):
    """The recorded statistics: per-channel mean and unbiased variance over (N, H, W), either memory format."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5)).eval()
    hook = BNStatsHook(net)
    hook.enabled = True
    x = torch.randn(4, 3, 9, 7, dtype=torch.float64)
    net = net.double()
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    h = net[0](x)
    net(x)
    want_mean = h.mean(dim=(0, 2, 3))
    want_var = h.permute(1, 0, 2, 3).flatten(1).var(dim=1, unbiased=True)
    torch.testing.assert_close(hook._means[0].double(), want_mean.float().double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hook._vars[0].double(), want_var.float().double(), rtol=1e-6, atol=1e-6)
    rm, rv = net[1].running_mean.float(), net[1].running_var.float()
    expected = torch.linalg.vector_norm(want_mean.float() - rm) + torch.linalg.vector_norm(want_var.float() - rv)
    torch.testing.assert_close(hook.loss(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_mean_var_long_reductions_near_constant_channels(channels_last):
    """Maps big enough to be chunked (98 k values per channel) with |mean|/std up to 400, against fp64."""
    from augkd.training import losses

    torch.manual_seed(0)
    scale, shift = torch.tensor([1.0, 0.05, 0.01]).view(1, -1, 1, 1), torch.tensor([0.0, 3.0, 4.0]).view(1, -1, 1, 1)
    x = torch.randn(96, 3, 32, 32) * scale + shift
    x = x.to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert x.shape[0] * 32 * 32 > 4 * losses._STATS_CHUNK  # several chunks merged
    mean, var = losses.channel_mean_var(x)
    xd = x.double()
    want_var, want_mean = torch.var_mean(xd, dim=(0, 2, 3), correction=1)
    torch.testing.assert_close(mean.double(), want_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(var.double(), want_var, rtol=1e-4, atol=0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_mean_var_chunk_merge_is_exact_in_fp64(channels_last, monkeypatch):
    """The fp64 merge of chunk statistics (uneven chunks, a different mean per sample, so the between-chunk
    term matters) equals the one-shot mean and unbiased variance to fp64 rounding."""
    from augkd.training import losses

    monkeypatch.setattr(losses, "_STATS_CHUNK", 40)  # 7 samples × 20 values per channel → 4 chunks: 2,2,2,1
    torch.manual_seed(0)
    x = torch.randn(7, 3, 4, 5, dtype=torch.float64) + torch.arange(7, dtype=torch.float64).view(-1, 1, 1, 1) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, var = losses._cpu_mean_var(x, torch.float64)
    want_var, want_mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)
    torch.testing.assert_close(mean, want_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, want_var, rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_mean_var_matches_torch_values_and_gradients(dtype, channels_last):
    """The BN hook's fused statistics = torch.var_mean over (N, H, W) in fp32, forward and backward, for
    activations with a non-zero mean (the cancellation case of Σx² − M·mean²)."""
    from augkd.training.losses import channel_mean_var

    torch.manual_seed(0)
    # |mean| / std from 0.7 to 40 across channels: Σx² − M·mean² in fp32 would lose the variance
    x = (torch.randn(8, 6, 5, 7) * torch.linspace(0.05, 3, 6).view(1, -1, 1, 1) + 2.0).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a = x.clone().requires_grad_()
    mean, var = channel_mean_var(a)
    b = x.clone().float().requires_grad_()
    want_var, want_mean = torch.var_mean(b, dim=(0, 2, 3), correction=1)
    torch.testing.assert_close(mean, want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var, want_var, rtol=1e-5, atol=1e-7)
    gm, gv = torch.randn(6), torch.randn(6)
    (mean * gm + var * gv).sum().backward()
    (want_mean * gm + want_var * gv).sum().backward()
    assert a.grad.dtype == dtype
    # the reference gradient rounded once to the input dtype: the fused backward rounds only at the end
    torch.testing.assert_close(a.grad, b.grad.to(dtype), rtol=1e-5 if dtype == torch.float32 else 8e-3, atol=1e-6)


def test_cosine_factor_matches_cosine_annealing_lr():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    for e in range(8):
        assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * cosine_factor(e, 7), abs=1e-12)
        opt.step()
        sch.step()
    assert cosine_factor(0, 10) == 1.0 and cosine_factor(5, 10) == pytest.approx(0.5) and cosine_factor(10, 10) == 0


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_module3_lr_schedule_per_step_and_after_resume(kind):
    from types import SimpleNamespace

    from augkd.config import load_config
    from augkd.training.stages import MixupStage

    cfg = load_config("configs/smoke.yaml", [f"module3.lr_schedule={kind}", "module3.lr=0.01"])
    nets = {n: torch.nn.Linear(2, 2) for n in ("generator", "encoder", "anchor", "student")}
    ctx = SimpleNamespace(cfg=cfg, nets=nets)
    epochs, steps = 4, 2  # 8 steps: the 5 warm-up steps end inside epoch 2, after the resume point

    def run(stage, first_epoch, end_epoch=epochs):
        lrs = []
        for e in range(first_epoch, end_epoch):
            stage.start_epoch_lr(ctx, e)
            assert stage.schedulers["student"].get_last_lr() == [stage.optimizers["student"].param_groups[0]["lr"]]
            for _ in range(steps):
                lrs.append(stage.optimizers["student"].param_groups[0]["lr"])
                stage.optimizers["student"].step()
                stage.schedulers["student"].step()
        return lrs

    stage = MixupStage(epochs)
    stage.setup(ctx)
    lrs = run(stage, 0)
    cos = (lambda e: cosine_factor(e, epochs)) if kind == "cosine" else (lambda e: 1.0)
    want = [0.01 * warmup_factor(e * steps + i) * cos(e) for e in range(epochs) for i in range(steps)]
    assert lrs == pytest.approx(want, abs=1e-15)
    # a stage resumed at the end of epoch 1 (step 4: still warming up) continues on the same trajectory
    done = MixupStage(epochs)
    done.setup(ctx)
    run(done, 0, 2)
    resumed = MixupStage(epochs)
    resumed.setup(ctx)
    resumed.optimizers["student"].load_state_dict(done.optimizers["student"].state_dict())
    resumed.schedulers["student"].load_state_dict(done.schedulers["student"].state_dict())
    assert run(resumed, 2) == pytest.approx(want[2 * steps :], abs=1e-15)
