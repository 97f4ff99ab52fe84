"""Save and load the trained state of an adapted model (adapters and head only)."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file

from autopeft.train.build import AdaptedModel, trainable_named


def trainable_state(adapted: AdaptedModel) -> dict:
    """The trainable tensors by parameter name (shared tensors once)."""
    return {name: p.detach().cpu().contiguous() for name, p in trainable_named(adapted.model)}


def save_trainable(adapted: AdaptedModel, path: Path) -> Path:
    """Write the trainable tensors to ``path`` (safetensors, atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(trainable_state(adapted), str(tmp))
    tmp.replace(path)
    return path


def load_trainable(adapted: AdaptedModel, path: Path) -> None:
    """Load tensors saved by :func:`save_trainable` into a freshly built identical model.

    Raises:
        ValueError: when the saved tensors do not match the model's trainable parameters.
    """
    saved = load_file(str(path))
    params = dict(adapted.model.named_parameters())
    expected = set(trainable_state(adapted))
    if set(saved) != expected:
        missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise ValueError(
            f"saved weights do not match the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, tensor in saved.items():
        params[name].data.copy_(tensor.to(params[name].device, params[name].dtype))
