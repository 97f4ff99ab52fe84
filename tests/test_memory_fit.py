"""The memory model's coefficient fit (autopeft.memory_fit): it recovers known coefficients,
it reproduces the CPU coefficients autopeft carries from the committed rows, and its
re-prediction is the prediction a trial makes. Torch-free and fast."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import autopeft
from autopeft import Candidate, ModuleConfig, methods
from autopeft.core.levers import Levers
from autopeft.core.memory_model import ACTIVATION_COEFFS, Terms
from autopeft.core.model_profile import load_profile, model_config, profile_from_config

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LORA: dict[str, Any] = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "use_dora": False}


def lora(layers: range | tuple[int, ...], targets: tuple[str, ...]) -> Candidate:
    return Candidate(
        modules=(ModuleConfig(method="lora", params=LORA, layers=tuple(layers), targets=targets),)
    )


def profiles() -> list:
    """Two shapes per family, FFN/hidden ratios differing (else those terms are collinear)."""
    narrow = model_config("minilm") | {"intermediate_size": 768, "num_hidden_layers": 4}
    return [
        load_profile("minilm"),
        profile_from_config(narrow),
        load_profile("tiny-llama"),
        load_profile("smollm2", head="lm"),  # a causal LM: the logits term
    ]


def candidates(n: int) -> list[Candidate]:
    """Placements that separate the terms: module inputs unlike the gradient path's depth."""
    return [
        lora(range(n), ("q", "v")),
        lora((0,), ("q", "v")),
        lora(range(n // 2, n), ("ffn_down",)),
        lora(range(n), ("q", "o", "ffn_up")),
        Candidate(modules=()),
    ]


def grid(device: str) -> list[autopeft.MemoryRow]:
    """Rows over models, candidates, shapes and levers (measured: a placeholder 1 MiB)."""
    rows = []
    for profile in profiles():
        for cand, (batch, seq), (dtype, ckpt) in itertools.product(
            candidates(profile.num_layers),
            [(2, 32), (8, 96)],
            [("fp32", False), ("bf16", False), ("fp32", True)],
        ):
            levers = Levers(batch, batch, seq, gradient_checkpointing=ckpt, dtype=dtype)
            rows.append(autopeft.memory_row(profile, cand, batch, seq, 1.0, device, levers))
    return rows


#: Known coefficients; the terms a device does not fit hold their starting values (CUDA
#: decoders start from the CUDA BERT entry: no scores matrix, no weight-sized DoRA tensors).
KNOWN = {
    "cpu": {
        "bert": Terms(0.4, 2.5, 3.5, 1.2, dora_weights=3.0, checkpoints=2.1),
        "llama": Terms(0.3, 4.0, 0.7, 2.2, dora_weights=3.0, logits=3.1, checkpoints=0.4),
    },
    "cuda": {
        "llama": Terms(0.7, 2.9, 0.0, 2.5, transient=2.6, dora_outputs=2.502, logits=2.0),
    },
}


def measured_with(rows: list[autopeft.MemoryRow], coeffs: dict) -> list[autopeft.MemoryRow]:
    predicted = autopeft.repredict_memory(rows, coeffs)
    return [dataclasses.replace(r, measured_mb=p) for r, p in zip(rows, predicted)]


def test_the_fit_recovers_the_coefficients_the_rows_were_made_with():
    rows = measured_with(grid("cpu"), KNOWN)
    rows += measured_with([r for r in grid("cuda") if r.family == "llama"], KNOWN)
    fitted = autopeft.fit_activation_coeffs(rows)
    assert sorted((d, sorted(f)) for d, f in fitted.items()) == [
        ("cpu", ["bert", "llama"]),
        ("cuda", ["llama"]),
    ]
    for device, families in fitted.items():
        for family, terms in families.items():
            for name, got, want in zip(Terms._fields, terms, KNOWN[device][family]):
                assert got == pytest.approx(want, abs=2e-3), f"{device} {family} {name}"
    # Noisy rows (up to 30% off) still give no negative coefficient.
    noisy = [
        dataclasses.replace(r, measured_mb=r.measured_mb * (1 + 0.3 * math.sin(i)))
        for i, r in enumerate(rows)
    ]
    fit = autopeft.fit_activation_coeffs(noisy)
    assert all(v >= 0 for families in fit.values() for t in families.values() for v in t)


def committed(name: str) -> list[dict]:
    return json.loads((RESULTS / f"{name}.json").read_text())["rows"]


def test_the_committed_cpu_rows_refit_to_autopefts_coefficients_within_their_errors():
    levers = committed("memory_levers_cpu")
    rows = [autopeft.MemoryRow.from_dict(r) for r in levers + committed("memory_model_cpu")]
    fitted = autopeft.fit_activation_coeffs(rows)
    # The CPU coefficients autopeft carries are this fit (bench/memory_levers.py --repredict
    # bench/results/memory_levers_cpu.json --fit --also bench/results/memory_model_cpu.json).
    for family, terms in fitted["cpu"].items():
        for name, got, want in zip(Terms._fields, terms, ACTIVATION_COEFFS["cpu"][family]):
            assert got == pytest.approx(want, abs=2e-3), f"cpu {family} {name}"
    # The levers rows alone: re-predicted within the errors their file reports.
    mine = rows[: len(levers)]
    again = autopeft.repredict_memory(mine, autopeft.fit_activation_coeffs(mine))
    errors = [abs(100 * (p - r.measured_mb) / r.measured_mb) for p, r in zip(again, mine)]
    reported = statistics.median(abs(r["error_pct"]) for r in levers)
    assert statistics.median(errors) <= reported + 1.0
    assert max(errors) <= max(abs(r["error_pct"]) for r in levers) + 1.0


def test_repredicting_with_autopefts_coefficients_is_the_prediction_a_trial_makes():
    prompt = Candidate(modules=(ModuleConfig(method="prompt", params={"length": 10}),))
    registry = methods.registry()
    for profile, device in itertools.product(profiles(), ["cpu", "cuda", "mps"]):
        for cand, levers in itertools.product(
            [*candidates(profile.num_layers)[:2], prompt],
            [None, Levers(8, 4, 64, True, "bf16", "nf4"), Levers(8, 8, 64, dtype="fp16")],
        ):
            row = autopeft.memory_row(profile, cand, 4, 64, 100.0, device, levers)
            params = autopeft.candidate_trainable_params(cand, profile)
            embeddings = any(registry[m].trains_embeddings for m in cand.methods)
            want = autopeft.predict_memory(
                profile, cand, params, 4, 64, device, embeddings, levers=levers
            ).total_mb
            assert autopeft.repredict_memory([row])[0] == pytest.approx(want, abs=1e-9)


def test_a_partial_table_replaces_only_its_own_entries():
    rows = grid("cpu")[:3] + [r for r in grid("cuda") if r.family == "bert"][:3]
    own = autopeft.repredict_memory(rows)
    doubled = {"cuda": {"bert": Terms(*(2 * v for v in ACTIVATION_COEFFS["cuda"]["bert"]))}}
    mixed = autopeft.repredict_memory(rows, doubled)
    assert mixed[:3] == own[:3]
    assert all(m > o for m, o in zip(mixed[3:], own[3:]))


def test_rows_round_trip_and_bad_rows_name_the_field():
    row = grid("cuda")[7]
    back = autopeft.MemoryRow.from_dict(json.loads(json.dumps(row.to_dict())))
    assert back.terms == row.terms and back.static_mb == pytest.approx(row.static_mb, abs=1e-3)
    # A row of a file older than act_bytes and some terms: an fp32 base, the terms 0.
    old = {k: v for k, v in row.to_dict().items() if k != "act_bytes"}
    old["terms"] = {"hidden": 5, "inter": 7}
    read = autopeft.MemoryRow.from_dict(old)
    assert read.act_bytes == 2 and read.terms == Terms(5, 7, 0, 0)
    bad = row.to_dict() | {"measured_mb": -3, "terms": {"hiden": 5}}
    with pytest.raises(autopeft.ConfigError) as err:
        autopeft.MemoryRow.from_dict(bad, "rows[4]")
    text = str(err.value)
    assert "rows[4].measured_mb" in text and "-3" in text
    assert "rows[4].terms.hiden" in text and "Hint: the terms are hidden" in text
    profile, cand = load_profile("minilm"), candidates(6)[0]
    with pytest.raises(autopeft.ConfigError, match=r"levers\.max_length: is required"):
        autopeft.memory_row(
            profile, cand, 4, 64, 10.0, "cpu", {"batch_size": 4, "micro_batch_size": 4}
        )
    with pytest.raises(autopeft.ConfigError, match="measured_mb"):
        autopeft.memory_row(profile, cand, 4, 64, float("nan"), "cpu")
    with pytest.raises(autopeft.ConfigError, match="at least one measured row"):
        autopeft.fit_activation_coeffs([])
    with pytest.raises(autopeft.ConfigError, match="fit_terms.cuda"):
        autopeft.fit_activation_coeffs([row], fit_terms={"cuda": ("scores",)})


def test_the_formatted_table_is_source_that_gives_the_same_coefficients():
    text = autopeft.format_activation_coeffs(KNOWN)
    assert '"llama": Terms(0.3, 4.0, 0.7, 2.2, dora_weights=3.0, logits=3.1, ' in text
    assert eval("{" + text + "}", {"Terms": Terms}) == KNOWN


def test_the_levers_command_refits_a_results_file_and_keeps_its_provenance(tmp_path):
    for name in ("memory_levers_cpu", "memory_model_cpu"):
        (tmp_path / f"{name}.json").write_text((RESULTS / f"{name}.json").read_text())
    target = tmp_path / "memory_levers_cpu.json"
    also = tmp_path / "memory_model_cpu.json"
    args = ["--repredict", str(target), "--fit", "--also", str(also)]
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory_levers", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"llama": Terms(0.0, 4.047, 0.707, 2.196, dora_weights=3.0, logits=3.141' in out.stdout
    assert "- bert on cpu, 33 rows: median" in out.stdout
    saved = json.loads(target.read_text())
    before = json.loads((RESULTS / "memory_levers_cpu.json").read_text())
    assert saved["meta"]["git_commit"] == before["meta"]["git_commit"]
    assert "--repredict" in saved["meta"]["repredicted"]["command"]
    assert [r["predicted_mb"] for r in saved["rows"]] == [r["predicted_mb"] for r in before["rows"]]
    # A file whose rows lack the stored split says so, naming the field.
    (tmp_path / "bare.json").write_text(json.dumps({"meta": {}, "rows": [{"family": "bert"}]}))
    bare = [sys.executable, "-m", "bench.memory_levers", "--repredict", str(tmp_path / "bare.json")]
    out = subprocess.run(bare, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "rows[0].device" in out.stderr and "Traceback" not in out.stderr
