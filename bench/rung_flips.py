"""How often an early rung's accuracy lead reverses by the end of training, on real trials.

Halving stops a trial on its accuracy at a rung; it loses a front point each time a trial it
stops would have ended ahead of the one it kept. For every ordered pair of real trials whose
accuracy at an evaluation step differs by more than a margin, this counts the pairs whose final
accuracy is the other way round. ``--metric loss`` reads the leads from the evaluation loss
instead (what ``halving.metric: loss`` ranks a rung by). No training: it reads a
``real_trials_*.jsonl`` file (``bench/collect_real_trials.py``).

    python -m bench.rung_flips --data bench/results/real_trials_rt_order_160.jsonl [--metric loss]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from bench.common import RESULTS, provenance, write_results

MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)


def curves(data: Path, metric: str = "accuracy") -> tuple[list[int], list[dict[int, float]]]:
    """The evaluation steps every finished trial has, and each trial's metric by step."""
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    trials = [r for r in rows if r.get("status") == "COMPLETE"]
    out = []
    for r in trials:
        by_step = {int(h["step"]): h[metric] for h in r.get("history", []) if metric in h}
        by_step[int(r["steps"])] = r["metrics"][metric]
        out.append(by_step)
    steps = sorted(set.intersection(*(set(c) for c in out))) if out else []
    return steps, out


#: Metrics a lead in is a lower value (``--metric loss``: halving.metric's signing).
LOWER_IS_BETTER = ("loss", "eval_loss", "perplexity")


def flips(
    steps: list[int],
    by_trial: list[dict[int, float]],
    margins=MARGINS,
    lead: list[dict[int, float]] | None = None,
) -> list[dict]:
    """Per evaluation step before the last and margin: pairs led by more than the margin there,
    and the fraction of them whose final accuracy is reversed.

    ``lead``: the curves a lead is read from, signed so that higher is better (default: the
    accuracy curves ``by_trial`` themselves); the final accuracy always judges.
    """
    final = steps[-1]
    lead = lead or by_trial
    pairs = list(itertools.permutations(range(len(by_trial)), 2))
    table = []
    for step in steps[:-1]:
        for margin in margins:
            led = [(a, b) for a, b in pairs if lead[a][step] - lead[b][step] > margin]
            reversed_ = sum(by_trial[b][final] > by_trial[a][final] for a, b in led)
            table.append(
                {
                    "step": step,
                    "margin": margin,
                    "pairs": len(led),
                    "reversed": reversed_ / len(led) if led else None,
                }
            )
    return table


def markdown(table: list[dict], meta: dict) -> str:
    """The results file: one row per step and margin."""
    metric = meta.get("metric", "accuracy")
    lead = (
        "whose accuracy at the step leads by more than the margin"
        if metric == "accuracy"
        else f"whose {metric} at the step leads (is lower, as halving by `halving.metric: "
        f"{metric}` ranks) by more than the margin ({metric} units)"
    )
    lines = [
        f"# Rung leads that reverse by the end: `{meta['data']}`"
        + ("" if metric == "accuracy" else f", leads in {metric}"),
        "",
        f"{meta['trials']} finished real trials, {meta['final_step']} steps each; ordered pairs "
        f"{lead}, and the share of them whose final accuracy is the other way round (a trial "
        "halving would stop at that step while it would have ended ahead).",
        "",
        "| step | margin | pairs led | reversed at the end |",
        "|---|---|---|---|",
    ]
    for row in table:
        share = "—" if row["reversed"] is None else f"{row['reversed']:.1%}"
        lines.append(f"| {row['step']} | {row['margin']:.2f} | {row['pairs']} | {share} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.rung_flips --data FILE``."""
    parser = argparse.ArgumentParser(prog="python -m bench.rung_flips", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="real trials (jsonl)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--metric",
        default="accuracy",
        help="the evaluation metric a lead at a step is read from (default: accuracy; 'loss': "
        "lower leads); the final accuracy always judges",
    )
    parser.add_argument("--name", default=None, help="default: rung_flips_<data's stem>")
    args = parser.parse_args(argv)
    steps, by_trial = curves(args.data)
    if len(steps) < 2 or len(by_trial) < 2:
        parser.error(f"--data: needs 2+ finished trials sharing 2+ evaluation steps ({args.data})")
    lead = None
    if args.metric != "accuracy":
        lead_steps, lead = curves(args.data, args.metric)
        if not set(steps[:-1]) <= set(lead_steps):
            parser.error(f"--metric: not every trial recorded {args.metric!r} at {steps[:-1]}")
        sign = -1.0 if args.metric in LOWER_IS_BETTER else 1.0
        lead = [{k: sign * v for k, v in c.items()} for c in lead]
    table = flips(steps, by_trial, lead=lead)
    meta = {
        **provenance(),
        "data": args.data.name,
        "metric": args.metric,
        "trials": len(by_trial),
        "final_step": steps[-1],
    }
    suffix = "" if args.metric == "accuracy" else f"_{args.metric}"
    name = args.name or f"rung_flips_{args.data.stem.removeprefix('real_trials_')}{suffix}"
    write_results(args.out / name, {"meta": meta, "table": table}, markdown(table, meta))
    for row in table:
        if row["margin"] in (0.0, 0.05) and row["reversed"] is not None:
            print(f"step {row['step']:>4} margin {row['margin']:.2f}: {row['reversed']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
