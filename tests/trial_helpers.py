"""Trial-test pieces shared by the CPU suite and the GPU tests."""

from __future__ import annotations

from autopeft import api
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.train.trial import TrialContext, run_trial

LORA = Candidate(
    modules=(
        ModuleConfig(
            method="lora",
            params={"rank": 4, "alpha": 8.0, "dropout": 0.0, "use_dora": False},
            layers=(0, 1, 2, 3),
            targets=("q", "v"),
        ),
    )
)


def make_context(budget=None, device=None, **training):
    """A trial context on tiny-bert and the real sms_spam data, with training overrides."""
    study = {
        "name": "t",
        "model": "tiny-bert",
        "task": {"name": "sms_spam", "max_length": 32},
        "search_space": {"modules": {"lora": {}}, **({"budget": budget} if budget else {})},
        "training": {
            "steps": 12,
            "batch_size": 8,
            "eval_every": 6,
            "eval_examples": 64,
            **training,
        },
    }
    return TrialContext.create(api.study_from_dict(study), cache_dir=None, device=device)


def inject(ctx, make_hook):
    """Attach the hook ``make_hook()`` makes to the head of every trial's model."""

    def before(adapted):
        head = adapted.base.get_submodule(ctx.profile.head_path)
        head.register_forward_hook(make_hook())

    ctx.before_training = before


def run_injected(ctx, make_hook, candidate=LORA):
    """``run_trial`` with ``make_hook()`` on the head of the trial's model; then removed."""
    inject(ctx, make_hook)
    try:
        return run_trial(ctx, candidate)
    finally:
        ctx.before_training = None


def nan_from_call(first: int):
    """A hook factory: the head's output turns NaN from its ``first``-th call on."""

    def make():
        calls = {"n": 0}

        def fn(module, args, out):
            calls["n"] += 1
            return out * float("nan") if calls["n"] >= first else out

        return fn

    return make


def raising(error: Exception):
    """A hook factory: the head raises ``error``."""

    def make():
        def fn(module, args, out):
            raise error

        return fn

    return make
