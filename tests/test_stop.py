"""Stop signals: Ctrl-C, SIGTERM and SIGHUP interrupt alike, and a swallowed interrupt still
stops training at the next step."""

from __future__ import annotations

import signal

import pytest

from autopeft import stop
from autopeft.train.loop import train_and_eval
from tests.trial_helpers import LORA, make_context


@pytest.fixture
def requested():
    stop.reset()
    yield stop.REQUESTED
    stop.reset()


def test_the_handler_records_the_request_and_interrupts(requested):
    with pytest.raises(KeyboardInterrupt):
        stop.on_signal(2, None)
    assert requested.is_set()


def test_a_swallowed_interrupt_stops_the_loop_at_the_next_step(requested):
    from autopeft.train.build import build_adapted

    ctx = make_context()
    adapted = build_adapted(ctx.base_model, ctx.profile, LORA, total_steps=12)
    seen = []

    def report(step, metrics):
        seen.append(step)
        try:  # as if SIGINT landed in a destructor: the exception is dropped ...
            stop.on_signal(2, None)
        except KeyboardInterrupt:
            pass
        return True

    with pytest.raises(KeyboardInterrupt):  # ... and the loop still stops at its next step
        train_and_eval(
            adapted,
            ctx.data["train"],
            ctx.data["validation"],
            ctx.config.training,
            12,
            report,
            eval_at={2},
        )
    assert seen == [2]


@pytest.fixture
def default_handlers():
    """The dispositions of a process started from a terminal, whatever started pytest."""
    saved = {s: signal.getsignal(s) for s in stop.STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_stop_signal_interrupts_and_is_remembered(signum, default_handlers, requested):
    with stop.handled():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signum)
        assert requested.is_set()
    assert stop.received() == signum  # still known after the block, for the exit line
    stop.reset()
    assert stop.received() == signal.SIGINT and not requested.is_set()


def test_a_repeated_hang_up_cannot_cut_the_hand_back_short(default_handlers, requested):
    with stop.handled():
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGHUP)  # the shell's exit: while trials are handed back
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C again: the user insists
            signal.raise_signal(signal.SIGINT)
        before = stop._left_on or None  # nothing left on inside the block
    assert stop.received() == signal.SIGHUP and before is None
    # After the block, while the process says what it left behind, a late hang-up is ignored.
    assert signal.getsignal(signal.SIGHUP) is stop.on_signal
    signal.raise_signal(signal.SIGHUP)
    assert signal.getsignal(signal.SIGINT) is not stop.on_signal  # Ctrl-C is back at once
    stop.reset()  # the next command: the handlers from before the block are back
    assert signal.getsignal(signal.SIGHUP) is not stop.on_signal
    assert signal.getsignal(signal.SIGTERM) is not stop.on_signal


def test_a_signal_the_process_ignores_stays_ignored(default_handlers, requested):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    before = signal.getsignal(signal.SIGTERM)
    with stop.handled():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is stop.on_signal
        signal.signal(signal.SIGTERM, lambda *_: None)  # what ray.init does to SIGTERM
        stop.reclaim()
        assert signal.getsignal(signal.SIGTERM) is stop.on_signal
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is before  # the handler before is back


def test_ctrl_c_is_taken_even_when_inherited_ignored(default_handlers, requested):
    # A script's background job inherits SIGINT ignored; a SIGINT sent to it still stops it
    # with its trials handed back (as autopeft always did).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with stop.handled():
        assert signal.getsignal(signal.SIGINT) is stop.on_signal
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_reclaim_outside_a_handled_block_changes_nothing(default_handlers):
    mine = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    stop.reclaim()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    signal.signal(signal.SIGTERM, mine)
