"""Stopping a run by signal: Ctrl-C, ``kill``, a scheduler's preemption, a closed terminal.

SIGINT (Ctrl-C), SIGTERM (``kill``, SLURM's preemption or time limit, Kubernetes) and SIGHUP
(the terminal went away) all stop a run the same way: the trials in flight are failed as
interrupted and queued again, so nothing waits for a heartbeat's grace period on a shared
study, and the exit code is 128 + the signal's number, as a shell reports a tool the signal
ended. A signal the process was told to ignore (``nohup`` ignores SIGHUP) stays ignored.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when the signal
arrives; inside a destructor or a generator's clean-up the exception is printed as "ignored"
and the run goes on training. :func:`on_signal` also records the request, and the training
loop calls :func:`check` every step, so a swallowed interrupt still stops the run at the next
step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Set once a stop signal arrived (see the module doc).
REQUESTED = threading.Event()

#: The signals that stop a run the way Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: The signal that stopped the run (SIGINT when only a KeyboardInterrupt was seen).
_received: list[int] = []
_installed = threading.Event()


def on_signal(signum: int, frame: Any) -> None:
    """Signal handler: remember the request and the signal, then interrupt as Ctrl-C does."""
    if not _received:
        _received.append(signum)
    REQUESTED.set()
    raise KeyboardInterrupt


def check() -> None:
    """Raise ``KeyboardInterrupt`` when a stop signal arrived (a no-op otherwise)."""
    if REQUESTED.is_set():
        raise KeyboardInterrupt


def received() -> signal.Signals:
    """The signal that stopped the run: SIGINT unless a handled SIGTERM or SIGHUP did."""
    return signal.Signals(_received[0] if _received else signal.SIGINT)


def reset() -> None:
    """Forget an earlier stop (a new command in the same process starts clean)."""
    REQUESTED.clear()
    _received.clear()


def _install() -> None:
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, on_signal)


def reclaim() -> None:
    """Take the stop signals back after a library replaced their handlers.

    ``ray.init`` installs a SIGTERM handler that exits without handing the trials back; the
    Ray executor calls this after starting Ray. A no-op outside :func:`handled`.
    """
    if _installed.is_set() and threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            if signal.getsignal(signum) not in (signal.SIG_IGN, on_signal):
                signal.signal(signum, on_signal)


@contextmanager
def handled() -> Iterator[None]:
    """Within the block, every stop signal interrupts the main thread as Ctrl-C does.

    Only the main thread can take signals (elsewhere this does nothing); the handlers there
    before are put back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _install()
    _installed.set()
    try:
        yield
    finally:
        _installed.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
