"""Ctrl-C, SIGTERM and SIGHUP stop a worker only where stopping loses nothing.

    install_signal_handlers()             # in the worker process, once
    with GATE.interruptible():            # pure computation: a signal stops it at once
        train(...)
    with GATE.deferred():                 # a write to a store: a signal waits until it is done
        trial.set_user_attr(...)
    GATE.hold(); ...; GATE.release()      # several writes that belong together (a population's
                                          # epoch): a signal waits for all of them

A signal raised in the middle of a database write can leave a transaction open and the SQLite
file locked for every other worker (seen: "database is locked" after SIGTERM). So the handler
raises at once only inside `interruptible()` (training, which touches no store); anywhere else
it is held and raised when the current `deferred()` block ends, or at the next
`raise_pending()` (after each epoch's record, after each trial's mirror). In practice a worker
stops within one epoch. A second signal while one is held is raised at once: pressing Ctrl-C
twice always stops.

SIGTERM and SIGHUP become `Terminated`, a KeyboardInterrupt, so Optuna marks the running trial
FAIL and re-raises it; the exit status is 128 + the signal number (143, 129; 130 for Ctrl-C).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop like Ctrl-C. A KeyboardInterrupt, so Optuna marks the running
    trial FAIL and re-raises it instead of treating it as the objective's error."""

    def __init__(self, signal_name: str, exit_status: int) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_status = exit_status


def interruption_for(signum: int) -> KeyboardInterrupt:
    received = signal.Signals(signum)
    if received == signal.SIGINT:
        return KeyboardInterrupt()
    return Terminated(received.name, SIGNAL_EXIT[received])


class InterruptGate:
    """Where the process is, for the signal handler: in pure computation or not."""

    def __init__(self) -> None:
        self.computing = False
        self.pending: KeyboardInterrupt | None = None
        self._before_hold: bool | None = None

    def on_signal(self, signum: int, _frame) -> None:
        interruption = interruption_for(signum)
        if self.computing or self.pending is not None:
            self.pending = None
            raise interruption
        self.pending = interruption

    def raise_pending(self) -> None:
        if self.pending is not None:
            interruption, self.pending = self.pending, None
            raise interruption

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        self.raise_pending()
        before, self.computing = self.computing, True
        try:
            yield
        finally:
            self.computing = before

    @contextmanager
    def deferred(self) -> Iterator[None]:
        before, self.computing = self.computing, False
        try:
            yield
        finally:
            self.computing = before
        self.raise_pending()

    def hold(self) -> None:
        """Hold signals from now until `release()`, even inside `interruptible()`: a population
        stores each member's epoch in turn, and a signal must not stop it between members."""
        if self._before_hold is None:
            self._before_hold = self.computing
        self.computing = False

    def release(self) -> None:
        """Back to what `hold()` interrupted; raise a signal held meanwhile."""
        if self._before_hold is not None:
            self.computing, self._before_hold = self._before_hold, None
        self.raise_pending()


GATE = InterruptGate()
"""Signals are per process, so is the gate."""


def install_signal_handlers() -> None:
    for signum in SIGNAL_EXIT:
        signal.signal(signum, GATE.on_signal)
