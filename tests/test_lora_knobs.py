"""LoRA's searched knobs: init (default, gaussian, pissa, olora, eva), rsLoRA, LoRA+ (lr_ratio),
their value rules, the candidate key of older configs, and a PiSSA/OLoRA export that loads on
the original base with plain peft."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch

from autopeft import api, methods
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.errors import ConfigError
from autopeft.core.resolve import RandomSuggest
from autopeft.methods.lora import INITIAL_ATTR, INITS
from autopeft.train.build import build_adapted, is_head_param
from autopeft.train.models import load_model
from autopeft.train.profile_model import profile_model

SPEC = methods.get("lora")
#: A LoRA config as written before the knobs existed (its key must not change).
OLD = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "use_dora": False}


def lora(profile, sizes=None, targets=("q", "v"), **knobs) -> ModuleConfig:
    params = {**OLD, **({"rank": max(sizes.values())} if sizes else {}), **knobs}
    layers = tuple(range(profile.num_layers))
    return ModuleConfig(method="lora", params=params, layers=layers, targets=targets, sizes=sizes)


def batches(n: int = 3, rows: int = 6, length: int = 12, seed: int = 1) -> list[dict]:
    """Training-like batches: right-padded ids, a mask, one label per row."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 120, (rows, length), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, length - 3 :] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1] * 3)})
    return out


def lm_batch(batch: dict, has_head: bool) -> dict:
    """``batch`` with the labels the model trains on (next tokens for a causal LM)."""
    if has_head:
        return batch
    return {**batch, "labels": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)}


def build(arch="tiny-llama", head="lm", sizes=None, targets=("q", "v"), data=True, seed=0, **knobs):
    """The adapted model, its config, and the untouched base; hooks called as the loop will."""
    base = load_model(arch, head=head)
    original = copy.deepcopy(base)
    profile = profile_model(base)
    cfg = lora(profile, sizes, targets, **knobs)
    torch.manual_seed(seed)  # as a trial does; a rebuild (export) does not
    adapted = build_adapted(base, profile, Candidate(modules=(cfg,)), total_steps=10)
    SPEC.after_build(adapted.model, cfg)
    if data:
        SPEC.data_init(adapted.model, [lm_batch(b, profile.has_head) for b in batches()], cfg)
    return adapted, cfg, original


def adapter(adapted) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in adapted.model.named_parameters() if "lora_" in n}


@torch.no_grad()
def logits(model, batch) -> torch.Tensor:
    model.eval()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def train(adapted, steps: int = 3, lr: float = 1e-2) -> None:
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=lr)
    adapted.model.train()
    for batch in batches(steps, seed=7):
        adapted.model(**lm_batch(batch, adapted.profile.has_head)).loss.backward()
        opt.step()
        opt.zero_grad()


# -- init -----------------------------------------------------------------------------------


def test_each_init_starts_from_its_own_adapter():
    starts = {init: adapter(build(init=init)[0]) for init in INITS}
    for a, b in itertools.combinations(INITS, 2):
        same = all(torch.equal(starts[a][n], starts[b][n]) for n in starts[a])
        assert not same, f"init {a} and {b} start from the same adapter"
    for init in ("default", "gaussian", "eva"):  # B starts at zero: the model is the base
        assert all(t.abs().sum() == 0 for n, t in starts[init].items() if "lora_B" in n)


@pytest.mark.parametrize("init", list(INITS))
@pytest.mark.parametrize("head", ["lm", "classifier"])
def test_an_init_starts_at_the_base_model_output(init, head):
    adapted, _, original = build(head=head, init=init, use_dora=init == "olora")
    batch = batches(1)[0]
    assert torch.allclose(logits(adapted.model, batch), logits(original, batch), atol=1e-5)
    q = "model.layers.0.self_attn.q_proj"
    before = original.get_submodule(q).weight
    moved = not torch.equal(adapted.base.get_submodule(q).base_layer.weight, before)
    assert moved == (init in ("pissa", "olora")), "only PiSSA/OLoRA keep a residual base"


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_a_residual_init_is_the_same_whatever_the_random_state(init):
    # A rebuilt model (export, re-evaluation) runs the init again, with another RNG state.
    first, _, _ = build(init=init)
    second, _, _ = build(init=init, seed=123)
    state = dict(second.model.state_dict())
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-bert"])
def test_eva_sets_a_from_the_data_keeping_shapes_and_count(arch):
    head = "lm" if arch == "tiny-llama" else "classifier"
    adapted, cfg, _ = build(arch, head, data=False, init="eva", use_dora=True)
    profile = adapted.profile
    before = adapter(adapted)
    SPEC.data_init(adapted.model, batches(), cfg)  # a classifier's labels are left out
    after = adapter(adapted)
    assert {n: t.shape for n, t in after.items()} == {n: t.shape for n, t in before.items()}
    assert all(not torch.equal(after[n], before[n]) for n in after if "lora_A" in n)
    sizes = {i: 2 + 2 * (i % 2) for i in range(profile.num_layers)}  # per-layer ranks stay too
    per_layer, cfg2, _ = build(arch, head, sizes=sizes, init="eva")
    for spec_cfg, model in ((cfg, adapted), (cfg2, per_layer)):
        params = model.model.named_parameters()
        count = sum(
            p.numel() for n, p in params if p.requires_grad and not is_head_param(n, profile)
        )
        assert count == SPEC.count_params(profile, spec_cfg)


def test_eva_that_cannot_converge_stops_with_a_reason():
    base = load_model("tiny-llama", head="lm")
    profile = profile_model(base)
    cfg = lora(profile, init="eva", rank=8)
    adapted = build_adapted(base, profile, Candidate(modules=(cfg,)))
    short = [{"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.ones(1, 3).long()}]
    with pytest.raises(RuntimeError, match="did not converge in 100 forward passes over 1"):
        SPEC.data_init(adapted.model, short, cfg)  # 3 tokens never give 8 directions


def test_data_init_and_after_build_do_nothing_for_other_inits():
    adapted, cfg, _ = build(init="gaussian")
    start = adapter(adapted)
    SPEC.data_init(adapted.model, batches(), cfg)
    assert all(torch.equal(start[n], t) for n, t in adapter(adapted).items())
    assert getattr(adapted.model, INITIAL_ATTR, None) is None


# -- rsLoRA, counts ---------------------------------------------------------------------------


def test_rslora_scales_by_alpha_over_the_root_of_the_rank():
    profile = profile_model(load_model("tiny-llama", head="lm"))
    sizes = {i: 2 + 6 * (i % 2) for i in range(profile.num_layers)}  # ranks 2 and 8
    for rslora in (False, True):
        adapted, _, _ = build(sizes=sizes, rslora=rslora)
        for layer in (0, 1):
            module = adapted.base.get_submodule(f"model.layers.{layer}.self_attn.q_proj")
            r = sizes[layer]
            want = OLD["alpha"] / (math.sqrt(r) if rslora else r)
            assert module.scaling["default"] == pytest.approx(want)


@pytest.mark.parametrize(
    ("init", "rslora", "use_dora"),
    [(i, s, d) for i in INITS for s in (False, True) for d in (False, True)],
)
def test_the_knobs_add_no_parameters(init, rslora, use_dora):
    adapted, cfg, _ = build(head="classifier", init=init, rslora=rslora, use_dora=use_dora)
    assert adapted.trainable_params == SPEC.count_params(adapted.profile, cfg)
    plain = lora(adapted.profile, use_dora=use_dora)
    assert SPEC.count_params(adapted.profile, cfg) == SPEC.count_params(adapted.profile, plain)


# -- LoRA+ ------------------------------------------------------------------------------------


def test_lora_plus_gives_peft_loraplus_rates_to_the_adapter():
    from peft.optimizers import create_loraplus_optimizer

    adapted, cfg, _ = build("tiny-bert", "classifier", use_dora=True, lr_ratio=4.0)
    peft_opt = create_loraplus_optimizer(
        adapted.model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=4.0
    )
    peft_lr = {id(p): g["lr"] for g in peft_opt.param_groups for p in g["params"]}
    sped = 0
    for name, p in adapted.model.named_parameters():
        if not p.requires_grad:
            continue
        ours = 1e-3 * SPEC.lr_multiplier(cfg, name)
        if is_head_param(name, adapted.profile):
            # peft speeds up every 1-D parameter, so the head's bias too; it is not LoRA's.
            assert ours == 1e-3
            assert peft_lr[id(p)] == (4e-3 if p.ndim == 1 else 1e-3)
        else:
            assert ours == pytest.approx(peft_lr[id(p)]), name
            sped += ours > 1e-3
    assert sped == 2 * 2 * adapted.profile.num_layers  # B and DoRA magnitude of q and v


def test_lora_plus_moves_b_lr_ratio_times_as_fast_as_a():
    adapted, cfg, _ = build(init="pissa", lr_ratio=8.0)  # PiSSA: A and B both have gradients
    groups: dict[float, list] = {}
    for name, p in adapted.model.named_parameters():
        if p.requires_grad:
            groups.setdefault(SPEC.lr_multiplier(cfg, name), []).append(p)
    assert sorted(groups) == [1.0, 8.0]
    lr = 1e-3
    opt = torch.optim.AdamW(
        [{"params": ps, "lr": lr * f} for f, ps in groups.items()], lr=lr, weight_decay=0.0
    )
    start = adapter(adapted)
    adapted.model.train()
    adapted.model(**lm_batch(batches(1)[0], False)).loss.backward()
    opt.step()
    # Adam's first step moves each entry by lr * g / |g|: the group's rate, exactly.
    steps = {n: (t - start[n]).abs().max().item() for n, t in adapter(adapted).items()}
    assert all(v == pytest.approx(lr, rel=1e-3) for n, v in steps.items() if "lora_A" in n)
    assert all(v == pytest.approx(8 * lr, rel=1e-3) for n, v in steps.items() if "lora_B" in n)


# -- value rules, candidate rules, keys -------------------------------------------------------


def refused(modules: dict) -> str:
    with pytest.raises(ConfigError) as err:
        api.resolve(api.space_from_dict({"modules": modules}), "minilm")
    return str(err.value)


@pytest.mark.parametrize(
    ("lora_space", "expected"),
    [
        (
            {"init": ["default", "svd"]},
            "init: init must be one of default, gaussian, pissa, olora, eva for every value",
        ),
        (
            {"lr_ratio": {"type": "float", "low": 0.0, "high": 16.0}},
            "lr_ratio: 0 < lr_ratio must hold for every value",
        ),
        ({"lr_ratio": -2}, "lr_ratio: 0 < lr_ratio must hold for every value"),
        ({"rslora": "yes"}, "rslora: lora.rslora takes bool values, but got 'yes'"),
    ],
)
def test_a_knob_value_lora_cannot_use_is_refused(lora_space, expected):
    assert f"- search_space.modules.lora.{expected}" in refused({"lora": {"rank": 4, **lora_space}})


def test_rslora_takes_only_booleans():
    assert SPEC.value_rule("rslora").why("rslora", 1) == "rslora must be true or false"
    assert SPEC.value_rule("rslora").why("rslora", True) is None


def test_a_space_searching_every_knob_gives_buildable_candidates():
    space = {
        "rank": [2, 4],
        "init": list(INITS),
        "rslora": [False, True],
        "lr_ratio": {"type": "float", "low": 1.0, "high": 16.0, "log": True},
    }
    resolved = api.resolve(api.space_from_dict({"modules": {"lora": space}}), "minilm")
    seen = set()
    for seed in range(40):
        cfg = resolved.sample(RandomSuggest(seed)).module("lora")
        if cfg is not None:
            assert SPEC.check(resolved.profile, cfg) is None
            seen.add(SPEC.knob(cfg, "init"))
    assert seen == set(INITS)


def test_a_residual_or_eva_init_needs_a_rank_the_weights_have(tiny_llama_profile):
    # tiny Llama: q is 32x32, v 16x32 (two key-value heads of 8).
    for init, rank, ok in [
        ("pissa", 16, True),
        ("pissa", 32, False),
        ("olora", 32, False),
        ("eva", 32, True),
        ("eva", 33, False),
        ("default", 64, True),
    ]:
        why = SPEC.check(tiny_llama_profile, lora(tiny_llama_profile, init=init, rank=rank))
        assert (why is None) == ok, (init, rank, why)
    why = SPEC.check(tiny_llama_profile, lora(tiny_llama_profile, init="pissa", rank=32))
    assert (
        why
        == "lora init pissa needs rank <= 16 (model.layers.0.self_attn.v_proj is 16x32), but got 32"
    )


def test_the_knobs_at_their_defaults_keep_the_key_of_older_candidates():
    old = Candidate(modules=(ModuleConfig(method="lora", params=OLD, layers=(0, 1)),))
    full = {**OLD, "init": "default", "rslora": False, "lr_ratio": 1.0}
    stable = Candidate(
        modules=(ModuleConfig(method="lora", params=SPEC.stable_params(full), layers=(0, 1)),)
    )
    assert stable.key() == old.key()
    changed = {**full, "init": "pissa", "rslora": True, "lr_ratio": 2}
    assert SPEC.stable_params(changed) == changed  # any other value is part of the key
    assert SPEC.stable_params({**full, "rslora": 0}) == {**OLD, "rslora": 0}
    assert SPEC.stable_params({**full, "lr_ratio": 1})["rank"] == 4  # 1 == 1.0: the default


def test_a_sampled_default_lora_candidate_keeps_its_older_key():
    resolved = api.resolve(api.space_from_dict({"modules": {"lora": {"rank": 4}}}), "minilm")
    cfg = resolved.sample(RandomSuggest(0)).module("lora")
    assert set(cfg.params) == set(OLD)


# -- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "head", "knobs"),
    [
        ("pissa", "lm", {}),
        ("olora", "lm", {}),
        ("pissa", "classifier", {"use_dora": True}),
        ("olora", "classifier", {"rslora": True, "per_layer": True}),
        ("eva", "classifier", {}),
        ("default", "lm", {"rslora": True}),
    ],
)
def test_an_export_loads_on_the_original_base_with_plain_peft(tmp_path, init, head, knobs):
    from peft import PeftModel

    knobs = dict(knobs)
    sizes = {i: 2 + 2 * (i % 2) for i in range(4)} if knobs.pop("per_layer", False) else None
    adapted, cfg, original = build(head=head, sizes=sizes, init=init, **knobs)
    train(adapted)
    batch = batches(1, seed=11)[0]
    want = logits(adapted.model, batch)
    SPEC.save_peft(adapted.model, str(tmp_path), cfg)
    q = "model.layers.0.self_attn.q_proj"
    pristine = original.get_submodule(q).weight.detach().clone()
    loaded = PeftModel.from_pretrained(original, str(tmp_path))
    got = logits(loaded, batch)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert torch.equal(loaded.get_base_model().get_submodule(q).base_layer.weight, pristine)


def test_a_residual_export_without_after_build_is_refused(tmp_path):
    from peft import get_peft_model

    base = load_model("tiny-llama", head="lm")
    profile = profile_model(base)
    cfg = lora(profile, init="olora")
    bare = get_peft_model(base, SPEC.peft_config(profile, cfg, 10))  # after_build skipped
    with pytest.raises(RuntimeError, match="after_build was not called"):
        SPEC.save_peft(bare, str(tmp_path), cfg)


# -- wiring into trials ------------------------------------------------------------------------


def test_the_training_loop_gives_lora_b_its_lora_plus_rate():
    base = load_model("tiny-llama", head="lm")
    profile = profile_model(base)
    adapted = build_adapted(base, profile, Candidate(modules=(lora(profile, lr_ratio=4.0),)))
    groups = {g["lr"]: g["params"] for g in adapted.param_groups(0.01)}
    names = {id(p): n for n, p in adapted.model.named_parameters()}
    assert set(groups) == {0.01, 0.04}
    assert all("lora_B" in names[id(p)] for p in groups[0.04])
    assert all("lora_A" in names[id(p)] for p in groups[0.01])


def test_an_eva_trial_initialises_from_training_batches_and_completes():
    from autopeft.core.trial_result import TrialStatus
    from autopeft.train.trial import TrialContext, run_trial

    config = api.study_from_dict(
        {
            "name": "eva",
            "model": "tiny-llama",
            "task": {"kind": "causal_lm", "max_length": 32},
            "search_space": {"modules": {"lora": {}}},
            "training": {"steps": 4, "batch_size": 8, "eval_every": 4, "eval_examples": 8},
        }
    )
    ctx = TrialContext.create(config)
    seen = []
    ctx.before_training = lambda adapted: seen.append(
        adapted.model.get_submodule(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default"
        )
        .weight.detach()
        .clone()
    )
    candidate = Candidate(modules=(lora(ctx.profile, init="eva"),))
    result = run_trial(ctx, candidate)
    assert result.status is TrialStatus.COMPLETE, result.error
    # EVA's A rows are the top right-singular vectors of the layer inputs: orthonormal.
    a = seen[0]
    assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4)
