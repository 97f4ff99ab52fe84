"""LoRA (Hu et al., 2021) through ``peft``, with the knobs practitioners search.

DoRA (Liu et al., 2024); rsLoRA's ``alpha / sqrt(r)`` scaling (Kalajdzievski, 2023); LoRA+'s
faster B matrices (Hayou et al., 2024); and the initialisation: Gaussian A, PiSSA (Meng et
al., 2024), OLoRA (Büyükakyüz, 2024) or EVA (Paischer et al., 2024).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from autopeft.core.candidate import ModuleConfig
from autopeft.core.model_profile import ModelProfile
from autopeft.methods import register
from autopeft.methods.base import MethodSpec, ValueRule

#: ``init`` words -> peft's ``init_lora_weights``. PiSSA is the exact SVD, not the randomised
#: ``pissa_niter_4``: a rebuilt model (export, re-evaluation) runs the init again on a fresh
#: base and must get the very residual weights the trial trained on, whatever the RNG state.
INITS: dict[str, bool | Literal["gaussian", "pissa", "olora", "eva"]] = {
    "default": True,
    "gaussian": "gaussian",
    "pissa": "pissa",
    "olora": "olora",
    "eva": "eva",
}
#: Inits that move the top of each base weight into the adapter (the base keeps a residual).
RESIDUAL = ("pissa", "olora")
#: Where :meth:`LoRA.after_build` keeps a residual init's initial adapter (on the peft model).
INITIAL_ATTR = "autopeft_initial_adapter"
#: Forward passes EVA may take over the batches it is given before it is called stuck (peft
#: cycles them until every layer's directions converge, without a limit of its own).
EVA_MAX_FORWARDS = 100


@register
class LoRA(MethodSpec):
    """Low-rank update ``B @ A`` beside each targeted linear layer."""

    name = "lora"
    summary = "LoRA low-rank updates on linear sub-layers (rank, alpha, dropout, DoRA, init, LoRA+)"
    backend = "peft"
    default_space = {
        "rank": {"type": "choice", "values": [0, 2, 4, 8, 16, 32]},
        "alpha": 16.0,
        "dropout": 0.0,
        "use_dora": False,
        "init": "default",
        "rslora": False,
        "lr_ratio": 1.0,
    }
    value_rules = {
        "init": ValueRule(kind=str, choices=tuple(INITS)),
        "lr_ratio": ValueRule(low=0, low_open=True),
    }
    stable_defaults = ("init", "rslora", "lr_ratio")
    size_param = "rank"
    default_targets = ("q", "v")
    supports_per_layer = True

    def knob(self, cfg: ModuleConfig, key: str) -> Any:
        """``cfg``'s value of ``key``; the default when left out (see ``stable_defaults``)."""
        return cfg.params.get(key, self.default_space[key])

    def weight_decomposed(self, cfg: ModuleConfig) -> bool:
        """DoRA (``use_dora``) rescales each adapted linear's output by a magnitude."""
        return bool(cfg.params.get("use_dora"))

    def count_params(self, profile: ModelProfile, cfg: ModuleConfig) -> int:
        """``r * (in + out)`` per targeted layer, plus ``out`` magnitudes with DoRA."""
        total = 0
        for layer, lin in self.linears(profile, cfg):
            r = self.size(cfg, layer)
            if r > 0:
                total += r * (lin.in_features + lin.out_features)
                total += lin.out_features if cfg.params.get("use_dora") else 0
        return total

    def check(self, profile: ModelProfile, cfg: ModuleConfig) -> str | None:
        """PiSSA/OLoRA take ``r`` components of each weight, EVA of its inputs: no more exist."""
        init = self.knob(cfg, "init")
        if init not in (*RESIDUAL, "eva"):
            return None
        for layer, lin in self.linears(profile, cfg):
            r = self.size(cfg, layer)
            most = lin.in_features if init == "eva" else min(lin.in_features, lin.out_features)
            if r > most:
                size = f"{lin.out_features}x{lin.in_features}"
                return f"lora init {init} needs rank <= {most} ({lin.path} is {size}), but got {r}"
        return None

    def peft_config(self, profile: ModelProfile, cfg: ModuleConfig, total_steps: int) -> Any:
        """A ``LoraConfig`` over the exact module paths; per-layer ranks via ``rank_pattern``."""
        from peft import EvaConfig, LoraConfig

        init = self.knob(cfg, "init")
        # EVA may move rank between layers (rho > 1); at 1 each layer keeps its rank, so the
        # count is count_params' and a rebuilt model (no EVA) has the trained tensors' shapes.
        extra: dict[str, Any] = {"eva_config": EvaConfig(rho=1.0)} if init == "eva" else {}
        with warnings.catch_warnings():
            # That peft's own PiSSA/OLoRA conversion refuses rsLoRA with per-layer ranks does
            # not concern us: save_peft converts without it.
            warnings.filterwarnings("ignore", message="Using Rank-Stabilized LoRA with rank_")
            return LoraConfig(
                task_type=profile.task_type,
                lora_alpha=float(cfg.params["alpha"]),  # type: ignore[arg-type]  # peft: int; a float scales
                lora_dropout=float(cfg.params["dropout"]),
                use_dora=bool(cfg.params.get("use_dora", False)),
                use_rslora=bool(self.knob(cfg, "rslora")),
                init_lora_weights=INITS[init],
                **extra,
                **self.ranked_targets(profile, cfg),
            )

    def lr_multiplier(self, cfg: ModuleConfig, param_name: str) -> float:
        """LoRA+: ``lr_ratio`` for the B matrices and DoRA's magnitudes, 1.0 for the rest.

        As peft's ``create_loraplus_optimizer``, which speeds up ``lora_B`` and every 1-D
        parameter: DoRA's magnitudes, but also a classifier head's bias, which is not LoRA's
        and keeps the base rate here (autopeft places no LoRA on embeddings, peft's third group).
        """
        if "lora_B" in param_name or "lora_magnitude_vector" in param_name:
            return float(self.knob(cfg, "lr_ratio"))
        return 1.0

    def after_build(self, model: Any, cfg: ModuleConfig) -> None:
        """Keep PiSSA/OLoRA's initial ``A0, B0`` (on CPU) for :meth:`save_peft`."""
        if self.knob(cfg, "init") not in RESIDUAL:
            return
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)  # named as the saved adapter file names them
        ab = [k for k in state if "lora_A" in k or "lora_B" in k]  # not a head or magnitudes
        setattr(model, INITIAL_ATTR, {k: state[k].detach().cpu().clone() for k in ab})

    def data_init(self, model: Any, batches: Iterable[dict], cfg: ModuleConfig) -> None:
        """EVA: each A starts as the main directions of its layer's inputs on ``batches``.

        Raises:
            ValueError: with no batch.
            RuntimeError: when EVA has not converged after ``EVA_MAX_FORWARDS`` passes.
        """
        if self.knob(cfg, "init") != "eva":
            return
        from peft import initialize_lora_eva_weights

        # peft masks tokens by labels shaped like the tokens (a causal LM's, -100 ignored); a
        # classifier's labels are one per row and would not broadcast, so they are left out
        # (padding stays masked through attention_mask).
        rows = [
            {k: v for k, v in b.items() if k != "labels" or v.shape == b["input_ids"].shape}
            for b in batches
        ]
        if not rows:
            raise ValueError("lora init eva needs at least one training batch")
        passes = 0

        def forward(m: Any, inputs: dict) -> Any:
            nonlocal passes
            passes += 1
            if passes > EVA_MAX_FORWARDS:
                raise RuntimeError(
                    f"lora init eva did not converge in {EVA_MAX_FORWARDS} forward passes over "
                    f"{len(rows)} batches (each needs at least rank unpadded tokens)"
                )
            return m(**inputs)

        initialize_lora_eva_weights(model, rows, forward_fn=forward, show_progress_bar=False)

    def save_peft(self, peft_model: Any, out_dir: str, cfg: ModuleConfig) -> None:
        """The peft adapter; PiSSA/OLoRA's rewritten as plain LoRA on the original base.

        Raises:
            RuntimeError: for PiSSA/OLoRA when :meth:`after_build` did not run on the model.
        """
        peft_model.save_pretrained(out_dir)
        if self.knob(cfg, "init") not in RESIDUAL:
            return
        initial = getattr(peft_model, INITIAL_ATTR, None)
        if initial is None:
            raise RuntimeError("lora init pissa/olora: after_build was not called on this model")
        _as_plain_lora(Path(out_dir), initial)


def _as_plain_lora(folder: Path, initial: dict[str, Any]) -> None:
    """Rewrite the residual-init adapter saved in ``folder`` as plain LoRA of rank ``2r``.

    Trained on ``W_res = W - s B0 A0``, the layer computes ``W_res + s B A = W + s (B A - B0
    A0)``: plain LoRA with ``A' = [A; A0]``, ``B' = [B, -B0]``. Doubling ``r`` halves
    ``alpha / r`` (divides ``alpha / sqrt(r)`` by sqrt 2 with rsLoRA), so alpha grows to keep
    ``s``. peft's ``path_initial_model_for_weight_conversion`` does the same but drops every
    other tensor (a classifier head, DoRA's magnitudes): a classifier then fails to load.
    """
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    state = load_file(str(path))
    for key, start in initial.items():
        cat = (start, 0) if "lora_A" in key else (-start, 1)
        state[key] = torch.cat([state[key], cat[0].to(state[key].dtype)], dim=cat[1])
    save_file(state, str(path), metadata={"format": "pt"})
    cfg_path = folder / "adapter_config.json"
    conf = json.loads(cfg_path.read_text())
    grow = math.sqrt(2) if conf.get("use_rslora") else 2.0
    conf.update(
        r=2 * conf["r"],
        lora_alpha=grow * conf["lora_alpha"],
        rank_pattern={k: 2 * v for k, v in (conf.get("rank_pattern") or {}).items()},
        alpha_pattern={k: grow * v for k, v in (conf.get("alpha_pattern") or {}).items()},
        init_lora_weights=True,  # loading must not factor the original base again
    )
    cfg_path.write_text(json.dumps(conf, indent=2, sort_keys=True))
