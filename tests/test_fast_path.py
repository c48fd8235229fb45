"""The fast path computes what the plain path computes.

Fast path = what ``superconv.train`` runs: channels_last model and batches (and
``torch.compile`` in the slow tests). Plain path = NCHW, eager. Same seed, same
batches, same optimizer steps.

In float64 every parameter and BN buffer agrees to 1e-10 relative: that checks
all layout-dependent code (BN, the zero-padding concat, pooling, flatten). In
float32 the whole parameter vector agrees within 1e-4 relative after one step,
but single tensors need not: float32 rounding differs between the NCHW and
channels_last kernels by ~1e-6, enough to flip the ReLU mask of an activation
within 1e-6 of zero, and one flipped unit (of 131k) moved a BN bias gradient
by ~1% here (the same happens between float32 and float64 on the plain path).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from superconv.data import DeviceLoader
from superconv.models import build_model
from superconv.train import TrainConfig, make_optimizer

REL_TOL = 1e-4  # float32, whole parameter vector, one step
REL_TOL_F64 = 1e-10  # float64, every tensor
SLOW = pytest.mark.skipif(
    not os.environ.get("SUPERCONV_SLOW"),
    reason="torch.compile takes ~1 min on CPU; SUPERCONV_SLOW=1",
)


def loaders(channels: int, side: int, batch: int, dtype: torch.dtype = torch.float32):
    """The same seeded, augmented batches in both layouts."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (4 * batch, channels, side, side), dtype=torch.uint8, generator=g
    )
    labels = torch.randint(0, 10, (4 * batch,), generator=g)
    common = dict(mean=(0.5,) * channels, std=(0.25,) * channels, crop_pad=4, seed=3, dtype=dtype)
    fast = DeviceLoader(images, labels, batch, channels_last=True, **common)
    plain = DeviceLoader(images, labels, batch, channels_last=False, **common)
    return fast, plain


def train_steps(model, forward, loader, steps: int) -> None:
    """``steps`` SGD steps as the training loop makes them (paper settings: momentum 0.9, wd 1e-4)."""
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    model.train()
    for step in range(steps):
        x, y = loader.batch(step)
        loss = F.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def relative_differences(fast: torch.nn.Module, plain: torch.nn.Module) -> dict[str, float]:
    """||fast - plain|| / ||plain|| for every floating-point parameter and buffer."""
    out = {}
    for (name, a), (_, b) in zip(fast.state_dict().items(), plain.state_dict().items()):
        if a.is_floating_point():
            out[name] = ((a - b).norm() / b.norm().clamp_min(1e-12)).item()
    return out


def vector_difference(fast: torch.nn.Module, plain: torch.nn.Module) -> float:
    """||fast - plain|| / ||plain|| over all parameters as one vector."""
    a = torch.cat([p.detach().flatten() for p in fast.parameters()])
    b = torch.cat([p.detach().flatten() for p in plain.parameters()])
    return ((a - b).norm() / b.norm()).item()


def pair(name: str, channels: int, dtype: torch.dtype = torch.float32, **bn):
    """The same initial model twice: NCHW (plain) and channels_last (fast)."""
    torch.manual_seed(0)
    plain = build_model(name, in_channels=channels, **bn).to(dtype)
    fast = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    return fast, plain


def moved(before: dict[str, torch.Tensor], model: torch.nn.Module) -> float:
    """How far the steps moved the conv weights (relative): far more than the tolerances,
    so that the comparisons can fail."""
    return max(
        ((v - before[k]).norm() / before[k].norm()).item()
        for k, v in model.named_parameters()
        if v.dim() == 4
    )


CASES = {
    "resnet20 caffe BN": ("resnet20", 3, 32, {}),
    "resnet20 nn.BatchNorm2d": ("resnet20", 3, 32, {"bn_mode": "torch"}),
    "resnet20 ghost batch 8": ("resnet20", 3, 32, {"ghost_batch": 8}),
    "lenet": ("lenet", 1, 28, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_channels_last_matches_nchw_in_every_tensor_float64(case):
    name, channels, side, bn = CASES[case]
    # resnet8 has every block type of resnet20, fewer of them: float64 convs are slow.
    name = "resnet8" if name == "resnet20" else name
    fast_loader, plain_loader = loaders(channels, side, batch=16, dtype=torch.float64)
    x_fast, _ = fast_loader.batch(0)
    x_plain, _ = plain_loader.batch(0)
    assert x_fast.is_contiguous(memory_format=torch.channels_last) and x_plain.is_contiguous()
    assert torch.equal(x_fast, x_plain)  # same values, different layout

    fast, plain = pair(name, channels, torch.float64, **bn)
    before = {k: v.detach().clone() for k, v in plain.named_parameters()}
    train_steps(fast, fast, fast_loader, steps=2)
    train_steps(plain, plain, plain_loader, steps=2)
    diffs = relative_differences(fast, plain)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= REL_TOL_F64, f"{worst}: relative difference {diffs[worst]:.2e}"
    assert moved(before, plain) > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_channels_last_step_matches_nchw_float32(case):
    name, channels, side, bn = CASES[case]
    fast_loader, plain_loader = loaders(channels, side, batch=16)
    fast, plain = pair(name, channels, **bn)
    before = {k: v.detach().clone() for k, v in plain.named_parameters()}
    train_steps(fast, fast, fast_loader, steps=1)
    train_steps(plain, plain, plain_loader, steps=1)
    assert vector_difference(fast, plain) <= REL_TOL
    assert moved(before, plain) > 100 * REL_TOL


def test_single_pass_caffe_bn_keeps_caffes_running_statistics_in_channels_last():
    """Running statistics from the one-pass BN (mean and 1/std of native_batch_norm) equal
    Caffe's unbiased batch statistics computed directly, in both layouts."""
    from superconv.models import CaffeBatchNorm2d

    torch.manual_seed(0)
    x = torch.randn(8, 5, 6, 6) * 3 + 2
    for layout in (torch.contiguous_format, torch.channels_last):
        bn = CaffeBatchNorm2d(5, bn_maf=0.9).to(memory_format=layout)
        bn(x.contiguous(memory_format=layout))
        var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=1)  # Caffe: m / (m - 1)
        # After Caffe's first update (scale = 1) the running values are the batch's.
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("side", [32, 16, 9, 8, 7])
def test_ceil_avg_pool_compile_form_equals_the_native_op(monkeypatch, side):
    """The form CeilAvgPool2d runs under torch.compile (sum pool / window counts) gives
    nn.AvgPool2d(3, 2, ceil_mode=True)'s values and gradients (the latter checked
    against finite differences by gradcheck)."""
    from superconv.models.paper_resnet import CeilAvgPool2d

    native = torch.nn.AvgPool2d(3, stride=2, padding=0, ceil_mode=True)
    pool = CeilAvgPool2d(3, stride=2)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x = torch.randn(2, 3, side, side + 1, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(pool(x), native(x), rtol=1e-14, atol=1e-14)
    g = torch.randn_like(native(x))
    (grad,) = torch.autograd.grad(pool(x), x, g)
    (grad_native,) = torch.autograd.grad(native(x), x, g)
    torch.testing.assert_close(grad, grad_native, rtol=1e-14, atol=1e-14)
    # One image, one channel: the numerical Jacobian costs a forward pass per input.
    assert torch.autograd.gradcheck(pool, (x[:1, :1].detach().clone().requires_grad_(),))


@pytest.mark.slow
@SLOW
def test_compiled_ceil_avg_pool_gradient_matches_finite_differences():
    """torch.compile of nn.AvgPool2d(ceil_mode=True) gets this gradient wrong (torch 2.13);
    CeilAvgPool2d compiled gets it right."""
    from superconv.models.paper_resnet import CeilAvgPool2d

    native = torch.nn.AvgPool2d(3, stride=2, padding=0, ceil_mode=True)
    x = torch.randn(2, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(native(x))
    (grad,) = torch.autograd.grad(torch.compile(CeilAvgPool2d(3, stride=2))(x), x, g)
    # Central differences of <native(x), g>, exact up to rounding for this linear map.
    eps, numeric = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.numel()):
            step = torch.zeros_like(x).view(-1)
            step[i] = eps
            step = step.view_as(x)
            numeric.view(-1)[i] = ((native(x + step) - native(x - step)) * g).sum() / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
@SLOW
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_channels_last_step_matches_nchw_eager(dtype):
    fast_loader, plain_loader = loaders(3, 32, batch=16, dtype=dtype)
    fast, plain = pair("resnet20", 3, dtype)
    train_steps(fast, torch.compile(fast), fast_loader, steps=1)
    train_steps(plain, plain, plain_loader, steps=1)
    if dtype == torch.float64:
        diffs = relative_differences(fast, plain)
        worst = max(diffs, key=diffs.get)
        assert diffs[worst] <= REL_TOL_F64, f"{worst}: relative difference {diffs[worst]:.2e}"
    else:
        assert vector_difference(fast, plain) <= REL_TOL


@pytest.mark.slow
@SLOW
def test_compiled_run_matches_eager_accuracy_within_seed_noise(tmp_path):
    """A short train() with compile=True ends within the seed-to-seed spread of eager runs."""
    from superconv.train import train

    base = TrainConfig(
        model="resnet8", dataset="mnist-demo", iterations=120, batch_size=64, eval_every=120,
        checkpoint_every=120, policy="one_cycle", policy_params={"max_lr": 0.5},
        eval_batch_size=500, device="cpu",
    )  # fmt: skip

    def accuracy(config, name):
        return train(config, tmp_path / name, progress=False).summary["final_test_acc"]

    eager = [accuracy(base.replace(seed=seed), f"eager{seed}") for seed in (0, 1, 2)]
    compiled = accuracy(base.replace(compile=True), "compiled0")
    noise = max(eager) - min(eager)
    assert min(eager) > 50, eager  # it learned: the comparison means something
    assert abs(compiled - eager[0]) <= max(noise, 1.0), (compiled, eager)
