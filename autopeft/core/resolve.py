"""A search space resolved against one model: concrete parameters, sampling, size, extremes.

Sampling is define-by-run through the :class:`Suggest` protocol, which an ``optuna.Trial``
satisfies as is; :class:`RandomSuggest` is the dependency-free implementation used by
``autopeft validate`` and tests. Parameter names are readable in optuna-dashboard:
``placement.layer_3``, ``peft_method``, ``lora.rank``, ``lora.rank.layer_2``, ``prefix.on``,
``training.lr``.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.errors import _NO_VALUE, ConfigError, Problem, RuleError
from autopeft.core.method_rules import check_values
from autopeft.core.model_profile import FUSED_TARGETS, LOCAL_TARGETS, TARGET_GROUPS, ModelProfile
from autopeft.core.params import (
    ChoiceParam,
    FloatParam,
    IntParam,
    Suggest,
    TargetChoice,
    normalise_param,
    resolve_layers,
)
from autopeft.core.space import ModuleSpace, SearchSpace

_ENUM_LIMIT = 4096


class RandomSuggest:
    """Uniform (log-uniform where asked) random sampling; records what it suggested."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.params: dict[str, Any] = {}

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """A random integer (log-uniform when ``log``)."""
        if log:
            value = int(round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))
        else:
            value = low + step * self.rng.randint(0, (high - low) // step)
        self.params[name] = value
        return value

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
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
        v: Any
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
        """Sample this module's config, or None when the sample switches it off.

        Every parameter is suggested whatever the others say (a layer mask that came out
        empty, ``on`` = 0, a size of 0): the names a trial suggests never depend on values.
        Optuna's model-based samplers (GP, BoTorch) model only the parameters that every
        finished trial has, so one trial without, say, ``serial_adapter.size`` would leave
        them modelling the placement alone. Values of a part that is off are ignored.
        """
        n, hidden = self.name, profile.hidden_size
        on = not self.optional or bool(s.suggest_int(f"{n}.on", 0, 1))
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
        size, sizes = self.size_param, None
        if size is not None and self.per_layer:
            searched = self.shared or self.layers is None
            universe = range(profile.num_layers) if searched else (self.layers or ())
            drawn = {i: self._value(s, size, f"{n}.{size}.layer_{i}", hidden) for i in universe}
            sizes = {i: v for i, v in drawn.items() if i in layers and v > 0}
            layers = tuple(sorted(sizes))
        values: dict[str, Any] = {}
        for key in self.params:
            if key == size and sizes is not None:
                values[key] = max(sizes.values(), default=0)
            else:
                values[key] = self._value(s, key, f"{n}.{key}", hidden)
        targets = self.target_options[0]
        if len(self.target_options) > 1:
            pick = s.suggest_categorical(f"{n}.targets", ["+".join(t) for t in self.target_options])
            targets = tuple(pick.split("+"))
        placed = layers or not self.spec.uses_layers
        if not on or not placed or (size in values and values[size] == 0):
            return None
        # Parameters added to a method since studies were written stay out of the candidate at
        # their default, so older candidates keep their key (MethodSpec.stable_defaults).
        params = self.spec.stable_params(values)
        return ModuleConfig(method=n, params=params, layers=layers, targets=targets, sizes=sizes)

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

    def _rest(self) -> float:
        """Assignments of the parameters other than the size, times the target options."""
        rest = float(len(self.target_options))
        for key, p in self.params.items():
            if key != self.size_param and isinstance(p, (IntParam, FloatParam, ChoiceParam)):
                rest *= p.count()
        return rest

    def _sizes(self) -> tuple[float, bool]:
        """Non-zero values of the size, and whether 0 (off) is one of its values."""
        p = self.params.get(self.size_param) if self.size_param else None
        if isinstance(p, ChoiceParam):
            zero = 0 in p.values()
            return p.count() - zero, zero
        if isinstance(p, (IntParam, FloatParam)):
            zero = p.low == 0
            return p.count() - zero, zero
        return (0.0, True) if p == 0 else (1.0, False)  # a fixed size (None: no size)

    def _exact_on(self, j: int) -> float:
        """Configs switched on whose layers are exactly a given set of ``j`` layers."""
        nz, _ = self._sizes()
        return (nz**j if self.per_layer else nz) * self._rest()

    def _on_some_of(self, k: int) -> float:
        """Configs switched on whose layers are any non-empty subset of ``k`` given layers."""
        return sum(math.comb(k, j) * self._exact_on(j) for j in range(1, k + 1))

    def _on_configs(self, k: int) -> float:
        """Distinct configs switched on, placed on a given set of ``k`` layers."""
        if not self.spec.uses_layers:
            return self._exact_on(0)
        _, zero = self._sizes()
        if self.per_layer and zero:  # a size of 0 drops its layer: any non-empty subset
            return self._on_some_of(k)
        return self._exact_on(k) if k else 0.0

    def options(self, k: int, num_layers: int) -> tuple[float, float, bool]:
        """Distinct configs of the module with ``k`` layers on in the searched shared mask.

        Returns:
            (configs placed on the shared mask, other configs switched on, whether the module
            can be absent): configs of the first kind differ between masks, the others not.
        """
        if not self.spec.uses_layers:
            return 0.0, self._on_configs(0), self.has_off_value()
        if self.shared:
            return self._on_configs(k), 0.0, k == 0 or self.has_off_value()
        if self.layers is None:  # own searched mask (any subset of the layers); empty = off
            return 0.0, self._on_some_of(num_layers), True
        return 0.0, self._on_configs(len(self.layers)), self.has_off_value()

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
            params = self.spec.stable_params(dict(zip((k for k, _ in options), combo)))
            for targets in self.target_options:
                for layers in layer_sets:
                    yield ModuleConfig(
                        method=self.name, params=params, layers=layers, targets=targets
                    )


class ResolvedSpace:
    """A :class:`SearchSpace` on a concrete model profile."""

    def __init__(self, space: SearchSpace, profile: ModelProfile, methods: dict[str, Any]):
        self.space, self.profile, self.methods = space, profile, methods
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
        defaults = {k: _default(v) for k, v in spec.default_space.items()}
        check_values(name, spec, module.params, defaults)
        params = {**defaults, **module.params}
        available = self.profile.available_targets
        if module.targets is None:
            # The method's defaults that this model has (q on GPT-2: its fused q/k/v).
            fused = [
                FUSED_TARGETS.get(t, t) if t not in available else t for t in spec.default_targets
            ]
            options = [tuple(t for t in available if t in fused)]
        else:
            choice = isinstance(module.targets, TargetChoice)
            groups = module.targets.choice if choice else [module.targets]
            try:
                options = [self._targets(g) for g in groups]
            except RuleError as err:
                raise err.under("targets") from None
        if not spec.supports_conv1d:
            conv = sorted({t for ts in options for t in ts if self._conv1d(t)})
            if conv:
                raise RuleError(
                    f"{name} cannot adapt this {self.profile.family} model's {', '.join(conv)}: "
                    "they are Conv1D projections, and peft's implementation takes only "
                    "nn.Linear layers",
                    "use a type that takes them on this model: " + self._conv1d_types(),
                    path="targets",
                )
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

    def _conv1d(self, target: str) -> bool:
        return any(layer.sublayers[target].conv1d for layer in self.profile.layers)

    def _conv1d_types(self) -> str:
        """The registered types that adapt Conv1D projections (or need no targets)."""
        return ", ".join(sorted(n for n, s in self.methods.items() if s.supports_conv1d))

    def _targets(self, names: list[str]) -> tuple[str, ...]:
        available = self.profile.available_targets
        out: list[str] = []
        local = LOCAL_TARGETS.get(self.profile.family, {})
        for name in names:
            name = local.get(name, name)  # the architecture's own name, e.g. q_proj -> q
            if name not in available and FUSED_TARGETS.get(name) in available:
                name = FUSED_TARGETS[name]  # q on GPT-2 is its fused q/k/v projection
            if name in TARGET_GROUPS:
                out += [t for t in TARGET_GROUPS[name] if t in available]
            elif name not in available:
                raise RuleError(
                    f"target {name!r} does not exist",
                    f"available: {', '.join(available)}"
                    + (f" (or this model's names: {', '.join(local)})" if local else ""),
                    name,
                )
            else:
                out.append(name)
        return tuple(t for t in available if t in out)

    def sample(self, s: Suggest) -> Candidate:
        """Sample one candidate (define-by-run, every parameter suggested in every trial)."""
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
            # Every peft method's parameters too, chosen or not: a fixed set of names per
            # trial (see ModulePlan.sample); only the chosen method's config is kept.
            cfg = plan.sample(s, shared, self.profile)
            if cfg is not None and (plan.spec.backend != "peft" or plan.name == chosen):
                modules.append(cfg)
        return Candidate(
            modules=tuple(sorted(modules, key=lambda m: m.method)),
            training=self.space.training.sample(s),
        )

    def size(self) -> int | float:
        """Distinct candidates of the space: an int, or ``inf`` with continuous parameters.

        Many parameter assignments make one candidate (a module that is off ignores its
        other parameters), and studies count known candidates against this. Exact, or an
        upper bound in two cases: a per-layer size that can be 0 on a searched shared mask
        (a candidate placed on part of a mask is counted again under that part), and sizes
        that ``relative_to_hidden`` rounds to the same value on a small model.
        """
        num = self.profile.num_layers
        peft = [p for p in self.plans if p.spec.backend == "peft"]
        others = [p for p in self.plans if p.spec.backend != "peft"]

        def product(k: int, placed: bool) -> float:
            # Candidates with k layers in the shared mask: all of them when `placed`, else
            # only those no module of which is placed on the mask (the same for every mask).
            total = 1.0
            groups = [p.options(k, num) for p in others]
            if peft:  # one peft method per candidate; its absence is one candidate
                opts = [p.options(k, num) for p in peft]
                groups.append(
                    (sum(o[0] for o in opts), sum(o[1] for o in opts), any(o[2] for o in opts))
                )
            for on_mask, other, absent in groups:
                total *= other + absent + (on_mask if placed else 0.0)
            return total

        settings = self.space.training.count()  # searched training settings multiply all
        if self.shared_layers is not None:  # no module is placed by a searched mask
            total = product(0, False)
        else:
            total = product(0, False) + sum(
                math.comb(num, k) * (product(k, True) - product(k, False))
                for k in range(1, num + 1)
            )
        total *= settings
        # Counted in floats (continuous domains count inf, and inf - inf is nan).
        return math.inf if math.isnan(total) or math.isinf(total) else int(round(total))

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
    """A :class:`Suggest` that records every parameter's domain (and picks the largest)."""

    def __init__(self) -> None:
        self.domains: dict[str, str] = {}

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int:
        """Record an int domain; return ``high``."""
        self.domains[name] = (
            f"int {low}..{high}" + (" log" if log else "") + (f" step {step}" if step != 1 else "")
        )
        return high

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        """Record a float domain; return ``high``."""
        self.domains[name] = f"float {low:g}..{high:g}" + (" log" if log else "")
        return high

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        """Record a choice; return the last one."""
        self.domains[name] = "choice " + ", ".join(map(str, choices))
        return choices[-1]


def parameter_domains(resolved: ResolvedSpace) -> dict[str, str]:
    """Every searched parameter with its domain (every trial suggests each of them)."""
    recorder = DomainRecorder()
    resolved.sample(recorder)
    return recorder.domains


def candidate_params(candidate: Candidate, profile: ModelProfile, methods: dict[str, Any]) -> int:
    """Exact trainable parameters of a candidate (classifier head excluded)."""
    return sum(methods[m.method].count_params(profile, m) for m in candidate.modules)
