"""Stopping a run by signal: Ctrl-C, ``kill``, a scheduler's preemption, a closed terminal.

SIGINT (Ctrl-C), SIGTERM (``kill``, SLURM's preemption or time limit, Kubernetes) and SIGHUP
(the terminal went away) all stop a run the same way: the trials in flight are failed as
interrupted and queued again, so nothing waits for a heartbeat's grace period on a shared
study, and the exit code is 128 + the signal's number, as a shell reports a tool the signal
ended. A SIGTERM or SIGHUP the process was told to ignore (``nohup`` ignores SIGHUP) stays
ignored; Ctrl-C is always taken, also by a run a script started in the background (which
inherits SIGINT ignored), so a SIGINT sent to it still hands its trials back.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when the signal
arrives; inside a destructor or a weak reference's callback (SQLAlchemy's, say, during a
garbage collection) Python cannot raise it, prints it as "ignored" and the run goes on.
:func:`on_signal` also records the request, and the training loop calls :func:`check` every
step, so a swallowed interrupt still stops the run at the next step; within :func:`handled`
such an interrupt is not printed (the user would see a stray traceback before the one line
the stop prints).

An interrupt inside a storage call would leave its transaction open (SQLite stays locked until
the process ends, so the hand-back after the stop cannot write). :func:`deferred` holds the
stop signals for the length of such a call and delivers them when it returns.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Set once a stop signal arrived (see the module doc).
REQUESTED = threading.Event()

#: The signals that stop a run the way Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: The signal that stopped the run (SIGINT when only a KeyboardInterrupt was seen).
_received: list[int] = []
_installed = threading.Event()
#: Handlers to put back once a stopped run's process goes on (see :func:`handled`).
_left_on: dict[int, Any] = {}
#: The thread that takes signals.
_MAIN_THREAD = threading.main_thread().ident
#: Depth of the :func:`deferred` blocks the main thread is in.
_deferring = 0
#: The stop signals that arrived within a deferred block, in order, delivered at its end.
_held: list[int] = []
#: The handlers a deferred block replaced with :func:`_hold` (handlers other than on_signal).
_replaced: dict[int, Any] = {}


def on_signal(signum: int, frame: Any) -> None:
    """Signal handler: remember the request and the signal, then interrupt as Ctrl-C does.

    Once a stop is under way a repeated SIGTERM or SIGHUP is ignored, so it cannot cut the
    hand-back of the trials short (a closed terminal signals twice: the hang-up, then its
    shell's exit); a second Ctrl-C still interrupts, as a user pressing it again expects.
    """
    if REQUESTED.is_set() and signum != signal.SIGINT:
        return
    pressed_again = REQUESTED.is_set()
    if not _received:
        _received.append(signum)
    REQUESTED.set()
    if _deferring and not pressed_again:  # inside a storage call: interrupt when it returns
        _held.append(signum)
        return
    raise KeyboardInterrupt


def check() -> None:
    """Raise ``KeyboardInterrupt`` when a stop signal arrived (a no-op otherwise)."""
    if REQUESTED.is_set():
        raise KeyboardInterrupt


def received() -> signal.Signals:
    """The signal that stopped the run: SIGINT unless a handled SIGTERM or SIGHUP did."""
    return signal.Signals(_received[0] if _received else signal.SIGINT)


def reset() -> None:
    """Forget an earlier stop (a new command in the same process starts clean).

    Puts back the SIGTERM and SIGHUP handlers a stopped :func:`handled` block left on.
    """
    REQUESTED.clear()
    _received.clear()
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _left_on.items():
            signal.signal(signum, handler)
    _left_on.clear()


def _takes(signum: int) -> bool:
    """Whether this process takes ``signum`` (see the module doc)."""
    return signum == signal.SIGINT or signal.getsignal(signum) is not signal.SIG_IGN


def _install() -> None:
    for signum in STOP_SIGNALS:
        if _takes(signum):
            signal.signal(signum, on_signal)


def reclaim() -> None:
    """Take the stop signals back after a library replaced their handlers.

    ``ray.init`` installs a SIGTERM handler that exits without handing the trials back; the
    Ray executor calls this after starting Ray. A no-op outside :func:`handled`.
    """
    if _installed.is_set() and threading.current_thread() is threading.main_thread():
        _install()


def _hold(signum: int, frame: Any) -> None:
    """Stand-in for a handler other than on_signal within a deferred block."""
    if signum == signal.SIGINT and signum in _held:  # Ctrl-C pressed again: the user insists
        _held.remove(signum)
        _replaced[signum](signum, frame)
    elif signum not in _held:
        _held.append(signum)


class deferred:  # noqa: N801 -- used as a function: ``with stop.deferred():``
    """Within the block, stop signals wait until it ends (a second Ctrl-C does not).

    For storage calls: an interrupt inside one leaves its transaction open, and the database
    locked for the hand-back that follows. Only handlers written in Python are held; under a
    default disposition the signal ends the process, and its locks with it. Nested blocks
    cost nothing; outside the main thread, which takes no signals, the block does nothing.
    A held signal is delivered when the block ends, unless the block ends in an interrupt.
    """

    def __enter__(self) -> None:
        global _deferring
        if threading.get_ident() != _MAIN_THREAD:
            return
        _deferring += 1
        if _deferring > 1:
            return
        try:
            for signum in STOP_SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler) and handler is not on_signal:
                    _replaced[signum] = handler  # first: an interrupt next still puts it back
                    signal.signal(signum, _hold)
        except BaseException:  # interrupted before the block: leave no stand-in behind
            _put_back()
            _held.clear()
            raise

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        global _deferring
        if threading.get_ident() != _MAIN_THREAD:
            return
        if _deferring > 1:
            _deferring -= 1
            return
        replaced = set(_replaced)
        _put_back()
        held = list(_held)
        _held.clear()
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            return  # already interrupting
        for signum in held:
            if signum in replaced:
                signal.raise_signal(signum)  # its own handler decides
        if any(signum not in replaced for signum in held):
            raise KeyboardInterrupt  # on_signal recorded the request when it arrived


def _put_back() -> None:
    """Put the replaced handlers back and leave the deferred block, even if one interrupts.

    A handler put back may interrupt at once (its signal just arrived): the ``finally``
    clause still puts back the rest.
    """
    global _deferring
    try:
        if _replaced:
            signum = next(iter(_replaced))
            signal.signal(signum, _replaced[signum])
            del _replaced[signum]
    finally:
        if _replaced:
            _put_back()
        else:
            _deferring = 0


@contextmanager
def children_ignore_hang_up() -> Iterator[None]:
    """Processes started within the block ignore SIGHUP (an ignored signal is inherited).

    A local Ray's processes share the driver's terminal; closing it would kill them under
    the driver while it hands its trials back, and take the driver down with them. The
    driver stops them itself.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, before)


def _quiet_about_stops(hook: Callable[[Any], object]) -> Callable[[Any], object]:
    """``hook`` for every unraisable exception but the interrupt of a recorded stop."""

    def quiet(unraisable: Any) -> object:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and REQUESTED.is_set():
            return None  # swallowed where it arrived; check() stops the run next
        return hook(unraisable)

    return quiet


@contextmanager
def handled() -> Iterator[None]:
    """Within the block, every stop signal interrupts the main thread as Ctrl-C does.

    Only the main thread can take signals (elsewhere this does nothing); the handlers there
    before are put back afterwards, except after a stop: then SIGTERM and SIGHUP stay
    ignored until :func:`reset`, since a repeat may still come while the process says what
    it left behind and exits (bash passes its SIGHUP on to its jobs, a second hang-up).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reset()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_stops(previous_hook)
    _install()
    _installed.set()
    try:
        yield
    finally:
        _installed.clear()
        sys.unraisablehook = previous_hook
        for signum, handler in previous.items():
            if REQUESTED.is_set() and signum != signal.SIGINT:
                _left_on[signum] = handler  # on_signal ignores it now; reset() puts it back
            else:
                signal.signal(signum, handler)
