"""Export a trial as a loadable artefact, and load it back.

The folder holds:
- ``autopeft.json``: base model, labels, the candidate, the exact training recipe, the
  trial's metrics — everything needed to rebuild or retrain it;
- ``trainable.safetensors``: every trained tensor (adapters and head), loadable into the
  model rebuilt from the candidate (:func:`load_exported`) — works for every module type;
- for candidates with a peft-backed module: a standard peft adapter (``adapter_config.json``
  + ``adapter_model.safetensors``) loadable with ``PeftModel.from_pretrained`` (it carries
  the peft module and the classifier head; native modules need :func:`load_exported`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from autopeft import __version__, methods
from autopeft.core.candidate import Candidate
from autopeft.core.study_config import StudyConfig, trial_training
from autopeft.train.build import AdaptedModel, build_adapted
from autopeft.train.models import load_model, resolve_model_dir
from autopeft.train.profile import profile_model
from autopeft.train.weights import load_trainable, save_trainable

MANIFEST = "autopeft.json"
WEIGHTS = "trainable.safetensors"
#: What a peft-backed export adds: the standard adapter (``PeftModel.save_pretrained``).
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
#: peft's model card, written beside the adapter (removed only when it is peft's card).
MODEL_CARD = "README.md"


def export_adapted(
    adapted: AdaptedModel,
    out_dir: Path,
    config: StudyConfig,
    num_labels: int,
    metrics: dict[str, float] | None = None,
    trial: int | None = None,
) -> Path:
    """Write ``adapted`` (already trained) to ``out_dir``; returns the folder.

    ``out_dir`` must be new, empty, or an earlier export (whose files are replaced).

    Raises:
        ConfigError: when ``out_dir`` is a file, or a non-empty folder that is no export.
    """
    _clear_previous_export(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_trainable(adapted, out_dir / WEIGHTS)
    peft_backed = any(methods.get(m).backend == "peft" for m in adapted.candidate.methods)
    if peft_backed:
        adapted.model.save_pretrained(str(out_dir))
        cfg_path = out_dir / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text())
        adapter_cfg["base_model_name_or_path"] = _model_ref(config.model)
        cfg_path.write_text(json.dumps(adapter_cfg, indent=2))
    manifest: dict[str, Any] = {
        "autopeft_version": __version__,
        "base_model": config.model,
        "base_model_path": _model_ref(config.model),
        "num_labels": num_labels,
        "candidate": adapted.candidate.to_json(),
        "description": adapted.candidate.describe(),
        "trainable_params": adapted.trainable_params,
        "head_params": adapted.head_params,
        "peft_adapter": peft_backed,
        "task": config.task.model_dump(mode="json"),
        "training": trial_training(config.training, adapted.candidate).model_dump(mode="json"),
        "study": config.name,
        "trial": trial,
        "metrics": metrics or {},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def check_export_folder(out_dir: Path) -> None:
    """Raise unless ``out_dir`` is new, empty, or an earlier export (changes nothing).

    Called before any training too, so a wrong folder is reported at once.

    Raises:
        ConfigError: when ``out_dir`` is a file, or a non-empty folder that is no export.
    """
    from autopeft.core.errors import ConfigError, Problem

    hint = "give a new or empty folder, or the folder of an earlier export to replace it"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(
            Problem("--output", "the export goes to a folder, not a file", str(out_dir), hint)
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ConfigError(
            Problem(
                "--output",
                f"the folder is not empty and holds no autopeft export ({MANIFEST})",
                str(out_dir),
                hint,
            )
        )


def _clear_previous_export(out_dir: Path) -> None:
    """Make ``out_dir`` ready for a new export: remove what an earlier export wrote there.

    Exporting into the same folder again is the usual workflow, so a previous export is
    replaced rather than refused; but files it wrote that the new export does not write
    would otherwise stay (a LoRA export's ``adapter_config.json`` beside a later head-only
    export), and ``PeftModel.from_pretrained`` would silently load the old adapter. Only an
    export's own file names are removed, so files a user put beside it survive; a non-empty
    folder that is not an export (no ``autopeft.json``) is refused rather than mixed into.
    """
    check_export_folder(out_dir)
    if not out_dir.is_dir():
        return
    for name in (MANIFEST, WEIGHTS, *PEFT_FILES):
        (out_dir / name).unlink(missing_ok=True)
    card = out_dir / MODEL_CARD
    if card.is_file() and "library_name: peft" in card.read_text(errors="replace"):
        card.unlink()


def load_exported(path: str | Path, device: str | None = None) -> AdaptedModel:
    """Rebuild an exported model: base model + candidate + trained tensors.

    Raises:
        FileNotFoundError: when ``path`` holds no ``autopeft.json``.
    """
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    # The frozen base is rebuilt the way training built it (random test models: same seed).
    model = load_model(
        manifest["base_model"],
        num_labels=manifest["num_labels"],
        seed=manifest["training"]["seed"],
    )
    profile = profile_model(model)
    candidate = Candidate.model_validate(manifest["candidate"])
    adapted = build_adapted(model, profile, candidate, total_steps=manifest["training"]["steps"])
    load_trainable(adapted, path / WEIGHTS)
    adapted.model.eval()
    if device:
        adapted.model.to(device)
    return adapted


def rebuild(ctx, candidate: Candidate, weights: Path) -> AdaptedModel:
    """The trained model of ``candidate`` from a trial's saved tensors."""
    adapted = build_adapted(
        copy.deepcopy(ctx.base_model), ctx.profile, candidate, total_steps=ctx.config.training.steps
    )
    load_trainable(adapted, weights)
    return adapted


@torch.no_grad()
def predict(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of ``model`` on ``batch`` (eval mode)."""
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits


def _model_ref(name: str) -> str:
    try:
        return str(resolve_model_dir(name))
    except Exception:  # noqa: BLE001 -- hub ids and tiny models have no local folder
        return name
