"""A lean training loop: AdamW, warm-up + decay, clipping, periodic evaluation, early stop.

Readable on purpose (nanoGPT-style): one function, no framework. ``report(step, metrics)``
returns False to stop the trial early (an executor's successive-halving decision).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from autopeft import stop
from autopeft.core.study_config import TrainingConfig
from autopeft.train.build import AdaptedModel
from autopeft.train.data import Encoded
from autopeft.train.levers import autocast, grad_scaler

Report = Callable[[int, dict[str, float]], bool]
#: ``evaluate(adapted, split, batch_size, limit, device) -> metrics``: the task kind's.
Evaluate = Callable[[AdaptedModel, Encoded, int, int, torch.device], dict[str, float]]


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""

    def __init__(self, step: int, value: float):
        self.step = step
        super().__init__(f"loss is {value} at step {step}")


#: A trial diverged when its training loss at an evaluation is this many times the loss of
#: its first step: a finite but exploding loss (a learning rate far too high) fails the trial
#: like a NaN, instead of completing with a metric at chance.
DIVERGENCE_FACTOR = 10.0


class DivergedLoss(NonFiniteLoss):
    """The loss stayed finite but exploded (:data:`DIVERGENCE_FACTOR`)."""

    def __init__(self, step: int, value: float, first: float):
        self.step = step
        RuntimeError.__init__(
            self,
            f"loss diverged at step {step}: {value:.4g} is more than {DIVERGENCE_FACTOR:g}x "
            f"the first step's {first:.4g} (is training.lr too high?)",
        )


class LossGuard:
    """Detects a NaN or infinite loss: at once on CPU, without a sync per step on a GPU.

    On a GPU, reading the loss every step would synchronise the device; the first bad step
    is recorded on the device instead and looked at (one sync) at evaluation points. A
    diverging loss is looked for at evaluation points (:meth:`check_divergence`).
    """

    def __init__(self, device: torch.device, deferred: bool | None = None):
        self.deferred = device.type != "cpu" if deferred is None else deferred
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)
        self.first_loss: torch.Tensor | None = None

    def check_divergence(self, step: int, value: float) -> None:
        """Raise when ``value`` (the loss at an evaluation) exceeds the divergence rule."""
        if self.first_loss is None:
            return
        first = float(self.first_loss)
        if first > 0 and value > DIVERGENCE_FACTOR * first:
            raise DivergedLoss(step, value, first)

    def see(self, step: int, loss: torch.Tensor) -> None:
        """Look at the loss of ``step`` (raises at once unless deferred)."""
        if self.first_loss is None:
            self.first_loss = loss.detach().clone()  # read at evaluations only (no sync)
        if not self.deferred:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(step, value)
            return
        bad = ~torch.isfinite(loss.detach()) & (self.first_bad == 0)
        self.first_bad = torch.where(bad, torch.full_like(self.first_bad, step), self.first_bad)

    def check(self) -> None:
        """Raise for the first bad step seen so far (deferred mode; syncs the device)."""
        step = int(self.first_bad) if self.deferred else 0
        if step:
            raise NonFiniteLoss(step, float("nan"))


@dataclass
class LoopResult:
    """What a training run produced."""

    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False


def classification_metrics(preds: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, float]:
    """Accuracy, macro-F1 and (multi-class) Matthews correlation."""
    conf = torch.zeros(k, k, dtype=torch.float64)
    conf.index_put_((labels, preds), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
    tp = conf.diag()
    precision = tp / conf.sum(0).clamp(min=1)
    recall = tp / conf.sum(1).clamp(min=1)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = conf.sum()
    c, t, p = tp.sum(), conf.sum(1), conf.sum(0)
    denom = math.sqrt(
        max(0.0, float(n * n - (p * p).sum())) * max(0.0, float(n * n - (t * t).sum()))
    )
    mcc = float(c * n - (t * p).sum()) / denom if denom > 0 else 0.0
    return {"accuracy": float(c / n), "f1": float(f1.mean()), "mcc": mcc}


@torch.no_grad()
def evaluate(
    adapted: AdaptedModel, data: Encoded, batch_size: int, limit: int, device: torch.device
) -> dict[str, float]:
    """Metrics and mean loss on the first ``limit`` examples of ``data``."""
    model = adapted.model
    model.eval()
    n = min(limit, len(data))
    preds, losses = [], []
    for start in range(0, n, batch_size):
        batch = data.batch(torch.arange(start, min(n, start + batch_size)))
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, adapted.precision):
            out = model(**batch)
        # Kept on the device and read once at the end: a read per batch would sync per batch.
        losses.append(out.loss.detach().double() * len(batch["labels"]))
        preds.append(out.logits.argmax(-1))
    model.train()
    predicted = torch.cat(preds).cpu()
    metrics = classification_metrics(predicted, data.labels[:n], adapted.profile.num_labels)
    metrics["loss"] = float(torch.stack(losses).sum()) / n
    return metrics


def loss_items(batch: dict[str, torch.Tensor]) -> int:
    """What a batch's mean loss averages over: rows, or a causal LM's predicted tokens."""
    labels = batch["labels"]
    if labels.dim() == 2:  # token labels: position t predicts token t + 1; -100 is no loss
        return int((labels[:, 1:] != -100).sum())
    return len(labels)


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    warm = int(warmup * total)
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def train_and_eval(
    adapted: AdaptedModel,
    train: Encoded,
    valid: Encoded,
    cfg: TrainingConfig,
    steps: int | None = None,
    report: Report | None = None,
    device: torch.device | None = None,
    eval_at: set[int] | frozenset[int] = frozenset(),
    evaluator: Evaluate | None = None,
    final_evaluator: Evaluate | None = None,
) -> LoopResult:
    """Train ``adapted`` for ``steps`` (default ``cfg.steps``) and evaluate it.

    ``evaluator`` is the task kind's evaluation (default: classification's :func:`evaluate`);
    ``final_evaluator`` the last one's (default: ``evaluator``), so that evaluations before
    the end can skip costly metrics only the result needs (a rung ranked by the loss need
    not generate answers).
    With ``cfg.micro_batch_size`` each step accumulates micro batches into the batch's
    gradient.

    Evaluates every ``cfg.eval_every`` steps, at the steps in ``eval_at`` (successive-halving
    rungs) and at the end; each evaluation goes to ``report``, which may return False to stop
    early. The schedule is laid out for ``cfg.steps`` so a
    low-fidelity run is a prefix of the full run (what successive halving needs).

    Raises:
        NonFiniteLoss: when the loss becomes NaN or infinite.
    """
    device = device or torch.device("cpu")
    run_eval = evaluator or evaluate
    last_eval = final_evaluator or run_eval
    total = steps or cfg.steps
    model = adapted.model.to(device)
    model.train()
    params = adapted.trainable_parameters()
    opt = torch.optim.AdamW(adapted.param_groups(cfg.lr), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup, cfg.schedule)
    )
    result = LoopResult(metrics={})
    guard = LossGuard(device)
    scaler = grad_scaler(device, adapted.precision)
    micro = cfg.micro_batch_size or cfg.batch_size
    start = time.perf_counter()
    step = 0
    for step, idx in enumerate(train.index_batches(cfg.batch_size, cfg.seed, total), start=1):
        stop.check()  # a Ctrl-C whose KeyboardInterrupt was swallowed stops here
        loss = _accumulate(adapted, train, idx, micro, device, scaler, result)
        guard.see(step, loss)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        adapted.on_step(step)  # before zero_grad: AdaLoRA's rank allocation reads gradients
        opt.zero_grad(set_to_none=True)
        if step % cfg.eval_every == 0 or step in eval_at or step == total:
            value = float(loss.detach())  # syncs the device only at evaluation points
            guard.check()
            guard.check_divergence(step, value)
            result.train_seconds += time.perf_counter() - start
            measure = last_eval if step == total else run_eval
            metrics = measure(adapted, valid, cfg.batch_size * 2, cfg.eval_examples, device)
            metrics["train_loss"] = value
            result.history.append({"step": step, **metrics})
            result.metrics = metrics
            start = time.perf_counter()
            if report is not None and step < total and not report(step, metrics):
                result.stopped_early = True
                break
    result.steps = step
    return result


def _accumulate(
    adapted: AdaptedModel,
    train: Encoded,
    idx: torch.Tensor,
    micro: int,
    device: torch.device,
    scaler: torch.amp.GradScaler,
    result: LoopResult,
) -> torch.Tensor:
    """Forward and backward ``idx`` in micro batches of ``micro`` rows; the batch's loss.

    Each micro batch's mean loss is weighted by its share of the batch's loss items, so
    the accumulated gradient is the whole batch's (the effective batch stays the same).
    """
    chunks = [train.batch(part) for part in idx.split(micro)]
    items = [loss_items(b) for b in chunks] if len(chunks) > 1 else [1]
    total_items = max(1, sum(items))
    loss = torch.zeros((), device=device)
    for batch, n in zip(chunks, items):
        # Counted on the host batch: the same sum on the device would synchronise every step.
        result.tokens += int(batch["attention_mask"].sum())
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, adapted.precision):
            part = adapted.model(**batch).loss * (n / total_items)
        scaler.scale(part).backward()
        loss = loss + part.detach().float()
    return loss
