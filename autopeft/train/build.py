"""Build the adapted model of a :class:`Candidate`: one peft method plus any native modules."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autopeft import methods
from autopeft.core.candidate import Candidate
from autopeft.core.model_profile import ModelProfile


@dataclass
class AdaptedModel:
    """A model ready to train, with its exact parameter accounting."""

    model: nn.Module  # what to call forward on (a PeftModel when a peft method is on)
    base: nn.Module  # the underlying Hugging Face model (module paths match the profile)
    profile: ModelProfile
    candidate: Candidate
    trainable_params: int  # adapter parameters only, classifier head excluded
    head_params: int
    step_hooks: list[Any] = field(default_factory=list)
    #: The base's compute precision (``training.dtype``): what autocast runs it in.
    precision: str = "fp32"

    def on_step(self, step: int) -> None:
        """Run per-step hooks of the modules (e.g. AdaLoRA rank allocation)."""
        for hook in self.step_hooks:
            hook(self.model, step)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (adapters and the head)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: parameters whose modules ask for the same rate, together.

        Each module of the candidate scales the rate of its own parameters
        (``MethodSpec.lr_multiplier``; LoRA+ speeds up LoRA's B matrices); the product
        over the modules is the parameter's factor.
        """
        specs = [(methods.get(m.method), m) for m in self.candidate.modules]
        groups: dict[float, list[nn.Parameter]] = {}
        for name, p in trainable_named(self.model):
            factor = 1.0
            for spec, cfg in specs:
                factor *= spec.lr_multiplier(cfg, name)
            groups.setdefault(factor, []).append(p)
        return [{"params": ps, "lr": lr * f} for f, ps in groups.items()]


def trainable_named(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every trainable parameter, a tensor shared by two names once."""
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            yield name, p


def is_head_param(name: str, profile: ModelProfile) -> bool:
    """Whether a (possibly peft-prefixed) parameter name belongs to the classifier head."""
    return profile.has_head and f".{profile.head_path}." in f".{name}"


def count_trainable(model: nn.Module, profile: ModelProfile) -> tuple[int, int]:
    """Count ``(adapter, head)`` trainable parameters of a built model (shared tensors once)."""
    adapter = head = 0
    for name, p in trainable_named(model):
        if is_head_param(name, profile):
            head += p.numel()
        else:
            adapter += p.numel()
    return adapter, head


def build_adapted(
    model: nn.Module, profile: ModelProfile, candidate: Candidate, total_steps: int = 100
) -> AdaptedModel:
    """Attach ``candidate`` to ``model`` (modified in place) and freeze everything else.

    Order matters: the peft method (at most one) wraps the model first, then native modules
    hook onto the possibly peft-wrapped sub-layers, so both see each other's outputs and
    peft's own freezing cannot switch native modules off.

    Raises:
        ValueError: if the candidate has more than one peft-backed module.
    """
    specs = [(methods.get(m.method), m) for m in candidate.modules]
    peft_mods = [(s, m) for s, m in specs if s.backend == "peft"]
    if len(peft_mods) > 1:
        names = ", ".join(m.method for _, m in peft_mods)
        raise ValueError(f"at most one peft-backed module per model, got {names}")
    for p in model.parameters():
        p.requires_grad_(False)
    base = model
    if peft_mods:
        from peft import get_peft_model

        spec, cfg = peft_mods[0]
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`, and warns that
            # EVA's init comes later (it does: data_init): warnings about peft's code, printed
            # by every trial, that the user can do nothing about.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            warnings.filterwarnings("ignore", message=".*eva initialization.*")
            peft_model = get_peft_model(model, spec.peft_config(profile, cfg, total_steps))
        model = peft_model
        # Before anything changes the adapter: PiSSA/OLoRA keep their initial state for export.
        spec.after_build(model, cfg)
        base = peft_model.get_base_model()
    elif profile.has_head:  # peft trains the head itself (modules_to_save of SEQ_CLS)
        for p in model.get_submodule(profile.head_path).parameters():
            p.requires_grad_(True)
    for spec, cfg in specs:
        if spec.backend == "native":
            spec.attach(base, profile, cfg)
    adapter, head = count_trainable(model, profile)
    hooks = [
        spec.on_step for spec, _ in specs if type(spec).on_step is not methods.MethodSpec.on_step
    ]
    return AdaptedModel(model, base, profile, candidate, adapter, head, hooks)
