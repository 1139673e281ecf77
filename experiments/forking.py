"""Forking children from a loaded process, torch-free: a child that ends with its parent and
never runs on through the parent's stack.

    pid = fork_child(parents_pipe_end, main, *args)   # main(*args) in the child, then exit
    stop_with_parent(signal.SIGKILL)                  # in a child: die with the parent
    usable_cores()                                    # the cores this process may run on

Torch-free so that the sweep command can fork its plot server before it imports torch
(`experiments.plot_server`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def usable_cores() -> int:
    """CPU cores this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def stop_with_parent(signum: int = signal.SIGTERM) -> None:
    """Linux: have the kernel send this process `signum` when its parent dies, kill -9
    included, so no worker goes on running trials for a command that is gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)


def flush_quietly() -> None:
    """Flush stdout and stderr before os._exit; a closed pipe is not an error worth a trace."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def fork_child(close_in_child: int, main: Callable[..., int], *args: object) -> int:
    """Fork a child that closes the parent's pipe end `close_in_child`, runs `main(*args)` and
    exits with its code; return the child's pid. In the child the parent's signal handlers
    (which record requests for its own loop) give way to the defaults, so a signal just ends
    it, and the parent's death ends it too. Whatever `main` raises ends the child with code 1:
    nothing of the parent's stack may run on in a forked copy of it."""
    flush_quietly()  # nothing buffered here is written twice by the child
    pid = os.fork()
    if pid != 0:
        return pid
    code = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        stop_with_parent()
        os.close(close_in_child)
        code = main(*args)
    except BaseException:
        traceback.print_exc()
    finally:
        flush_quietly()
        os._exit(code)
