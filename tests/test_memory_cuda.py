"""The CUDA memory model against the allocator peaks measured on a lent H200, on CPU.

``bench/gpu/checks.sh`` measured them (``bench/results/memory_model_h200_fit`` fitted the CUDA
coefficients; ``memory_model_cuda_holdout*`` are shapes and a model size the fit never saw).
Predicting the committed rows again keeps every change to the memory model honest without a
GPU: a change that breaks the CUDA figures fails here.
"""

from __future__ import annotations

import json
import statistics
import sys

import pytest
import torch

from autopeft.core.candidate import Candidate, ModuleConfig
from autopeft.core.memory_model import CUDA_WORKSPACE_BYTES, MB, predict_memory
from autopeft.core.model_profile import load_profile
from autopeft.train.measured_memory import cuda_workspace_bytes
from bench import memory_model
from bench.common import RESULTS

MEASURED = {
    "memory_model_h200_fit.json": 44,
    "memory_model_cuda_holdout.json": 44,
    "memory_model_cuda_holdout_large.json": 11,
}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_committed_h200_peaks_are_predicted_within_15_percent(name):
    saved = json.loads((RESULTS / name).read_text())
    rows = saved["rows"]
    # The file names the commit it was measured (or committed) at.
    assert saved["meta"]["git_commit"] and saved["meta"]["command"]
    assert len(rows) == MEASURED[name] and {r["gpu"] for r in rows} == {"NVIDIA H200"}
    again = memory_model.repredict(rows)
    errors = {
        f"{r['model']} {r['batch']}x{r['max_length']} {r['candidate']}": r["error_pct"]
        for r in again
    }
    assert max(map(abs, errors.values())) <= 15, errors
    assert statistics.median(map(abs, errors.values())) <= 5, errors
    # Every module type the bench covers is among the rows (issue 3: across module types).
    methods = {m.method for r in again for m in memory_model.candidates(12)[r["candidate"]].modules}
    assert methods >= {"lora", "ia3", "serial_adapter", "parallel_adapter", "prefix", "bitfit"}


def test_cuda_workspace_follows_pytorch_rule():
    assert cuda_workspace_bytes(torch.device("cpu")) == 0
    cuda = torch.device("cuda")  # with a config, no device is queried
    assert cuda_workspace_bytes(cuda, ":4096:8") == 2 * 32 * MB
    assert cuda_workspace_bytes(cuda, ":4096:2:16:8") == 2 * (8 * MB + 128 * 1024)
    assert cuda_workspace_bytes(cuda, ":16:8") == 2 * 128 * 1024


def test_workspace_is_static_cuda_memory_only():
    profile = load_profile("minilm")
    lora = ModuleConfig(
        method="lora", params={"rank": 8, "alpha": 16.0}, layers=(0, 1), targets=("q", "v")
    )
    cand = Candidate(modules=(lora,))
    cpu = predict_memory(profile, cand, 1000, 8, 32, "cpu")
    hopper = predict_memory(profile, cand, 1000, 8, 32, "cuda")
    older = predict_memory(profile, cand, 1000, 8, 32, "cuda", workspace_bytes=2 * MB)
    assert cpu.workspace == 0 and hopper.workspace == CUDA_WORKSPACE_BYTES == 64 * MB
    assert hopper.static - older.static == 62 * MB
    assert hopper.activations == older.activations
    assert hopper.total_mb - older.total_mb == pytest.approx(62)


@pytest.mark.parametrize(
    "content", [None, "not json", "[]", '[{"model": "minilm"}]', '{"rows": [{"model": "x"}]}']
)
def test_repredict_refuses_a_file_that_is_not_a_results_file(
    content, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "rows.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setattr(sys, "argv", ["memory_model.py", "--repredict", str(path)])
    with pytest.raises(SystemExit) as exit_:
        memory_model.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--repredict" in err and str(path) in err


def test_repredict_rewrites_a_results_file_keeping_where_it_was_measured(tmp_path, monkeypatch):
    path = tmp_path / "large.json"
    path.write_text((RESULTS / "memory_model_cuda_holdout_large.json").read_text())
    before = json.loads(path.read_text())
    monkeypatch.setattr(sys, "argv", ["memory_model.py", "--repredict", str(path)])
    memory_model.main()
    after = json.loads(path.read_text())
    # The measurement's provenance stays; the new prediction records its own.
    assert {k: after["meta"][k] for k in before["meta"]} == before["meta"]
    assert "python -m bench.memory_model --repredict" in after["meta"]["repredicted"]["command"]
    assert [r["measured_mb"] for r in after["rows"]] == [r["measured_mb"] for r in before["rows"]]
    text = path.with_suffix(".md").read_text()
    assert f"at git commit `{before['meta']['git_commit']}`" in text.splitlines()[2]
