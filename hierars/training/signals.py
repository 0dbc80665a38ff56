"""Stop training cleanly on SIGINT / SIGTERM: finish the step, write a checkpoint, then raise.

:func:`hierars.training.fit` runs its loop inside :class:`StopOnSignal`. The first SIGINT (Ctrl-C) or SIGTERM
only sets a flag; the loop checks it after every optimiser step, writes its checkpoint and raises
:class:`TrainingInterrupted`, whose message says how to resume. A second SIGINT while the step finishes
falls back to the previous handler (Ctrl-C twice stops at once, as usual); further SIGTERMs are ignored (a
supervisor that sends SIGTERM after SIGINT, as jupyter_client does, must not cancel the checkpoint). The
previous handlers are restored when the block exits.

Under ``dvc repro`` the chain is dvc → shell → papermill → Jupyter kernel (its own session). Ctrl-C reaches
dvc (which ignores SIGINT while its command runs), the shell and papermill; papermill (nbclient) then shuts
the kernel down: SIGINT to the kernel, a shutdown request, SIGTERM after ``shutdown_wait_time / 2`` (2.5 s)
and SIGKILL after 5 s. The kernel's ``fit`` catches the first of these signals, so the step in progress and
the checkpoint must fit in that window; a step that takes longer loses only the iterations since the
previous periodic checkpoint (``train.ckpt_interval``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["StopOnSignal", "TrainingInterrupted", "announce"]

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint (a KeyboardInterrupt, so that
    ``except Exception`` blocks do not swallow it and an uncaught one exits the process non-zero)."""


class StopOnSignal:
    """Context manager: while active, SIGINT / SIGTERM set :attr:`received` instead of interrupting.

    Outside the main thread (where Python cannot install signal handlers) it does nothing.

    Attributes:
        received: name of the first signal received (``"SIGINT"`` / ``"SIGTERM"``), or ``None``.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = name
            log.warning("%s received: stopping after the current step (a checkpoint is written first)", name)
            return
        if signum != signal.SIGINT:
            log.warning("%s received while stopping: still writing the checkpoint", name)
            return
        previous = self._previous.get(signum)  # second SIGINT: behave as before we were installed
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        raise KeyboardInterrupt(f"second {name}: stopping at once, without a checkpoint")

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()


def announce(message: str) -> None:
    """Log ``message`` and, inside a Jupyter kernel (whose ``sys.stderr`` goes to the notebook), also write it to
    the process's real stderr: papermill stops listening to a kernel it shuts down, so under ``dvc repro`` the
    notebook may never receive the exception, while the kernel's stderr is the terminal dvc runs in."""
    log.error(message)
    real = sys.__stderr__
    if real is not None and real is not sys.stderr:
        try:
            real.write(f"hierars: {message}\n")
            real.flush()
        except (OSError, ValueError):
            pass
