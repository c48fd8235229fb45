"""Thin adapters from superconv to other training stacks (optional extras).

- :mod:`superconv.integrations.lightning` (``pip install 'superconv[lightning]'``):
  callbacks that run the LR range test before ``Trainer.fit`` and drive a 1cycle
  (or any policy) with cyclical momentum.
- :mod:`superconv.integrations.hf` (``pip install 'superconv[hf]'``): the same for
  Hugging Face ``transformers.Trainer``.
- :mod:`superconv.integrations.tensorboard` (``pip install 'superconv[tensorboard]'``):
  range-test curves and training metrics to TensorBoard through torch's ``SummaryWriter``.

Each module imports its framework when it is itself imported; ``import superconv``
never does. The shared pieces (no framework) are in :mod:`superconv.integrations.common`.
"""
