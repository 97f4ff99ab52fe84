"""Export a trial as a loadable artefact, and load it back.

The folder holds:
- ``autopeft.json``: base model, labels, the candidate, the exact training recipe, the
  trial's metrics — everything needed to rebuild or retrain it;
- ``trainable.safetensors``: every trained tensor (adapters and head), loadable into the
  model rebuilt from the candidate (:func:`load_exported`) — works for every module type;
- for candidates with a peft-backed module: a standard peft adapter (``adapter_config.json``
  + ``adapter_model.safetensors``) loadable with ``PeftModel.from_pretrained`` (it carries
  the peft module and the classifier head; native modules need :func:`load_exported`).

A trial trained on a quantised base (the ``quantization`` lever: QLoRA) exports the same
adapter; peft loads it on the base quantised the same way, so the manifest
(``base_quantization``) and the model card record the ``BitsAndBytesConfig`` to load the
base with, and :func:`load_exported` loads it so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from autopeft import __version__, methods
from autopeft.core.candidate import Candidate
from autopeft.core.levers import Levers, quant_bits
from autopeft.core.model_profile import ModelProfile, profile_from_config
from autopeft.core.study_config import StudyConfig, TrainingConfig, trial_training
from autopeft.core.trial_result import MemoryKind, TrialResult
from autopeft.train.build import AdaptedModel, build_adapted
from autopeft.train.levers import prepare_base, trainable_in_fp32
from autopeft.train.models import DTYPES, load_model, quantization_config
from autopeft.train.profile_model import profile_model
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
    result: TrialResult | None = None,
) -> Path:
    """Write ``adapted`` (already trained) to ``out_dir``; returns the folder.

    ``out_dir`` must be new, empty, or an earlier export (whose files are replaced).
    ``task_info`` is what the task kind records (``TaskKind.describe``: a classifier's
    ``num_labels`` and labels, a causal LM's data format). ``result`` is the trial's
    result, for the peak memory the manifest and model card record.

    A candidate that mixes a peft-backed module with autopeft's own (native) modules gets
    a peft adapter that holds only the peft module: the manifest (``loading``), the model
    card and :func:`loading_statement` say so, and that :func:`load_exported` loads all.

    Raises:
        ConfigError: when ``out_dir`` is a file, or a non-empty folder that is no export.
    """
    _clear_previous_export(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    training = trial_training(config.training, adapted.candidate)
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
    native = [m.method for spec, m in specs if spec.backend == "native"]
    in_peft = [m.method for spec, m in specs if spec.backend == "peft"]  # at most one
    head = "classifier head" if adapted.profile.has_head else None
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
        "native_modules": native,
        # What each loader gives: the peft adapter alone is partial when native modules exist.
        "loading": {
            "peft_from_pretrained": [*in_peft, *([head] if head and peft_backed else [])],
            "load_exported": [m.method for m in adapted.candidate.modules]
            + ([head] if head else []),
            "peft_alone_is_partial": peft_backed and bool(native),
        },
        "task": config.task.model_dump(mode="json"),
        "training": training.model_dump(mode="json"),
        # How to load the base the adapter was trained on (None: as it is, unquantised).
        "base_quantization": base_quantization(training, adapted.profile),
        "study": config.name,
        "trial": trial,
        "metrics": metrics or {},
        "memory": memory_record(result),
    }
    manifest["loading"]["statement"] = loading_statement(manifest)
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (out_dir / MODEL_CARD).write_text(model_card(manifest))
    return out_dir


#: The ``BitsAndBytesConfig`` settings an export records (the others keep their defaults).
_BNB_KEYS = {
    4: (
        "load_in_4bit",
        "bnb_4bit_quant_type",
        "bnb_4bit_use_double_quant",
        "bnb_4bit_compute_dtype",
        "llm_int8_skip_modules",
    ),
    8: ("load_in_8bit", "llm_int8_skip_modules"),
}


def base_quantization(training: TrainingConfig, profile: ModelProfile) -> dict[str, Any] | None:
    """How the trial's base was quantised, as ``BitsAndBytesConfig`` keyword arguments.

    Read from the very config training loaded the base with (:func:`quantization_config`),
    so the export cannot drift from it. None for an unquantised base.
    """
    bits = quant_bits(training.quantization)
    if bits is None:
        return None
    keep = (profile.head_path,) if profile.has_head else ()  # as TrialContext.load_quantized
    full = quantization_config(training.quantization, DTYPES[training.dtype], keep).to_dict()
    kwargs = {key: full[key] for key in _BNB_KEYS[bits]}
    if not kwargs["llm_int8_skip_modules"]:
        del kwargs["llm_int8_skip_modules"]  # transformers keeps the LM head unquantised
    return {"quantization": training.quantization, "bitsandbytes_config": kwargs}


def _load_snippet(manifest: dict[str, Any]) -> str:
    """How to load a peft adapter: on the base as it is, or quantised as in training."""
    quant = manifest.get("base_quantization")
    if not quant:
        return (
            "```python\nfrom peft import PeftModel\n"
            'model = PeftModel.from_pretrained(base_model, "path/to/this/folder")\n```'
        )
    auto = (
        "AutoModelForCausalLM" if manifest["head"] == "lm" else "AutoModelForSequenceClassification"
    )
    labels = "" if manifest["head"] == "lm" else f", num_labels={manifest['num_labels']}"
    kwargs = ",\n    ".join(f"{k}={v!r}" for k, v in quant["bitsandbytes_config"].items())
    return (
        f"Trained on a base quantised to {quant['quantization']} by bitsandbytes: load the "
        "base quantised the same way, then the adapter.\n\n"
        f"```python\nfrom peft import PeftModel\nfrom transformers import {auto}, "
        f"BitsAndBytesConfig\n\nbnb = BitsAndBytesConfig(\n    {kwargs},\n)\n"
        f'base_model = {auto}.from_pretrained(\n    "{manifest["base_model_id"]}", '
        f"quantization_config=bnb{labels}\n)\n"
        'model = PeftModel.from_pretrained(base_model, "path/to/this/folder")\n```'
    )


def memory_record(result: TrialResult | None) -> dict[str, Any] | None:
    """The trial's peak memory for the manifest: MiB and how it was obtained, or None."""
    if result is None:
        return None
    if result.peak_memory_mb is not None:
        kind = "measured (CUDA)" if result.memory_kind is MemoryKind.CUDA else "CPU estimate"
        return {"peak_memory_mib": result.peak_memory_mb, "kind": kind}
    if result.predicted_memory_mb is not None:
        return {"peak_memory_mib": result.predicted_memory_mb, "kind": "predicted"}
    return None


def loading_statement(manifest: dict[str, Any]) -> str:
    """What ``PeftModel.from_pretrained`` alone loads and what needs :func:`load_exported`.

    One paragraph for the CLI, the manifest and the model card. A peft adapter beside
    native modules is partial: said first, so nobody uses it silently.
    """
    loading = manifest["loading"]
    everything = ", ".join(loading["load_exported"]) or "the base model as it is"
    natives = manifest.get("native_modules") or []
    native = ", ".join(natives)
    own, are, them = ("modules", "are", "them") if len(natives) > 1 else ("module", "is", "it")
    if loading["peft_alone_is_partial"]:
        return (
            "WARNING: PeftModel.from_pretrained alone loads a partial model: only "
            f"{', '.join(loading['peft_from_pretrained'])}. {native} (autopeft's own {own}) "
            f"{are} not in the peft adapter, so a model loaded with peft alone lacks {them} "
            "and does not reproduce the trained predictions. Load the whole model "
            f"({everything}) with autopeft.train.export.load_exported."
        )
    if manifest["peft_adapter"]:
        return (
            f"PeftModel.from_pretrained loads the whole trained model ({everything}); "
            "autopeft.train.export.load_exported loads it too."
        )
    what = f"{native} (autopeft's own {own})" if native else "only the head (no PEFT module)"
    return (
        f"No peft adapter: this candidate trains {what}, which PeftModel cannot load. Load the "
        f"whole model ({everything}) with autopeft.train.export.load_exported."
    )


def model_card(manifest: dict[str, Any]) -> str:
    """A Hugging Face model card for the export.

    It names the base model (as the study gave it), the task, the trial, the metrics
    (task quality, trainable parameters, peak memory in MiB) and how to load it; a partial
    peft adapter (native modules beside it) is stated first.
    """
    metrics = manifest.get("metrics") or {}
    rows = [f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())]
    rows.append(f"| trainable parameters (PEFT modules) | {manifest['trainable_params']:,} |")
    if manifest.get("head_params"):
        rows.append(f"| trained head parameters | {manifest['head_params']:,} |")
    memory = manifest.get("memory")
    if memory:
        rows.append(f"| peak memory, {memory['kind']} | {memory['peak_memory_mib']:,.1f} MiB |")
    peft = manifest["peft_adapter"]
    partial = manifest["loading"]["peft_alone_is_partial"]
    exported = (
        "```python\nfrom autopeft.train.export import load_exported\n"
        'adapted = load_exported("path/to/this/folder")  # adapted.model: the whole model\n```'
    )
    if peft and not partial:
        load = f"{_load_snippet(manifest)}\n\nor with autopeft:\n\n{exported}"
    elif partial:
        held = ", ".join(manifest["loading"]["peft_from_pretrained"])
        load = (
            f"{exported}\n\nThe peft adapter in this folder holds only {held}:\n\n"
            f"{_load_snippet(manifest)}\n\nloads a model without "
            f"{', '.join(manifest['native_modules'])}, which does not give the trained "
            "predictions."
        )
    else:
        load = exported
    task = manifest.get("task") or {}
    source = task.get("path") or task.get("hf_dataset") or task.get("name")
    base = manifest["base_model"]
    named = f"`{base}`" + (
        f" (`{manifest['base_model_id']}`)" if manifest["base_model_id"] != base else ""
    )
    statement = manifest["loading"]["statement"]
    # A partial peft adapter is said at the top of the card, where nobody misses it.
    warning, statement = (f"> **{statement}**\n\n", "") if partial else ("", f"{statement}\n\n")
    return (
        "---\n"
        f"base_model: {manifest['base_model_id']}\n"
        f"library_name: {'peft' if peft else 'autopeft'}\n"
        f"tags: [autopeft, {manifest['task_kind']}]\n"
        "---\n\n"
        f"# {manifest['study']} trial {manifest['trial']}\n\n"
        f"{warning}"
        f"A {manifest['task_kind']} adapter for `{manifest['base_model_id']}`, found by "
        f"autopeft {manifest['autopeft_version']}: {manifest['description']} "
        f"({manifest['trainable_params']:,} trainable parameters).\n\n"
        f"- base model: {named}\n"
        f"- task: {manifest['task_kind']} on `{source}`"
        + (f", task metric `{task['metric']}`" if task.get("metric") else "")
        + "\n"
        f"- study `{manifest['study']}`, trial {manifest['trial']}\n\n"
        "| metric | value |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        f"## Loading\n\n{statement}{load}\n\n"
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
    head = manifest.get("head", "classifier")
    quant = manifest.get("base_quantization")  # absent in exports made before the levers
    bnb = quant["bitsandbytes_config"] if quant else {}
    # The frozen base is rebuilt the way training built it (random test models: same seed),
    # quantised as it was: the adapter learnt to correct that base's rounding.
    model = load_model(
        manifest["base_model"],
        num_labels=manifest["num_labels"],
        seed=manifest["training"]["seed"],
        head=head,
        dtype=manifest["training"].get("dtype") if quant else None,
        quantization=quant["quantization"] if quant else "none",
        keep=tuple(bnb.get("llm_int8_skip_modules") or ()),
    )
    if quant:
        # Packed 4-bit weights defeat profile_model's parameter count; the config's profile
        # is the one the trial was built from.
        config = model.config.to_dict()
        profile = profile_from_config(config, num_labels=model.config.num_labels, head=head)
    else:
        profile = profile_model(model)
    candidate = Candidate.model_validate(manifest["candidate"])
    adapted = build_adapted(model, profile, candidate, total_steps=manifest["training"]["steps"])
    load_trainable(adapted, path / WEIGHTS)
    adapted.model.eval()
    if device:
        adapted.model.to(device)
    return adapted


def rebuild(ctx, candidate: Candidate, weights: Path) -> AdaptedModel:
    """The trained model of ``candidate`` from a trial's saved tensors.

    The base is prepared as the trial's levers prepared it (precision, quantisation), so
    what depends on the base at export (PiSSA/OLoRA's conversion to plain LoRA) sees the
    base the adapter was trained on.
    """
    cfg = trial_training(ctx.config.training, candidate)
    levers = Levers.of(cfg, ctx.config.task.max_length)
    model = prepare_base(levers, ctx.base_model, ctx.load_quantized)
    adapted = build_adapted(model, ctx.profile, candidate, total_steps=cfg.steps)
    trainable_in_fp32(adapted.model)
    adapted.precision = levers.dtype
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
