"""The mirror's MLflow writes in a forked child process, so they never hold the training's GIL.

    apart = MirrorApart.start(mirror)        # MirrorQueue.__enter__, where apart() allows it
    apart.sync(trial, alongside, patient)    # waits (GIL released) for the child's sync; raises
    apart.close()                            # what it raised, as `Mirror.sync` would have

Why a process: MLflow's SQL store spends about 30 ms of Python per trial (its ORM writes ~100
metrics, 24 params and 24 tags). On a thread of the training process that Python holds the GIL,
and the training thread, which gives the GIL up for every torch op of every step, waits for it
again each time: measured on 2 cores, a Python-busy thread in the same process made batch-16
passes 7x slower and batch-1024 passes 2.2x, a busy process beside it 3-15 % (benchmarks and
README, "Where the seconds go"). A 1-worker sweep of 100 trials trained 4-5 s longer with the
mirror's thread than without any mirror; here the thread only forwards snapshots and waits on a
pipe, which holds no GIL.

The child is forked from the worker when its queue opens, so it has MLflow imported and the
mirror's state (experiment, parent run) already; it opens connections of its own (inherited
pooled ones are dropped unused: one SQLite or HTTP connection must not serve two processes).
It only ever syncs what the queue's thread sends, one request at a time, and answers with how
long MLflow took or the exception to raise. It ignores the signals a terminal or a scheduler
sends to the whole group: the worker decides what a signal stops, then closes the queue, which
stops the child after the sync in progress (an outage's retries are cut short). It dies with its
worker (PR_SET_PDEATHSIG, or at end of file on its pipe). A child that dies costs nothing but
time: the queue's thread syncs in-process from then on, and every sync is idempotent.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import select
import signal
import struct
import sys
from collections.abc import Sequence

from optuna.trial import FrozenTrial

from experiments.forking import fork_child, stop_with_parent
from experiments.mirror import Mirror, TrackingUnavailable

HEADER = struct.Struct("!I")
"""Each message on a pipe: its pickle's length, then the pickle."""


class ChildGone(RuntimeError):
    """The mirror's child process ended (killed, crashed): sync in-process instead."""


def apart_allowed() -> bool:
    """Fork the mirror's child only on Linux: os.fork of a process with macOS's frameworks
    loaded is unsafe, and elsewhere there is no fork."""
    return sys.platform.startswith("linux")


def send(fd: int, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    os.write(fd, HEADER.pack(len(data)))  # small header, then the body in full
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def receive(fd: int) -> object:
    """The next message on `fd`; `ChildGone` at end of file."""
    size = HEADER.unpack(read_exactly(fd, HEADER.size))[0]
    return pickle.loads(read_exactly(fd, size))


def read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise ChildGone("the mirror's process ended")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class MirrorApart:
    """The worker's side of the mirror's child: requests out, answers in, a stop line."""

    def __init__(self, pid: int, requests: int, answers: int, stop: int) -> None:
        self.pid, self.requests, self.answers, self.stop_fd = pid, requests, answers, stop
        self.closed = False

    @classmethod
    def start(cls, mirror: Mirror) -> MirrorApart:
        """Fork the child serving `mirror`'s syncs (called with no mirror call in flight)."""
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        stop_read, stop_write = os.pipe()
        ours = (answer_read, stop_write)  # closed in the child, with request_write
        pid = fork_child(request_write, serve, mirror, request_read, answer_write, stop_read, ours)
        for fd in (request_read, answer_write, stop_read):
            os.close(fd)
        return cls(pid, request_write, answer_read, stop_write)

    def sync(self, trial: FrozenTrial, alongside: Sequence[FrozenTrial], *, patient: bool) -> float:
        """The child's `Mirror.sync(trial, patient, alongside)`: MLflow's seconds, or what it
        raised, raised here; `ChildGone` if the child is no more."""
        try:
            send(self.requests, (trial, list(alongside), patient))
            outcome, value = receive(self.answers)  # type: ignore[misc]
        except (BrokenPipeError, ChildGone) as gone:
            raise ChildGone("the mirror's process ended") from gone
        if outcome == "raised":
            raise value
        return value

    def stop(self) -> None:
        """Cut the child's retries short: it stops after the sync in progress."""
        with contextlib.suppress(OSError):
            os.write(self.stop_fd, b"x")

    def close(self) -> None:
        """Stop the child and reap it; every descriptor of ours closed (once: a descriptor
        number closed twice could be another file's by then)."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        for fd in (self.requests, self.stop_fd):
            with contextlib.suppress(OSError):
                os.close(fd)  # end of file on its pipe: the child leaves its loop
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError):
            os.close(self.answers)


def serve(
    mirror: Mirror, requests: int, answers: int, stop: int, parents_fds: Sequence[int]
) -> int:
    """In the child (`fork_child`): sync what is asked until end of file on `requests`; exit
    code 0. `parents_fds` are the worker's ends of the pipes, closed here."""
    for fd in parents_fds:
        os.close(fd)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the worker decides, then closes the queue
    stop_with_parent(signal.SIGKILL)  # ignoring SIGTERM, it needs a signal it cannot ignore
    if os.getppid() == 1:
        return 0  # the worker died before the line above took effect
    fresh_connections(mirror)
    mirror.stopping = functools.partial(stopped, stop)
    while True:
        try:
            trial, alongside, patient = receive(requests)  # type: ignore[misc]
        except ChildGone:
            return 0
        before = mirror.seconds
        try:
            mirror.sync(trial, patient=patient, alongside=alongside)
            answer: tuple[str, object] = ("synced", mirror.seconds - before)
        except Exception as error:
            answer = ("raised", picklable(error))
        send(answers, answer)


def stopped(stop: int) -> bool:
    """Whether the worker has asked the child to stop (a byte, or end of file, on `stop`)."""
    return bool(select.select([stop], [], [], 0)[0])


def picklable(error: Exception) -> Exception:
    """`error`, or its one-line stand-in where it cannot cross the pipe (a driver's error
    holding a connection)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        if isinstance(error, TrackingUnavailable):
            return TrackingUnavailable(str(error))
        return RuntimeError(f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")


def fresh_connections(mirror: Mirror) -> None:
    """Drop, unused and unclosed, the connections the child inherited with `mirror`'s MLflow
    store, so that it opens its own (SQLAlchemy's documented recipe after a fork), and
    forget the cached HTTP sessions of an MLflow server's client for the same reason."""
    store = mirror.client._tracking_client.store
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose(close=False)
    with contextlib.suppress(ImportError, AttributeError):
        from mlflow.utils import request_utils

        request_utils._cached_get_request_session.cache_clear()
