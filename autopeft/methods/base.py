"""The contract every PEFT module type implements (one file per type, one registration)."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from autopeft.core.candidate import ModuleConfig
from autopeft.core.profile import ModelProfile


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

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """Exact number of trainable parameters this module adds (classifier head excluded)."""
        raise NotImplementedError

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
        return {
            "target_modules": list(ranks),
            "r": int(cfg.params.get(self.size_param, max(ranks.values()))),
            "rank_pattern": patterns,
        }

    def bottleneck_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """Bottleneck adapters (down + up projection with biases) on every sized block."""
        h = profile.hidden_size
        return sum(2 * h * s + s + h for s in (self.size(cfg, i) for i in cfg.layers) if s > 0)

    def size(self, cfg: ModuleConfig, layer: int) -> int:
        """The size/rank of this module in block ``layer``."""
        return cfg.size_at(layer, self.size_param)
