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
from autopeft.train.models import load_model
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
    task_info: dict[str, Any],
    metrics: dict[str, float] | None = None,
    trial: int | None = None,
) -> Path:
    """Write ``adapted`` (already trained) to ``out_dir``; returns the folder.

    ``out_dir`` must be new, empty, or an earlier export (whose files are replaced).
    ``task_info`` is what the task kind records (``TaskKind.describe``: a classifier's
    ``num_labels`` and labels, a causal LM's data format).

    Raises:
        ConfigError: when ``out_dir`` is a file, or a non-empty folder that is no export.
    """
    _clear_previous_export(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_trainable(adapted, out_dir / WEIGHTS)
    specs = [(methods.get(m.method), m) for m in adapted.candidate.modules]
    peft_module = next(((spec, m) for spec, m in specs if spec.backend == "peft"), None)
    peft_backed = peft_module is not None
    if peft_module is not None:
        # The method writes it: PiSSA/OLoRA adapters, trained on a changed base, are
        # converted so that they load on the original one.
        spec, cfg = peft_module
        spec.save_peft(adapted.model, str(out_dir), cfg)
        cfg_path = out_dir / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text())
        adapter_cfg["base_model_name_or_path"] = base_model_id(config.model)
        cfg_path.write_text(json.dumps(adapter_cfg, indent=2))
    manifest: dict[str, Any] = {
        "autopeft_version": __version__,
        "base_model": config.model,
        "base_model_id": base_model_id(config.model),
        "task_kind": config.task.kind,
        "head": "classifier" if adapted.profile.has_head else "lm",
        "num_labels": int(task_info.get("num_labels", 0)),
        "task_info": task_info,
        "candidate": adapted.candidate.to_json(),
        "description": adapted.candidate.describe(),
        "trainable_params": adapted.trainable_params,
        "head_params": adapted.head_params,
        "peft_adapter": peft_backed,
        # Modules peft cannot load: PeftModel.from_pretrained alone would silently drop them.
        "native_modules": [m.method for spec, m in specs if spec.backend == "native"],
        "task": config.task.model_dump(mode="json"),
        "training": trial_training(config.training, adapted.candidate).model_dump(mode="json"),
        "study": config.name,
        "trial": trial,
        "metrics": metrics or {},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out_dir / MODEL_CARD).write_text(model_card(manifest))
    return out_dir


def model_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face model card for the export: base model, task, metrics, candidate."""
    metrics = manifest.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items()))
    peft = manifest["peft_adapter"]
    load = (
        "```python\nfrom peft import PeftModel\n"
        'model = PeftModel.from_pretrained(base_model, "path/to/this/folder")\n```'
        if peft
        else "```python\nfrom autopeft.train.export import load_exported\n"
        'adapted = load_exported("path/to/this/folder")\n```'
    )
    native = manifest.get("native_modules") or []
    if peft and native:
        load += (
            f"\n\nThe peft adapter holds the peft module only; {', '.join(native)} "
            "(autopeft's own modules) load with `autopeft.train.export.load_exported`, "
            "which rebuilds the whole candidate."
        )
    return (
        "---\n"
        f"base_model: {manifest['base_model_id']}\n"
        f"library_name: {'peft' if peft else 'autopeft'}\n"
        f"tags: [autopeft, {manifest['task_kind']}]\n"
        "---\n\n"
        f"# {manifest['study']} trial {manifest['trial']}\n\n"
        f"A {manifest['task_kind']} adapter for `{manifest['base_model_id']}`, found by "
        f"autopeft {manifest['autopeft_version']}: {manifest['description']} "
        f"({manifest['trainable_params']:,} trainable parameters).\n\n"
        "| metric | value |\n|---|---|\n"
        f"{rows}\n\n"
        f"Load it:\n\n{load}\n\n"
        "`autopeft.json` holds the candidate, the training recipe and the task.\n"
    )


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
        head=manifest.get("head", "classifier"),
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


#: The hub ids of the bundled models (what a model card and adapter config name).
BUNDLED_IDS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def base_model_id(name: str) -> str:
    """The base model as others can find it: a bundled model's hub id, else the name given.

    Never a resolved local folder: a card or adapter config naming ``/home/me/...`` helps
    nobody (``autopeft.json`` keeps the name autopeft loads it by).
    """
    return BUNDLED_IDS.get(name, name)
