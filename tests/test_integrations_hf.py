"""Hugging Face Trainer integration (issue 25, item 3), on the CPU, no downloads.

A tiny randomly initialised BERT classifier built from a config. Checks: the range
test when training begins restores everything exactly (the trained weights equal
those of a run at the same max_lr without the test, bit for bit), and the LR/beta1
each optimizer step sees is the pure 1cycle's value at that step. Skipped, by name,
without transformers/accelerate (``pip install 'superconv[hf]'``).
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="transformers not installed: pip install 'superconv[hf]'"
)
pytest.importorskip("accelerate", reason="accelerate not installed: pip install 'superconv[hf]'")

from superconv.errors import UserError  # noqa: E402
from superconv.integrations.common import one_cycle_policy  # noqa: E402
from superconv.integrations.hf import RangeTestCallback, one_cycle_scheduler  # noqa: E402

STEPS = 8


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: threads only fight the other jobs (conftest restores)


class Pairs(torch.utils.data.Dataset):
    """Sequences of 8 token ids; the label is whether token 1 occurs more often than token 2."""

    def __init__(self, n: int = 96, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 4, (n, 8), generator=g)
        self.labels = ((self.ids == 1).sum(1) > (self.ids == 2).sum(1)).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert():
    config = transformers.BertConfig(
        vocab_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


class Trace(transformers.TrainerCallback):
    """(global step, lr, beta1) at the start of every optimizer step."""

    def __init__(self):
        self.rows = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        group = optimizer.param_groups[0]
        self.rows.append((state.global_step, group["lr"], group["betas"][0]))


def train(tmp_path, callbacks, max_lr=None, **kw):
    transformers.set_seed(0)
    model = tiny_bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=8,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
        **kw,
    )
    steps = None if max_lr is None else STEPS
    scheduler = one_cycle_scheduler(opt, max_lr, steps)
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Pairs(),
        callbacks=callbacks,
        optimizers=(opt, scheduler),
    )
    trainer.train()
    return model


def test_range_test_restores_exactly_and_the_trace_is_the_pure_one_cycle(tmp_path):
    finder, trace = RangeTestCallback(num_steps=24), Trace()
    tested = train(tmp_path, [finder, trace])
    s = finder.suggestion
    assert s is not None and finder.curve is not None and 1e-5 <= s.max_lr <= 3.0
    policy = one_cycle_policy(s.max_lr, STEPS)
    assert [r[0] for r in trace.rows] == list(range(STEPS))
    for step, lr, beta1 in trace.rows:
        assert lr == pytest.approx(policy["lr"](step), rel=1e-12)
        assert beta1 == pytest.approx(policy["momentum"](step), rel=1e-12)
    assert trace.rows[0][2] == 0.95 and min(r[2] for r in trace.rows) < 0.86
    plain = train(tmp_path, [], max_lr=s.max_lr)
    for (name, p), q in zip(tested.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(p, q), name


def test_needs_superconvs_scheduler(tmp_path):
    transformers.set_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, use_cpu=True, report_to="none",
        save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=Pairs(), callbacks=[RangeTestCallback()]
    )
    with pytest.raises(UserError, match=r"scheduler is LambdaLR, not superconv's: pass optimizers"):
        trainer.train()


def test_one_cycle_scheduler_needs_the_run_length():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(UserError, match="pass num_training_steps"):
        one_cycle_scheduler(opt, 0.1)


def test_one_cycle_false_only_reads_a_suggestion_and_keeps_the_trainers_scheduler(tmp_path):
    transformers.set_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=3, use_cpu=True, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, learning_rate=1e-3,
        lr_scheduler_type="constant",
    )  # fmt: skip
    finder, trace = RangeTestCallback(one_cycle=False, num_steps=24), Trace()
    transformers.Trainer(
        model=tiny_bert(), args=args, train_dataset=Pairs(), callbacks=[finder, trace]
    ).train()
    assert finder.suggestion is not None
    assert [lr for _, lr, _ in trace.rows] == [1e-3] * 3  # the Trainer's own constant LR
