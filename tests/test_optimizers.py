"""The optimizers users pick instead of tuning an LR (issue 22, item 6): schedule-free SGD
and Prodigy, optional extras selected by ``TrainConfig.optimizer``.

Each test that trains needs its package and is skipped by name where it is missing.
"""

from __future__ import annotations

import signal
import sys

import pytest
import torch

from superconv import checkpoint as ckpt
from superconv import train as train_mod
from superconv.errors import Interrupted, UserError
from superconv.records import read_csv
from superconv.train import TrainConfig, train


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(model: str = "lenet", **changes) -> TrainConfig:
    """A few iterations on the bundled MNIST subset."""
    base = dict(
        model=model, dataset="mnist-demo", normalize="unit", flip=False, batch_size=32,
        iterations=40, eval_every=10, checkpoint_every=10, eval_batch_size=1000, device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def schedule_free(model: str = "resnet8", **changes) -> TrainConfig:
    pytest.importorskip("schedulefree", reason="needs the schedulefree extra")
    return tiny(model, optimizer="schedulefree_sgd", policy="constant",
                policy_params={"lr": 0.1}, **changes)  # fmt: skip


def prodigy(model: str = "resnet8", **changes) -> TrainConfig:
    pytest.importorskip("prodigyopt", reason="needs the prodigy extra")
    return tiny(model, optimizer="prodigy", policy="cosine",
                policy_params={"max_lr": 1.0}, **changes)  # fmt: skip


# ----------------------------------------------------------------------------- building
@pytest.mark.parametrize("model", ["lenet", "resnet8"])
@pytest.mark.parametrize("make", [schedule_free, prodigy], ids=["schedulefree", "prodigy"])
def test_the_optimizers_train_a_few_steps(make, model, tmp_path):
    config = make(model)
    result = train(config, tmp_path / "run", progress=False)
    assert result.summary["status"] == "finished"
    rows = result.metrics
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(r["test_loss"])) for r in rows)
    # learns: the training loss falls; LeNet is far above chance (10%) after 40 iterations
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.05
    if model == "lenet":
        assert rows[-1]["test_acc"] > 50.0


def test_schedule_free_is_built_with_its_recipe():
    pytest.importorskip("schedulefree", reason="needs the schedulefree extra")
    import schedulefree

    config = tiny(optimizer="schedulefree_sgd", policy="constant", policy_params={"lr": 1.0},
                  iterations=1000, momentum=0.9, weight_decay=1e-4)  # fmt: skip
    optimizer = train_mod.make_optimizer(config, [torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(optimizer, schedulefree.SGDScheduleFree)
    group = optimizer.param_groups[0]
    assert group["warmup_steps"] == 50  # SCHEDULEFREE_WARMUP (5%) of 1,000 iterations
    assert (group["momentum"], group["weight_decay"]) == (0.9, 1e-4)
    assert train_mod.is_schedule_free(optimizer)


def test_prodigy_is_built_with_its_recipe():
    pytest.importorskip("prodigyopt", reason="needs the prodigy extra")
    import prodigyopt

    config = tiny(optimizer="prodigy", policy="cosine", policy_params={"max_lr": 1.0},
                  weight_decay=1e-4, momentum=0.9)  # fmt: skip
    optimizer = train_mod.make_optimizer(config, [torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(optimizer, prodigyopt.Prodigy)
    group = optimizer.param_groups[0]
    # weight decay as the baselines': an L2 penalty on the gradient, not AdamW-style
    assert (group["weight_decay"], group["decouple"], group["betas"]) == (1e-4, False, (0.9, 0.999))
    assert not train_mod.is_schedule_free(optimizer)
    # the authors' cosine annealing, from lr 1.0 to 0 over the run, through schedules.apply
    policy = train_mod.make_policy(config.replace(iterations=100))
    assert float(policy["lr"](0)) == 1.0 and float(policy["lr"](99)) == pytest.approx(0.0)
    assert "momentum" not in policy


@pytest.mark.parametrize(
    "optimizer, module, extra",
    [("schedulefree_sgd", "schedulefree", "schedulefree"), ("prodigy", "prodigyopt", "prodigy")],
)
def test_a_missing_extra_is_named(optimizer, module, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    config = tiny(optimizer=optimizer, policy="constant", policy_params={"lr": 1.0})
    with pytest.raises(UserError, match=rf"pip install 'superconv\[{extra}\]'"):
        train_mod.make_optimizer(config, [torch.nn.Parameter(torch.zeros(3))])


def test_schedule_free_refuses_a_cycled_momentum():
    config = tiny(optimizer="schedulefree_sgd", policy="one_cycle", policy_params={"max_lr": 1.0})
    with pytest.raises(UserError, match="interpolation beta and must stay fixed"):
        train_mod.make_policy(config)


def test_schedule_free_refuses_momentum_zero():
    pytest.importorskip("schedulefree", reason="needs the schedulefree extra")
    config = tiny(optimizer="schedulefree_sgd", policy="constant", policy_params={"lr": 1.0},
                  momentum=0.0)  # fmt: skip
    with pytest.raises(UserError, match=r"momentum \(its interpolation beta\) in \(0, 1\)"):
        train_mod.make_optimizer(config, [torch.nn.Parameter(torch.zeros(3))])


# ----------------------------------------------------------------------------- mode switching
def test_schedule_free_evaluates_and_checkpoints_at_its_average(tmp_path, monkeypatch):
    """A spy on every evaluation, checkpoint and step: the optimizer is in eval mode (and
    batch-norm statistics freshly recomputed) at each evaluation and checkpoint, and in
    train mode at each step."""
    config = schedule_free()
    seen: list[tuple[str, bool]] = []
    built = {}
    make = train_mod.make_optimizer

    def spy_make(cfg, params):
        optimizer = make(cfg, params)
        built["optimizer"] = optimizer
        step = optimizer.step

        def spy_step(*a, **k):
            seen.append(("step", optimizer.param_groups[0]["train_mode"]))
            return step(*a, **k)

        optimizer.step = spy_step
        return optimizer

    evaluate, save, recompute = train_mod.evaluate, ckpt.save, train_mod.recompute_bn

    def spy_evaluate(*a, **k):
        seen.append(("evaluate", built["optimizer"].param_groups[0]["train_mode"]))
        return evaluate(*a, **k)

    def spy_save(path, state):
        seen.append(("save", built["optimizer"].param_groups[0]["train_mode"]))
        assert "train_point" in state  # y kept beside the evaluation point
        assert state["optimizer"]["param_groups"][0]["train_mode"] is False
        return save(path, state)

    def spy_recompute(pieces, step, batches=None):
        seen.append(("recompute_bn", pieces.optimizer.param_groups[0]["train_mode"]))
        return recompute(pieces, step, batches)

    monkeypatch.setattr(train_mod, "make_optimizer", spy_make)
    monkeypatch.setattr(train_mod, "evaluate", spy_evaluate)
    monkeypatch.setattr(ckpt, "save", spy_save)
    monkeypatch.setattr(train_mod, "recompute_bn", spy_recompute)
    train(config, tmp_path / "run", progress=False)

    assert [kind for kind, _ in seen].count("step") == 40
    assert all(mode for kind, mode in seen if kind == "step")
    assert not any(mode for kind, mode in seen if kind != "step")
    # each of the 4 evaluations: recompute BN, then the test set, then the checkpoint
    events = [kind for kind, _ in seen if kind != "step"]
    assert events == ["recompute_bn", "evaluate", "save"] * 4


def test_evaluating_a_schedule_free_run_changes_nothing_in_its_training(tmp_path):
    """Evaluating (optimizer.eval(), BN recomputed) and going back to train is exact: the
    training point after 40 iterations is the same, bit for bit, whether the run was
    evaluated 4 times or once; the evaluation point (x) is the same as well."""
    often = schedule_free(deterministic=True)
    once = often.replace(eval_every=40, checkpoint_every=40)
    train(often, tmp_path / "often", progress=False)
    train(once, tmp_path / "once", progress=False)
    a, b = ckpt.load(tmp_path / "often/checkpoint.pt"), ckpt.load(tmp_path / "once/checkpoint.pt")
    for key in ("train_point", "model"):
        for name, tensor in a[key].items():
            assert torch.equal(b[key][name], tensor), (key, name)
    # the evaluation point is not the training point (x is the average of the z's)
    assert any(not torch.equal(a["model"][n], t) for n, t in a["train_point"].items())


def test_batch_norm_is_recomputed_as_a_plain_average_at_the_evaluation_point(tmp_path):
    """recompute_bn's statistics are the mean of the batches' statistics (the oracle: the
    per-channel means of the first BN layer's inputs, computed here by hand)."""
    from superconv.models.bn import bn_modules

    config = schedule_free(iterations=4, eval_every=4, checkpoint_every=4)
    pieces = train_mod.build(config)
    layer = bn_modules(pieces.module)[0]
    inputs = []
    hook = layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))
    train_mod.recompute_bn(pieces, step=10, batches=3)
    hook.remove()
    assert len(inputs) == 3
    expected = torch.stack([x.float().mean(dim=(0, 2, 3)) for x in inputs]).mean(dim=0)
    torch.testing.assert_close(layer.running_mean, expected, rtol=1e-5, atol=1e-6)
    assert pieces.module.training  # left in the mode it was in


def test_schedule_free_resumes_from_an_interrupt_bit_identical(tmp_path):
    """Ctrl-C between evaluations (a checkpoint where an uninterrupted run has none), then
    resume: the same metrics and weights as the run made in one go."""
    config = schedule_free(deterministic=True)
    train(config, tmp_path / "reference", progress=False)

    def interrupt(step, *_):
        if step == 13:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(Interrupted):
        train(config, tmp_path / "run", observers=[interrupt], progress=False)
    assert ckpt.load(tmp_path / "run/checkpoint.pt")["step"] == 14
    train(config, tmp_path / "run", resume=True, progress=False)

    def rows(path):
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_csv(path)]

    assert rows(tmp_path / "run/metrics.csv") == rows(tmp_path / "reference/metrics.csv")
    a, b = (
        ckpt.load(tmp_path / "run/checkpoint.pt"),
        ckpt.load(tmp_path / "reference/checkpoint.pt"),
    )
    for key in ("model", "train_point"):
        for name, tensor in b[key].items():
            assert torch.equal(a[key][name], tensor), (key, name)


def test_other_optimizers_pay_nothing(tmp_path, monkeypatch):
    """SGD: no mode switch, no BN recompute, no training point in the checkpoint."""
    calls = []
    monkeypatch.setattr(train_mod, "recompute_bn", lambda *a, **k: calls.append(a))
    train(tiny("resnet8", policy="constant", policy_params={"lr": 0.05}), tmp_path / "run",
          progress=False)  # fmt: skip
    assert calls == []
    assert "train_point" not in ckpt.load(tmp_path / "run/checkpoint.pt")
