"""Memory levers: the training settings that decide whether a fine-tune fits a device.

Five settings, each fixed in a study's ``training`` section or searched in the search
space's ``training`` section like any parameter (a list of choices)::

    training:                       # the study's recipe: fixed values
      batch_size: 16
      gradient_checkpointing: true
    search_space:
      training:                     # searched: one value per trial
        quantization: [none, nf4]
        micro_batch_size: [4, 16]

- ``gradient_checkpointing``: keep only each block's input and recompute the block in the
  backward pass (less activation memory, about a third more step time).
- ``micro_batch_size``: rows per forward/backward; ``batch_size / micro_batch_size`` micro
  batches are accumulated into one optimizer step, so the effective batch (and the quality
  it trains to) stays the study's ``batch_size``. It must divide ``batch_size``.
- ``max_length``: the longest training row in tokens (longer rows are cut or, when the prompt
  alone fills it, left out); evaluation keeps ``task.max_length``, so quality stays comparable.
  Each trial reports the share of training rows it cut (the metric ``truncated_share``).
- ``dtype``: the precision the frozen base weights are stored in (``fp32``, ``bf16``,
  ``fp16``); trainable parameters and their optimizer state stay fp32, and a low-precision
  base trains under autocast in its own precision.
- ``quantization``: a bitsandbytes-quantised base (QLoRA): ``nf4``/``fp4`` 4-bit, with
  double quantisation of the constants as ``nf4-dq``/``fp4-dq``, or ``int8``. The base's
  linear layers are quantised; embeddings, norms and heads stay unquantised (fp32, as peft's
  k-bit training preparation makes them). ``dtype`` is then the compute precision.

This module is torch-free: validation and the memory model read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Base precisions and their bytes per element.
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
#: Quantised bases: ``none`` or a bitsandbytes scheme.
QUANTIZATIONS = ("none", "nf4", "fp4", "nf4-dq", "fp4-dq", "int8")
#: Every lever, in the order they are shown.
LEVERS = ("quantization", "dtype", "gradient_checkpointing", "micro_batch_size", "max_length")
#: bitsandbytes' 4-bit block: one absmax constant per 64 weights (``blocksize=64``), and
#: with double quantisation one fp32 constant per 256 of those 8-bit absmax values.
BNB_BLOCK = 64
BNB_NESTED_BLOCK = 256


def quant_bits(quantization: str) -> int | None:
    """4, 8, or None for an unquantised base."""
    if quantization == "none":
        return None
    return 8 if quantization == "int8" else 4


def quantized_linear_bytes(in_features: int, out_features: int, quantization: str) -> int:
    """Bytes a bitsandbytes-quantised linear weight occupies, its constants included.

    4-bit: two weights per byte plus an fp32 absmax per block of 64 (double quantisation: an
    8-bit absmax per block and an fp32 constant per 256 blocks). 8-bit (LLM.int8): one byte
    per weight plus an fp32 scale per output row.
    """
    n = in_features * out_features
    if quantization == "int8":
        return n + 4 * out_features
    blocks = -(-n // BNB_BLOCK)
    if quantization.endswith("-dq"):
        return -(-n // 2) + blocks + 4 * -(-blocks // BNB_NESTED_BLOCK)
    return -(-n // 2) + 4 * blocks


@dataclass(frozen=True)
class Levers:
    """The memory levers one trial trains with, resolved (no ``None``)."""

    batch_size: int
    micro_batch_size: int
    max_length: int
    gradient_checkpointing: bool = False
    dtype: str = "fp32"
    quantization: str = "none"

    @classmethod
    def of(cls, training: Any, task_max_length: int) -> Levers:
        """The levers of a trial's recipe (a ``TrainingConfig``, searched values applied)."""
        return cls(
            batch_size=training.batch_size,
            micro_batch_size=training.micro_batch_size or training.batch_size,
            max_length=training.max_length or task_max_length,
            gradient_checkpointing=training.gradient_checkpointing,
            dtype=training.dtype,
            quantization=training.quantization,
        )

    @property
    def accumulation(self) -> int:
        """Micro batches per optimizer step."""
        return self.batch_size // self.micro_batch_size

    @property
    def bits(self) -> int | None:
        """4 or 8 for a quantised base, else None."""
        return quant_bits(self.quantization)


def platform_problems(
    values: dict[str, set[Any]], bnb: bool, bf16_device: bool | None = None
) -> list[tuple[str, str]]:
    """Why levers cannot run here: ``(lever, sentence)`` per problem, empty when all can.

    bitsandbytes 0.50 trains 4-bit and 8-bit bases on CPU and CUDA, in fp32, bf16 or fp16
    compute (checked on CPU: LoRA gradients flow in all 12 combinations), so what can be
    missing is the package itself, and bf16 on a GPU older than Ampere.

    Args:
        values: every value each lever may take in the study (fixed or searched).
        bnb: whether bitsandbytes is installed.
        bf16_device: whether the training device computes in bf16 (None: not known yet,
            as in validation, which imports no torch).
    """
    problems: list[tuple[str, str]] = []
    quantized = sorted(q for q in values.get("quantization", set()) if q != "none")
    if quantized and not bnb:
        why = (
            f"quantization {', '.join(quantized)} needs bitsandbytes, which is not installed "
            "(pip install bitsandbytes; `autopeft[quant]` pins a tested version)"
        )
        problems.append(("quantization", why))
    if bf16_device is False and "bf16" in values.get("dtype", set()):
        why = (
            "dtype bf16 needs a GPU that computes in bf16 (compute capability 8.0 or newer), "
            "and this one does not; use fp16 or fp32"
        )
        problems.append(("dtype", why))
    return problems
