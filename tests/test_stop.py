"""Ctrl-C cannot be lost: a swallowed KeyboardInterrupt still stops training at the next step."""

from __future__ import annotations

import pytest

from autopeft import stop
from autopeft.train.loop import train_and_eval
from tests.trial_helpers import LORA, make_context


@pytest.fixture
def requested():
    stop.REQUESTED.clear()
    yield stop.REQUESTED
    stop.REQUESTED.clear()


def test_the_handler_records_the_request_and_interrupts(requested):
    with pytest.raises(KeyboardInterrupt):
        stop.on_sigint(2, None)
    assert requested.is_set()


def test_a_swallowed_interrupt_stops_the_loop_at_the_next_step(requested):
    from autopeft.train.build import build_adapted

    ctx = make_context()
    adapted = build_adapted(ctx.base_model, ctx.profile, LORA, total_steps=12)
    seen = []

    def report(step, metrics):
        seen.append(step)
        try:  # as if SIGINT landed in a destructor: the exception is dropped ...
            stop.on_sigint(2, None)
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
