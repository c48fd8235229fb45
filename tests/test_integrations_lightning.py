"""Lightning callbacks (issue 25, item 2), on the CPU with a tiny LightningModule.

Checks: the range test before fit restores everything exactly (the trained weights
equal those of a run without the test, bit for bit, at the same max_lr), and the
LR/momentum each training step sees is the pure 1cycle's value at that step.
Skipped, by name, without Lightning (``pip install 'superconv[lightning]'``).
"""

from __future__ import annotations

import pytest
import torch

L = pytest.importorskip(
    "lightning.pytorch", reason="Lightning not installed: pip install 'superconv[lightning]'"
)

from superconv.errors import UserError  # noqa: E402
from superconv.integrations.common import one_cycle_policy  # noqa: E402
from superconv.integrations.lightning import (  # noqa: E402
    OneCycleCallback,
    PolicyCallback,
    RangeTestCallback,
    scheduler_config,
)
from superconv.schedules import one_cycle  # noqa: E402

STEPS = 24  # optimizer steps of the tiny fit: 2 epochs of 12 batches


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: threads only fight the other jobs (conftest restores)


class Tiny(L.LightningModule):
    """Logistic regression on 2 separable Gaussian blobs; records (step, lr, momentum)."""

    def __init__(self, adam: bool = False, scheduler=None):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )
        self.adam = adam
        self.scheduler = scheduler
        self.trace: list[tuple[int, float, float]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)  # dropped during the range test, logged during fit
        group = self.optimizers().optimizer.param_groups[0]
        momentum = group["betas"][0] if "betas" in group else group["momentum"]
        self.trace.append((self.global_step, group["lr"], momentum))
        return loss

    def configure_optimizers(self):
        if self.adam:
            opt = torch.optim.AdamW(self.parameters(), lr=1e-3, weight_decay=0.0)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        if self.scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": scheduler_config(opt, self.scheduler(opt))}


def loader(seed: int = 0, shuffle: bool = True) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (192,), generator=g)
    x = torch.randn(192, 4, generator=g) + 2.0 * y[:, None]
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=16, shuffle=shuffle)


def trainer(callbacks, **kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kw,
    )


class Snapshot(L.Callback):
    """State on fit start (params, optimizer state and groups, RNG), listed around the test."""

    def __init__(self):
        self.state = None

    def on_fit_start(self, trainer, pl_module):
        # The callback loads the training data first (creating its iterator draws from the
        # RNG, as it would when training starts): the state it must restore is the one after.
        trainer.fit_loop.setup_data()
        opt = trainer.optimizers[0]
        self.state = (
            {k: v.clone() for k, v in pl_module.state_dict().items()},
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()},
            torch.get_rng_state(),
            pl_module.training,
        )


def same_state(a, b) -> bool:
    params_a, groups_a, opt_a, rng_a, mode_a = a
    params_b, groups_b, opt_b, rng_b, mode_b = b
    return (
        params_a.keys() == params_b.keys()
        and all(torch.equal(params_a[k], params_b[k]) for k in params_a)
        and groups_a == groups_b
        and opt_a.keys() == opt_b.keys()
        and torch.equal(rng_a, rng_b)
        and mode_a == mode_b
    )


def fit(callbacks, module=None, seed=0, **kw):
    L.seed_everything(seed, verbose=False)
    module = module or Tiny()
    trainer(callbacks, **kw).fit(module, loader(seed))
    return module


def test_range_test_before_fit_restores_exactly_and_one_cycle_trace_is_the_pure_schedule():
    before, after = Snapshot(), Snapshot()
    finder = RangeTestCallback(num_steps=40)
    cycle = OneCycleCallback(range_test=finder)
    tested = fit([before, finder, after, cycle])
    assert same_state(before.state, after.state)
    assert finder.curve is not None and len(finder.curve.lrs) > 10
    s = finder.suggestion
    assert s is not None and 1e-5 <= s.max_lr <= 3.0 and cycle.max_lr == s.max_lr
    # The trace each step saw is the pure 1cycle (CYCLE: div 4, momentum 0.95/0.85) at that step.
    policy = one_cycle_policy(s.max_lr, STEPS)
    assert len(tested.trace) == finder.curve.steps_run + STEPS  # the test's steps, then fit's
    trace = tested.trace[-STEPS:]
    assert [t[0] for t in trace] == list(range(STEPS))
    for step, lr, momentum in trace:
        assert lr == pytest.approx(policy["lr"](step), rel=1e-12)
        assert momentum == pytest.approx(policy["momentum"](step), rel=1e-12)
    assert trace[0][2] == 0.95 and min(t[2] for t in trace) < 0.86
    # Exact restore, end to end: the same fit at the same max_lr without the test ends
    # with the same weights, bit for bit.
    plain = fit([OneCycleCallback(max_lr=s.max_lr)])
    for (name, p), q in zip(tested.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), name


def test_policy_callback_drives_adam_beta1_with_accumulation():
    policy = one_cycle(max_lr=0.01, total_steps=STEPS // 2)
    module = fit([PolicyCallback(policy)], module=Tiny(adam=True), accumulate_grad_batches=2)
    steps = [t[0] for t in module.trace]
    assert steps == [k // 2 for k in range(STEPS)]  # two micro-batches per optimizer step
    for step, lr, beta1 in module.trace:
        assert (lr, beta1) == (policy["lr"](step), policy["momentum"](step))


def test_scheduler_config_in_configure_optimizers_gives_the_same_trace():
    module = fit([], module=Tiny(scheduler=lambda opt: one_cycle(max_lr=0.5, total_steps=STEPS)))
    policy = one_cycle(max_lr=0.5, total_steps=STEPS)
    for step, lr, momentum in module.trace:
        assert lr == pytest.approx(policy["lr"](step), rel=1e-12)
        assert momentum == pytest.approx(policy["momentum"](step), rel=1e-12)


def test_refuses_two_writers_of_the_lr():
    module = Tiny(scheduler=lambda opt: one_cycle(max_lr=0.5, total_steps=STEPS))
    with pytest.raises(UserError, match="returned an LR scheduler as well"):
        fit([OneCycleCallback(max_lr=0.1)], module=module)


def test_bad_setups_say_what_to_do():
    with pytest.raises(UserError, match="either max_lr or range_test"):
        OneCycleCallback()
    with pytest.raises(UserError, match="unknown rule 'valey'; did you mean 'valley'"):
        RangeTestCallback(rule="valey")
    orphan = OneCycleCallback(range_test=RangeTestCallback())  # the finder is not in callbacks
    with pytest.raises(UserError, match="no suggestion yet: list it in callbacks"):
        fit([orphan])


def test_range_test_on_a_loader_of_its_own_leaves_the_fit_alone():
    finder = RangeTestCallback(rule="valley", train_loader=loader(seed=5), num_steps=30)
    module = fit([finder])  # no cycle: the module's own optimizer settings train
    assert finder.suggestion is not None and finder.suggestion.rule == "valley"
    assert {lr for _, lr, _ in module.trace[-STEPS:]} == {0.01}
