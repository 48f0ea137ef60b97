"""Several training processes: each ends with its launcher, and a process that ended is named in one line.

Under ``accelerate launch`` or ``torchrun`` a launcher starts one worker process per rank and stops them all when
one fails or when it is interrupted. A launcher that is killed outright (SIGKILL, the out-of-memory killer) can
stop nothing: its workers would train on as orphans and write ``RUN/model``. :func:`watch_launcher` makes a
worker end with its launcher: on Linux the kernel signals the worker when its parent dies (``PR_SET_PDEATHSIG``),
and a watchdog thread compares the parent's PID with the original every second (everywhere, and for a parent
that died before the signal was set up). The worker then stops as on Ctrl-C: its temporaries are removed and it
exits with ``error: interrupted``; one still running ``GRACE_SECONDS`` later (blocked in a collective) is ended.

A process that is killed or crashes breaks the connections of the others' next collective, where gloo raises
``Connection reset by peer`` (or closed by peer): :func:`lost_process_error` makes that one line.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from bufferanytime.errors import InputError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The parent-death signal: one of its own, so that a handler can check that the parent really changed (Linux sends
# it when the *thread* that started the process ends, which is the launcher's main thread for torchrun).
DEATH_SIGNAL = signal.SIGUSR2
POLL_SECONDS = 1.0
GRACE_SECONDS = 60.0
EXIT_INTERRUPTED = 130
# What gloo's collectives say when the process at the other end of a connection is gone.
PEER_LOST = ("connection reset by peer", "connection closed by peer", "broken pipe", "connection refused")

_state = {"parent": None, "stopping": False}


def under_launcher() -> bool:
    """Whether this process is a worker of ``torchrun`` / ``accelerate launch`` (which set ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ


def watch_launcher() -> bool:
    """Make this worker end when its launcher dies (see the module docstring); whether it is watched.

    Does nothing outside a launcher: a run started from a shell must outlive that shell (``nohup``)."""
    if not under_launcher() or _state["parent"] is not None:
        return False
    parent = os.getppid()
    _state["parent"] = parent
    try:
        signal.signal(DEATH_SIGNAL, _on_parent_death)
    except ValueError:  # not the main thread: the signal's default action (end the process) stays
        pass
    _set_parent_death_signal()
    threading.Thread(target=_watch, args=(parent,), name="launcher-watch", daemon=True).start()
    return True


def _set_parent_death_signal() -> bool:
    """Ask Linux to send :data:`DEATH_SIGNAL` when the parent dies; False where there is no ``prctl``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _on_parent_death(signum, frame) -> None:
    """Stop the run as Ctrl-C does, once, when the parent is really gone."""
    if os.getppid() == _state["parent"] or _state["stopping"]:
        return
    _state["stopping"] = True
    raise KeyboardInterrupt


def _watch(parent: int) -> None:
    """Poll the parent's PID; once it changed, signal the main thread, then end the process after the grace."""
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), DEATH_SIGNAL)
    time.sleep(GRACE_SECONDS)
    try:
        sys.stderr.write(f"error: the launcher ended and this process did not stop within {GRACE_SECONDS:g} s; "
                         "it is ended now\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)


def lost_process_error(exc: BaseException, rank: int, world_size: int) -> InputError | None:
    """The one-line error for a collective that failed because another process ended; None for other errors."""
    if world_size < 2 or not any(words in str(exc).lower() for words in PEER_LOST):
        return None
    who = f"process {1 - rank}" if world_size == 2 else "another process"
    return InputError(f"{who} of {world_size} ended (killed or crashed); process {rank} stopped training "
                      "(continue the run with --resume)")
