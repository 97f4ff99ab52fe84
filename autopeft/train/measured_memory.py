"""Measured peak training memory: exact on GPU, a deterministic estimate on CPU."""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any

import torch

from autopeft.core.memory_model import CUBLAS_HANDLES, CUBLAS_WORKSPACE
from autopeft.train.build import AdaptedModel

MB = 1024 * 1024


def cuda_workspace_bytes(device: torch.device, config: str | None = None) -> int:
    """The cuBLAS workspaces a training step on ``device`` keeps in PyTorch's allocator.

    PyTorch's rule: ``CUBLAS_WORKSPACE_CONFIG`` (``:SIZE_KIB:COUNT`` pairs) when set, else
    32 MiB on Hopper and 8.125 MiB on older GPUs; one workspace per handle, and training uses
    two (forward and autograd's device thread). 0 off CUDA.
    """
    if device.type != "cuda":
        return 0
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG") if config is None else config
    pairs = re.findall(r":(\d+):(\d+)", config or "")
    if pairs:
        per_handle = sum(int(kib) * 1024 * int(count) for kib, count in pairs)
    else:
        major, _ = torch.cuda.get_device_capability(device)
        per_handle = CUBLAS_WORKSPACE["hopper" if major >= 9 else "older"]
    return CUBLAS_HANDLES * per_handle


@contextlib.contextmanager
def cuda_peak(device: torch.device):
    """Reset the CUDA allocator's peak on entry; ``box[0]`` holds the peak MiB on exit."""
    box: list[float] = [0.0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    yield box
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        box[0] = torch.cuda.max_memory_allocated(device) / MB


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters, buffers and quantisation constants (shared once).

    A bitsandbytes weight keeps its constants beside the parameter (a 4-bit weight's
    ``quant_state``: absmax per block, code book, nested constants; an 8-bit one's ``SCB``
    row scales): allocated memory that no parameter or buffer owns.
    """
    tensors = [*model.parameters(), *model.buffers()]
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            tensors += [t for t in vars(state).values() if isinstance(t, torch.Tensor)]
            nested = getattr(state, "state2", None)
            if nested is not None:
                tensors += [t for t in vars(nested).values() if isinstance(t, torch.Tensor)]
        scales = getattr(p, "SCB", None)
        if isinstance(scales, torch.Tensor):
            tensors.append(scales)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def cpu_step_peak_mb(adapted: AdaptedModel, batch: dict[str, torch.Tensor]) -> float:
    """Estimate a training step's peak on CPU from one forward/backward of ``batch``.

    ``batch`` is the trial's heaviest micro batch (its longest rows). The peak is the model's
    resident bytes (:func:`model_bytes`), AdamW's two fp32 moments per trainable parameter
    (allocated at the first step and alive from then on) and the highest running sum of
    every CPU allocation and free the PyTorch profiler records during the forward and
    backward: activations, recomputation under gradient checkpointing, a causal LM's logits,
    gradients and dequantised weights. Deterministic, unlike process RSS; a CPU figure (fp32
    or CPU-autocast compute, unfused attention), so an estimate of what a GPU would need.
    Gradients are cleared afterwards: training is unaffected apart from the random numbers
    dropout drew (the caller reseeds).
    """
    from torch.profiler import ProfilerActivity, profile

    from autopeft.train.levers import autocast

    model = adapted.model
    model.train()
    resident = model_bytes(model)
    unique = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    moments = 2 * 4 * sum(p.numel() for p in unique)
    with _quiet_fd(2), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with autocast(torch.device("cpu"), adapted.precision):
            loss = model(**batch).loss
        loss.backward()
        del loss
    model.zero_grad(set_to_none=True)
    return (resident + moments + _peak_allocated(prof)) / MB


def _peak_allocated(prof: Any) -> int:
    """The highest running sum of the CPU allocations and frees a profiler recorded."""
    from torch._C._profiler import _EventType

    sizes: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            sizes.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    running = peak = 0
    for _, size in sorted(sizes):
        running += size
        peak = max(peak, running)
    return peak


@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Send file descriptor ``fd`` to /dev/null inside the block.

    The profiler's C++ side (kineto) writes "profiler_start"/"profiler_stop" trace lines to
    stderr on every use, beneath Python's ``sys.stderr``; a trial's output would carry them.
    """
    saved = os.dup(fd)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(null)
