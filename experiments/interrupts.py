"""Ctrl-C, SIGTERM and SIGHUP are requests: the handler records them, safe points act on them.

    install_signal_handlers()             # in the worker process, once
    with GATE.interruptible():            # training: a signal stops it at its next epoch
        train(...)
    with GATE.deferred():                 # a write to a store: a signal waits until it is done
        trial.set_user_attr(...)
    GATE.hold(); ...; GATE.release()      # several writes that belong together (a population's
                                          # epoch): a signal waits for all of them
    GATE.raise_pending()                  # a safe point: raise the request recorded, if any

The handler never raises. An exception raised by a signal handler lands wherever the
interpreter happens to be, a finalizer or a weakref callback included, where Python prints
"Exception ignored in ..." and drops it: the worker then started a new trial as if nothing had
happened. So the handler only records the request, and the worker raises it at safe points: at
the end of every `deferred()` block and `release()` (the trainer's epoch callback, a trial's
writes), on entering and leaving `interruptible()`, and at `raise_pending()` (before a trial
starts, after each trial's mirror). A worker stops within one epoch, and no trial starts after
a signal. Ctrl-C while a signal is recorded ends the process at once (pressing Ctrl-C twice
always stops; the running trial is then left to the heartbeat and reconcile).

SIGTERM and SIGHUP become `Terminated`, a KeyboardInterrupt, so Optuna marks the running trial
FAIL and re-raises it; the exit status is 128 + the signal number (143, 129; 130 for Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import sys
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
    """The signal recorded by the handler, raised at the next safe point."""

    def __init__(self) -> None:
        self.pending: KeyboardInterrupt | None = None

    def on_signal(self, signum: int, _frame) -> None:
        if self.pending is None:
            self.pending = interruption_for(signum)
        elif signum == signal.SIGINT:  # Ctrl-C again: stop now, whatever is running
            sys.stderr.write("\nCtrl-C again: stopping at once\n")
            os._exit(SIGNAL_EXIT[signal.SIGINT])
        # A repeated SIGTERM or SIGHUP (a supervisor's, the kernel's on the parent's death)
        # asks for what is already asked: it stays one request.

    def raise_pending(self) -> None:
        if self.pending is not None:
            interruption, self.pending = self.pending, None
            raise interruption

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Training: checked on entry and exit; inside, the trainer's epoch callbacks (each a
        `deferred()` block or a `hold()`/`release()` pair) are the safe points."""
        self.raise_pending()
        yield
        self.raise_pending()

    @contextmanager
    def deferred(self) -> Iterator[None]:
        yield
        self.raise_pending()

    def hold(self) -> None:
        """A population stores each member's epoch in turn: a signal must not stop it between
        members. Nothing to do since the handler never raises; kept as the pair's first half."""

    def release(self) -> None:
        """Every member has stored the epoch: a safe point."""
        self.raise_pending()


GATE = InterruptGate()
"""Signals are per process, so is the gate."""


def install_signal_handlers() -> None:
    for signum in SIGNAL_EXIT:
        signal.signal(signum, GATE.on_signal)
