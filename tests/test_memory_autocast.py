"""The GPU memory model's weight-copy term, checked on CPU under the same bf16 autocast.

Under autocast every frozen linear a gradient crosses keeps a bf16 copy of its weight for
backward. CPU autocast casts linears the same way as CUDA's, so the copies autograd saves
there are the ones the CUDA prediction counts — a seam the CPU suite can test.
"""

from __future__ import annotations

import pytest
import torch

from autopeft import api
from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.memory_model import gradient_path_weights, predict_memory
from autopeft.train.build import build_adapted
from autopeft.train.models import load_model
from autopeft.train.profile_model import profile_model

LORA = dict(rank=4, alpha=8.0, dropout=0.0, use_dora=False)


def lora_on(layers: tuple[int, ...]) -> Candidate:
    module = ModuleConfig(method="lora", params=LORA, layers=layers, targets=("q", "v"))
    return Candidate(modules=(module,))


def saved_weight_copies(model: torch.nn.Module, ids, mask, labels) -> int:
    """Bytes of the bf16 tensors autograd saves that equal a parameter cast to bf16."""
    casts: dict[tuple, list[torch.Tensor]] = {}
    for p in model.parameters():
        if p.ndim == 2:  # linear saves the transposed view of its cast weight
            cast = p.detach().to(torch.bfloat16)
            for view in (cast, cast.t()):
                casts.setdefault(tuple(view.shape), []).append(view)
    found: dict[int, int] = {}
    alive = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        twins = casts.get(tuple(t.shape), [])
        if t.dtype == torch.bfloat16 and any(torch.equal(t, twin) for twin in twins):
            found[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            alive.append(t)
        return t

    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    return sum(found.values())


@pytest.mark.parametrize("layers", [(0, 1, 2, 3), (2, 3), (3,)])
def test_cuda_prediction_counts_the_autocast_weight_copies(layers):
    torch.manual_seed(0)
    model = load_model("tiny-bert")
    profile = profile_model(model)
    candidate = lora_on(layers)
    adapted = build_adapted(model, profile, candidate)
    ids = torch.randint(1, 120, (3, 10))
    mask = torch.ones_like(ids)
    measured = saved_weight_copies(adapted.model, ids, mask, torch.tensor([0, 1, 0]))
    params = api.candidate_trainable_params(candidate, profile)
    pred = predict_memory(profile, candidate, params, 3, 10, "cuda")
    hidden = profile.hidden_size
    # The lowest trained block's q/k/v read a tensor without gradient, so their copies are not
    # kept; the model counts them (one block's worth, bounded below).
    slack = 2 * 3 * hidden * hidden
    assert 0 <= pred.weight_copies - measured <= slack + 2 * (params + profile.head_params)
    assert measured >= 2 * gradient_path_weights(profile, len(layers)) - slack
    assert predict_memory(profile, candidate, params, 3, 10, "cpu").weight_copies == 0


def test_copies_grow_with_the_gradient_path():
    model = load_model("tiny-bert")
    profile = profile_model(model)
    blocks = [gradient_path_weights(profile, n) for n in range(profile.num_layers + 1)]
    assert blocks[0] == 0
    assert all(b2 > b1 for b1, b2 in zip(blocks, blocks[1:]))
    linear = sum(
        m.weight.numel()
        for n, m in model.named_modules()
        if ".layer." in n and hasattr(m, "in_features")
    )
    assert blocks[-1] == linear
