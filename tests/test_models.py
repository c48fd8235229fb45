"""Tests for superconv.models against the paper's tables, Caffe's formulas and torch's BN."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superconv.errors import UserError
from superconv.models import (
    MODEL_NAMES,
    BottleneckResNet,
    CaffeBatchNorm2d,
    DenseNet,
    DownsampleBlock,
    PaperResNet,
    StandardBlock,
    bn_modules,
    build_model,
    count_parameters,
    set_bn_maf,
)

# Parameter counts of the paper's variant without conv biases (issue / REFERENCE.md).
PAPER_PARAMS = {"resnet20": 223_450, "resnet56": 806_746, "resnet110": 1_681_690}


def table_param_count(depth: int) -> int:
    """Hand count from Tables 2-4: stages of n + 1, n, n - 1 blocks at widths 16, 32, 64."""
    n = (depth - 2) // 6

    def block(c: int) -> int:  # two 3x3 convs c -> c without bias, two BN (scale + shift)
        return 2 * 9 * c * c + 2 * 2 * c

    stem = 3 * 9 * 16 + 2 * 16
    fc = 64 * 10 + 10
    return stem + (n + 1) * block(16) + n * block(32) + (n - 1) * block(64) + fc


def images(batch: int = 2, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- paper ResNet


@pytest.mark.parametrize("name, expected", sorted(PAPER_PARAMS.items()))
def test_paper_resnet_parameter_counts_are_exact(name, expected):
    assert count_parameters(build_model(name)) == expected
    assert table_param_count(int(name[6:])) == expected  # the hand count agrees too


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_depths_build_with_depth_weight_layers(depth):
    model = PaperResNet(depth)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth
    assert count_parameters(model) == table_param_count(depth)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_resnet56_block_layout_follows_table_4():
    blocks = [(type(b).__name__, b.conv1.in_channels) for b in build_model("resnet56").blocks]
    expected = (
        [("StandardBlock", 16)] * 9
        + [("DownsampleBlock", 16)]
        + [("StandardBlock", 32)] * 8
        + [("DownsampleBlock", 32)]
        + [("StandardBlock", 64)] * 8
    )
    assert blocks == expected


def test_bn_options_add_no_parameters():
    for kw in ({"bn_mode": "torch"}, {"ghost_batch": 2}, {"bn_mode": "torch", "ghost_batch": 2}):
        assert count_parameters(build_model("resnet20", **kw)) == PAPER_PARAMS["resnet20"]


def test_downsample_shapes_pooled_shortcut_matches_conv_path():
    model = build_model("resnet20")
    seen = {}
    for i, block in enumerate(model.blocks):
        if isinstance(block, DownsampleBlock):
            block.shortcut.register_forward_hook(lambda m, a, out, i=i: seen.update({i: out.shape}))
            block.register_forward_hook(lambda m, a, out, i=i: seen.update({-i: out.shape}))
    out = model(images(batch=3))
    assert out.shape == (3, 10)
    first, second = sorted(i for i in seen if i > 0)
    assert seen[first] == (3, 16, 16, 16) and seen[-first] == (3, 32, 16, 16)
    assert seen[second] == (3, 32, 8, 8) and seen[-second] == (3, 64, 8, 8)


def caffe_avg_pool_3x3_s2(x: np.ndarray) -> np.ndarray:
    """Caffe's AVE pooling, kernel 3, stride 2, pad 0: output size rounded up, border
    windows clipped to the input and divided by their clipped size."""
    h, w = x.shape[-2:]
    oh, ow = math.ceil((h - 3) / 2) + 1, math.ceil((w - 3) / 2) + 1
    out = np.zeros(x.shape[:-2] + (oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[..., i, j] = x[..., 2 * i : min(2 * i + 3, h), 2 * j : min(2 * j + 3, w)].mean(
                axis=(-2, -1)
            )
    return out


def test_downsample_block_follows_table_3():
    """With conv2 zeroed the residual branch is 0 after BN (bias 0), leaving
    ReLU(avgpool(x)) concatenated with zeros."""
    block = DownsampleBlock(4, nn.BatchNorm2d)
    nn.init.zeros_(block.conv2.weight)
    x = images(batch=2, channels=4)
    out = block(x)
    expected = np.maximum(caffe_avg_pool_3x3_s2(x.double().numpy()), 0.0)
    assert out.shape == (2, 8, 16, 16)
    np.testing.assert_allclose(out[:, :4].detach().numpy(), expected, atol=1e-6)
    assert torch.count_nonzero(out[:, 4:]) == 0


def test_standard_block_follows_table_2():
    block = StandardBlock(4, nn.BatchNorm2d)
    nn.init.zeros_(block.conv2.weight)
    x = images(batch=2, channels=4, size=8)
    assert torch.equal(block(x), F.relu(x))  # identity shortcut, ReLU after the add
    nn.init.normal_(block.conv2.weight)
    assert not torch.equal(block(x), F.relu(x))


def test_msra_init_uses_caffe_fan_in_and_bn_identity():
    torch.manual_seed(0)
    model = build_model("resnet20")
    stem_conv = model.stem[0]
    # Caffe's msra filler: std sqrt(2 / fan_in), fan_in = 3 * 3 * 3 (fan_out would give 0.118).
    assert stem_conv.weight.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.15)
    last_conv = model.blocks[-1].conv2
    assert last_conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    for bn in bn_modules(model):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))


def test_dropout_present_only_when_asked_and_before_fc():
    assert not any(isinstance(m, nn.Dropout) for m in build_model("resnet20").modules())
    model = build_model("resnet20", dropout=0.2)  # A.2: dropout ratio 0.2
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 1 and drops[0].p == 0.2
    assert model.fc[0] is drops[0] and isinstance(model.fc[1], nn.Linear)
    model.eval()
    x = images()
    assert torch.equal(model(x), model(x))


# ---------------------------------------------------------------- other models


def test_lenet_matches_caffe_prototxt():
    model = build_model("lenet", in_channels=1)
    assert count_parameters(model) == 431_080
    kinds = [type(m).__name__ for m in model.features] + [type(m).__name__ for m in model.fc]
    assert kinds == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU"] + [
        "Linear"
    ]
    assert model.features[0].weight.shape == (20, 1, 5, 5)
    assert model.features[2].weight.shape == (50, 20, 5, 5)
    assert model.features[5].weight.shape == (500, 800)
    # Caffe's xavier filler: U(-sqrt(3 / fan_in), +sqrt(3 / fan_in)), bias 0.
    fc1 = model.features[5]
    assert fc1.weight.abs().max().item() <= math.sqrt(3 / 800)
    assert fc1.weight.std().item() == pytest.approx(math.sqrt(1 / 800), rel=0.02)
    assert torch.count_nonzero(fc1.bias) == 0
    assert model(images(batch=2, channels=1, size=28)).shape == (2, 10)


def test_lenet_other_image_size():
    model = build_model("lenet", in_channels=3, image_size=32)
    assert model.features[5].in_features == 50 * 5 * 5
    assert model(images(batch=2, size=32)).shape == (2, 10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_registry_name_forwards_a_batch(name):
    in_channels, size = (1, 28) if name == "lenet" else (3, 32)
    model = build_model(name, num_classes=10, in_channels=in_channels)
    out = model(images(batch=2, channels=in_channels, size=size))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_variants_structure():
    bottleneck = build_model("bottleneck56")
    convs = [m for m in bottleneck.blocks.modules() if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (1, 1) and m.stride == (1, 1) for m in convs) >= 2 * 18
    assert len(bottleneck.blocks) == 18  # (56 - 2) / 3 layers per block
    assert bottleneck.fc[-1].in_features == 256  # 64 x expansion 4
    resnext = build_model("resnext")
    assert any(m.groups == 8 for m in resnext.modules() if isinstance(m, nn.Conv2d))
    densenet = build_model("densenet")
    # DenseNet-BC 40, k = 12: 24 + 6k = 96 -> 48, 48 + 6k = 120 -> 60, 60 + 6k = 132.
    assert densenet.fc[-1].in_features == 132
    assert build_model("resnet20", num_classes=100)(images()).shape == (2, 100)
    assert build_model("resnet20", in_channels=1)(images(channels=1, size=28)).shape == (2, 10)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_model("resnt56"), "unknown model 'resnt56'.*did you mean 'resnet56'"),
        (lambda: build_model("densnet"), "did you mean 'densenet'"),
        (lambda: build_model("resnet57"), r"6n\+2.*got 57; nearest valid depth: 56"),
        (lambda: build_model("resnet2"), r"6n\+2 with n >= 1"),
        (lambda: build_model("resnet20", bn_mode="cafe"), "unknown bn_mode 'cafe'.*'caffe'"),
        (lambda: build_model("resnet20", bn_maf=1.0), r"bn_maf .* \[0, 1\), got 1.0"),
        (lambda: build_model("resnet20", bn_maf=-0.1), r"bn_maf .* \[0, 1\)"),
        (lambda: build_model("resnet20", ghost_batch=0), "ghost_batch must be None"),
        (lambda: build_model("resnet20", ghost_batch=1), "ghost_batch must be None"),
        (lambda: build_model("resnet20", ghost_batch=2.5), "ghost_batch must be None"),
        (lambda: build_model("resnet20", dropout=1.0), r"dropout must be a probability"),
        (lambda: build_model("resnet20", num_classes=0), "num_classes must be a positive"),
        (lambda: build_model("resnet20", in_channels=0), "in_channels must be a positive"),
        (lambda: build_model("lenet", image_size=12), "at least 13x13"),
        (lambda: BottleneckResNet(57), r"bottleneck ResNet depth must be 9n\+2"),
        (lambda: DenseNet(41), r"DenseNet-BC depth must be 6n\+4"),
        (lambda: set_bn_maf(nn.BatchNorm2d(2), 1.5), "bn_maf"),
    ],
)
def test_invalid_parameters_raise_clear_errors(call, match):
    with pytest.raises(UserError, match=match):  # a ValueError, exit code 2 on the CLI
        call()


def test_ghost_batch_must_divide_the_batch():
    model = build_model("resnet20", ghost_batch=4)
    with pytest.raises(UserError, match="ghost_batch=4 must divide the batch size; got .* 6"):
        model(images(batch=6))


# ---------------------------------------------------------------- batch norm


def caffe_bn_reference(batches, maf):
    """Slow Caffe BatchNorm (batch_norm_layer.cpp): blobs mean_sum, var_sum, scale."""
    mean_sum = var_sum = scale = 0.0
    history = []
    for x in batches:
        x = x.double().numpy()
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
        scale = maf * scale + 1
        mean_sum = maf * mean_sum + mean
        var_sum = maf * var_sum + var * m / (m - 1)  # Caffe's bias_correction
        history.append((mean_sum / scale, var_sum / scale, scale))
    return history


def stream(n_batches, shape=(8, 3, 4, 4), mean=(2.0, -3.0, 5.0), std=1.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.tensor(mean).view(1, -1, 1, 1)
    return [loc + std * torch.randn(shape, generator=gen) for _ in range(n_batches)]


def test_caffe_bn_running_stats_match_slow_reference():
    gen = torch.Generator().manual_seed(1)
    # Non-stationary batches so that the weighting of each batch matters.
    batches = [k + (k + 1) * torch.randn(6, 3, 5, 5, generator=gen) for k in range(4)]
    bn = CaffeBatchNorm2d(3, bn_maf=0.9)
    for x, (mean, var, scale) in zip(batches, caffe_bn_reference(batches, 0.9)):
        bn(x)
        np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=1e-5, atol=1e-6)
        assert bn.maf_scale.item() == pytest.approx(scale, rel=1e-6)
    assert bn.num_batches_tracked.item() == 4


def test_caffe_bn_training_output_is_plain_batch_norm():
    x = images(batch=4, channels=3, size=6)
    ours, theirs = CaffeBatchNorm2d(3), nn.BatchNorm2d(3)
    torch.testing.assert_close(ours(x), theirs(x))


def test_caffe_and_torch_running_stats_differ_early_and_agree_late():
    mu = torch.tensor([2.0, -3.0, 5.0])
    caffe, torch_bn = CaffeBatchNorm2d(3, bn_maf=0.95), nn.BatchNorm2d(3, momentum=0.05)
    for step, x in enumerate(stream(1000), start=1):
        caffe(x)
        torch_bn(x)
        if step <= 3:  # debiased: already near the truth; torch's EMA still near 0 / 1
            assert torch.all((caffe.running_mean - mu).abs() < 0.5)
            assert torch.all((torch_bn.running_mean - mu).abs() > 0.8 * mu.abs())
            assert torch.all((caffe.running_var - 2.25).abs() < 1.0)
            assert torch.all(torch_bn.running_var < 1.5)
    torch.testing.assert_close(caffe.running_mean, torch_bn.running_mean, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(caffe.running_var, torch_bn.running_var, atol=1e-4, rtol=1e-5)
    assert torch.all((caffe.running_mean - mu).abs() < 0.2)


def test_eval_uses_running_stats_and_leaves_them_alone():
    bn = CaffeBatchNorm2d(2, ghost_batch=2)
    bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    before = copy.deepcopy(bn.state_dict())
    bn.eval()
    x = images(batch=3, channels=2, size=3)  # 3 is not a multiple of 2: eval ignores chunks
    expected = (x - bn.running_mean.view(1, 2, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, 2, 1, 1) + 1e-5
    ) * bn.weight.view(1, 2, 1, 1) + bn.bias.view(1, 2, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("bn_mode", ["caffe", "torch"])
def test_ghost_bn_equals_plain_bn_per_chunk(bn_mode):
    torch.manual_seed(0)
    chunk, n_chunks = 4, 3
    ghost = CaffeBatchNorm2d(3, bn_maf=0.9, debiased=bn_mode == "caffe", ghost_batch=chunk)
    with torch.no_grad():
        ghost.weight.uniform_(0.5, 2.0)
        ghost.bias.uniform_(-1.0, 1.0)
    plain = [nn.BatchNorm2d(3, momentum=0.1) for _ in range(n_chunks)]  # torch's BN as oracle
    for layer in plain:
        layer.load_state_dict(ghost.state_dict(), strict=False)
    for step in range(2):
        x = (step + 1) * torch.randn(chunk * n_chunks, 3, 5, 5) + step
        x_ghost, x_plain = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = ghost(x_ghost)
        expected = torch.cat([b(c) for b, c in zip(plain, x_plain.split(chunk))])
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        grad = torch.randn_like(out)
        out.backward(grad)
        expected.backward(grad)
        torch.testing.assert_close(x_ghost.grad, x_plain.grad, atol=1e-5, rtol=1e-5)
        if bn_mode == "torch" or step == 0:
            # Average of per-chunk updates. In caffe mode the first update has
            # weight 1 / scale = 1, so it is the plain average of chunk statistics.
            if bn_mode == "caffe":
                chunks = x.view(n_chunks, chunk, 3, 5, 5)
                want_mean = chunks.mean(dim=(1, 3, 4)).mean(0)
                want_var = chunks.var(dim=(1, 3, 4), correction=1).mean(0)
            else:
                want_mean = torch.stack([b.running_mean for b in plain]).mean(0)
                want_var = torch.stack([b.running_var for b in plain]).mean(0)
            torch.testing.assert_close(ghost.running_mean, want_mean)
            torch.testing.assert_close(ghost.running_var, want_var)


def test_ghost_batch_equal_to_batch_is_plain_bn():
    x = images(batch=4, channels=3, size=5)
    ghost, plain = CaffeBatchNorm2d(3, ghost_batch=4), CaffeBatchNorm2d(3)
    torch.testing.assert_close(ghost(x), plain(x))
    assert torch.equal(ghost.running_mean, plain.running_mean)


def test_build_model_bn_modes():
    caffe = bn_modules(build_model("resnet56", bn_maf=0.97, ghost_batch=125))
    assert len(caffe) == 1 + 2 * 27  # stem + two per block
    assert all(type(b) is CaffeBatchNorm2d and b.debiased for b in caffe)
    assert all(b.ghost_batch == 125 and b.bn_maf == pytest.approx(0.97) for b in caffe)
    torch_bns = bn_modules(build_model("resnet20", bn_mode="torch", bn_maf=0.9))
    assert all(type(b) is nn.BatchNorm2d and b.momentum == pytest.approx(0.1) for b in torch_bns)
    ghost_torch = bn_modules(build_model("resnet20", bn_mode="torch", ghost_batch=2))
    assert all(type(b) is CaffeBatchNorm2d and not b.debiased for b in ghost_torch)


def test_set_bn_maf_sets_both_kinds():
    model = nn.Sequential(CaffeBatchNorm2d(2), nn.BatchNorm2d(2))
    assert set_bn_maf(model, 0.999) == 2  # the PC-LR baseline's MAF (Table 1)
    assert model[0].bn_maf == pytest.approx(0.999)
    assert model[1].momentum == pytest.approx(0.001)


def test_state_dict_round_trip():
    model = build_model("resnet20", ghost_batch=2)
    for seed in range(2):
        model(images(batch=4, seed=seed))
    state = model.state_dict()
    assert any(key.endswith("maf_scale") for key in state)
    clone = build_model("resnet20", ghost_batch=2)
    clone.load_state_dict(state)
    model.eval()
    clone.eval()
    x = images(seed=5)
    assert torch.equal(model(x), clone(x))


@pytest.mark.parametrize("name", ["resnet20", "bottleneck56", "resnext", "densenet"])
def test_channels_last_matches_nchw(name):
    model = build_model(name, ghost_batch=2)
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = images(batch=4)
    for _ in range(2):  # training (ghost batch stats), then eval (running stats)
        out = twin(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, model(x), atol=1e-4, rtol=1e-4)
        for a, b in zip(bn_modules(model), bn_modules(twin)):
            torch.testing.assert_close(a.running_mean, b.running_mean, atol=1e-5, rtol=1e-5)
        model.eval()
        twin.eval()


def test_bf16_autocast_keeps_float32_running_stats():
    model = build_model("resnet20", ghost_batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(batch=4))
    assert torch.isfinite(out.float()).all()
    for bn in bn_modules(model):
        assert bn.running_mean.dtype == torch.float32 and torch.isfinite(bn.running_var).all()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SUPERCONV_SLOW"),
    reason="torch.compile takes ~1 min on CPU; SUPERCONV_SLOW=1",
)
def test_compiles():
    model = build_model("resnet20", ghost_batch=2)
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, fullgraph=True)  # no graph breaks
    x = images(batch=4)
    torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn_modules(twin)[0].running_mean, bn_modules(model)[0].running_mean)


def test_a_letter_o_for_a_zero_gets_the_right_did_you_mean():
    from superconv.errors import UserError
    from superconv.models import build_model

    with pytest.raises(UserError, match="did you mean 'resnet20'"):
        build_model("resnet2O")
