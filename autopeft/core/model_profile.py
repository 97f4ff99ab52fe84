"""Model profiles: the plain layer shapes a PEFT budget is computed from, without torch.

A profile is derived either from a Hugging Face ``config.json`` (pure Python, fast; used by
``autopeft validate``) or by walking a built torch model (``autopeft.train.profile_model``); tests
check both routes agree for every supported family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopeft.core.errors import ConfigError, Problem, did_you_mean
from autopeft.core.model_dirs import (  # the names too: autopeft.train.models reads them here
    BUNDLED_CONFIGS,
    TINY_CONFIGS,
    resolve_model_dir,
)

#: Canonical sub-layer names a placement may target, with what they mean.
TARGETS: dict[str, str] = {
    "qkv": "fused attention q/k/v projection (GPT-2 c_attn); q, k or v name it there",
    "q": "attention query projection",
    "k": "attention key projection",
    "v": "attention value projection",
    "o": "attention output projection",
    "ffn_gate_up": "fused FFN gate and input projection (Phi-3 gate_up_proj)",
    "ffn_up": "FFN input projection (BERT intermediate.dense, Llama up_proj)",
    "ffn_gate": "FFN gate projection (Llama-family only)",
    "ffn_down": "FFN output projection (BERT output.dense, Llama down_proj)",
}
#: Group names that expand to several targets.
TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("qkv", "q", "k", "v", "o"),
    "ffn": ("ffn_gate_up", "ffn_up", "ffn_gate", "ffn_down"),
    "all": ("qkv", "q", "k", "v", "o", "ffn_gate_up", "ffn_up", "ffn_gate", "ffn_down"),
}
#: Targets a model may have fused into one projection: asking for a part names the whole.
FUSED_TARGETS: dict[str, str] = {
    "q": "qkv",
    "k": "qkv",
    "v": "qkv",
    "ffn_gate": "ffn_gate_up",
    "ffn_up": "ffn_gate_up",
}

#: Each family's own sub-layer names, accepted as targets beside the canonical ones.
LOCAL_TARGETS: dict[str, dict[str, str]] = {
    "bert": {
        "query": "q",
        "key": "k",
        "value": "v",
        "attention.output.dense": "o",
        "intermediate.dense": "ffn_up",
        "output.dense": "ffn_down",
    },
    "llama": {
        "q_proj": "q",
        "k_proj": "k",
        "v_proj": "v",
        "o_proj": "o",
        "up_proj": "ffn_up",
        "gate_proj": "ffn_gate",
        "down_proj": "ffn_down",
    },
    "phi3": {
        "qkv_proj": "qkv",
        "o_proj": "o",
        "gate_up_proj": "ffn_gate_up",
        "down_proj": "ffn_down",
    },
    "gpt2": {
        "c_attn": "qkv",
        "attn.c_proj": "o",
        "c_fc": "ffn_up",
        "mlp.c_proj": "ffn_down",
    },
}
KNOWN_TARGET_NAMES = (
    set(TARGETS) | set(TARGET_GROUPS) | {n for names in LOCAL_TARGETS.values() for n in names}
)


@dataclass(frozen=True)
class Linear:
    """A linear sub-layer: its module path in the model and its shape."""

    path: str
    in_features: int
    out_features: int
    bias: bool
    #: A GPT-2-style ``Conv1D`` (weight stored in x out), which some peft methods cannot adapt.
    conv1d: bool = False

    @property
    def params(self) -> int:
        """Number of parameters of the frozen layer."""
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class Norm:
    """A normalisation layer (LayerNorm / RMSNorm)."""

    path: str
    size: int
    bias: bool

    @property
    def params(self) -> int:
        """Number of parameters (weight and optional bias)."""
        return self.size * (2 if self.bias else 1)


@dataclass(frozen=True)
class LayerProfile:
    """One transformer block."""

    index: int
    path: str
    attention_path: str
    sublayers: dict[str, Linear]
    norms: tuple[Norm, ...]


@dataclass(frozen=True)
class ModelProfile:
    """Plain shapes of a transformer model; everything a parameter formula needs.

    A classifier's head (``head_path``, ``head_params``) trains beside every adapter; a causal
    language model has none (``head_path`` is empty: its LM head stays frozen, and tied or
    not it counts in ``base_params``).
    """

    family: str
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    layers: tuple[LayerProfile, ...]
    base_params: int
    head_path: str
    head_params: int
    num_labels: int
    is_causal: bool
    #: The peft ``task_type`` of the model's head: ``SEQ_CLS`` (a classifier, trained with the
    #: adapter) or ``CAUSAL_LM`` (the language-model head, frozen like the rest of the base).
    task_type: str = "SEQ_CLS"

    @property
    def has_head(self) -> bool:
        """Whether the model has a task head trained beside the adapter (a classifier)."""
        return bool(self.head_path)

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.layers)

    @property
    def available_targets(self) -> tuple[str, ...]:
        """Canonical target names this architecture has."""
        return tuple(t for t in TARGETS if t in self.layers[0].sublayers)

    def linear(self, layer: int, target: str) -> Linear:
        """The linear sub-layer ``target`` of block ``layer``."""
        return self.layers[layer].sublayers[target]

    def summary(self) -> str:
        """A one-line description."""
        return (
            f"{self.family}: {self.num_layers} layers, hidden {self.hidden_size}, "
            f"FFN {self.intermediate_size}, {self.num_heads} heads ({self.num_kv_heads} kv), "
            f"{self.base_params:,} base parameters, "
            + (f"head {self.head_params:,}" if self.has_head else "language-model head (frozen)")
        )


def expand_targets(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Expand group names (``attn``, ``ffn``, ``all``) and keep canonical order, no duplicates."""
    wanted: set[str] = set()
    for name in names:
        wanted.update(TARGET_GROUPS.get(name, (name,)))
    return tuple(t for t in TARGETS if t in wanted)


def _bert(cfg: dict[str, Any], num_labels: int, head: str) -> ModelProfile:
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    if head != "classifier":
        raise ConfigError(
            Problem(
                "model",
                f"a {cfg.get('model_type', 'bert')} encoder has no language-model head",
                hint="causal_lm tasks need a decoder (Llama, Qwen, Mistral, SmolLM, ...)",
            )
        )
    heads = cfg["num_attention_heads"]
    prefix = cfg.get("model_type", "bert")
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        base = f"{prefix}.encoder.layer.{i}"
        sub = {
            "q": Linear(f"{base}.attention.self.query", hidden, hidden, True),
            "k": Linear(f"{base}.attention.self.key", hidden, hidden, True),
            "v": Linear(f"{base}.attention.self.value", hidden, hidden, True),
            "o": Linear(f"{base}.attention.output.dense", hidden, hidden, True),
            "ffn_up": Linear(f"{base}.intermediate.dense", hidden, inter, True),
            "ffn_down": Linear(f"{base}.output.dense", inter, hidden, True),
        }
        norms = (
            Norm(f"{base}.attention.output.LayerNorm", hidden, True),
            Norm(f"{base}.output.LayerNorm", hidden, True),
        )
        layers.append(LayerProfile(i, base, f"{base}.attention.self", sub, norms))
    embeddings = (
        cfg["vocab_size"] + cfg.get("max_position_embeddings", 512) + cfg.get("type_vocab_size", 2)
    ) * hidden + 2 * hidden
    per_layer = sum(s.params for s in layers[0].sublayers.values()) + 4 * hidden
    pooler = hidden * hidden + hidden
    return ModelProfile(
        family="bert",
        hidden_size=hidden,
        intermediate_size=inter,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        vocab_size=cfg["vocab_size"],
        layers=tuple(layers),
        base_params=embeddings + per_layer * len(layers) + pooler,
        head_path="classifier",
        head_params=hidden * num_labels + num_labels,
        num_labels=num_labels,
        is_causal=False,
    )


def _llama(cfg: dict[str, Any], num_labels: int, head: str) -> ModelProfile:
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    model_type = cfg.get("model_type")
    attn_bias, mlp_bias = bool(cfg.get("attention_bias")), bool(cfg.get("mlp_bias"))
    # Qwen2 has biases on q, k and v (not o) without saying so in its config.
    qkv_bias = attn_bias or model_type == "qwen2"
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        base = f"model.layers.{i}"
        sub = {
            "q": Linear(f"{base}.self_attn.q_proj", hidden, heads * head_dim, qkv_bias),
            "k": Linear(f"{base}.self_attn.k_proj", hidden, kv * head_dim, qkv_bias),
            "v": Linear(f"{base}.self_attn.v_proj", hidden, kv * head_dim, qkv_bias),
            "o": Linear(f"{base}.self_attn.o_proj", heads * head_dim, hidden, attn_bias),
            "ffn_up": Linear(f"{base}.mlp.up_proj", hidden, inter, mlp_bias),
            "ffn_gate": Linear(f"{base}.mlp.gate_proj", hidden, inter, mlp_bias),
            "ffn_down": Linear(f"{base}.mlp.down_proj", inter, hidden, mlp_bias),
        }
        if model_type == "phi3":  # fused q/k/v and gate/up projections
            sub = {
                "qkv": Linear(
                    f"{base}.self_attn.qkv_proj", hidden, (heads + 2 * kv) * head_dim, False
                ),
                "o": sub["o"],
                "ffn_gate_up": Linear(f"{base}.mlp.gate_up_proj", hidden, 2 * inter, False),
                "ffn_down": sub["ffn_down"],
            }
        norms: tuple[Norm, ...] = (
            Norm(f"{base}.input_layernorm", hidden, False),
            Norm(f"{base}.post_attention_layernorm", hidden, False),
        )
        if model_type in QK_NORMS:
            norms += (
                Norm(f"{base}.self_attn.q_norm", head_dim, False),
                Norm(f"{base}.self_attn.k_norm", head_dim, False),
            )
        if model_type in FFN_NORMS:
            norms += (
                Norm(f"{base}.pre_feedforward_layernorm", hidden, False),
                Norm(f"{base}.post_feedforward_layernorm", hidden, False),
            )
        layers.append(LayerProfile(i, base, f"{base}.self_attn", sub, norms))
    embed = cfg["vocab_size"] * hidden
    per_layer = sum(s.params for s in layers[0].sublayers.values())
    per_layer += sum(n.params for n in layers[0].norms)
    base_params = embed + per_layer * len(layers) + hidden
    return ModelProfile(
        family="phi3" if model_type == "phi3" else "llama",
        hidden_size=hidden,
        intermediate_size=inter,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=cfg["vocab_size"],
        layers=tuple(layers),
        is_causal=True,
        **_decoder_head(cfg, hidden, num_labels, head, base_params),
    )


def _decoder_head(
    cfg: dict[str, Any], hidden: int, num_labels: int, head: str, body_params: int
) -> dict[str, Any]:
    """A decoder profile's head fields: a trained classifier (``score``) or the frozen LM head.

    ``body_params`` are the base's parameters without any head; an LM head of its own (not
    tied to the embeddings) is frozen, so it counts among the base parameters.
    """
    if head != "lm":
        return dict(
            base_params=body_params,
            head_path="score",
            head_params=hidden * num_labels,
            num_labels=num_labels,
            task_type="SEQ_CLS",
        )
    untied = 0 if cfg.get("tie_word_embeddings", True) else cfg["vocab_size"] * hidden
    return dict(
        base_params=body_params + untied,
        head_path="",
        head_params=0,
        num_labels=0,
        task_type="CAUSAL_LM",
    )


def _gpt2(cfg: dict[str, Any], num_labels: int, head: str) -> ModelProfile:
    """GPT-2-style blocks: fused q/k/v (``c_attn``), ``Conv1D`` projections with biases."""
    hidden, heads = cfg["n_embd"], cfg["n_head"]
    inter = cfg.get("n_inner") or 4 * hidden
    layers = []
    for i in range(cfg["n_layer"]):
        base = f"transformer.h.{i}"
        sub = {
            "qkv": Linear(f"{base}.attn.c_attn", hidden, 3 * hidden, True, conv1d=True),
            "o": Linear(f"{base}.attn.c_proj", hidden, hidden, True, conv1d=True),
            "ffn_up": Linear(f"{base}.mlp.c_fc", hidden, inter, True, conv1d=True),
            "ffn_down": Linear(f"{base}.mlp.c_proj", inter, hidden, True, conv1d=True),
        }
        norms = (Norm(f"{base}.ln_1", hidden, True), Norm(f"{base}.ln_2", hidden, True))
        layers.append(LayerProfile(i, base, f"{base}.attn", sub, norms))
    per_layer = sum(s.params for s in layers[0].sublayers.values()) + 4 * hidden
    embeddings = (cfg["vocab_size"] + cfg.get("n_positions", 1024)) * hidden
    base_params = embeddings + per_layer * len(layers) + 2 * hidden
    return ModelProfile(
        family="gpt2",
        hidden_size=hidden,
        intermediate_size=inter,
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        vocab_size=cfg["vocab_size"],
        layers=tuple(layers),
        is_causal=True,
        **_decoder_head(cfg, hidden, num_labels, head, base_params),
    )


#: Llama-style families with RMS norms on the queries and keys, or around the FFN too.
QK_NORMS = ("qwen3", "gemma3_text")
FFN_NORMS = ("gemma2", "gemma3_text")
#: config.json ``model_type`` -> profile builder.
FAMILIES = {
    "bert": _bert,
    "gpt2": _gpt2,
    **{
        t: _llama
        for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")
    },
}


def profile_from_config(
    cfg: dict[str, Any], num_labels: int = 2, head: str = "classifier"
) -> ModelProfile:
    """Build a profile from a Hugging Face config dict (no torch).

    Args:
        cfg: the model's ``config.json``.
        num_labels: classes of a classifier head.
        head: ``classifier`` (a sequence classifier) or ``lm`` (a causal language model).

    Raises:
        ConfigError: if the model type has no config-based profile, or no such head.
    """
    model_type = cfg.get("model_type", "?")
    if model_type not in FAMILIES:
        raise ConfigError(
            Problem(
                "model",
                f"model_type {model_type!r} has no torch-free profile",
                hint=f"{did_you_mean(model_type, FAMILIES)}; other architectures are profiled "
                "from the built model at run time",
            )
        )
    return FAMILIES[model_type](cfg, num_labels, head)


def model_config(name: str) -> dict[str, Any]:
    """The ``config.json`` of a model by name, without torch (tiny and bundled ones built in)."""
    if name in TINY_CONFIGS:
        return dict(TINY_CONFIGS[name])
    if name in BUNDLED_CONFIGS:
        folder = Path(__file__).parent / "model_configs"
        return json.loads((folder / BUNDLED_CONFIGS[name]).read_text())
    return json.loads((resolve_model_dir(name) / "config.json").read_text())


def load_profile(name: str, num_labels: int = 2, head: str = "classifier") -> ModelProfile:
    """Profile a model from its ``config.json`` alone (see :func:`profile_from_config`)."""
    return profile_from_config(model_config(name), num_labels, head)
