"""Search: the Optuna-backed study, samplers and executors (the only package importing optuna)."""
