"""superconv: super-convergence made practical (Smith & Topin, arXiv 1708.07120).

The three ideas of the paper as small pieces for any PyTorch loop:

- :mod:`superconv.schedules`: CLR / 1cycle and baseline schedules as pure values
  of the step, and :func:`superconv.schedules.apply`, the one writer of
  ``optimizer.param_groups``.
- :mod:`superconv.range_test`: the LR range test and :func:`suggest`.
- :mod:`superconv.estimator`: the Hessian-free LR estimate (eq. 8).
- :func:`superconv.fit` / :func:`superconv.find_cycle`: range test -> suggestion ->
  a check by training -> the chosen 1cycle, for any model and DataLoaders.

Nothing is imported eagerly beyond these names; no work happens at import time.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``superconv.fit(...)`` and ``superconv.find_cycle(...)``, imported on first use.

    ``superconv.fit`` is the module :mod:`superconv.fit`, callable as its
    function :func:`superconv.fit.fit` (a submodule attribute would shadow a
    function of the same name on the package).
    """
    if name in ("fit", "find_cycle"):
        import importlib

        module = importlib.import_module("superconv.fit")
        return module if name == "fit" else module.find_cycle
    raise AttributeError(f"module 'superconv' has no attribute {name!r}")
