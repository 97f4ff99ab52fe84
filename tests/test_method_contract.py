"""Every registered module type: builds on tiny BERT and tiny Llama, trains only itself, and its
parameter formula equals the count on the built model, in several placements."""

from __future__ import annotations

import pytest
import torch

from autopeft import api, methods
from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError
from autopeft.train.build import build_adapted, is_head_param
from autopeft.train.models import load_model
from autopeft.train.profile_model import profile_model
from tests.methods_util import PLACEMENTS, example_config

CASES = [
    (name, placement)
    for name, spec in sorted(methods.registry().items())
    for placement in PLACEMENTS
    if placement != "per_layer" or spec.supports_per_layer
]


#: Architectures every method is checked on: (tiny model, head): classifiers and a causal LM.
ARCHS = [
    ("tiny-bert", "classifier"),
    ("tiny-llama", "classifier"),
    ("tiny-llama", "lm"),
    ("tiny-gpt2", "classifier"),
    ("tiny-gpt2", "lm"),
]


def one_step(adapted, seed: int = 0):
    """One forward/backward/AdamW step on a fixed random batch; returns the loss."""
    torch.manual_seed(seed)
    ids = torch.randint(1, 120, (4, 12))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # one padded row: masks must keep working with every module
    labels = torch.tensor([0, 1, 0, 1])
    if not adapted.profile.has_head:  # a causal LM: next-token loss on the unpadded tokens
        labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(adapted.trainable_parameters(), lr=1e-2)
    adapted.model.train()
    loss = adapted.model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    opt.step()
    adapted.on_step(1)
    return loss


@pytest.mark.parametrize(("arch", "head"), ARCHS, ids=[f"{a}-{h}" for a, h in ARCHS])
@pytest.mark.parametrize(("name", "placement"), CASES)
def test_contract(arch, head, name, placement):
    spec = methods.get(name)
    model = load_model(arch, head=head)
    profile = profile_model(model)
    assert profile.task_type == ("CAUSAL_LM" if head == "lm" else "SEQ_CLS")
    if not spec.supports_conv1d and spec.default_targets and profile.family == "gpt2":
        # A method peft cannot put on Conv1D projections is refused when the space is read.
        with pytest.raises(ConfigError, match="Conv1D projections"):
            api.resolve(api.space_from_dict({"modules": {name: {}}}), profile)
        return
    cfg = example_config(spec, profile, placement)
    assert spec.check(profile, cfg) is None
    adapted = build_adapted(model, profile, Candidate(modules=(cfg,)), total_steps=10)

    expected = spec.count_params(profile, cfg)
    assert expected > 0
    assert adapted.trainable_params == expected
    assert adapted.head_params == profile.head_params

    before = {n: p.detach().clone() for n, p in adapted.model.named_parameters()}
    loss = one_step(adapted)
    assert torch.isfinite(loss)
    changed_adapter = changed_head = 0
    for n, p in adapted.model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        if not p.requires_grad:
            assert not moved, f"frozen parameter {n} changed"
        elif is_head_param(n, profile):
            changed_head += moved
        else:
            changed_adapter += moved
    if profile.has_head:
        assert changed_head > 0, "the classifier head must train"
    else:
        assert changed_head == 0 and adapted.head_params == 0, "a causal LM has no trained head"
    assert changed_adapter > 0, f"no {name} parameter changed after one step"


# -- traits: what the core reads of a type instead of special-casing its name ----------------


@pytest.mark.parametrize("name", sorted(methods.registry()))
def test_traits_are_consistent(name):
    from autopeft.core.memory_model import SOURCES

    spec, registry = methods.get(name), methods.registry()
    if spec.virtual_tokens_param is not None:
        # Prompt-like: a length parameter of the type, and the tokens are inputs, so the
        # gradient reaches the embeddings.
        assert spec.virtual_tokens_param in spec.default_space
        assert spec.trains_embeddings
    if spec.input_source is not None:
        assert spec.input_source in SOURCES
        assert not spec.default_targets, "a targeted module reads its targets' inputs"
    if spec.saves_input and spec.uses_layers and not spec.default_targets:
        assert spec.input_source is not None, f"{name}: which block tensor does it read?"
    for flag, (other, what) in spec.overlaps.items():
        assert isinstance(spec.default_space.get(flag), bool), f"{name}.{flag} is no flag"
        assert other in registry and other != name and what


def test_the_memory_model_reads_the_traits(tiny_llama_profile):
    from autopeft.core.candidate import ModuleConfig
    from autopeft.core.memory_model import module_input_elements, predict_memory

    profile, registry = tiny_llama_profile, methods.registry()
    layers = tuple(range(profile.num_layers))

    def inputs(method: str, targets: tuple[str, ...] = (), **params) -> int:
        cfg = ModuleConfig(method=method, params=params, layers=layers, targets=targets)
        return module_input_elements(profile, Candidate(modules=(cfg,)), methods=registry)

    hidden, blocks = profile.hidden_size, profile.num_layers
    assert inputs("serial_adapter", size=8) == blocks * hidden  # ffn_out
    assert inputs("parallel_adapter", size=8) == blocks * hidden  # ffn_in
    assert inputs("bitfit", ("q", "v"), norms=True) == 0  # a bias needs no saved input
    assert inputs("lora", ("q", "v"), rank=4) == blocks * hidden  # q and v share attn_in

    # Another registry's traits change the prediction: the core names no type itself.
    class ReadsNothing(type(methods.get("serial_adapter"))):
        saves_input = False

    cfg = ModuleConfig(method="serial_adapter", params={"size": 8}, layers=layers)
    candidate = Candidate(modules=(cfg,))
    changed = {**registry, "serial_adapter": ReadsNothing()}
    assert module_input_elements(profile, candidate, methods=changed) == 0
    plain = predict_memory(profile, candidate, 1000, 4, 16, "cpu", methods=registry)
    assert predict_memory(profile, candidate, 1000, 4, 16, "cpu") == plain  # the default
    assert predict_memory(profile, candidate, 1000, 4, 16, "cpu", methods=changed) != plain

    dora = ModuleConfig(
        method="lora", params={"rank": 4, "use_dora": True}, layers=layers, targets=("q",)
    )
    assert methods.get("lora").weight_decomposed(dora)
    assert not methods.get("lora").weight_decomposed(dora.model_copy(update={"params": {}}))
