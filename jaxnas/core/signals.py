"""Preemption-safe stops: SIGTERM (a Cloud TPU preemption, SLURM, Kubernetes) and SIGINT (Ctrl-C, a
notebook's stop button) during a search or a retrain end the run at the next chunk boundary with a
checkpoint of that step, instead of losing everything since the last one.

:class:`StopSignals` is a context manager that installs the handlers (main thread only; elsewhere, or
with ``enabled=False``, it does nothing and signals keep their default effect). The first signal only
records itself and says so; the loop asks :meth:`StopSignals.requested` after every chunk, saves a
checkpoint and raises :class:`StopRequested`, which the CLI turns into a message and exit code
128 + signal (143 for SIGTERM, 130 for SIGINT). A second signal aborts at once with the default
action (the last checkpoint stays valid: orbax writes to a temporary folder and renames).
Several processes agree on the stop through :func:`jaxnas.engine.distributed.any_stop`, so every
process stops at the same step.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Optional

from jaxnas.core.workdir import say

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """A run stopped on a signal at ``step`` with a checkpoint of that step (``what``: search / retrain)."""

    def __init__(self, signum: int, step: int, what: str = "run"):
        self.signum, self.step, self.what = int(signum), int(step), what
        name = signal.Signals(self.signum).name
        super().__init__(f"{what} stopped at step {step} by {name}, checkpoint saved; run the same command "
                         f"to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """``with StopSignals(stream) as stop: ... if stop.requested(): ...``."""

    def __init__(self, stream=None, enabled: bool = True):
        self.stream, self.enabled = stream, enabled
        self._signum: Optional[int] = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self._signum is not None:         # the second signal: abort now, as without a handler
            self._restore()
            os.kill(os.getpid(), signum)
            return
        self._signum = signum
        say(self.stream, f"{signal.Signals(signum).name}: stopping at the next chunk boundary with a checkpoint "
                         f"(send it again to abort at once)")

    def __enter__(self) -> "StopSignals":
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()
        return False

    def requested(self) -> Optional[int]:
        """The signal number received so far (None: none)."""
        return self._signum
