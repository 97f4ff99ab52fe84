"""Measured peak training memory: exact on GPU, a deterministic estimate on CPU."""

from __future__ import annotations

import contextlib
import os
import re

import torch

from autopeft.core.memory import CUBLAS_HANDLES, CUBLAS_WORKSPACE
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


def cpu_estimate_mb(adapted: AdaptedModel, batch: dict[str, torch.Tensor]) -> float:
    """Estimate the training peak on CPU from one forward/backward of ``batch``.

    Counts every parameter, a gradient and two AdamW moments per trainable parameter, and the
    tensors autograd saves for backward (unique storages, parameters excluded), which is what
    stays alive at the peak between forward and backward. Deterministic, unlike process RSS.
    Costs one forward pass; no gradients are computed, so training is unaffected.
    """
    model = adapted.model
    params = list(model.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}
    alive: list[torch.Tensor] = []  # keeps every saved storage alive so no address is reused

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            saved[ptr] = storage.nbytes()
            alive.append(t)
        return t.detach()  # keeping `t` itself would keep the whole graph alive

    model.train()
    # Forward only: what autograd saves is known once the graph is built; no backward needed.
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    del loss
    alive.clear()
    unique = {id(p): p for p in params}.values()
    weights = sum(p.numel() * p.element_size() for p in unique)
    trainable = sum(p.numel() * p.element_size() for p in unique if p.requires_grad)
    return (weights + 3 * trainable + sum(saved.values())) / MB
