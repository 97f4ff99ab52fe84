"""The study file: model, task, training recipe, search space, objectives, sampler, executor."""

from __future__ import annotations

import re
from importlib.util import find_spec
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autopeft.core.errors import RuleError, did_you_mean
from autopeft.core.levers import platform_problems
from autopeft.core.objectives import KNOWN_METRICS, Objective, parse_objectives
from autopeft.core.space import SearchSpace

#: The task kind of a study that does not name one.
DEFAULT_KIND = "classification"
#: The built-in samplers (``autopeft.search.samplers``), for validation when the caller
#: passes no sampler registry (the pydantic context ``samplers``), e.g. a stored configuration
#: read back: the sampler contract test checks they are the registry's own.
SAMPLERS = ("random", "tpe", "nsga2", "gp", "qnehvi", "autopeft")
#: The built-in samplers that model only the measured objectives and need at least one
#: (a registered sampler's ``pool`` trait).
POOL_SAMPLERS = ("qnehvi", "autopeft")


def known_samplers(info: ValidationInfo) -> dict[str, bool]:
    """Sampler names, each with whether it needs a measured objective to model.

    From the validation context's ``samplers`` registry (name -> a spec with a ``pool``
    trait, ``autopeft.search.samplers.registry()``), else the built-in samplers.
    """
    registry = (info.context or {}).get("samplers")
    if registry is None:
        return {name: name in POOL_SAMPLERS for name in SAMPLERS}
    return {name: bool(spec.pool) for name, spec in registry.items()}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Section):
    """A task: its kind, a built-in offline task by name, a user CSV/JSONL file or a dataset.

    Which fields a task reads depends on its kind (``autopeft tasks`` lists them); setting a
    field another kind reads is an error. A kind may read fields of its own beyond those
    declared here (``TaskKind.fields``, read from ``model_extra``), so adding a kind needs no
    edit here: validation accepts exactly the common fields and the kind's.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    #: The task kind (``autopeft.tasks``): ``classification`` or ``causal_lm``.
    kind: str = DEFAULT_KIND
    #: A built-in task (default: the kind's own, e.g. ``rotten_tomatoes``, ``arithmetic``).
    name: str = "rotten_tomatoes"
    path: str | None = None
    #: A Hugging Face ``datasets`` dataset: a hub id (needs network or a cache) or a folder
    #: written by ``save_to_disk``; ``hf_subset`` is its configuration name.
    hf_dataset: str | None = None
    hf_subset: str | None = None
    # classification
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    # causal_lm: prompt + completion columns, or chat turns
    prompt: str = "prompt"
    completion: str = "completion"
    messages: str = "messages"
    #: Render rows with the tokenizer's chat template (None: when the tokenizer has one).
    chat_template: bool | None = None
    #: Greedy generation length for ``exact_match``.
    max_new_tokens: int = Field(default=32, ge=1, le=4096)
    #: Held-out rows generated from for ``exact_match`` at each evaluation.
    generate_examples: int = Field(default=100, ge=1)
    #: A scoring function ``package.module:function``, called as ``function(predictions,
    #: references) -> float`` on the greedy answers: the metric ``score`` (higher is better).
    scorer: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    #: The task metric (default: the kind's, or the one among the objectives).
    metric: str = "accuracy"
    max_length: int = Field(default=64, ge=8, le=32768)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str, info: ValidationInfo) -> str:
        kinds = (info.context or {}).get("tasks")
        if kinds is not None and value not in kinds:
            raise RuleError(
                f"unknown task kind {value!r}",
                did_you_mean(value, kinds) + "; `autopeft tasks` lists them",
            )
        return value


class TrainingConfig(_Section):
    """The per-trial training recipe and the fidelity ladder for successive halving."""

    steps: int = Field(default=100, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=5e-3, gt=0)  # PEFT modules want a larger rate than full fine-tuning
    weight_decay: float = Field(default=0.0, ge=0)
    warmup: float = Field(default=0.06, ge=0, le=1)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = Field(default=1.0, gt=0)
    eval_every: int = Field(default=50, ge=1)
    eval_examples: int = Field(default=1000, ge=1)
    seed: int = Field(default=0, ge=0, lt=2**32)  # NumPy's generators take seeds below 2**32
    rungs: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0])
    # Memory levers (autopeft.core.levers): fixed here, or searched in search_space.training.
    gradient_checkpointing: bool = False
    #: Rows per forward/backward (None: the whole batch); must divide batch_size.
    micro_batch_size: int | None = Field(default=None, ge=1)
    #: The longest training row in tokens (None: task.max_length, which evaluation keeps).
    max_length: int | None = Field(default=None, ge=8, le=32768)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    quantization: Literal["none", "nf4", "fp4", "nf4-dq", "fp4-dq", "int8"] = "none"

    @field_validator("rungs")
    @classmethod
    def _rungs(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 < r <= 1 for r in value) or value != sorted(set(value)):
            raise RuleError(
                f"rungs must be increasing fractions in (0, 1], but got {value}",
                "e.g. [0.25, 0.5, 1.0]",
            )
        return value

    @model_validator(mode="after")
    def _micro_batch_divides(self) -> TrainingConfig:
        micro = self.micro_batch_size
        if micro is not None and self.batch_size % micro:
            raise RuleError(
                f"micro_batch_size must divide batch_size ({self.batch_size}), but got {micro}",
                "the micro batches of one step add up to the batch; e.g. "
                f"{_divisors(self.batch_size)}",
                path="micro_batch_size",
            )
        return self


#: Where a refused lever's rules are written down.
LEVERS_HINT = "docs/levers.md says what each lever needs"


def _divisors(n: int) -> str:
    return ", ".join([str(d) for d in range(1, n) if n % d == 0][-4:]) or "1"


def trial_training(training: TrainingConfig, candidate: Any) -> TrainingConfig:
    """The recipe one trial trains with: the study's, with the candidate's searched settings.

    ``candidate`` is a :class:`~autopeft.core.candidate.Candidate`; its ``training`` values
    were validated by the search space (``autopeft.core.training_space``).
    """
    if not candidate.training:
        return training
    return training.model_copy(update=dict(candidate.training))


class HalvingConfig(_Section):
    """Pareto-aware successive halving over the training rungs (``training.rungs``)."""

    enabled: bool = True
    eta: float = Field(default=3.0, gt=1)
    min_peers: int = Field(default=3, ge=1)
    #: How much more accurate (in the objective metric) a peer must be at a rung to count as
    #: evidence for stopping a trial; see :mod:`autopeft.core.halving`.
    min_delta: float = Field(default=0.0, ge=0)
    #: Also stop, at a rung, a trial that the finished trials show cannot reach the front
    #: even with the largest gain any of them made from there (see autopeft.core.halving).
    stop_hopeless: bool = False
    #: The evaluation metric a rung ranks trials by (None: ``task.metric``), e.g. the eval
    #: loss, which often orders trials early in training better than accuracy does;
    #: ``min_delta`` is in its units.
    metric: str | None = None


class SamplerConfig(_Section):
    """Which sampler and its options."""

    name: str = "tpe"
    #: Random trials before the model-based proposals; for ``nsga2`` the population size
    #: (None: 5 for ``tpe``, 20 for ``nsga2``, 100 for ``autopeft``, 10 otherwise).
    n_startup_trials: int | None = Field(default=None, ge=0)
    #: Proposals evaluated at once by the Ray executor, pending ones known to the sampler
    #: (None: 4 for ``autopeft``, as in the paper; otherwise as many as resources allow).
    #: For ``autopeft`` also the proposals made from one SAAS fit, in either executor.
    batch_size: int | None = Field(default=None, ge=1)
    #: NumPy's random generators (Optuna's samplers) take seeds below 2**32.
    seed: int | None = Field(default=0, ge=0, lt=2**32)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str, info: ValidationInfo) -> str:
        known = known_samplers(info)
        if value not in known:
            raise RuleError(f"unknown sampler {value!r}", did_you_mean(value, list(known)))
        return value


#: Task fields every kind reads; the others belong to one kind (``TaskKind.fields``).
COMMON_TASK_FIELDS = ("kind", "name", "path", "hf_dataset", "hf_subset", "metric", "max_length")
#: Task metrics that are minimised, for configurations whose objectives do not name one.
LOWER_IS_BETTER = ("eval_loss", "perplexity", "loss")


def task_kind(name: Any, info: ValidationInfo) -> Any:
    """The task kind ``name`` from the validation context's ``tasks`` registry.

    None when the context has no registry (a stored configuration read back) or the name is
    not a kind (its field validator reports that).
    """
    kinds = (info.context or {}).get("tasks")
    return kinds.get(name) if kinds is not None and isinstance(name, str) else None


class StudyConfig(_Section):
    """A whole study file."""

    name: str
    model: str = "minilm"
    task: TaskConfig = TaskConfig()
    training: TrainingConfig = TrainingConfig()
    search_space: SearchSpace
    objectives: list[Objective] = Field(
        default_factory=lambda: [
            Objective(metric="accuracy", direction="maximize"),
            Objective(metric="trainable_params", direction="minimize"),
            Objective(metric="peak_memory", direction="minimize"),
        ]
    )
    sampler: SamplerConfig = SamplerConfig()
    halving: HalvingConfig = HalvingConfig()
    n_trials: int = Field(default=20, ge=1)
    executor: Literal["local", "ray"] = "local"
    storage: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _task_metric_and_objectives_follow_each_other(cls, data: Any, info: ValidationInfo) -> Any:
        # Halving, re-evaluation and the printed front judge trials by task.metric; the
        # objectives must rank them by the same one, so each follows the other when only one
        # is given (a contradiction is refused after validation, beside other errors). A task
        # kind's own defaults (built-in task, metric) apply when the file leaves them out.
        if not isinstance(data, dict):
            return data
        task = data.get("task", {})
        if isinstance(task, BaseModel):
            task = task.model_dump(exclude_unset=True)
        if not isinstance(task, (dict, str)):
            return data
        task = {"name": task} if isinstance(task, str) else dict(task)
        kind = task_kind(task.get("kind", DEFAULT_KIND), info)
        if kind is None:
            return data  # unknown kind (reported by its validator) or no kinds known
        if "name" not in task and not task.get("path") and not task.get("hf_dataset"):
            task["name"] = kind.default_task
        chosen = task.get("metric")
        if data.get("objectives") is None:
            chosen = chosen or kind.default_metric
            # A metric the kind does not measure is refused at task.metric, after validation.
            known = chosen if chosen in kind.metrics else kind.default_metric
            goal = known if kind.metrics[known] != "minimize" else f"-{known}"
            defaults = [goal, "-trainable_params", "-peak_memory"]
            return {**data, "task": {**task, "metric": chosen}, "objectives": defaults}
        try:
            objectives = parse_objectives(data["objectives"], kind.metrics)
        except RuleError:
            return {**data, "task": task}  # the field's validator reports it with the others
        measured = [o["metric"] for o in objectives if o["metric"] in kind.metrics]
        if chosen is None:
            task["metric"] = measured[0] if measured else kind.default_metric
        return {**data, "task": task}

    @model_validator(mode="after")
    def _task_fits_its_kind(self, info: ValidationInfo) -> StudyConfig:
        kind = task_kind(self.task.kind, info)
        if kind is None:
            return self
        if self.task.metric not in kind.metrics:
            raise RuleError(
                f"a {kind.name} task measures {', '.join(kind.metrics)}, but got "
                f"{self.task.metric!r}",
                did_you_mean(self.task.metric, kind.metrics),
                path="task.metric",
            )
        own = COMMON_TASK_FIELDS + kind.fields
        foreign = sorted(f for f in self.task.model_fields_set if f not in own)
        for name in foreign:
            if name in TaskConfig.model_fields:  # another kind's field
                raise RuleError(
                    f"{name} is not a field of {kind.name} tasks",
                    f"a {kind.name} task reads {', '.join(kind.fields)}; `autopeft tasks` "
                    "lists each kind's fields",
                    path=f"task.{name}",
                )
            raise RuleError(
                f"unknown field {name!r} in task",
                did_you_mean(name, own) + "; `autopeft tasks` lists each kind's fields",
                path=f"task.{name}",
            )
        rung_metric = self.halving.metric
        if rung_metric is not None and rung_metric not in kind.metrics:
            # The message lists the metrics: the hint keeps only a close guess.
            close = did_you_mean(rung_metric, kind.metrics)
            leave = "leave it out to rank by task.metric"
            guess = close.split("?")[0] if close.startswith("did you mean") else None
            raise RuleError(
                f"a rung ranks trials by a metric a {kind.name} task measures "
                f"({', '.join(kind.metrics)}), but got {rung_metric!r}",
                f"{guess}? Or {leave}" if guess else leave,
                path="halving.metric",
            )
        for metric in {self.task.metric, self.rung_metric, *(o.metric for o in self.objectives)}:
            needed = kind.needs.get(metric)
            if needed and getattr(self.task, needed) is None:
                raise RuleError(
                    f"the metric {metric!r} needs task.{needed}, which is not set",
                    f"set task.{needed}, or use another metric ({', '.join(kind.metrics)})",
                    path=f"task.{needed}",
                )
        measured = [o.metric for o in self.objectives if o.metric in kind.metrics]
        if measured and self.task.metric not in measured:
            raise RuleError(
                f"must be the task metric among the objectives ({', '.join(measured)}), "
                f"but got {self.task.metric!r}",
                f"set task.metric to {measured[0]!r}, or drop it (it then follows the objectives)",
                path="task.metric",
            )
        return self

    @model_validator(mode="after")
    def _levers_fit(self) -> StudyConfig:
        # The levers' rules that involve another section: micro batches divide the batch,
        # training rows are no longer than evaluation's, and the platform can run them.
        space = self.search_space.training
        micro = space.values("micro_batch_size") or []
        bad = [m for m in micro if self.training.batch_size % m]
        if bad:
            raise RuleError(
                f"micro_batch_size must divide training.batch_size ({self.training.batch_size}) "
                f"for every value, but got {bad[0]}",
                "the micro batches of one step add up to the batch; e.g. "
                f"{_divisors(self.training.batch_size)}",
                path="search_space.training.micro_batch_size",
            )
        ceiling = self.task.max_length
        lengths = [(p, v) for p, v in self.lever_values("max_length") if v is not None]
        for path, value in lengths:
            if value > ceiling:
                raise RuleError(
                    f"max_length must be at most task.max_length ({ceiling}), the length "
                    f"evaluation uses, but got {value}",
                    f"raise task.max_length to {value}, or search shorter lengths",
                    path=path,
                )
        for path, why in self.platform_problems():
            raise RuleError(why, LEVERS_HINT, path=path)
        return self

    def platform_problems(self, bf16_device: bool | None = None) -> list[tuple[str, str]]:
        """``(field path, why)`` for each lever value this platform cannot run.

        ``bf16_device``: whether the training device computes in bf16 (None: not known, as
        in validation); a trial context checks again once it knows its device.
        """
        values = {k: {v for _, v in self.lever_values(k)} for k in ("quantization", "dtype")}
        found = platform_problems(values, find_spec("bitsandbytes") is not None, bf16_device)
        return [(self.lever_values(lever)[0][0], why) for lever, why in found]

    def lever_values(self, key: str) -> list[tuple[str, Any]]:
        """``(path, value)`` for every value lever ``key`` takes: searched, else fixed."""
        searched = self.search_space.training.values(key)
        if searched is not None:
            return [(f"search_space.training.{key}", v) for v in searched]
        return [(f"training.{key}", getattr(self.training, key))]

    @property
    def task_direction(self) -> str:
        """Whether the task metric is maximised or minimised (as its objective says)."""
        return self.direction_of(self.task.metric)

    def direction_of(self, metric: str) -> str:
        """Whether ``metric`` is maximised or minimised (its objective's, else by its name)."""
        for objective in self.objectives:
            if objective.metric == metric:
                return objective.direction
        return "minimize" if metric in LOWER_IS_BETTER else "maximize"

    def signed_score(self, metrics: dict[str, float], metric: str) -> float | None:
        """``metric`` of ``metrics`` signed so that higher is better (None: not there)."""
        value = metrics.get(metric)
        if value is None:
            return None
        return value if self.direction_of(metric) == "maximize" else -value

    def task_score(self, metrics: dict[str, float]) -> float | None:
        """The task metric of ``metrics`` signed so that higher is better (None: not there).

        What ``reeval`` picks the best trials by (and halving, unless ``halving.metric``).
        """
        return self.signed_score(metrics, self.task.metric)

    @property
    def rung_metric(self) -> str:
        """The metric halving ranks trials by at a rung: ``halving.metric``, else the task's."""
        return self.halving.metric or self.task.metric

    def halving_score(self, metrics: dict[str, float]) -> float | None:
        """The rung metric of ``metrics`` signed so that higher is better (None: not there).

        What halving ranks trials by, at a rung and, for ``stop_hopeless``, at the end.
        """
        return self.signed_score(metrics, self.rung_metric)

    def rung_score(self, metrics: dict[str, float]) -> float:
        """:meth:`halving_score` of an evaluation at a rung, which must have measured it.

        Raises:
            KeyError: when the evaluation did not measure the rung metric.
        """
        score = self.halving_score(metrics)
        if score is None:
            raise KeyError(f"the evaluation did not measure {self.rung_metric!r}")
        return score

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            raise RuleError(
                f"a study name is 1-64 letters, digits, '_', '.', '-', but got {value!r}",
                "it names the folder studies/<name>/",
            )
        return value

    @field_validator("objectives", mode="before")
    @classmethod
    def _objectives(cls, value: Any, info: ValidationInfo) -> Any:
        task = info.data.get("task")
        kind = task_kind(task.kind if task is not None else DEFAULT_KIND, info)
        return parse_objectives(value, kind.metrics if kind is not None else None)

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("sampler", mode="before")
    @classmethod
    def _sampler(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sampler_has_something_to_model(self, info: ValidationInfo) -> StudyConfig:
        names = [o.metric for o in self.objectives]
        pool = known_samplers(info).get(self.sampler.name, False)
        if pool and all(n in KNOWN_METRICS for n in names):
            raise RuleError(
                f"sampler {self.sampler.name!r} needs a measured objective to model, "
                f"but got only objectives known before training: {', '.join(names)}",
                "add a task metric (e.g. accuracy, exact_match, -eval_loss) or wall_time to "
                "objectives, "
                "or use sampler 'tpe' or 'random'",
                path="sampler.name",
            )
        return self
