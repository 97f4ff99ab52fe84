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


def test_an_interrupt_python_cannot_raise_is_not_printed_but_others_are(
    default_handlers, requested, monkeypatch
):
    import gc
    import sys
    import weakref

    class Thing:
        pass

    def collected(callback) -> None:
        thing = Thing()
        ref = weakref.ref(thing, callback)  # noqa: F841 -- kept alive until thing dies
        del thing
        gc.collect()

    def interrupted(ref) -> None:  # the signal arrives while a weak reference's callback runs
        signal.raise_signal(signal.SIGTERM)

    def broken(ref) -> None:
        raise ValueError("a real bug in a callback")

    printed: list[type] = []  # what Python's hook would print
    monkeypatch.setattr(sys, "unraisablehook", lambda u: printed.append(u.exc_type))
    with stop.handled():
        collected(interrupted)  # Python cannot raise from here: it drops the interrupt
        assert requested.is_set()
        with pytest.raises(KeyboardInterrupt):
            stop.check()  # ... and the run stops at its next step
        collected(broken)
    assert printed == [ValueError]  # other unraisables still show
    assert sys.unraisablehook.__name__ == "<lambda>"  # the hook before, put back


def test_a_stop_during_a_trials_clean_up_interrupts_the_trial(default_handlers, requested):
    import weakref

    import torch

    from autopeft.train.trial import _release

    class Cycle:  # only the garbage collector frees it: its callback runs inside gc.collect
        pass

    def arrives(ref) -> None:
        signal.raise_signal(signal.SIGINT)

    with stop.handled():
        garbage = Cycle()
        garbage.me = garbage
        ref = weakref.ref(garbage, arrives)  # noqa: F841
        del garbage
        with pytest.raises(KeyboardInterrupt):  # not dropped inside the callback
            _release(torch.device("cpu"))


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


def test_a_ctrl_c_within_a_deferred_block_interrupts_when_it_ends(default_handlers):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stop.deferred():
            signal.raise_signal(signal.SIGINT)
            done.append("the call finished")
    assert done == ["the call finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_pressed_again_within_a_deferred_block_interrupts_at_once(default_handlers):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stop.deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("not reached")
    assert not done and not stop._held
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stop_signal_within_nested_deferred_blocks_waits_for_the_outer(
    default_handlers, requested
):
    order = []
    with stop.handled():
        with pytest.raises(KeyboardInterrupt):
            with stop.deferred():
                with stop.deferred():
                    signal.raise_signal(signal.SIGTERM)
                order.append("inner ended")
                assert requested.is_set()  # recorded on arrival: the training loop's check sees it
            order.append("not reached")
    assert order == ["inner ended"] and stop.received() == signal.SIGTERM


def test_a_deferred_block_leaves_default_dispositions_alone(default_handlers):
    # Under SIG_DFL a signal ends the process, and its locks with it: nothing to hold.
    with stop.deferred():
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_deferred_block_in_another_thread_holds_nothing(default_handlers):
    import threading

    seen = []

    def other():
        with stop.deferred():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler] and stop._deferring == 0


def test_a_ctrl_c_inside_a_storage_call_leaves_the_study_unlocked(default_handlers, tmp_path):
    """Ctrl-C at random moments of storage calls: the study stays writable after each.

    Without the held signals most such interrupts left SQLite locked by the interrupted
    call's open transaction until the process ended.
    """
    import random
    import threading

    import optuna

    from autopeft.search.storage import InterruptSafeStorage

    url = f"sqlite:///{tmp_path}/study.db"
    short_wait = {"engine_kwargs": {"connect_args": {"timeout": 1}}}
    storage = InterruptSafeStorage(
        optuna.storages.get_storage(optuna.storages.RDBStorage(url, **short_wait))
    )
    study = optuna.create_study(storage=storage, directions=["maximize"])
    other = optuna.storages.RDBStorage(url, **short_wait)  # as the hand-back's next write
    trial_id = study.ask()._trial_id
    rng, main = random.Random(0), threading.main_thread().ident
    interrupts, locked = 0, []
    for attempt in range(40):
        sent = threading.Timer(rng.uniform(0.001, 0.02), signal.pthread_kill, (main, 2))
        sent.start()
        try:
            while True:
                storage.set_trial_user_attr(trial_id, f"k{rng.randint(0, 20)}", "x" * 100)
                storage.get_all_trials(study._study_id)
        except KeyboardInterrupt:
            interrupts += 1
        sent.join()
        try:
            other.set_trial_user_attr(trial_id, "after", attempt)
        except optuna.exceptions.StorageInternalError:
            locked.append(attempt)
    assert interrupts == 40 and not locked
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_while_a_deferred_block_starts_leaves_no_stand_in(
    default_handlers, monkeypatch
):
    real, calls = signal.signal, []

    def set_then_interrupted(signum, handler):
        previous = real(signum, handler)
        calls.append(signum)
        if len(calls) == 1:  # Ctrl-C right after the first stand-in went in
            raise KeyboardInterrupt
        return previous

    monkeypatch.setattr(signal, "signal", set_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        with stop.deferred():
            pytest.fail("the block must not start")
    monkeypatch.setattr(signal, "signal", real)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert stop._deferring == 0 and not stop._replaced
    with pytest.raises(KeyboardInterrupt):  # the next block holds and delivers as before
        with stop.deferred():
            signal.raise_signal(signal.SIGINT)
