"""A search space resolved against one model: concrete parameters, sampling, size, extremes.

Sampling is define-by-run through the :class:`Suggest` protocol, which an ``optuna.Trial``
satisfies as is; :class:`RandomSuggest` is the dependency-free implementation used by
``autopeft validate`` and tests. Parameter names are readable in optuna-dashboard:
``placement.layer_3``, ``peft_method``, ``lora.rank``, ``lora.rank.layer_2``, ``prefix.on``.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Protocol

from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.errors import _NO_VALUE, ConfigError, Problem, RuleError
from autopeft.core.params import (
    ChoiceParam,
    FloatParam,
    IntParam,
    TargetChoice,
    normalise_param,
    resolve_layers,
)
from autopeft.core.profile import LOCAL_TARGETS, TARGET_GROUPS, ModelProfile
from autopeft.core.space import ModuleSpace, SearchSpace

_ENUM_LIMIT = 4096


class Suggest(Protocol):
    """The subset of ``optuna.Trial`` that sampling uses."""

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        """An integer in ``[low, high]``."""

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        """A real in ``[low, high]``."""

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """One of ``choices``."""


class RandomSuggest:
    """Uniform (log-uniform where asked) random sampling; records what it suggested."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.params: dict[str, Any] = {}

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        """A random integer (log-uniform when ``log``)."""
        if log:
            value = int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
        else:
            value = low + step * self.rng.randint(0, (high - low) // step)
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        """A random real (log-uniform when ``log``)."""
        if log:
            value = math.exp(self.rng.uniform(math.log(low), math.log(high)))
        else:
            value = self.rng.uniform(low, high)
        self.params[name] = value
        return value

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """A random choice."""
        value = self.rng.choice(list(choices))
        self.params[name] = value
        return value


def _scale(value: Any, param: Any, hidden: int) -> Any:
    ref = getattr(param, "relative_to_hidden", None)
    if ref is None or not isinstance(value, (int, float)) or value == 0:
        return value
    return max(1, int(round(value * hidden / ref)))


@dataclass
class ModulePlan:
    """One module type of the space, resolved for a model."""

    name: str
    spec: Any  # MethodSpec
    params: dict[str, Any]
    target_options: list[tuple[str, ...]]  # one entry: fixed targets
    layers: tuple[int, ...] | None  # None: searched (own mask, or the shared one if `shared`)
    shared: bool  # placed by the searched shared mask
    per_layer: bool
    optional: bool

    @property
    def size_param(self) -> str | None:
        """The parameter whose 0 means off."""
        return self.spec.size_param

    def _value(self, s: Suggest, key: str, name: str, hidden: int) -> Any:
        p = self.params[key]
        if isinstance(p, IntParam):
            v = s.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatParam):
            v = s.suggest_float(name, float(p.low), float(p.high), log=p.log)
        elif isinstance(p, ChoiceParam):
            v = s.suggest_categorical(name, p.values())
        else:
            return p
        return _scale(v, p, hidden)

    def sample(self, s: Suggest, shared_layers: tuple[int, ...], profile: ModelProfile):
        """Sample this module's config, or None when the sample switches it off."""
        n, hidden = self.name, profile.hidden_size
        if self.optional and not s.suggest_int(f"{n}.on", 0, 1):
            return None
        layers: tuple[int, ...] = ()
        if self.spec.uses_layers:
            if self.shared:
                layers = shared_layers
            elif self.layers is None:
                layers = tuple(
                    i for i in range(profile.num_layers) if s.suggest_int(f"{n}.layer_{i}", 0, 1)
                )
            else:
                layers = self.layers
            if not layers:
                return None
        size, sizes = self.size_param, None
        if size is not None and self.per_layer:
            sizes = {i: self._value(s, size, f"{n}.{size}.layer_{i}", hidden) for i in layers}
            sizes = {i: v for i, v in sizes.items() if v > 0}
            if not sizes:
                return None
            layers = tuple(sorted(sizes))
        values: dict[str, Any] = {}
        for key in self.params:
            if key == size and sizes is not None:
                values[key] = max(sizes.values())
                continue
            values[key] = self._value(s, key, f"{n}.{key}", hidden)
            if key == size and values[key] == 0:
                return None
        targets = self.target_options[0]
        if len(self.target_options) > 1:
            pick = s.suggest_categorical(f"{n}.targets", ["+".join(t) for t in self.target_options])
            targets = tuple(pick.split("+"))
        return ModuleConfig(method=n, params=values, layers=layers, targets=targets, sizes=sizes)

    def can_be_off(self) -> bool:
        """Whether some sample switches the module off (a searched mask may come out empty)."""
        searched = self.spec.uses_layers and (self.shared or self.layers is None)
        return searched or self.has_off_value()

    def has_off_value(self) -> bool:
        """Whether the module's own parameters can say "off" (``optional``, or a size of 0)."""
        if self.optional:
            return True
        size = self.params.get(self.size_param) if self.size_param else None
        if isinstance(size, (IntParam, FloatParam)):
            return size.low == 0
        if isinstance(size, ChoiceParam):
            return 0 in size.values()
        return size == 0

    def _on_leaves(self, k: int) -> float:
        """Leaves of the sampling tree below "placed on ``k`` layers"."""
        rest = float(len(self.target_options))
        sizes = zeros = 1.0
        for key, p in self.params.items():
            if not isinstance(p, (IntParam, FloatParam, ChoiceParam)):
                continue
            if key != self.size_param:
                rest *= p.count()
                continue
            sizes = p.count()
            values = p.values() if not isinstance(p, FloatParam) else None
            zeros = 1.0 if values is not None and 0 in values else 0.0
        if self.size_param is None or not isinstance(
            self.params.get(self.size_param), (IntParam, FloatParam, ChoiceParam)
        ):
            return rest  # no searched size: only the other parameters branch
        if self.per_layer:  # one size per layer; all zeros switch the module off (one leaf)
            return (sizes**k - zeros**k) * rest + zeros**k
        return (sizes - zeros) * rest + zeros

    def leaves(self, shared_k: int, num_layers: int) -> float:
        """Distinct assignments of this module given ``shared_k`` layers on in the shared mask.

        These are the leaves of its define-by-run sampling tree.
        """
        if not self.spec.uses_layers:
            on = self._on_leaves(0)
        elif self.shared:
            on = self._on_leaves(shared_k) if shared_k else 1.0
        elif self.layers is not None:
            on = self._on_leaves(len(self.layers))
        else:  # own searched mask: an empty mask is one leaf
            on = sum(
                math.comb(num_layers, j) * (self._on_leaves(j) if j else 1.0)
                for j in range(num_layers + 1)
            )
        return on + 1.0 if self.optional else on

    def extreme_configs(self, profile: ModelProfile, largest: bool):
        """Configs at the corners of the sub-space (for the parameter range)."""
        num = profile.num_layers
        fixed = self.layers if self.layers is not None and not self.shared else None
        options = []
        for key, p in self.params.items():
            if isinstance(p, (IntParam, FloatParam, ChoiceParam)):
                vals = [_scale(v, p, profile.hidden_size) for v in p.extremes()]
                if key == self.size_param:
                    vals = [v for v in vals if v != 0] or vals
                options.append((key, vals))
            else:
                options.append((key, [p]))
        combos = itertools.product(*(vals for _, vals in options))
        layer_sets = (
            [fixed or tuple(range(num))]
            if largest or fixed
            else [(i,) for i in range(num)]
            if self.spec.uses_layers
            else [()]
        )
        if not self.spec.uses_layers:
            layer_sets = [()]
        for combo in itertools.islice(combos, _ENUM_LIMIT):
            params = dict(zip((k for k, _ in options), combo))
            for targets in self.target_options:
                for layers in layer_sets:
                    yield ModuleConfig(
                        method=self.name, params=params, layers=layers, targets=targets
                    )


class ResolvedSpace:
    """A :class:`SearchSpace` on a concrete model profile."""

    def __init__(self, space: SearchSpace, profile: ModelProfile, methods: dict[str, Any]):
        self.space, self.profile = space, profile
        self.plans: list[ModulePlan] = []
        try:
            self.shared_layers = resolve_layers(space.layers, profile.num_layers)
        except RuleError as err:
            raise _config_error(err.under("layers"), profile) from None
        for name, module in space.modules.items():
            try:
                self.plans.append(self._plan(name, module, methods[name]))
            except RuleError as err:
                raise _config_error(err.under(f"modules.{name}"), profile) from None

    def _plan(self, name: str, module: ModuleSpace, spec: Any) -> ModulePlan:
        params = {k: _default(v) for k, v in spec.default_space.items()}
        params.update(module.params)
        available = self.profile.available_targets
        if module.targets is None:
            options = [tuple(t for t in spec.default_targets if t in available)]
        else:
            choice = isinstance(module.targets, TargetChoice)
            groups = module.targets.choice if choice else [module.targets]
            try:
                options = [self._targets(g) for g in groups]
            except RuleError as err:
                raise err.under("targets") from None
        # `shared` stays true only when the shared placement is searched; a fixed shared
        # placement is just this module's fixed layers.
        shared = module.layers == "shared" and self.shared_layers is None
        try:
            if module.layers == "shared" and not shared:
                layers = self.shared_layers
            else:
                layers = None if shared else resolve_layers(module.layers, self.profile.num_layers)
        except RuleError as err:
            raise err.under("layers") from None
        return ModulePlan(
            name, spec, params, options, layers, shared, module.per_layer, module.optional
        )

    def _targets(self, names: list[str]) -> tuple[str, ...]:
        available = self.profile.available_targets
        out: list[str] = []
        local = LOCAL_TARGETS.get(self.profile.family, {})
        for name in names:
            name = local.get(name, name)  # the architecture's own name, e.g. q_proj -> q
            if name in TARGET_GROUPS:
                out += [t for t in TARGET_GROUPS[name] if t in available]
            elif name not in available:
                raise RuleError(
                    f"target {name!r} does not exist in a {self.profile.family} model",
                    f"available: {', '.join(available)}"
                    + (f" (or this model's names: {', '.join(local)})" if local else ""),
                    name,
                )
            else:
                out.append(name)
        return tuple(t for t in available if t in out)

    def sample(self, s: Suggest) -> Candidate:
        """Sample one candidate (define-by-run; conditional parameters only when active)."""
        shared = self.shared_layers
        if shared is None:
            shared = tuple(
                i
                for i in range(self.profile.num_layers)
                if s.suggest_int(f"placement.layer_{i}", 0, 1)
            )
        peft = [p.name for p in self.plans if p.spec.backend == "peft"]
        chosen = None
        if len(peft) == 1:
            chosen = peft[0]
        elif peft:
            chosen = s.suggest_categorical("peft_method", peft)
        modules = []
        for plan in self.plans:
            if plan.spec.backend == "peft" and plan.name != chosen:
                continue
            cfg = plan.sample(s, shared, self.profile)
            if cfg is not None:
                modules.append(cfg)
        return Candidate(modules=tuple(sorted(modules, key=lambda m: m.method)))

    def size(self) -> float:
        """Distinct parameter assignments (``inf`` with continuous parameters).

        Exactly the number of leaves of the define-by-run sampling tree, so it equals the
        number of distinct parameter dicts a sampler can produce.
        """
        num = self.profile.num_layers
        if self.shared_layers is None:
            weights = [(math.comb(num, k), k) for k in range(num + 1)]
        else:
            weights = [(1, len(self.shared_layers))]
        peft = [p for p in self.plans if p.spec.backend == "peft"]
        total = 0.0
        for weight, k in weights:
            term = float(weight)
            if peft:
                term *= sum(p.leaves(k, num) for p in peft)
            for p in self.plans:
                if p.spec.backend != "peft":
                    term *= p.leaves(k, num)
            total += term
        return total

    def param_range(self) -> tuple[int, int]:
        """Smallest and largest trainable-parameter count (head excluded) over the space."""

        def best(plan: ModulePlan, largest: bool) -> int:
            if not largest and plan.can_be_off():
                return 0
            counts = [
                plan.spec.count_params(self.profile, cfg)
                for cfg in plan.extreme_configs(self.profile, largest)
                if plan.spec.check(self.profile, cfg) is None
            ]
            return (max if largest else min)(counts) if counts else 0

        lo = hi = 0
        peft = [p for p in self.plans if p.spec.backend == "peft"]
        if peft:
            lo += min(best(p, False) for p in peft)
            hi += max(best(p, True) for p in peft)
        for p in self.plans:
            if p.spec.backend != "peft":
                lo += best(p, False)
                hi += best(p, True)
        return lo, hi


def _config_error(err: RuleError, profile: ModelProfile) -> ConfigError:
    value = None if err.value is _NO_VALUE else err.value
    where = f"on this {profile.family} model ({profile.num_layers} layers)"
    return ConfigError(Problem(f"search_space.{err.path}", f"{err.rule} {where}", value, err.hint))


def _default(value: Any) -> Any:
    # Defaults are written in DSL form inside MethodSpec classes; parse them like user input.
    from pydantic import TypeAdapter

    from autopeft.core.params import ParamSpec

    value = normalise_param(value)
    return TypeAdapter(ParamSpec).validate_python(value) if isinstance(value, dict) else value


class DomainRecorder:
    """A :class:`Suggest` that records every parameter's domain and switches everything on."""

    def __init__(self, peft_method: str | None = None):
        self.peft_method = peft_method
        self.domains: dict[str, str] = {}

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        """Record an int domain; return ``high`` (on, largest)."""
        self.domains[name] = (
            f"int {low}..{high}" + (" log" if log else "") + (f" step {step}" if step != 1 else "")
        )
        return high

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        """Record a float domain; return ``high``."""
        self.domains[name] = f"float {low:g}..{high:g}" + (" log" if log else "")
        return high

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """Record a choice; return the requested peft method or the last (largest) choice."""
        self.domains[name] = "choice " + ", ".join(map(str, choices))
        if name == "peft_method" and self.peft_method in choices:
            return self.peft_method
        return choices[-1]


def parameter_domains(resolved: ResolvedSpace) -> dict[str, str]:
    """Every searched parameter (union over the peft-method branches) with its domain."""
    peft = [p.name for p in resolved.plans if p.spec.backend == "peft"] or [None]
    out: dict[str, str] = {}
    for name in peft:
        rec = DomainRecorder(name)
        resolved.sample(rec)
        out.update(rec.domains)
    return out


def candidate_params(candidate: Candidate, profile: ModelProfile, methods: dict[str, Any]) -> int:
    """Exact trainable parameters of a candidate (classifier head excluded)."""
    return sum(methods[m.method].count_params(profile, m) for m in candidate.modules)
