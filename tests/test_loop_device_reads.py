"""The training loop reads nothing back from the device between evaluation points.

A read (``.item()``, ``int(t)``, ``float(t)``) of a device tensor waits for every queued
kernel, so one per step stops the host from running ahead of the GPU. The loop runs here on
PyTorch's ``meta`` device under a dispatch mode that answers each read with a placeholder and
records which code made it: CPU-side reads (batch widths, token counts, the optimizer's step
counters) are not device reads and are not counted.
"""

from __future__ import annotations

import copy
import traceback
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from autopeft.train.build import build_adapted
from autopeft.train.loop import train_and_eval

from .trial_helpers import LORA, make_context

LOOP_FILE = "autopeft/train/loop.py"


class MetaDevice(TorchDispatchMode):
    """Answers reads and host copies of ``meta`` tensors; counts reads by the code making them."""

    def __init__(self):
        super().__init__()
        self.reads: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if src is None or src.device.type != "meta":
            return func(*args, **kwargs)
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads[_reader()] += 1
            if src.dtype == torch.bool:
                return True
            return 0.5 if src.dtype.is_floating_point else 0  # 0: the loss guard saw no bad step
        if func is torch.ops.aten._to_copy.default and str(kwargs.get("device")) == "cpu":
            self.reads[_reader()] += 1  # a copy to the host waits for the device as well
            return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
        return func(*args, **kwargs)


def _reader() -> str:
    """``loop.<function>`` when the loop's own line reads, else the library that does."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.endswith(LOOP_FILE):
            return f"loop.{frame.name}"
        for library in ("transformers", "peft"):
            if f"/{library}/" in frame.filename:
                return library
    return "other"


def test_the_loop_reads_device_values_only_at_evaluation_points():
    steps, eval_every = 6, 3
    ctx = make_context(steps=steps, eval_every=eval_every, eval_examples=40)  # 3 batches
    cfg = ctx.config.training
    adapted = build_adapted(copy.deepcopy(ctx.base_model), ctx.profile, LORA, total_steps=steps)
    with MetaDevice() as meta:
        out = train_and_eval(
            adapted,
            ctx.data["train"],
            ctx.data["validation"],
            cfg,
            steps,
            None,
            torch.device("meta"),
        )
    evaluations = steps // eval_every
    assert [h["step"] for h in out.history] == [3, 6]
    # One read of the training loss and one of the NaN guard per evaluation point, none per step.
    assert meta.reads["loop.train_and_eval"] == evaluations
    assert meta.reads["loop.check"] == evaluations
    # Evaluation reads its loss total and copies its predictions once, not once per batch.
    assert meta.reads["loop.evaluate"] == 2 * evaluations
    # Tokens are counted on the host batch, before it moves to the device.
    assert out.tokens == sum(
        int(b["attention_mask"].sum()) for b in ctx.data["train"].batches(8, cfg.seed, steps)
    )
