"""autopeft: search the Pareto front of PEFT configurations.

Task quality vs trainable parameters vs peak memory, with multi-objective Bayesian
optimisation. The public API is the names below (``autopeft.__all__``); everything else is
internal and may move. Importing the package is cheap: each name is imported on first use
(PEP 562), so ``import autopeft`` pulls in no torch, optuna or ray.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# bitsandbytes' CPU backend logs a warning at import (peft imports it whenever it is
# installed) when the optional `kernels` package is missing; its own fallback kernel runs.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

#: Public name -> the module that defines it.
_PUBLIC: dict[str, str] = {
    # Running and reading studies.
    "run": "autopeft.api",
    "open_study": "autopeft.study_tools",
    "load": "autopeft.api",
    "validate": "autopeft.api",
    "study_from_dict": "autopeft.api",
    "space_from_dict": "autopeft.api",
    "resolve": "autopeft.api",
    "Study": "autopeft.search.study",
    "StudyConfig": "autopeft.core.study_config",
    "SearchSpace": "autopeft.core.space",
    "ConfigError": "autopeft.core.errors",
    # Candidates and their results.
    "RandomSuggest": "autopeft.core.resolve",
    "Candidate": "autopeft.core.candidate",
    "ModuleConfig": "autopeft.core.candidate",
    "TrialResult": "autopeft.core.trial_result",
    "TrialStatus": "autopeft.core.trial_result",
    # Measuring candidates outside a study (what the benchmarks in bench/ build on).
    "TrialContext": "autopeft.train.trial",
    "run_trial": "autopeft.train.trial",
    "run_local": "autopeft.search.local",
    "load_model": "autopeft.train.models",
    "load_tokenizer": "autopeft.train.models",
    "load_profile": "autopeft.core.model_profile",
    "candidate_trainable_params": "autopeft.api",
    "predict_memory": "autopeft.core.memory_model",
    # Fitting the memory model's activation coefficients to measured peaks.
    "MemoryRow": "autopeft.memory_fit",
    "memory_row": "autopeft.memory_fit",
    "fit_activation_coeffs": "autopeft.memory_fit",
    "repredict_memory": "autopeft.memory_fit",
    "format_activation_coeffs": "autopeft.memory_fit",
    "hypervolume": "autopeft.core.pareto",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:  # what type checkers and IDEs see; `as` marks each as a re-export
    from autopeft.api import candidate_trainable_params as candidate_trainable_params
    from autopeft.api import load as load
    from autopeft.api import resolve as resolve
    from autopeft.api import run as run
    from autopeft.api import space_from_dict as space_from_dict
    from autopeft.api import study_from_dict as study_from_dict
    from autopeft.api import validate as validate
    from autopeft.core.candidate import Candidate as Candidate
    from autopeft.core.candidate import ModuleConfig as ModuleConfig
    from autopeft.core.errors import ConfigError as ConfigError
    from autopeft.core.memory_model import predict_memory as predict_memory
    from autopeft.core.model_profile import load_profile as load_profile
    from autopeft.core.pareto import hypervolume as hypervolume
    from autopeft.core.resolve import RandomSuggest as RandomSuggest
    from autopeft.core.space import SearchSpace as SearchSpace
    from autopeft.core.study_config import StudyConfig as StudyConfig
    from autopeft.core.trial_result import TrialResult as TrialResult
    from autopeft.core.trial_result import TrialStatus as TrialStatus
    from autopeft.memory_fit import MemoryRow as MemoryRow
    from autopeft.memory_fit import fit_activation_coeffs as fit_activation_coeffs
    from autopeft.memory_fit import format_activation_coeffs as format_activation_coeffs
    from autopeft.memory_fit import memory_row as memory_row
    from autopeft.memory_fit import repredict_memory as repredict_memory
    from autopeft.search.local import run_local as run_local
    from autopeft.search.study import Study as Study
    from autopeft.study_tools import open_study as open_study
    from autopeft.train.models import load_model as load_model
    from autopeft.train.models import load_tokenizer as load_tokenizer
    from autopeft.train.trial import TrialContext as TrialContext
    from autopeft.train.trial import run_trial as run_trial


def __getattr__(name: str) -> Any:
    """Import a public name on first use (keeps ``import autopeft`` free of torch/optuna)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
