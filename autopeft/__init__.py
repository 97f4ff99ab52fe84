"""autopeft: search the Pareto front of PEFT configurations.

Accuracy vs trainable parameters vs peak memory, with multi-objective Bayesian optimisation.
Importing the package is cheap; submodules pull in torch/optuna only when used.
"""

__version__ = "0.1.0"
