"""Load base models: bundled offline models, local folders, hub ids, tiny test models."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    GPT2Config,
    LlamaConfig,
)
from transformers.utils import logging as hf_logging

from autopeft.core.errors import ConfigError
from autopeft.core.model_dirs import BUNDLED_MODELS, resolve_model_dir
from autopeft.core.model_profile import BUNDLED_CONFIGS, TINY_CONFIGS

#: The tiny test architectures' Hugging Face config classes (their values live in core).
_TINY_CLASSES = {"bert": BertConfig, "llama": LlamaConfig, "gpt2": GPT2Config}

#: What a task's ``head`` loads: a sequence classifier or a causal language model.
_AUTO_CLASSES = {"classifier": AutoModelForSequenceClassification, "lm": AutoModelForCausalLM}
#: Base precisions a study may ask for (``training.dtype``).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def tiny_config(name: str, num_labels: int = 2, **overrides: Any):
    """A Hugging Face config for a tiny test architecture (``tiny-bert`` or ``tiny-llama``)."""
    spec = dict(TINY_CONFIGS[name])
    cls = _TINY_CLASSES[spec.pop("model_type")]
    spec.update(overrides)
    return cls(num_labels=num_labels, **spec)


def load_model(
    name: str,
    num_labels: int = 2,
    seed: int = 0,
    dtype: torch.dtype | str | None = None,
    head: str = "classifier",
    quantization: str = "none",
    keep: tuple[str, ...] = (),
    weights: bool = True,
):
    """Load a base model by short name, tiny name, local folder or hub id.

    The one place a base model is loaded: every trial, export and re-evaluation comes here,
    so a base precision or quantisation setting has one seam to go through.

    Args:
        name: ``minilm``, ``smollm2``, ``tiny-bert``/``tiny-llama``, a folder or a hub id.
        num_labels: classes of a classifier head.
        seed: seeds the random initialisation (tiny models, a new classifier head).
        dtype: the base weights' precision (a torch dtype or ``fp32``/``bf16``/``fp16``).
        head: ``classifier`` (sequence classification) or ``lm`` (causal language model).
        quantization: ``none``, or a bitsandbytes scheme of :mod:`autopeft.core.levers`
            (``nf4``, ``fp4``, ``nf4-dq``, ``fp4-dq``, ``int8``); ``dtype`` is then the
            compute precision and the other weights load in fp32.
        keep: modules a quantised base keeps unquantised (the classifier head it trains);
            the language-model head always stays unquantised.
        weights: False builds the model's structure on the meta device, without reading or
            allocating weights: what a profile needs when every trial loads its own
            (quantised) base.

    Bundled and local models load offline; tiny models are random-initialised under ``seed``.
    """
    torch.manual_seed(seed)
    auto = _AUTO_CLASSES[head]
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if quantization != "none":
        return _load_quantized(name, num_labels, seed, dtype, head, quantization, keep)
    if name in TINY_CONFIGS:
        with contextlib.nullcontext() if weights else torch.device("meta"):
            model = auto.from_config(tiny_config(name, num_labels))
        return model.to(dtype) if dtype is not None else model
    path = _local_or_hub(name)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = 0 if head == "classifier" else config.eos_token_id
    if not weights:
        with torch.device("meta"):
            return auto.from_config(config, dtype=dtype)
    with _quiet_loading():
        return auto.from_pretrained(path, config=config, dtype=dtype)


def quantization_config(quantization: str, compute: torch.dtype | None, keep: tuple[str, ...]):
    """The ``BitsAndBytesConfig`` of a quantisation lever value."""
    from transformers import BitsAndBytesConfig

    skip = list(keep) or None  # None: transformers keeps the language-model head itself
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.removesuffix("-dq"),
        bnb_4bit_use_double_quant=quantization.endswith("-dq"),
        bnb_4bit_compute_dtype=compute or torch.float32,
        llm_int8_skip_modules=skip,
    )


def _load_quantized(name, num_labels, seed, compute, head, quantization, keep):
    """A bitsandbytes-quantised base; a tiny model is saved first (quantisation loads files)."""
    qconfig = quantization_config(quantization, compute, keep)
    with contextlib.ExitStack() as stack:
        if name in TINY_CONFIGS:
            path = stack.enter_context(tempfile.TemporaryDirectory(prefix="autopeft-tiny-"))
            load_model(name, num_labels, seed, head=head).save_pretrained(path)
        else:
            path = _local_or_hub(name)
        config = AutoConfig.from_pretrained(path, num_labels=num_labels)
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = 0 if head == "classifier" else config.eos_token_id
        torch.manual_seed(seed)
        with _quiet_loading():
            model = _AUTO_CLASSES[head].from_pretrained(
                path, config=config, dtype=torch.float32, quantization_config=qconfig
            )
    fix_bnb_for_training(model)
    return model


def fix_bnb_for_training(model: torch.nn.Module) -> None:
    """Keep a bitsandbytes model trainable on CPUs with AVX512-BF16, and quiet.

    On such CPUs a no-grad forward in eval mode (an evaluation) repacks every 4-bit layer
    into an inference format, after which training silently gets zero LoRA gradients; the
    flag turns the repacking off. 8-bit matmuls on CPU warn once per call that they cast
    their input to fp16, which they always do there: only noise in a trial's output.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")


#: Files whose presence in a cached hub snapshot means the weights are there too.
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _local_or_hub(name: str) -> str:
    """A folder to load from: bundled, local, or a hub snapshot already cached with weights.

    Loading a cached hub model from its snapshot folder asks the network nothing (by the
    hub id, transformers would look for newer files and, offline without HF_HUB_OFFLINE,
    retry for minutes); a hub id not cached with weights is returned as is, to download.
    """
    if name in BUNDLED_CONFIGS:  # shipped in another format, converted once and cached
        from autopeft.train.bundled import bundled_folder

        return str(bundled_folder(name))
    if name in BUNDLED_MODELS or os.path.isdir(name):
        return str(resolve_model_dir(name))
    try:
        folder = resolve_model_dir(name)  # a hub id: its config.json, from the cache first
    except ConfigError:
        return name
    return str(folder) if any((folder / f).is_file() for f in _WEIGHTS) else name


@contextlib.contextmanager
def _quiet_loading():
    """Without transformers' progress bar and load report while the base model loads.

    The report lists the classifier head as newly initialised, which every trial expects (it
    trains the head); printed by every run, export and re-evaluation it is only noise. Real
    errors still raise, and the settings are restored afterwards.
    """
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name: str, corpus: list[str] | None = None, eos: bool = False):
    """The tokenizer of a model; tiny models get a word-level one trained on ``corpus``.

    ``eos`` gives a tiny model's tokenizer an end-of-sequence token (a causal LM learns to
    stop with it); real tokenizers have their own.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if name in TINY_CONFIGS:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        word_level = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        word_level.normalizer = normalizers.Lowercase()
        word_level.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=TINY_CONFIGS[name]["vocab_size"],
            special_tokens=["[PAD]", "[UNK]", *(["[EOS]"] if eos else [])],
        )
        word_level.train_from_iterator(corpus or ["a b c"], trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=word_level,
            pad_token="[PAD]",
            unk_token="[UNK]",
            **({"eos_token": "[EOS]"} if eos else {}),
        )
        fast.name_or_path = f"{name}-wordlevel"
        return fast
    tok = AutoTokenizer.from_pretrained(_local_or_hub(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok
