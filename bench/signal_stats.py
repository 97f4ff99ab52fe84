"""The arithmetic of a task's signal and noise (bench/task_signal.py): pure, no training.

Spread of a metric across candidates (std, range, IQR), the pooled standard deviation across
training seeds of one candidate, their ratio (the signal-to-noise ratio), the binomial
standard error of a proportion and Spearman's rank correlation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("quantile of no values")
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sample std, min, max, range and IQR of ``values``."""
    xs = list(values)
    return {
        "n": len(xs),
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else float("nan"),
        "min": min(xs),
        "max": max(xs),
        "range": max(xs) - min(xs),
        "iqr": quantile(xs, 0.75) - quantile(xs, 0.25),
    }


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """The pooled within-group sample std of ``groups`` and its degrees of freedom.

    Groups of fewer than two values carry no information on the spread and are skipped.
    """
    ss, df = 0.0, 0
    for group in groups:
        if len(group) > 1:
            mean = statistics.fmean(group)
            ss += sum((x - mean) ** 2 for x in group)
            df += len(group) - 1
    return (math.sqrt(ss / df) if df else float("nan")), df


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion ``p`` measured on ``n`` independent examples."""
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (nan when either side is constant)."""
    ra, rb = ranks(a), ranks(b)
    if len(set(ra)) < 2 or len(set(rb)) < 2:
        return float("nan")
    return statistics.correlation(ra, rb)


def signal(candidates: Sequence[float], seed_groups: Sequence[Sequence[float]], n_eval: int):
    """Spread across candidates against the spread across seeds, at one evaluation step.

    ``snr`` is the candidates' std over the pooled seed std; ``snr_iqr`` the candidates' IQR
    over it (robust to a few candidates that never learn); ``between_std`` the candidates'
    spread with the seed noise taken out, sqrt(max(0, var_candidates - var_seeds)).
    """
    out: dict[str, float] = dict(spread(candidates))
    seed_std, df = pooled_std(seed_groups)
    out |= {"seed_std": seed_std, "seed_df": df, "eval_se": binomial_se(out["mean"], n_eval)}
    ok = seed_std > 0 and not math.isnan(seed_std)
    out["snr"] = out["std"] / seed_std if ok else float("nan")
    out["snr_iqr"] = out["iqr"] / seed_std if ok else float("nan")
    out["between_std"] = math.sqrt(max(0.0, out["std"] ** 2 - seed_std**2)) if ok else out["std"]
    return out


def summarize(records: list[dict], metric: str, evals: Sequence[int], n_eval: int) -> list[dict]:
    """:func:`signal` at every evaluation step of the COMPLETE trials of ``records``."""
    done = [r for r in records if r["status"] == "COMPLETE"]
    curve = {id(r): {int(h["step"]): h[metric] for h in r["history"]} for r in done}
    cands = [r for r in done if r["seed"] == 0]
    final = [curve[id(r)][evals[-1]] for r in cands]
    rows = []
    for step in evals:
        values = [curve[id(r)][step] for r in cands]
        groups: dict[int, list[float]] = {}
        for r in done:
            groups.setdefault(r["draw"], []).append(curve[id(r)][step])
        replicated = [g for g in groups.values() if len(g) > 1]
        row = {"step": step, **signal(values, replicated, n_eval)}
        # Per draw too: one seed that diverges shows here, not only in the pooled figure.
        row["seed_std_by_draw"] = {
            d: statistics.stdev(g) for d, g in sorted(groups.items()) if len(g) > 1
        }
        row["spearman_final"] = spearman(values, final)
        rows.append(row)
    return rows
