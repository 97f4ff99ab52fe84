"""Per-trial overheads besides training: sampler latency, model load vs reuse, token cache.

1. Sampler suggestion latency: a study is filled with N finished trials (synthetic runner,
   the quickstart-like mixed space) and each sampler then proposes a few candidates; the
   median time of ``Study.ask()`` (sampling + define-by-run) is reported at N = 50/200/500.
2. Model: loading the base model from disk vs the deep copy each trial makes of the model
   a worker already holds (what actor reuse buys).
3. Data: tokenising the task vs reading the on-disk token cache.

    OMP_NUM_THREADS=1 .venv/bin/python bench/overheads.py [--sizes 50,200,500]

Results: bench/results/overheads_cpu.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from autopeft import api
from autopeft.search import blackbox
from autopeft.search.local import run_local
from autopeft.search.study import Study

RESULTS = Path(__file__).parent / "results"
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


def filled_study(n: int, root: Path) -> Study:
    """A study of N finished random trials of the synthetic runner over :data:`SPACE`."""
    config = api.study_from_dict(
        {
            "name": f"fill-{n}",
            "model": "minilm",
            "search_space": SPACE,
            "halving": {"enabled": False},
            "sampler": "random",
        }
    )
    study = Study(config, root=root)
    run_local(study, n, runner=blackbox.for_study(study), progress=False)
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
                study = Study(cfg, root=root / f"{name}-{n}")
                runner = blackbox.for_study(study)
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


def model_and_data() -> dict:
    from autopeft.core.study_config import TaskConfig
    from autopeft.train.data import encode, load_task
    from autopeft.train.models import load_model, load_tokenizer

    start = time.perf_counter()
    model = load_model("minilm")
    load_s = time.perf_counter() - start
    copies = []
    for _ in range(5):
        start = time.perf_counter()
        copy.deepcopy(model)
        copies.append(time.perf_counter() - start)
    task = load_task(TaskConfig(name="rotten_tomatoes"))
    tok = load_tokenizer("minilm")
    cache = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    encode(task, tok, 64, cache)
    miss = time.perf_counter() - start
    start = time.perf_counter()
    encode(task, tok, 64, cache)
    hit = time.perf_counter() - start
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "model_load_s": round(load_s, 3),
        "model_copy_s": round(statistics.median(copies), 3),
        "tokenise_s": round(miss, 3),
        "token_cache_hit_s": round(hit, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="50,200,500")
    ap.add_argument("--samplers", default="random,tpe,nsga2,gp,qnehvi,autopeft")
    ap.add_argument("--probes", type=int, default=5)
    ap.add_argument("--fit-probes", type=int, default=2, help="probes of gp/qnehvi/autopeft")
    ap.add_argument(
        "--saas-sizes", default="50,200", help="N for autopeft (SAAS NUTS fits grow fast)"
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    saas = [int(s) for s in args.saas_sizes.split(",")]
    latency = sampler_latency(sizes, args.samplers.split(","), args.probes, args.fit_probes, saas)
    other = model_and_data()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overheads_cpu.json").write_text(
        json.dumps({"sampler_latency": latency, "model_and_data": other}, indent=2) + "\n"
    )
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
        "## Model and data (MiniLM, Rotten Tomatoes)",
        "",
        f"- load the base model from disk: {other['model_load_s']} s; deep copy of a "
        f"loaded model (per trial, reused worker): {other['model_copy_s']} s",
        f"- tokenise the task: {other['tokenise_s']} s; read the token cache: "
        f"{other['token_cache_hit_s']} s",
    ]
    (RESULTS / "overheads_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
