"""A memory model of a training trial, available before training (for budgets and packing).

peak = weights + trainable state (gradient + AdamW moments) + saved activations.
Activations are needed only from the lowest block that holds a trainable module upward
(gradients need not flow below it); prompt tuning needs all blocks. The per-token and
attention coefficients are per architecture family; `autopeft.train.memory` measures the
real figure (CUDA allocator peak on GPU, saved-tensor accounting on CPU) to check them.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopeft.core.candidate import Candidate
from autopeft.core.profile import ModelProfile

MB = 1024 * 1024

#: Saved activations per token per block, in units of (hidden, intermediate) elements, and
#: attention-probability copies per head per token pair; fitted to saved-tensor accounting.
ACTIVATION_COEFFS = {"bert": (12.0, 3.0, 2.0), "llama": (10.0, 5.0, 2.0)}


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peak training memory, by component (bytes)."""

    weights: int
    train_state: int
    activations: int

    @property
    def total_mb(self) -> float:
        """The predicted peak in MiB."""
        return (self.weights + self.train_state + self.activations) / MB


def lowest_trained_block(candidate: Candidate, embeddings_trained: bool) -> int | None:
    """The lowest transformer block a gradient must reach (None: only the head trains)."""
    if embeddings_trained:
        return 0
    layers = [min(m.layers) for m in candidate.modules if m.layers]
    return min(layers) if layers else None


def predict_memory(
    profile: ModelProfile,
    candidate: Candidate,
    trainable_params: int,
    batch_size: int,
    seq_len: int,
    device: str = "cuda",
    embeddings_trained: bool = False,
) -> MemoryPrediction:
    """Predict the peak memory of training ``candidate``.

    Args:
        profile: the base model.
        candidate: the configuration (its placement decides how deep gradients flow).
        trainable_params: the exact adapter parameter count (from the method formulas).
        batch_size: training batch size.
        seq_len: the longest sequence (tokens, prefix/prompt tokens included).
        device: ``cuda`` (bf16 autocast: activations stored in 2 bytes) or ``cpu`` (fp32).
        embeddings_trained: True for methods whose gradient reaches the input embeddings.
    """
    act_bytes = 2 if device == "cuda" else 4
    total_params = profile.base_params + profile.head_params + trainable_params
    weights = 4 * total_params
    train_state = 12 * (trainable_params + profile.head_params)
    low = lowest_trained_block(candidate, embeddings_trained)
    blocks = 0 if low is None else profile.num_layers - low
    a, b, c = ACTIVATION_COEFFS.get(profile.family, ACTIVATION_COEFFS["bert"])
    per_token = a * profile.hidden_size + b * profile.intermediate_size
    attention = c * profile.num_heads * seq_len
    activations = int(batch_size * seq_len * blocks * (per_token + attention) * act_bytes)
    return MemoryPrediction(weights, train_state, activations)
