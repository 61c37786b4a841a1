"""Stop signals: SLURM/submitit send SIGUSR2 (or SIGTERM) before a kill, a user SIGINT. The loop
notes the signal, finishes the gradient update in progress, checkpoints, then hands the signal to
the handler that was there before (submitit requeues the job) and stops."""
from __future__ import annotations

import os
import signal
import threading
from typing import Optional


class TrainingInterrupted(Exception):
    """A stop signal ended the run after a checkpoint; ``exit_code`` = 128 + signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGTERM", "SIGINT") if hasattr(signal, name))


class StopSignals:
    """Catches STOP_SIGNALS while installed; ``received`` is the pending one (None: none)."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def install(self) -> None:
        self._previous = {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self.on_signal)

    def on_signal(self, signum, frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def forward(self, where: str) -> None:
        """After the checkpoint: hand the received signal to the previous handler (or the default
        action), then raise TrainingInterrupted; ``where`` says how to resume."""
        sig, self.received = self.received, None
        handler = self._previous.get(sig, signal.SIG_DFL)
        self.restore()
        if callable(handler):
            handler(sig, None)  # e.g. submitit's requeue, or KeyboardInterrupt for SIGINT
        else:
            os.kill(os.getpid(), sig)
        # A handler that returns (submitit ignores SIGTERM) must not make a partial run look finished.
        raise TrainingInterrupted(f"stopped by {signal.Signals(sig).name} {where}", 128 + sig)
