"""autopeft: search the Pareto front of PEFT configurations.

Accuracy vs trainable parameters vs peak memory, with multi-objective Bayesian optimisation.
Importing the package is cheap; submodules pull in torch/optuna only when used.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes' CPU backend logs a warning at import (peft imports it whenever it is
# installed) when the optional `kernels` package is missing; its own fallback kernel runs.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def run(config, **kwargs):
    """Run or resume a study; see :func:`autopeft.api.run` (imported lazily)."""
    from autopeft.api import run as _run

    return _run(config, **kwargs)
