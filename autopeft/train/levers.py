"""The memory levers applied to a trial's model: precision, quantisation, checkpointing.

What each lever means is in :mod:`autopeft.core.levers`; this module turns a trial's
:class:`~autopeft.core.levers.Levers` into the base model it trains and the autocast it runs
under. Micro batches and the training length are the loop's and the trial context's.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from autopeft.core.levers import Levers
from autopeft.train.models import DTYPES

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: transformers' keyword for non-reentrant checkpointing: the reentrant variant needs an
#: input that requires grad, which a frozen embedding does not give.
CHECKPOINT_KWARGS = {"use_reentrant": False}


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast a model of ``precision`` runs under on ``device``.

    On a GPU: bf16 autocast for an fp32 or bf16 base (weights stay as stored), fp16 for an
    fp16 base. On CPU an fp32 base runs in plain fp32 (bf16 is slow there); a bf16 or fp16
    base runs under CPU autocast in its own precision, so fp32 adapters meet it.
    """
    if device.type == "cuda":
        return torch.autocast(
            "cuda", dtype=torch.float16 if precision == "fp16" else torch.bfloat16
        )
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler for fp16 (whose small gradients underflow); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def prepare_base(
    levers: Levers,
    base: nn.Module,
    load_quantized: Callable[[Levers], nn.Module],
) -> nn.Module:
    """The base model a trial trains: a copy of ``base`` with the levers applied.

    An unquantised base is a deep copy of the shared one (no disk read), cast to the
    lever's precision. A quantised base is loaded again (``load_quantized``; bitsandbytes
    quantises while loading) and prepared for k-bit training as peft documents it (norms and
    embeddings in fp32, input gradients on). Gradient checkpointing is switched on before
    any adapter wraps the model.
    """
    if levers.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = load_quantized(levers)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # checkpointing's rename
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=levers.gradient_checkpointing,
                gradient_checkpointing_kwargs=CHECKPOINT_KWARGS,
            )
        if levers.gradient_checkpointing and getattr(model.config, "use_cache", None):
            model.config.use_cache = False  # a cache is incompatible with recomputation
        return model
    model = copy.deepcopy(base)
    if levers.dtype != "fp32":
        model.to(DTYPES[levers.dtype])
    if levers.gradient_checkpointing:
        enable_checkpointing(model)
    return model


def enable_checkpointing(model: nn.Module) -> None:
    """Switch on non-reentrant gradient checkpointing of every block (and no KV cache)."""
    # nn.Module types unknown attributes as Tensor | Module; these are an HF model's.
    hf_model = cast("PreTrainedModel", model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)
    if getattr(hf_model.config, "use_cache", None):
        hf_model.config.use_cache = False  # a cache is incompatible with recomputation


def trainable_in_fp32(model: nn.Module) -> None:
    """Keep every trainable parameter in fp32 (a head cast with a low-precision base).

    AdamW's updates vanish in bf16 and fp16 weights; autocast meets fp32 parameters with
    the base's precision in the forward pass.
    """
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
