"""superconv: super-convergence made practical (Smith & Topin, arXiv 1708.07120).

The three ideas of the paper as small pieces for any PyTorch loop:

- :mod:`superconv.schedules`: CLR / 1cycle and baseline schedules as pure values
  of the step, and :func:`superconv.schedules.apply`, the one writer of
  ``optimizer.param_groups``.
- :mod:`superconv.range_test`: the LR range test and :func:`suggest`.
- :mod:`superconv.estimator`: the Hessian-free LR estimate (eq. 8).

Nothing is imported eagerly beyond these names; no work happens at import time.
"""

__version__ = "0.1.0"
