"""The flexible step (issue 25, item 1): any batch and loss, accumulation, AMP, param groups,
and the range test's restore offloaded to the CPU or the disk.

Oracles: a plain reference loop written out as the range test ran before superconv.step
existed (the default path must stay bit-identical: a running benchmark compares curves
recorded with it), one big batch for accumulation, the pure ramp for param-group LRs,
and state snapshots for the restore.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from superconv import step
from superconv.errors import UserError
from superconv.fit import fit
from superconv.range_test import STATE_TO, preserved_state, range_test
from superconv.schedules import LinearRamp


def _blobs(seed=0, n=320, d=8, k=3):
    g = torch.Generator().manual_seed(seed)
    centers = 2 * torch.randn(k, d, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


def _pairs(x, y, batch=32):
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]


def _bn_mlp(seed=0, d=8, k=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, k))


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


# ----------------------------------------------------------------------------- the old path
def _reference_range_test(model, optimizer, loss_fn, batches, val, *, end_lr, num_steps, every):
    """The range test's numerical path as it was before superconv.step, written out plainly:
    ramp LR -> zero_grad -> loss_fn(model(x), y) / 1 -> backward -> step; eval in eval mode."""
    ramp = LinearRamp(0.0, end_lr, num_steps)
    losses, val_losses = [], []
    model.train()
    for s in range(num_steps):
        for group in optimizer.param_groups:
            group["lr"] = float(ramp(s))
        x, y = batches[s % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y) / 1
        loss.backward()
        optimizer.step()
        losses.append(loss.detach().float().item())
        if (s + 1) % every == 0:
            model.eval()
            with torch.no_grad():
                vx, vy = val[0]
                val_losses.append((loss_fn(model(vx), vy).double() * len(vy) / len(vy)).item())
            model.train()
    return losses, val_losses


def test_default_path_is_bit_identical_to_the_reference_loop():
    x, y = _blobs()
    batches, val = _pairs(x[:256], y[:256]), [(x[256:], y[256:])]
    kwargs = dict(end_lr=1.0, num_steps=40)
    model = _bn_mlp()
    expected = _reference_range_test(
        model, _sgd(model), F.cross_entropy, batches, val, every=5, **kwargs
    )
    model = _bn_mlp()
    curve = range_test(
        model, _sgd(model), F.cross_entropy, batches, val, eval_every=5,
        diverge_factor=math.inf, progress=False, **kwargs,
    )  # fmt: skip
    assert curve.losses == expected[0]  # every bit
    assert curve.val_losses == expected[1]


# ----------------------------------------------------------------------------- batch shapes
class _OwnLoss(nn.Module):
    """A model that computes its own loss from a dict batch (Hugging Face style)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, inputs, labels):
        logits = self.net(inputs)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def _curve(model, loss_fn, loader, **kwargs):
    opt = _sgd(model.net if isinstance(model, _OwnLoss) else model)
    return range_test(model, opt, loss_fn, loader, start_lr=1e-3, end_lr=1.0, num_steps=30,
                      mode="exp", diverge_factor=math.inf, progress=False, **kwargs)  # fmt: skip


def test_tuples_dicts_any_object_and_own_loss_give_the_same_curve():
    x, y = _blobs()
    pairs = _pairs(x, y)
    dicts = [{"inputs": a, "labels": b} for a, b in pairs]
    tuples_curve = _curve(_bn_mlp(), F.cross_entropy, pairs)

    def split(batch):
        return batch["inputs"], batch["labels"]

    def by_hand(model, batch):
        return F.cross_entropy(model(batch["inputs"]), batch["labels"])

    assert _curve(_bn_mlp(), F.cross_entropy, dicts, batch_fn=split).losses == tuples_curve.losses
    assert _curve(_bn_mlp(), None, dicts, batch_loss=by_hand).losses == tuples_curve.losses
    own = _curve(_OwnLoss(_bn_mlp()), None, dicts)  # loss_fn=None: the model's own loss
    assert own.losses == tuples_curve.losses
    # The explicit spelling of the same thing:
    explicit = _curve(_OwnLoss(_bn_mlp()), None, dicts, batch_loss=step.model_loss)
    assert explicit.losses == tuples_curve.losses


def test_validation_with_a_batch_loss_has_a_loss_and_no_accuracy():
    x, y = _blobs()
    dicts = [{"inputs": a, "labels": b} for a, b in _pairs(x, y)]
    curve = _curve(_OwnLoss(_bn_mlp()), None, dicts[:8], val_loader=dicts[8:], eval_every=10)
    assert len(curve.val_losses) == 3 and all(math.isfinite(v) for v in curve.val_losses)
    assert all(math.isnan(a) for a in curve.val_accs)


def test_model_loss_reads_attribute_key_and_scalar_outputs():
    class Out:
        def __init__(self, loss):
            self.loss = loss

    lin = nn.Linear(2, 1)
    batch = (torch.ones(3, 2),)
    for wrap in (lambda t: Out(t), lambda t: {"loss": t}, lambda t: t):

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = lin

            def forward(self, x, wrap=wrap):
                return wrap(self.lin(x).pow(2).mean())

        assert step.model_loss(M(), batch).dim() == 0


def test_bad_step_arguments_are_refused_with_messages():
    with pytest.raises(UserError, match="not both"):
        step.make_forward(F.cross_entropy, batch_loss=step.model_loss)
    with pytest.raises(UserError, match="batch_fn splits a batch for loss_fn"):
        step.make_forward(None, batch_fn=lambda b: b)
    with pytest.raises(UserError, match="loss_fn must be callable"):
        step.make_forward("cross_entropy")
    forward = step.make_forward(None, batch_loss=lambda m, b: torch.ones(2))
    with pytest.raises(UserError, match="batch_loss must return a scalar tensor"):
        forward(nn.Linear(1, 1), None)
    with pytest.raises(UserError, match=r"the model returned no loss \(tuple"):
        step.model_loss(lambda_module(lambda x: (x, x)), torch.ones(1, 1))
    with pytest.raises(UserError, match=r"\(inputs, targets\) pairs; for batches of another"):
        step.make_forward(F.cross_entropy)(nn.Linear(1, 1), {"a": 1, "b": 2, "c": 3})
    with pytest.raises(UserError, match="precision must be fp32, bf16 or fp16, got 'fp8'"):
        step.amp("fp8", "cpu")
    with pytest.raises(UserError, match="keep_lr_ratios needs the param groups' LRs"):
        step.keep_lr_ratios(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.0))


def lambda_module(fn):
    class L(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return fn(x)

    return L()


# ----------------------------------------------------------------------------- accumulation
def test_accumulated_micro_batches_make_the_big_batchs_step():
    x, y = _blobs(n=64)
    torch.manual_seed(0)
    a = nn.Linear(8, 3)
    b = copy.deepcopy(a)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    forward = step.make_forward(F.cross_entropy)
    big = step.train_step(a, opt_a, forward, iter([(x, y)]))
    micro = step.train_step(b, opt_b, forward, iter(_pairs(x, y, 16)), accumulation_steps=4)
    assert micro.item() == pytest.approx(big.item(), rel=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


# ----------------------------------------------------------------------------- AMP
def test_bf16_autocast_and_fp16_with_a_grad_scaler():
    x, y = _blobs(n=64)
    forward = step.make_forward(F.cross_entropy)
    dtype, scaler = step.amp("bf16", "cpu")
    assert dtype is torch.bfloat16 and scaler is None
    with step.autocast("cpu", dtype)():
        assert forward(nn.Linear(8, 3), (x, y))[1].dtype == torch.bfloat16
    dtype, scaler = step.amp("fp16", "cpu")
    assert dtype is torch.float16 and isinstance(scaler, torch.amp.GradScaler)
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(30):  # the first steps may overflow at the initial scale (2**16): skipped
        loss = step.train_step(
            model, opt, forward, iter([(x, y)]), autocast=step.autocast("cpu", dtype), scaler=scaler
        )
    assert math.isfinite(loss.item())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))  # it stepped
    # fp16's point: a step with non-finite gradients is skipped and the scale backs off.
    scale = scaler.get_scale()
    stepped = [p.detach().clone() for p in model.parameters()]
    bad = (torch.full_like(x, float("inf")), y)
    step.train_step(model, opt, forward, iter([bad]), autocast=step.autocast("cpu", dtype),
                    scaler=scaler)  # fmt: skip
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), stepped))
    assert scaler.get_scale() < scale


# ----------------------------------------------------------------------------- param groups
def _two_groups(params):
    params = list(params)  # a Linear-ReLU-Linear: the first layer is the "body"
    body, head = params[:2], params[2:]
    opt = torch.optim.SGD(
        [{"params": body, "lr": 1e-3}, {"params": head, "lr": 1e-2}], lr=0.1, momentum=0.9
    )
    assert step.keep_lr_ratios(opt) == pytest.approx([0.1, 1.0])
    return opt


def test_param_groups_keep_their_lr_ratios_through_the_range_test_and_are_restored():
    x, y = _blobs()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = _two_groups(model.parameters())
    before = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    seen = []
    curve = range_test(
        model, opt, F.cross_entropy, _pairs(x, y), start_lr=1e-4, end_lr=1.0, num_steps=20,
        mode="exp", diverge_factor=math.inf, progress=False,
        observers=[lambda s, m, o, metrics: seen.append([g["lr"] for g in o.param_groups])],
    )  # fmt: skip
    assert [head for _, head in seen] == curve.lrs  # the fastest group follows the ramp
    assert all(body == pytest.approx(0.1 * head, rel=1e-12) for body, head in seen)
    after = [dict((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups]
    assert after == before


def test_fit_trains_the_cycle_with_the_groups_ratios_kept():
    x, y = _blobs()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    made = []

    def optimizer(params):  # fit makes one per run; ours remembers them
        opt = _two_groups(params)
        made.append(opt)
        return opt

    result = fit(model, data, iterations=100, optimizer=optimizer, verify=False,
                 echo=lambda s: None)  # fmt: skip
    final = made[-1]  # the trained run's optimizer, at its last step
    head, body = final.param_groups[1]["lr"], final.param_groups[0]["lr"]
    assert body == pytest.approx(0.1 * head, rel=1e-12) and head > 0
    assert result.summary["status"] == "finished"


def test_fit_takes_dict_batches_with_the_models_own_loss_and_accumulation():
    x, y = _blobs()
    dataset = [{"inputs": a, "labels": b} for a, b in zip(x, y)]
    train = torch.utils.data.DataLoader(dataset[:256], batch_size=16)
    val = torch.utils.data.DataLoader(dataset[256:], batch_size=64)
    torch.manual_seed(0)
    model = _OwnLoss(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)))
    result = fit(model, train, val, iterations=100, batch_loss=step.model_loss,
                 accumulation_steps=2, precision="bf16", verify=False,
                 echo=lambda s: None)  # fmt: skip
    s = result.summary
    assert s["status"] == "finished" and s["train_images_seen"] == 100 * 32
    assert math.isfinite(s["final_val_loss"])
    with torch.no_grad():
        val_loss = model(inputs=x[256:], labels=y[256:])["loss"]
    assert val_loss.item() < math.log(3)  # it learned something: below chance's loss


# ----------------------------------------------------------------------------- offloaded restore
def _adam_fixture():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Dropout(0.2), nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _blobs(n=96)
    for bx, by in _pairs(x, y):
        opt.zero_grad()
        F.cross_entropy(model(bx), by).backward()
        opt.step()
    model.eval()
    np.random.seed(3)
    random.seed(3)
    return model, opt


def _snapshot(model, opt):
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "opt": copy.deepcopy(opt.state_dict()),
        "rng": (torch.get_rng_state(), np.random.get_state(), random.getstate()),
    }


def _assert_same(a, b):
    assert all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])
    assert all(torch.equal(p, q) for p, q in zip(a["grads"], b["grads"]))
    assert a["modes"] == b["modes"]
    assert a["opt"]["param_groups"] == b["opt"]["param_groups"]
    sa, sb = a["opt"]["state"], b["opt"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for name in sa[k]:
            assert torch.equal(sa[k][name], sb[k][name]) and sa[k][name].dtype == sb[k][name].dtype
    assert torch.equal(a["rng"][0], b["rng"][0])
    assert np.array_equal(a["rng"][1][1], b["rng"][1][1]) and a["rng"][2] == b["rng"][2]


@pytest.mark.parametrize("state_to", STATE_TO)
def test_offloaded_restore_is_bit_identical(state_to, tmp_path):
    model, opt = _adam_fixture()
    before = _snapshot(model, opt)
    x, y = _blobs(seed=1)
    files = []

    def noisy(loader):  # draws from numpy's and Python's RNGs, so they must come back too
        for batch in loader:
            np.random.rand()
            random.random()
            yield batch

    class Loader:
        def __iter__(self):
            return noisy(_pairs(x, y))

    def look(s, m, o, metrics):
        files.append(sorted(p.name for p in tmp_path.iterdir()))

    curve = range_test(model, opt, F.cross_entropy, Loader(), start_lr=1e-4, end_lr=1.0,
                       num_steps=12, mode="exp", progress=False, observers=[look],
                       state_to=state_to, state_dir=tmp_path)  # fmt: skip
    assert len(curve.losses) == 12
    _assert_same(before, _snapshot(model, opt))
    on_disk = [name for names in files for name in names]
    if state_to == "disk":  # the copy waited in a file, and the file is gone
        assert on_disk and all(n.startswith("superconv-restore-") for n in on_disk)
    else:
        assert not on_disk
    assert not list(tmp_path.iterdir())


def test_offloaded_restore_after_an_interrupt(tmp_path):
    model, opt = _adam_fixture()
    before = _snapshot(model, opt)
    with pytest.raises(KeyboardInterrupt):
        with preserved_state(model, opt, state_to="disk", state_dir=tmp_path):
            with torch.no_grad():
                model[0].weight.mul_(2)
            opt.state.clear()
            opt.param_groups[0]["lr"] = 5.0
            torch.rand(2)
            raise KeyboardInterrupt
    _assert_same(before, _snapshot(model, opt))
    assert not list(Path(tmp_path).iterdir())


def test_bad_state_to_is_refused():
    model, opt = _adam_fixture()
    with pytest.raises(UserError, match="state_to must be one of memory, cpu, disk, got 'gpu'"):
        range_test(model, opt, F.cross_entropy, [], state_to="gpu", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_offload_of_a_gpu_model_restores_on_the_gpu(tmp_path):
    model, opt = _adam_fixture()
    model = model.cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = _blobs()
    pairs = [(a.cuda(), b.cuda()) for a, b in _pairs(xs, ys)]
    range_test(model, opt, F.cross_entropy, pairs[:2], num_steps=3, progress=False)  # state
    for state_to in ("cpu", "disk"):
        before = _snapshot(model, opt)
        range_test(model, opt, F.cross_entropy, pairs, num_steps=6, progress=False,
                   state_to=state_to, state_dir=tmp_path)  # fmt: skip
        after = _snapshot(model, opt)
        _assert_same(before, after)
        assert all(v.is_cuda for s in opt.state.values() for k, v in s.items() if k != "step")
