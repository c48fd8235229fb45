"""The project's error types and the exit codes the command line maps them to.

A user error (bad path, impossible hyper-parameter, corrupt file) is a
:class:`UserError` and ends the command line with exit code 2; a run whose loss
became NaN/inf is a :class:`DivergenceError` and ends with exit code 3. Both carry
a message that names the problem and what to do about it.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended
EXIT_TERMINATED = 143  # 128 + SIGTERM (what schedulers and `kill` send)


class SuperconvError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code = 1


class UserError(SuperconvError, ValueError):
    """Bad input from the user: a wrong path, a bad value, a corrupt file."""

    exit_code = EXIT_USER_ERROR


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or belongs to another run."""


class RunDirError(UserError):
    """An output folder that cannot be used (unwritable, or holds another run)."""


class DivergenceError(SuperconvError):
    """The training loss became NaN or inf.

    ``step`` and ``lr`` name where it happened; the last good checkpoint and the
    metrics recorded so far are kept on disk.
    """

    exit_code = EXIT_DIVERGED

    def __init__(self, message: str, *, step: int, lr: float):
        super().__init__(message)
        self.step = step
        self.lr = lr


def did_you_mean(word: object, options, *, cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``options``, or ``""`` if none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGINT: Ctrl-C, or SIGTERM) after saving a checkpoint.

    ``exit_code`` is the shell's convention, 128 + the signal's number: 130 for
    SIGINT, 143 for SIGTERM.
    """

    def __init__(self, message: str, *, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
