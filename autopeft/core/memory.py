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
On a GPU two more terms hold, both measured on an H200 (bench/results/memory_model_h200_fit.md):
- the forward's working set at the peak (one FFN's intermediate activations), there even when
  no gradient crosses a block (head-only training);
- DoRA keeps output-sized tensors per token for each adapted linear (its magnitude
  rescaling), where on CPU the fit found weight-sized ones.
Fused attention (SDPA) on a GPU saves O(tokens) per head, not the CPU's scores matrix: the
CUDA fit has no sequence-squared term.

Besides the model, CUDA training keeps PyTorch's cuBLAS workspaces in the caching allocator:
one per (handle, stream), and a training step uses two handles, the forward's thread and
autograd's device thread (see ``cuda_workspace_bytes``).

The coefficients are per device and architecture family, fitted by
``bench/memory_model.py --fit`` to measured figures; `autopeft.train.memory` measures the real
peak to keep them honest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from autopeft.core.candidate import Candidate
from autopeft.core.profile import ModelProfile

MB = 1024 * 1024


class Terms(NamedTuple):
    """The activation terms of a trial: elements kept per term, or the coefficient of each.

    ``predict_memory`` multiplies a fitted coefficient by the trial's elements, term by term,
    at the device's activation width (2 bytes under bf16 autocast, 4 in fp32).
    """

    #: Per token and block on the gradient path, x hidden size.
    hidden: float
    #: Per token and block on the gradient path, x intermediate (FFN) size.
    inter: float
    #: Per token pair and head and block on the gradient path (a materialised scores matrix).
    attention: float
    #: Per token, x the elements of the distinct tensors trainable modules read.
    inputs: float
    #: Per token, x intermediate size, once: the forward's working set at the peak.
    transient: float = 0.0
    #: Per token, x the output features of every DoRA-adapted linear.
    dora_outputs: float = 0.0
    #: x the weight elements of every DoRA-adapted linear (independent of the batch).
    dora_weights: float = 0.0


#: Per device and family, fitted by ``bench/memory_model.py --fit`` to measured peaks. A device
#: without a fit for a family uses the CPU coefficients at its own activation width.
#: CPU: saved-tensor estimates (bench/results/memory_model_cpu.md); DoRA keeps about three
#: fp32 weight-sized tensors per target there. CUDA: allocator peaks on an H200, bf16 autocast,
#: fused attention (bench/results/memory_model_h200_fit.md; held out: memory_model_cuda_holdout*).
ACTIVATION_COEFFS: dict[str, dict[str, Terms]] = {
    "cpu": {
        "bert": Terms(0.881, 3.524, 1.322, 1.933, dora_weights=3.0),
        "llama": Terms(0.356, 0.712, 2.137, 0.597, dora_weights=3.0),
    },
    "cuda": {
        "bert": Terms(0.722, 2.888, 0.0, 2.471, transient=2.593, dora_outputs=2.502),
    },
}

#: PyTorch's cuBLAS workspace per (handle, stream) on Hopper (compute capability 9; newer
#: GPUs are assumed alike, unmeasured) and on older GPUs, when ``CUBLAS_WORKSPACE_CONFIG`` is
#: unset; ``autopeft.train.memory`` applies the rule to the device it runs on.
CUBLAS_WORKSPACE = {"hopper": 32 * MB, "older": 4096 * 1024 * 2 + 16 * 1024 * 8}
#: Handles a training step uses: the forward's thread and autograd's device thread.
CUBLAS_HANDLES = 2
#: What a prediction assumes when the caller does not know the GPU (the fitted one: Hopper).
CUDA_WORKSPACE_BYTES = CUBLAS_HANDLES * CUBLAS_WORKSPACE["hopper"]


def activation_coeffs(family: str, device: str) -> Terms:
    """The fitted coefficients for ``family`` on ``device`` (CPU's, BERT's as fallbacks)."""
    for table in (ACTIVATION_COEFFS.get(device, {}), ACTIVATION_COEFFS["cpu"]):
        if family in table:
            return table[family]
    return ACTIVATION_COEFFS["cpu"]["bert"]


#: Which saved tensor a module on a target reads: targets sharing a source share a tensor.
_SOURCE = {
    "qkv": "attn_in",
    "q": "attn_in",
    "k": "attn_in",
    "v": "attn_in",
    "o": "attn_ctx",
    "ffn_gate_up": "ffn_in",
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
    #: Runtime buffers in the allocator that no tensor of the model owns (cuBLAS workspaces).
    workspace: int = 0

    @property
    def static(self) -> int:
        """Bytes that do not depend on batch or sequence length."""
        return self.weights + self.train_state + self.weight_copies + self.workspace

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


def activation_terms(
    profile: ModelProfile,
    candidate: Candidate,
    batch_size: int,
    seq_len: int,
    embeddings_trained: bool = False,
) -> Terms:
    """The elements each activation coefficient multiplies, for one trial's longest batch."""
    tokens = batch_size * seq_len
    blocks = blocks_with_gradient(profile, candidate, embeddings_trained)
    dora = [
        profile.linear(layer, target)
        for m in candidate.modules
        if m.params.get("use_dora")
        for layer in m.layers
        for target in m.targets
    ]
    return Terms(
        hidden=tokens * blocks * profile.hidden_size,
        inter=tokens * blocks * profile.intermediate_size,
        attention=tokens * blocks * profile.num_heads * seq_len,
        inputs=tokens * module_input_elements(profile, candidate),
        transient=tokens * profile.intermediate_size,
        dora_outputs=tokens * sum(lin.out_features for lin in dora),
        dora_weights=sum(lin.in_features * lin.out_features for lin in dora),
    )


def predict_memory(
    profile: ModelProfile,
    candidate: Candidate,
    trainable_params: int,
    batch_size: int,
    seq_len: int,
    device: str = "cuda",
    embeddings_trained: bool = False,
    workspace_bytes: int | None = None,
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
        workspace_bytes: the cuBLAS workspaces on the GPU that will train (a CUDA device's
            figure from ``autopeft.train.memory.cuda_workspace_bytes``); None assumes Hopper's.
    """
    act_bytes = 2 if device == "cuda" else 4
    weights = 4 * (profile.base_params + profile.head_params + trainable_params)
    train_state = 12 * (trainable_params + profile.head_params)
    blocks = blocks_with_gradient(profile, candidate, embeddings_trained)
    coeffs = activation_coeffs(profile.family, device)
    terms = activation_terms(profile, candidate, batch_size, seq_len, embeddings_trained)
    activations = int(act_bytes * sum(c * x for c, x in zip(coeffs, terms)))
    copies = workspace = 0
    if device == "cuda":  # autocast's bf16 weight copies, kept for backward (module doc)
        copies = 2 * (
            gradient_path_weights(profile, blocks) + trainable_params + profile.head_params
        )
        workspace = CUDA_WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    return MemoryPrediction(weights, train_state, activations, copies, workspace)
