"""A memory model of a training trial, available before training (for budgets and packing).

peak = weights + trainable state (gradient + AdamW moments) + weight copies + saved activations.

On a GPU, training runs under bf16 autocast: every linear layer a gradient flows through
keeps the bf16 copy of its fp32 weight that autocast made for the forward (its backward needs
it for the input gradient), so those weights count once more at 2 bytes each. On CPU training
runs in fp32 and the saved weight is the parameter itself (nothing extra).

Saved activations have two parts:
- the *gradient path*: every block from the lowest trained block to the top keeps what its
  non-linear ops save for backward (LayerNorm and activation inputs, attention operands and
  probabilities) — frozen linear layers save only their weights (counted above);
- the *module inputs*: a trainable module keeps the tensor it reads (a LoRA on q, k and v
  shares one saved input; one on ffn_down keeps the FFN's intermediate activation).
The coefficients are per device and architecture family, fitted by
``bench/memory_model.py --fit`` to measured figures; `autopeft.train.memory` measures the real
peak to keep them honest.
"""

from __future__ import annotations

from dataclasses import dataclass

from autopeft.core.candidate import Candidate
from autopeft.core.profile import ModelProfile

MB = 1024 * 1024

#: Per device and family: gradient-path elements per token per block as multiples of
#: (hidden, intermediate), attention copies per head per token pair, and module-input copies.
#: Fitted by ``bench/memory_model.py --fit`` to measured peaks; a device without its own fit
#: (CUDA until a GPU run is fitted) uses the CPU coefficients at its own activation width.
ACTIVATION_COEFFS: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "cpu": {
        "bert": (0.881, 3.524, 1.322, 1.933),
        "llama": (0.356, 0.712, 2.137, 0.597),
    },
    "cuda": {},
}


def activation_coeffs(family: str, device: str) -> tuple[float, float, float, float]:
    """The fitted coefficients for ``family`` on ``device`` (CPU's, BERT's as fallbacks)."""
    for table in (ACTIVATION_COEFFS.get(device, {}), ACTIVATION_COEFFS["cpu"]):
        if family in table:
            return table[family]
    return ACTIVATION_COEFFS["cpu"]["bert"]


#: Which saved tensor a module on a target reads: targets sharing a source share a tensor.
_SOURCE = {
    "q": "attn_in",
    "k": "attn_in",
    "v": "attn_in",
    "o": "attn_ctx",
    "ffn_up": "ffn_in",
    "ffn_gate": "ffn_in",
    "ffn_down": "ffn_mid",
}
#: Native modules without targets and the source they read.
_NATIVE_SOURCE = {"serial_adapter": "ffn_out", "parallel_adapter": "ffn_in"}
#: Modules that need no saved input for their own gradient (bias-like or outside blocks).
_NO_INPUT = {"bitfit", "prompt", "prefix", "ln_tuning"}


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peak training memory, by component (bytes)."""

    weights: int
    train_state: int
    activations: int
    weight_copies: int = 0

    @property
    def static(self) -> int:
        """Bytes that do not depend on batch or sequence length."""
        return self.weights + self.train_state + self.weight_copies

    @property
    def total_mb(self) -> float:
        """The predicted peak in MiB."""
        return (self.static + self.activations) / MB


def blocks_with_gradient(
    profile: ModelProfile, candidate: Candidate, embeddings_trained: bool = False
) -> int:
    """How many blocks a gradient flows through: from the lowest trained block to the top."""
    if embeddings_trained:
        return profile.num_layers
    layers = [min(m.layers) for m in candidate.modules if m.layers]
    return profile.num_layers - min(layers) if layers else 0


def gradient_path_weights(profile: ModelProfile, blocks: int) -> int:
    """Elements of the linear weights in the top ``blocks`` blocks (what a gradient crosses)."""
    return sum(
        lin.in_features * lin.out_features
        for layer in profile.layers[profile.num_layers - blocks :]
        for lin in layer.sublayers.values()
    )


def module_input_elements(profile: ModelProfile, candidate: Candidate) -> int:
    """Elements per token of the distinct tensors trainable modules read (all blocks)."""
    width = {
        "attn_in": profile.hidden_size,
        "attn_ctx": profile.num_heads * profile.head_dim,
        "ffn_in": profile.hidden_size,
        "ffn_mid": profile.intermediate_size,
        "ffn_out": profile.hidden_size,
    }
    sources: set[tuple[int, str]] = set()
    for m in candidate.modules:
        if m.method in _NO_INPUT:
            continue
        for layer in m.layers:
            if m.method in _NATIVE_SOURCE:
                sources.add((layer, _NATIVE_SOURCE[m.method]))
            for target in m.targets:
                sources.add((layer, _SOURCE[target]))
    return sum(width[src] for _, src in sources)


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
    weights = 4 * (profile.base_params + profile.head_params + trainable_params)
    train_state = 12 * (trainable_params + profile.head_params)
    blocks = blocks_with_gradient(profile, candidate, embeddings_trained)
    a, b, c, d = activation_coeffs(profile.family, device)
    path = blocks * (
        a * profile.hidden_size + b * profile.intermediate_size + c * profile.num_heads * seq_len
    )
    inputs = d * module_input_elements(profile, candidate)
    activations = int(batch_size * seq_len * (path + inputs) * act_bytes)
    # DoRA normalises the merged weight each step: ~3 weight-sized fp32 tensors per target
    # stay alive for backward (fitted, see bench/results/memory_model_cpu.md).
    for m in candidate.modules:
        if m.params.get("use_dora"):
            activations += 12 * sum(
                profile.linear(i, t).in_features * profile.linear(i, t).out_features
                for i in m.layers
                for t in m.targets
            )
    copies = 0
    if device == "cuda":  # autocast's bf16 weight copies, kept for backward (module doc)
        copies = 2 * (
            gradient_path_weights(profile, blocks) + trainable_params + profile.head_params
        )
    return MemoryPrediction(weights, train_state, activations, copies)
