"""Per-trial overheads besides training: sampler latency, model load vs reuse.

1. Sampler suggestion latency: a study is filled with N finished trials (a synthetic runner,
   :class:`Synthetic`, over a quickstart-like mixed space) and each sampler then proposes a
   few candidates; the median time of ``Study.ask()`` (sampling + define-by-run) is reported
   at N = 50/200/500.
2. Model: loading the base model from disk vs the deep copy each trial makes of the model
   a worker already holds (what actor reuse buys).

    OMP_NUM_THREADS=1 python -m bench.overheads [--sizes 50,200,500]

Results: bench/results/overheads_cpu.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import autopeft
from autopeft import Candidate, TrialResult, TrialStatus
from bench.common import CPU_ESTIMATE, RESULTS, provenance, write_results

SPACE = {
    "modules": {
        "lora": {"rank": [0, 2, 4, 8, 16, 32], "targets": {"choice": [["q", "v"], ["attn"]]}},
        "serial_adapter": {"size": [0, 8, 32, 64]},
        "parallel_adapter": {"size": [0, 8, 32, 64]},
        "prefix": {"length": [0, 5, 10, 20]},
    },
    "layers": "search",
}


#: Model-based samplers that fit a GP per proposal: fewer probes (each may take seconds).
FITTING = ("gp", "qnehvi", "autopeft")


class Synthetic:
    """A runner whose accuracy rises with a candidate's size and depth, plus seeded noise:
    trials in milliseconds, so the samplers' own time is what a study of it measures."""

    def __init__(self, study: autopeft.Study):
        """Exact parameters and predicted memory on the study's model and recipe."""
        self.profile, self.batch = study.profile, study.config.training.batch_size

    def budget(self, candidate: Candidate) -> tuple[int, float, str | None]:
        """Exact params and predicted memory; nothing is over budget."""
        params = autopeft.candidate_trainable_params(candidate, self.profile)
        pred = autopeft.predict_memory(self.profile, candidate, params, self.batch, 64)
        return params, pred.total_mb, None

    def run(
        self, candidate: Candidate, report: Callable[..., bool] | None, eval_at: set[int]
    ) -> TrialResult:
        """A finished trial of the candidate (``report`` and ``eval_at``: no rungs here)."""
        params, predicted, _ = self.budget(candidate)
        layers = {i for m in candidate.modules for i in m.layers}
        capacity = 1 - math.exp(-params / (0.004 * self.profile.base_params))
        depth = sum(1 + i / self.profile.num_layers for i in layers) / self.profile.num_layers
        digest = hashlib.sha1(candidate.key().encode()).hexdigest()
        noise = (int(digest[:8], 16) / 0xFFFFFFFF - 0.5) * 0.01
        accuracy = 0.6 + 0.25 * capacity * (0.6 + 0.4 * depth) + noise if layers else 0.6
        return TrialResult(
            status=TrialStatus.COMPLETE,
            candidate=candidate,
            trainable_params=params,
            head_params=self.profile.head_params,
            predicted_memory_mb=predicted,
            peak_memory_mb=predicted,
            memory_kind=CPU_ESTIMATE,
            metrics={"accuracy": accuracy},
            steps=1,
            target_steps=1,
        )


def filled_study(n: int, root: Path) -> Any:
    """A study of N finished random trials of the synthetic runner over :data:`SPACE`."""
    config = autopeft.study_from_dict(
        {
            "name": f"fill-{n}",
            "model": "minilm",
            "search_space": SPACE,
            "halving": {"enabled": False},
            "sampler": "random",
        }
    )
    study = autopeft.Study(config, root=root)
    autopeft.run_local(study, n, runner=Synthetic(study), progress=False)
    return study


def sampler_latency(
    sizes: list[int], samplers: list[str], probes: int, fit_probes: int, saas_sizes: list[int]
) -> list[dict]:
    """Median and max ``Study.ask()`` time per sampler on a copy of an N-trial study."""
    rows = []
    root = Path(tempfile.mkdtemp())
    try:
        for n in sizes:
            base = filled_study(n, root / "base").config
            for name in samplers:
                if name == "autopeft" and n not in saas_sizes:
                    continue
                # Each sampler sees exactly the n filled trials: a copy of the storage.
                shutil.copytree(root / "base", root / f"{name}-{n}")
                cfg = base.model_copy(
                    update={"sampler": base.sampler.model_copy(update={"name": name})}
                )
                study = autopeft.Study(cfg, root=root / f"{name}-{n}")
                runner = Synthetic(study)
                times = []
                for _ in range(fit_probes if name in FITTING else probes):
                    start = time.perf_counter()
                    trial, cand = study.ask()
                    times.append(time.perf_counter() - start)
                    study.tell(trial, runner.run(cand, None, set()))
                rows.append(
                    {
                        "trials": n,
                        "sampler": name,
                        "probes": len(times),
                        "ask_ms_median": round(1000 * statistics.median(times), 1),
                        "ask_ms_max": round(1000 * max(times), 1),
                    }
                )
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def model_load_and_copy() -> dict:
    """Seconds to load MiniLM from disk and (median of 5) to deep-copy the loaded model."""
    start = time.perf_counter()
    model = autopeft.load_model("minilm")
    load_s = time.perf_counter() - start
    copies = []
    for _ in range(5):
        start = time.perf_counter()
        copy.deepcopy(model)
        copies.append(time.perf_counter() - start)
    return {"model_load_s": round(load_s, 3), "model_copy_s": round(statistics.median(copies), 3)}


def main() -> None:
    """Measure both parts and write the tables."""
    ap = argparse.ArgumentParser(
        prog="python -m bench.overheads", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--sizes", default="50,200,500")
    ap.add_argument("--samplers", default="random,tpe,nsga2,gp,qnehvi,autopeft")
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--fit-probes", type=int, default=2, help="probes of gp/qnehvi/autopeft")
    ap.add_argument(
        "--saas-sizes", default="50,200", help="N for autopeft (SAAS NUTS fits grow fast)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    saas = [int(s) for s in args.saas_sizes.split(",")]
    latency = sampler_latency(sizes, args.samplers.split(","), args.probes, args.fit_probes, saas)
    other = model_load_and_copy()
    lines = [
        "# Per-trial overheads (CPU, 2 cores)",
        "",
        "## Sampler: median (max) ms per `Study.ask()` with N finished trials",
        "",
        f"Each sampler proposes on a copy of one N-trial study (the synthetic runner, a "
        f"per-layer space with {len(SPACE['modules'])} module types); "
        f"{args.probes} proposals each, {args.fit_probes} for the GP-fitting samplers "
        f"({', '.join(FITTING)}); `autopeft` (SAAS, NUTS) only at N in {args.saas_sizes}. "
        f"The default sampler is `tpe`; goal: < 1 s at N=500.",
        "",
        "| sampler | " + " | ".join(f"N={n}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name in args.samplers.split(","):
        cells = [
            next(
                (
                    f"{r['ask_ms_median']:,} ({r['ask_ms_max']:,})"
                    for r in latency
                    if r["sampler"] == name and r["trials"] == n
                ),
                "not run",
            )
            for n in sizes
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    default = [r for r in latency if r["sampler"] == "tpe" and r["trials"] == max(sizes)]
    if default:
        ms = default[0]["ask_ms_median"]
        lines += [
            "",
            f"Default sampler (tpe) at N={max(sizes)}: median {ms:,} ms per proposal — goal "
            f"< 1 s {'MET' if ms < 1000 else 'NOT met'}.",
        ]
    lines += [
        "",
        "## Model (MiniLM)",
        "",
        f"- load the base model from disk: {other['model_load_s']} s; deep copy of a "
        f"loaded model (per trial, reused worker): {other['model_copy_s']} s",
    ]
    data = {"meta": provenance(), "sampler_latency": latency, "model": other}
    write_results(args.out / "overheads_cpu", data, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
