"""Native module types combined with a peft method in one model, and prefix attention checked
against a plain eager reference (bidirectional BERT, causal GQA Llama, padded batches)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autopeft import methods
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.methods.nn import PREFIX_ATTENTION, extend_mask, prefix_attention, unwrap
from autopeft.train.build import build_adapted, is_head_param
from autopeft.train.models import load_model
from autopeft.train.profile_model import profile_model

ARCHS = ["tiny-bert", "tiny-llama"]


def batch(seed: int = 0, pad: bool = True):
    torch.manual_seed(seed)
    ids = torch.randint(1, 120, (4, 12))
    mask = torch.ones_like(ids)
    if pad:
        mask[0, 8:] = 0
        mask[2, 5:] = 0
    return ids, mask, torch.tensor([0, 1, 0, 1])


def combined_candidate(profile) -> Candidate:
    every = tuple(range(profile.num_layers))
    targets = profile.available_targets
    return Candidate(
        modules=(
            ModuleConfig(
                method="lora",
                params=dict(rank=4, alpha=8.0, dropout=0.0, use_dora=False),
                layers=every,
                targets=("q", "v"),
            ),
            ModuleConfig(
                method="parallel_adapter",
                params=dict(size=8, scale=4.0, activation="relu"),
                layers=every,
            ),
            ModuleConfig(
                method="prefix",
                params=dict(length=4),
                layers=every,
                sizes={i: 2 + 2 * (i % 2) for i in every},
            ),
            ModuleConfig(
                method="serial_adapter", params=dict(size=8, activation="relu"), layers=every
            ),
            # bitfit's norm biases and ln_tuning must not share blocks (one tensor, two formulas)
            ModuleConfig(method="bitfit", params=dict(norms=True), layers=(0, 1), targets=targets),
            ModuleConfig(method="ssf", layers=every, targets=targets),
            ModuleConfig(method="ln_tuning", layers=(2, 3)),
        )
    )


def module_params(adapted, cfg: ModuleConfig) -> list[nn.Parameter]:
    """The parameters that belong to one module of the candidate."""
    base, profile = adapted.base, adapted.profile
    named = dict(adapted.model.named_parameters())
    if cfg.method == "lora":
        return [p for n, p in named.items() if "lora_" in n]
    if cfg.method in ("parallel_adapter", "prefix", "serial_adapter"):
        return [p for n, p in named.items() if f"autopeft_{cfg.method}" in n]
    if cfg.method == "ssf":
        return [p for n, p in named.items() if "autopeft_ssf_" in n]
    if cfg.method == "bitfit":
        out = []
        for i in cfg.layers:
            for t in cfg.targets:
                lin = unwrap(base.get_submodule(profile.linear(i, t).path))
                out.append(lin.bias if lin.bias is not None else lin.autopeft_bias)
            out += [base.get_submodule(n.path).bias for n in profile.layers[i].norms if n.bias]
        return out
    assert cfg.method == "ln_tuning"
    return [
        p
        for i in cfg.layers
        for n in profile.layers[i].norms
        for p in base.get_submodule(n.path).parameters()
    ]


@pytest.mark.parametrize("arch", ARCHS)
def test_all_native_types_with_lora(arch):
    model = load_model(arch)
    profile = profile_model(model)
    cand = combined_candidate(profile)
    adapted = build_adapted(model, profile, cand, total_steps=10)

    expected = sum(methods.get(m.method).count_params(profile, m) for m in cand.modules)
    assert adapted.trainable_params == expected
    assert adapted.head_params == profile.head_params
    groups = {m.method: module_params(adapted, m) for m in cand.modules}
    for name, params in groups.items():
        assert params and all(p.requires_grad for p in params), name
    counted = {id(p): p.numel() for ps in groups.values() for p in ps}
    assert sum(counted.values()) == expected  # the groups are disjoint and cover everything

    before = {n: p.detach().clone() for n, p in adapted.model.named_parameters()}
    ids, mask, labels = batch()
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-2)
    adapted.model.train()
    loss = adapted.model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    for name, params in groups.items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name
    opt.step()
    for n, p in adapted.model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        if not p.requires_grad:
            assert not moved, f"frozen parameter {n} changed"
        elif is_head_param(n, profile):
            assert moved, n


# Prefix attention against an eager reference --------------------------------------------------

_PADDING: dict[str, torch.Tensor] = {}


def reference_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Manual softmax attention over [prefix; keys], masked from the 2-D padding mask."""
    pad = _PADDING["mask"].bool()
    b, heads, tq, d = query.shape
    prefix_key = getattr(module, "autopeft_prefix_key", None)
    if prefix_key is not None:
        key = torch.cat([prefix_key.expand(b, -1, -1, -1), key], dim=2)
        value = torch.cat([module.autopeft_prefix_value.expand(b, -1, -1, -1), value], dim=2)
    n = key.shape[2] - tq
    key = key.repeat_interleave(heads // key.shape[1], dim=1)
    value = value.repeat_interleave(heads // value.shape[1], dim=1)
    scores = query @ key.transpose(-1, -2) * (scaling or d**-0.5)
    allowed = torch.ones(b, tq, n + tq, dtype=torch.bool)
    allowed[:, :, n:] = pad[:, None, :]
    if module.is_causal:
        allowed[:, :, n:] &= torch.ones(tq, tq, dtype=torch.bool).tril()
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return (scores.softmax(-1) @ value).transpose(1, 2), None


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_matches_eager_reference(arch, pad):
    from transformers import AttentionInterface

    model = load_model(arch)
    profile = profile_model(model)
    layers = tuple(range(profile.num_layers))
    cfg = ModuleConfig(
        method="prefix",
        params=dict(length=3),
        layers=layers,
        sizes={i: 1 + 2 * (i % 2) for i in layers},
    )
    build_adapted(model, profile, Candidate(modules=(cfg,)))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "autopeft_prefix" in n:
                p.normal_()  # large enough to matter
    model.eval()
    assert model.config._attn_implementation == PREFIX_ATTENTION
    ids, mask, _ = batch(1, pad)

    def run():
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return out.logits, out.hidden_states[-1]

    got = run()
    AttentionInterface.register("test_prefix_eager", reference_attention)
    _PADDING["mask"] = mask
    model.set_attn_implementation("test_prefix_eager")
    want = run()
    model.set_attn_implementation("sdpa")
    without = run()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got[1], without[1], atol=1e-2), "the prefix had no effect"


class _Attention(nn.Module):
    def __init__(self, causal: bool, groups: int, kv_heads: int, length: int, dim: int):
        super().__init__()
        self.is_causal, self.num_key_value_groups, self.training = causal, groups, False
        self.autopeft_prefix_key = nn.Parameter(torch.randn(kv_heads, length, dim))
        self.autopeft_prefix_value = nn.Parameter(torch.randn(kv_heads, length, dim))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("q_len", [6, 1])
def test_prefix_mask_kinds_agree(causal, q_len):
    torch.manual_seed(0)
    b, kv_heads, groups, kv_len, dim, length = 2, 2, 2, 6, 8, 3
    module = _Attention(causal, groups, kv_heads, length, dim)
    q = torch.randn(b, kv_heads * groups, q_len, dim)
    k, v = torch.randn(b, kv_heads, kv_len, dim), torch.randn(b, kv_heads, kv_len, dim)
    rows = torch.arange(q_len)[:, None] + kv_len - q_len
    full = (rows >= torch.arange(kv_len)) if causal else torch.ones(q_len, kv_len, dtype=bool)
    as_bool = full[None, None].expand(b, 1, q_len, kv_len)
    as_float = torch.zeros(as_bool.shape).masked_fill(~as_bool, torch.finfo(torch.float).min)
    outs = [
        prefix_attention(module, q, k, v, m, scaling=dim**-0.5)[0]
        for m in (None, as_bool, as_float)
    ]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])
    _PADDING["mask"] = torch.ones(b, kv_len)
    if q_len == kv_len:
        ref = reference_attention(module, q, k, v, None, scaling=dim**-0.5)[0]
        torch.testing.assert_close(outs[0], ref)
    extended = extend_mask(as_bool, length, q_len, kv_len, causal, q.device)
    assert extended.shape[-1] == length + kv_len and extended[..., :length].all()
