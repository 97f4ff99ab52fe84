"""A memory model of a training trial, available before training (for budgets and packing).

peak = weights + trainable state (gradient + AdamW moments) + weight copies + saved activations.

Every memory lever (:mod:`autopeft.core.levers`) enters the prediction:
- weights at their stored precision: fp32, bf16/fp16, or a bitsandbytes-quantised base
  (4-bit with its absmax constants, or 8-bit with its row scales; embeddings, norms and
  heads stay fp32, as peft's k-bit preparation leaves them), plus the one weight a
  quantised layer dequantises at a time;
- trainable parameters, their gradients and AdamW moments in fp32 whatever the base;
- activations at the compute width (2 bytes under autocast, 4 in fp32), for one micro
  batch (``micro_batch_size`` rows) of the training length (``max_length``); with gradient
  checkpointing only each block's input is kept, and one block is recomputed at a time;
- a causal LM's logits over the vocabulary (the language-model head's output, its fp32
  log-softmax and their gradients), which dominate a small decoder's peak at long lengths.

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

The coefficients are per device and architecture family, fitted to measured figures by
``autopeft.memory_fit`` (``python -m bench.memory_model --fit``, ``python -m bench.memory_levers
--fit``); `autopeft.train.measured_memory` measures the real peak to keep them honest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.levers import DTYPE_BYTES, Levers, quantized_linear_bytes
from autopeft.core.model_profile import Linear, ModelProfile

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
    #: Per token, x the vocabulary of a causal LM (logits, log-softmax and their gradients).
    logits: float = 0.0
    #: Per token and block on the gradient path, x hidden size: the block inputs gradient
    #: checkpointing keeps (the other terms then count one recomputed block).
    checkpoints: float = 0.0


#: Per device and family, fitted by ``autopeft.memory_fit`` (``python -m bench.memory_levers
#: --fit``, ``python -m bench.memory_model --fit``) to measured peaks. A device
#: without a fit for a family uses the CPU coefficients at its own activation width.
#: CPU: step estimates (``cpu_step_peak_mb``) of bench/results/memory_model_cpu.md and
#: memory_levers_cpu.md, fitted together, non-negative; DoRA keeps about three fp32
#: weight-sized tensors per target there. CUDA: allocator peaks on an H200, bf16 autocast,
#: fused attention (bench/results/memory_model_h200_fit.md; held out: memory_model_cuda_holdout*).
ACTIVATION_COEFFS: dict[str, dict[str, Terms]] = {
    "cpu": {
        "bert": Terms(0.0, 2.681, 3.742, 1.216, dora_weights=3.0, checkpoints=2.112),
        "llama": Terms(0.0, 4.047, 0.707, 2.196, dora_weights=3.0, logits=3.141, checkpoints=0.371),
    },
    "cuda": {
        "bert": Terms(0.722, 2.888, 0.0, 2.471, transient=2.593, dora_outputs=2.502),
    },
}

#: Bytes per saved activation element under autocast. A GPU keeps them in bf16/fp16. CPU
#: autocast casts only matmuls down: norms, softmax, activation functions and the loss stay
#: fp32, so about half of what a step keeps is 4 bytes wide (bench/results/memory_levers_cpu.md:
#: 2 bytes under-predicts its 16-bit rows by 20-30%, 4 over-predicts them by 17-31%).
ACTIVATION_BYTES = {"cuda": 2, "cpu-autocast": 3}

#: PyTorch's cuBLAS workspace per (handle, stream) on Hopper (compute capability 9; newer
#: GPUs are assumed alike, unmeasured) and on older GPUs, when ``CUBLAS_WORKSPACE_CONFIG`` is
#: unset; ``autopeft.train.measured_memory`` applies the rule to the device it runs on.
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
#: The tensors of a block a module can read (``MethodSpec.input_source`` names one).
SOURCES = ("attn_in", "attn_ctx", "ffn_in", "ffn_mid", "ffn_out")


class MethodTraits(Protocol):
    """What the memory model reads of a module type (``MethodSpec`` declares it).

    The registry reaches the core as an argument (``methods``), as for ``core.resolve``.
    """

    @property
    def saves_input(self) -> bool:
        """Whether its gradient needs a saved input tensor (False: bias-like modules)."""

    @property
    def input_source(self) -> str | None:
        """The block tensor (one of :data:`SOURCES`) a module without targets reads."""

    def weight_decomposed(self, cfg: ModuleConfig) -> bool:
        """Whether the module rescales each adapted linear's output (DoRA)."""


def method_traits(methods: Mapping[str, MethodTraits] | None) -> Mapping[str, MethodTraits]:
    """``methods``, or the built-in module registry for callers that pass none."""
    if methods is not None:
        return methods
    # Imported here: the core takes registries as arguments; this default serves callers
    # written before the traits moved into MethodSpec (the methods package is torch-free).
    from autopeft import methods as registry

    return registry.registry()


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


def module_input_elements(
    profile: ModelProfile,
    candidate: Candidate,
    per_block: bool = False,
    methods: Mapping[str, MethodTraits] | None = None,
) -> int:
    """Elements per token of the distinct tensors trainable modules read.

    Over all blocks, or (``per_block``) in the block that reads the most: what one
    recomputed block keeps under gradient checkpointing. ``methods`` is the module registry
    (None: the built-in one).
    """
    traits = method_traits(methods)
    width = {
        "attn_in": profile.hidden_size,
        "attn_ctx": profile.num_heads * profile.head_dim,
        "ffn_in": profile.hidden_size,
        "ffn_mid": profile.intermediate_size,
        "ffn_out": profile.hidden_size,
    }
    sources: set[tuple[int, str]] = set()
    for m in candidate.modules:
        spec = traits[m.method]
        if not spec.saves_input:
            continue
        for layer in m.layers:
            if spec.input_source is not None:
                sources.add((layer, spec.input_source))
            for target in m.targets:
                sources.add((layer, _SOURCE[target]))
    if not per_block:
        return sum(width[src] for _, src in sources)
    blocks: dict[int, int] = {}
    for layer, src in sources:
        blocks[layer] = blocks.get(layer, 0) + width[src]
    return max(blocks.values(), default=0)


def activation_terms(
    profile: ModelProfile,
    candidate: Candidate,
    batch_size: int,
    seq_len: int,
    embeddings_trained: bool = False,
    checkpointing: bool = False,
    methods: Mapping[str, MethodTraits] | None = None,
) -> Terms:
    """The elements each activation coefficient multiplies, for one trial's longest batch.

    ``batch_size`` is the rows of one forward pass (a micro batch). Under gradient
    checkpointing the per-block terms count the one block being recomputed, and the block
    inputs kept for recomputation are a term of their own. ``methods``: the module registry
    (None: the built-in one).
    """
    tokens = batch_size * seq_len
    blocks = blocks_with_gradient(profile, candidate, embeddings_trained)
    live = min(blocks, 1) if checkpointing else blocks
    traits = method_traits(methods)
    dora = [
        profile.linear(layer, target)
        for m in candidate.modules
        if traits[m.method].weight_decomposed(m)
        for layer in m.layers
        for target in m.targets
    ]
    lm = profile.task_type == "CAUSAL_LM"
    return Terms(
        hidden=tokens * live * profile.hidden_size,
        inter=tokens * live * profile.intermediate_size,
        attention=tokens * live * profile.num_heads * seq_len,
        inputs=tokens * module_input_elements(profile, candidate, checkpointing, methods),
        transient=tokens * profile.intermediate_size,
        dora_outputs=tokens * sum(lin.out_features for lin in dora),
        dora_weights=sum(lin.in_features * lin.out_features for lin in dora),
        logits=tokens * profile.vocab_size if lm else 0,
        checkpoints=tokens * blocks * profile.hidden_size if checkpointing else 0,
    )


def block_linears(profile: ModelProfile) -> list[Linear]:
    """Every block's linear layers (what a quantised base quantises)."""
    return [lin for layer in profile.layers for lin in layer.sublayers.values()]


def block_linear_elements(profile: ModelProfile) -> int:
    """Weight elements of every block's linear layers."""
    return sum(lin.in_features * lin.out_features for lin in block_linears(profile))


def base_weight_bytes(profile: ModelProfile, levers: Levers) -> int:
    """Bytes of the frozen base at its stored precision (quantisation constants included).

    A quantised base quantises its blocks' linear weights; everything else (embeddings,
    norms, biases, the language-model head) is kept in fp32 by peft's k-bit preparation.
    """
    if levers.bits is None:
        return DTYPE_BYTES[levers.dtype] * profile.base_params
    quantized = sum(
        quantized_linear_bytes(lin.in_features, lin.out_features, levers.quantization)
        for lin in block_linears(profile)
    )
    return quantized + 4 * (profile.base_params - block_linear_elements(profile))


def predict_memory(
    profile: ModelProfile,
    candidate: Candidate,
    trainable_params: int,
    batch_size: int,
    seq_len: int,
    device: str = "cuda",
    embeddings_trained: bool = False,
    workspace_bytes: int | None = None,
    levers: Levers | None = None,
    methods: Mapping[str, MethodTraits] | None = None,
) -> MemoryPrediction:
    """Predict the peak memory of training ``candidate``.

    Args:
        profile: the base model.
        candidate: the configuration (its placement decides how deep gradients flow).
        trainable_params: the exact adapter parameter count (from the method formulas).
        batch_size: rows per forward pass (the micro batch when ``levers`` has one).
        seq_len: the longest sequence (tokens, prefix/prompt tokens included).
        device: ``cuda`` (autocast: activations stored in 2 bytes) or ``cpu`` (fp32, or the
            base's precision under CPU autocast).
        embeddings_trained: True when a module's gradient reaches the input embeddings
            (``MethodSpec.trains_embeddings``).
        workspace_bytes: the cuBLAS workspaces on the GPU that will train (a CUDA device's
            figure from ``autopeft.train.measured_memory.cuda_workspace_bytes``); None
            assumes Hopper's.
        levers: the trial's memory levers (None: an fp32 base, no checkpointing).
        methods: the module registry, for each type's traits (``MethodSpec.saves_input``,
            ``input_source``, ``weight_decomposed``); None: the built-in registry.
    """
    levers = levers or Levers(batch_size, batch_size, seq_len)
    autocast = device == "cuda" or levers.dtype != "fp32"
    act_bytes = ACTIVATION_BYTES["cuda" if device == "cuda" else "cpu-autocast"] if autocast else 4
    trained = trainable_params + profile.head_params  # fp32 whatever the base (trainable_in_fp32)
    weights = base_weight_bytes(profile, levers) + 4 * trained
    train_state = 12 * trained
    blocks = blocks_with_gradient(profile, candidate, embeddings_trained)
    coeffs = activation_coeffs(profile.family, device)
    terms = activation_terms(
        profile,
        candidate,
        batch_size,
        seq_len,
        embeddings_trained,
        levers.gradient_checkpointing,
        methods,
    )
    activations = int(act_bytes * sum(c * x for c, x in zip(coeffs, terms)))
    copies = workspace = 0
    if autocast:  # autocast's low-precision copies of fp32 weights, kept for backward
        copies = 2 * trained
        if device == "cuda" and levers.dtype == "fp32" and levers.bits is None:
            # Under checkpointing a block's copies are made again when it is recomputed.
            kept = min(blocks, 1) if levers.gradient_checkpointing else blocks
            copies += 2 * gradient_path_weights(profile, kept)
        if profile.task_type == "CAUSAL_LM" and (levers.bits or levers.dtype == "fp32"):
            # The LM head stays fp32 (an fp32 base, or k-bit preparation): its 16-bit copy
            # is kept for the gradient of the hidden states, the whole vocabulary wide.
            copies += 2 * profile.vocab_size * profile.hidden_size
    if levers.bits is not None:  # a quantised layer's weight, dequantised for its matmul
        largest = max(
            (lin.in_features * lin.out_features for lin in block_linears(profile)), default=0
        )
        copies += 2 * largest * (DTYPE_BYTES[levers.dtype] if autocast else 4)
    if device == "cuda":
        workspace = CUDA_WORKSPACE_BYTES if workspace_bytes is None else workspace_bytes
    return MemoryPrediction(weights, train_state, activations, copies, workspace)
