"""The contract every PEFT module type implements (one file per type, one registration)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile


@dataclass(frozen=True)
class ValueRule:
    """The values a method parameter accepts; checked for every value a space can give it.

    ``kind`` is ``int``, ``float``, ``bool`` or ``str`` (then ``choices`` lists the words);
    ``low``/``high`` bound numbers, inclusively unless ``low_open``/``high_open``.
    """

    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def why(self, name: str, value: Any) -> str | None:
        """The rule ``value`` breaks (a text naming ``name``), or None when it is accepted."""
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{name} must be true or false"
        if self.kind is str:
            words = ", ".join(self.choices)
            return None if value in self.choices else f"{name} must be one of {words}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number"
        if self.kind is int and not float(value).is_integer():
            return f"{name} must be a whole number"
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if low_ok and high_ok:
            return None
        low = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
        high = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
        return f"{low}{name}{high} must hold"


#: Rules shared by the methods' like-named parameters (a method's ``value_rules`` override).
COMMON_RULES: dict[str, ValueRule] = {
    "dropout": ValueRule(low=0, high=1, high_open=True),
    "alpha": ValueRule(low=0, low_open=True),
    "scale": ValueRule(low=0, low_open=True),
    "scaling": ValueRule(low=0, low_open=True),
    "activation": ValueRule(kind=str, choices=("relu", "gelu", "silu")),
}


class MethodSpec:
    """A searchable PEFT module type.

    Subclasses declare their default sub-space and placement behaviour as class attributes,
    give an exact trainable-parameter formula over a :class:`ModelProfile`, and know how to
    attach themselves: ``peft_config`` for methods Hugging Face ``peft`` implements (at most one
    per model), ``attach`` for native modules (any number, combined with the peft one).
    Heavy libraries (torch, peft) are imported inside those methods only.
    """

    #: Registered name (YAML key).
    name: ClassVar[str]
    #: One line for ``autopeft methods``.
    summary: ClassVar[str]
    #: Who implements it.
    backend: ClassVar[Literal["peft", "native"]]
    #: Default sub-space in DSL form; its keys are the only parameters the method accepts.
    default_space: ClassVar[dict[str, Any]] = {}
    #: Parameter whose value 0 means "off"; the one ``per_layer`` varies. None: no size.
    size_param: ClassVar[str | None] = None
    #: Canonical targets by default; () means the method has no per-sub-layer targets.
    default_targets: ClassVar[tuple[str, ...]] = ()
    #: Whether the method is placed per transformer block (False: e.g. prompt tuning).
    uses_layers: ClassVar[bool] = True
    #: Whether ``per_layer`` sizes are supported.
    supports_per_layer: ClassVar[bool] = False
    #: Whether it can adapt GPT-2-style ``Conv1D`` projections (peft's LoHa, LoKr, HRA and
    #: MiSS take only ``nn.Linear``); a space placing it on them is refused when resolved.
    supports_conv1d: ClassVar[bool] = True
    #: Value rules beyond the defaults of :meth:`value_rule` (e.g. a mode's words).
    value_rules: ClassVar[dict[str, ValueRule]] = {}
    #: The parameter whose value is the number of virtual tokens prepended to every input
    #: (prompt tuning's ``length``): the memory model counts them in the sequence length.
    virtual_tokens_param: ClassVar[str | None] = None
    #: Whether its gradient reaches the input embeddings (prompt tokens are inputs), so the
    #: backward pass crosses every block whatever the placement.
    trains_embeddings: ClassVar[bool] = False
    #: Whether its own gradient needs a saved input tensor (False: bias-like modules and
    #: those outside the blocks' linear layers, e.g. BitFit, LN tuning, prompts, prefixes).
    saves_input: ClassVar[bool] = True
    #: The block tensor a module without targets reads, which the memory model counts as its
    #: saved input (one of ``autopeft.core.memory_model.SOURCES``, e.g. ``ffn_out``).
    input_source: ClassVar[str | None] = None
    #: Boolean parameters that make it train another type's tensors: ``{flag: (other type,
    #: what both train)}``. A space searching both types with the flag possibly true is
    #: refused (the exact parameter count would count those tensors twice).
    overlaps: ClassVar[dict[str, tuple[str, str]]] = {}
    #: Parameters added after studies were written: a candidate leaves them out while they
    #: have their default value (see :meth:`stable_params`), so the candidates written before
    #: keep their key, and with it their stored results and weights. Read them with
    #: ``cfg.params.get(key, default)``.
    stable_defaults: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def stable_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` without the :attr:`stable_defaults` that have their default value.

        What a :class:`ModuleConfig` made from sampled values should hold (``ModulePlan``).
        A value equal to the default but of another kind (``0`` for ``False``) is kept.
        """

        def at_default(key: str, value: Any) -> bool:
            default = cls.default_space.get(key)
            return value == default and isinstance(value, bool) == isinstance(default, bool)

        quiet = cls.stable_defaults
        return {k: v for k, v in params.items() if not (k in quiet and at_default(k, v))}

    @classmethod
    def value_rule(cls, key: str) -> ValueRule | None:
        """What values parameter ``key`` accepts (None: any).

        The method's own rule, else: the size is a whole number >= 0, a like-named common rule
        applies, and a parameter whose default is a boolean stays one.
        """
        if key in cls.value_rules:
            return cls.value_rules[key]
        if key == cls.size_param:
            return ValueRule(kind=int, low=0)
        if key in COMMON_RULES:
            return COMMON_RULES[key]
        return ValueRule(kind=bool) if isinstance(cls.default_space.get(key), bool) else None

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """Exact number of trainable parameters this module adds (classifier head excluded)."""
        raise NotImplementedError

    def weight_decomposed(self, cfg: ModuleConfig) -> bool:
        """Whether ``cfg`` rescales each adapted linear's output by a learned magnitude.

        DoRA does (LoRA's ``use_dora``): it keeps output-sized tensors per token and a
        weight-sized one per adapted linear, which the memory model counts. Default: False.
        """
        return False

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """Return why ``cfg`` cannot be built on ``profile`` (a rule text), or None if it can."""
        return None

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """The ``peft`` config for this module (peft backend only)."""
        raise NotImplementedError

    def attach(self, model: Any, profile: ModelProfile, cfg: ModuleConfig) -> None:
        """Add the native module to the Hugging Face ``model`` in place (native backend only)."""
        raise NotImplementedError

    def on_step(self, model: Any, step: int) -> None:
        """Hook called after each optimiser step (e.g. AdaLoRA's rank allocation)."""

    def lr_multiplier(self, cfg: ModuleConfig, param_name: str) -> float:
        """The factor on the base learning rate for the trainable parameter ``param_name``.

        The training loop asks every module of the candidate about every trainable parameter
        (names as ``model.named_parameters()`` gives them, peft prefixes included) and puts
        parameters with the same factor in one optimiser group; a module answers 1.0 for
        parameters that are not its own. Default: 1.0 (LoRA+ speeds up LoRA's B matrices).
        """
        return 1.0

    def after_build(self, model: Any, cfg: ModuleConfig) -> None:
        """Hook called once the module is attached, before anything changes its tensors.

        ``build_adapted`` calls it with the model as built so far (a peft method: the
        ``PeftModel``, right after ``get_peft_model``), before :meth:`data_init`, training, or
        loading trained tensors into a rebuilt model. Default: nothing (LoRA keeps the initial
        adapter of PiSSA/OLoRA, which :meth:`save_peft` needs).
        """

    def data_init(self, model: Any, batches: Iterable[dict], cfg: ModuleConfig) -> None:
        """Data-driven initialisation, before training (default: nothing; LoRA's EVA).

        Called after :meth:`after_build` with the built ``model`` (a peft method: the
        ``PeftModel``) and a few training batches, dicts of tensors as the training loop feeds
        them (``input_ids``, ``attention_mask``, ``labels``). A model rebuilt to load trained
        tensors (export, re-evaluation) need not call it: the loaded tensors replace what it
        set, and it changes no shapes.
        """

    def save_peft(self, peft_model: Any, out_dir: str, cfg: ModuleConfig) -> None:
        """Write a trained peft model as a standard peft adapter folder (peft methods only).

        The folder must load with ``PeftModel.from_pretrained(base, out_dir)`` on the
        original, unchanged base model. Default: ``peft_model.save_pretrained(out_dir)``;
        LoRA converts PiSSA/OLoRA adapters (trained on a changed base) to plain LoRA.
        """
        peft_model.save_pretrained(out_dir)

    # Helpers shared by the formulas -------------------------------------------------------

    @staticmethod
    def linears(profile: ModelProfile, cfg: ModuleConfig):
        """Yield ``(layer, Linear)`` for every targeted sub-layer of every placed block."""
        for layer in cfg.layers:
            for target in cfg.targets:
                yield layer, profile.linear(layer, target)

    def target_paths(self, profile: ModelProfile, cfg: ModuleConfig) -> list[str]:
        """Full module paths of the targeted sub-layers (peft ``target_modules``)."""
        return [lin.path for _, lin in self.linears(profile, cfg)]

    def ranked_targets(self, profile: ModelProfile, cfg: ModuleConfig) -> dict[str, Any]:
        """Keyword arguments shared by LoRA-family peft configs: targets, ``r``, patterns.

        Targets are the exact module paths of the placed sub-layers with a non-zero rank;
        per-layer ranks become ``rank_pattern`` (peft matches its keys as regexes against a
        dotted suffix of the module name, hence the escaping).
        """
        ranks = {}
        for layer, lin in self.linears(profile, cfg):
            if (r := self.size(cfg, layer)) > 0:
                ranks[lin.path] = r
        patterns = {re.escape(p): r for p, r in ranks.items()} if cfg.sizes is not None else {}
        largest = max(ranks.values())
        size = self.size_param
        return {
            "target_modules": list(ranks),
            "r": int(cfg.params[size] if size is not None and size in cfg.params else largest),
            "rank_pattern": patterns,
        }

    def bottleneck_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """Bottleneck adapters (down + up projection with biases) on every sized block."""
        h = profile.hidden_size
        return sum(2 * h * s + s + h for s in (self.size(cfg, i) for i in cfg.layers) if s > 0)

    def size(self, cfg: ModuleConfig, layer: int) -> int:
        """The size/rank of this module in block ``layer``."""
        return cfg.size_at(layer, self.size_param)
