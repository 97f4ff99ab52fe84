"""Small regressions for the search benchmarks' surrogate: ridge and logistic fits with exact
leave-one-out, and the scores of a fit (log loss, AUC, rank correlation)."""

from __future__ import annotations

import torch

F64 = torch.float64


def with_bias(x: torch.Tensor) -> torch.Tensor:
    """``x`` with a column of ones appended (the intercept's)."""
    return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)


def _penalty_matrix(dim: int, penalty: float) -> torch.Tensor:
    p = penalty * torch.eye(dim, dtype=F64)
    p[-1, -1] = 0.0  # the intercept is not penalised
    return p


def fit_ridge(x: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Ridge weights (last one: the intercept) for features ``x`` with a bias column."""
    return torch.linalg.solve(x.T @ x + _penalty_matrix(x.shape[1], penalty), x.T @ y)


def ridge_loo(x: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Exact leave-one-out residuals of ridge regression (``r_i / (1 - H_ii)``)."""
    hat = x @ torch.linalg.solve(x.T @ x + _penalty_matrix(x.shape[1], penalty), x.T)
    return (y - hat @ y) / (1 - hat.diagonal())


def fit_logistic(x: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Ridge-penalised logistic regression by Newton's method."""
    w = torch.zeros(x.shape[1], dtype=F64)
    pen = _penalty_matrix(x.shape[1], penalty)
    for _ in range(100):
        p = torch.sigmoid(x @ w)
        grad = x.T @ (p - y) + pen @ w
        hess = x.T @ (x * (p * (1 - p))[:, None]) + pen
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if float(step.abs().max()) < 1e-10:
            break
    return w


def logistic_loo(x: torch.Tensor, y: torch.Tensor, penalty: float) -> torch.Tensor:
    """Leave-one-out probabilities (one refit per trial).

    A fold that leaves out the only member of its class has one class left: it predicts that
    class (a logistic fit to one class has no finite optimum).
    """
    out = torch.empty(len(y), dtype=F64)
    for i in range(len(y)):
        keep = torch.arange(len(y)) != i
        if len(y[keep].unique()) == 1:
            out[i] = y[keep][0]
        else:
            out[i] = torch.sigmoid(x[i] @ fit_logistic(x[keep], y[keep], penalty))
    return out


def log_loss(p: torch.Tensor, y: torch.Tensor) -> float:
    """Mean binary cross-entropy of probabilities ``p`` against labels ``y``."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def auc(score: torch.Tensor, y: torch.Tensor) -> float:
    """Probability that a random positive scores above a random negative."""
    pos, neg = score[y == 1], score[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).to(F64).mean() + 0.5 * (diff == 0).to(F64).mean())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of ``a`` and ``b`` (ties get their average rank)."""

    def ranks(v: torch.Tensor) -> torch.Tensor:
        order = v.argsort()
        r = torch.empty(len(v), dtype=F64)
        r[order] = torch.arange(len(v), dtype=F64)
        for value in v.unique():  # average ranks of ties
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    return float(torch.corrcoef(torch.stack([ranks(a), ranks(b)]))[0, 1])
