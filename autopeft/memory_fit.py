"""Fit the memory model's activation coefficients to measured peaks, and check a fit.

`autopeft.predict_memory` predicts a trial's peak as a static part (weights, trainable state,
weight copies, workspaces) plus saved activations: per device and family, a coefficient for
each activation term (``autopeft.core.memory_model.ACTIVATION_COEFFS``) times the elements
the trial keeps for it, at the device's activation width. A measured trial reduces to a
:class:`MemoryRow` (:func:`memory_row`): what the coefficients must explain (measured minus
static) and the elements each multiplies. :func:`fit_activation_coeffs` solves for the
coefficients of many rows; :func:`repredict_memory` predicts rows again with any table, so a
fit is checked before it is pasted into the source (:func:`format_activation_coeffs`).

The fit is non-negative (every term is memory some tensor holds) and minimises the relative
error (a small model's rows count as much as a large one's): within one model the per-block
terms are nearly collinear, and a plain least-squares fit trades them against each other with
signs no tensor has.

numpy and scipy are imported by the fit only; building and re-predicting rows imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autopeft import methods as method_registry
from autopeft.core.candidate import Candidate
from autopeft.core.errors import ConfigError, Problem
from autopeft.core.levers import Levers
from autopeft.core.memory_model import (
    ACTIVATION_BYTES,
    ACTIVATION_COEFFS,
    MB,
    Terms,
    activation_terms,
    predict_memory,
)
from autopeft.core.model_profile import ModelProfile
from autopeft.core.resolve import candidate_params

if TYPE_CHECKING:
    import torch

#: Coefficients in the shape of ``ACTIVATION_COEFFS``: device -> model family -> terms.
CoeffTable = Mapping[str, Mapping[str, Terms]]

#: The terms a fit solves for on each device (other devices: the CPU's); the others keep their
#: starting value. On a GPU fused attention (SDPA) keeps no scores matrix and DoRA keeps
#: output-sized tensors per token; on CPU DoRA's weight-sized tensors stay at their value (the
#: small models measured there do not pin them down) and there is no separate working set.
FIT_TERMS: dict[str, tuple[str, ...]] = {
    "cpu": ("hidden", "inter", "attention", "inputs", "logits", "checkpoints"),
    "cuda": ("hidden", "inter", "inputs", "transient", "dora_outputs", "logits", "checkpoints"),
}


@dataclass(frozen=True)
class MemoryRow:
    """One measured trial, reduced to what the activation coefficients explain.

    Attributes:
        family: the model's architecture family (``ModelProfile.family``).
        device: ``cuda``, ``cpu`` or another torch device type.
        measured_mb: the measured peak in MiB (allocator peak, or the CPU step estimate).
        static_mb: the predicted peak other than saved activations, in MiB.
        act_bytes: bytes per saved activation element on the trial's device and precision.
        terms: elements per activation term (what each coefficient multiplies).
    """

    family: str
    device: str
    measured_mb: float
    static_mb: float
    act_bytes: float
    terms: Terms

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values (what the benchmarks store with each measurement)."""
        return {
            "family": self.family,
            "device": self.device,
            "measured_mb": self.measured_mb,
            "static_mb": round(self.static_mb, 3),
            "act_bytes": self.act_bytes,
            "terms": self.terms._asdict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "row") -> MemoryRow:
        """Read a row :meth:`to_dict` wrote (other keys of a benchmark's row are ignored).

        Terms a row lacks count 0 (files older than the term). A row without ``act_bytes``
        predates the levers: an fp32 base, so 2 bytes on CUDA (autocast) and 4 elsewhere.

        Raises:
            ConfigError: a field is missing or not a number of the right sign, or a term is
                unknown; the message names the field's path under ``path``.
        """
        problems: list[Problem] = []
        if not isinstance(data, Mapping):
            raise ConfigError(
                Problem(path, "must be a mapping of a measured row", type(data).__name__)
            )
        text = {k: data.get(k) for k in ("family", "device")}
        for key, value in text.items():
            if not isinstance(value, str) or not value:
                problems.append(Problem(f"{path}.{key}", "must be a non-empty string", value))
        device = str(text["device"])
        numbers = {
            "measured_mb": data.get("measured_mb"),
            "static_mb": data.get("static_mb"),
            "act_bytes": data.get("act_bytes", 2 if device == "cuda" else 4),
        }
        for key, value in numbers.items():
            if not _finite(value) or (key != "static_mb" and value <= 0):
                rule = "must be a finite number" + (" above 0" if key != "static_mb" else "")
                hint = "rows from memory_row(...).to_dict() carry it" if value is None else None
                problems.append(Problem(f"{path}.{key}", rule, value, hint))
        raw = data.get("terms")
        terms: dict[str, float] = {}
        if not isinstance(raw, Mapping):
            problems.append(Problem(f"{path}.terms", "must map term names to element counts", raw))
        else:
            for name, value in raw.items():
                if name not in Terms._fields:
                    hint = f"the terms are {', '.join(Terms._fields)}"
                    problems.append(Problem(f"{path}.terms.{name}", "is not a term", name, hint))
                elif not _finite(value) or value < 0:
                    problems.append(
                        Problem(f"{path}.terms.{name}", "must be a number of elements >= 0", value)
                    )
                else:
                    terms[name] = float(value)
        if problems:
            raise ConfigError(problems)
        return cls(
            str(text["family"]),
            device,
            float(numbers["measured_mb"]),
            float(numbers["static_mb"]),
            float(numbers["act_bytes"]),
            Terms(**{name: terms.get(name, 0.0) for name in Terms._fields}),
        )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def activation_width(device: str, levers: Levers | None = None) -> int:
    """Bytes per saved activation element, as ``predict_memory`` counts them.

    A GPU trains under bf16 autocast; CPU autocast (a 16-bit base) keeps about half its
    saved tensors in fp32; an fp32 base on CPU keeps them all in fp32.
    """
    if device == "cuda":
        return ACTIVATION_BYTES["cuda"]
    dtype = levers.dtype if levers is not None else "fp32"
    return ACTIVATION_BYTES["cpu-autocast"] if dtype != "fp32" else 4


def memory_row(
    profile: ModelProfile,
    candidate: Candidate,
    batch_size: int,
    seq_len: int,
    measured_mb: float,
    device: str | torch.device = "cuda",
    levers: Levers | Mapping[str, Any] | None = None,
    embeddings_trained: bool | None = None,
    workspace_bytes: int | None = None,
) -> MemoryRow:
    """The row of one measured trial: its prediction split into static part and terms.

    Args:
        profile: the base model (``autopeft.load_profile``).
        candidate: the trained configuration.
        batch_size: rows per forward pass (the micro batch when ``levers`` has one).
        seq_len: the longest training sequence in tokens (virtual tokens included).
        measured_mb: the trial's measured peak in MiB.
        device: the device type, or a ``torch.device``: a CUDA device then counts its own
            cuBLAS workspaces, where a name assumes Hopper's (as ``predict_memory`` does).
        levers: the trial's memory levers: a ``Levers`` or its fields as a mapping
            (``batch_size``, ``micro_batch_size``, ``max_length``, ``gradient_checkpointing``,
            ``dtype``, ``quantization``); None: an fp32 base, no checkpointing.
        embeddings_trained: whether a gradient reaches the input embeddings; None: from the
            module types (``MethodSpec.trains_embeddings``), as a trial decides it.
        workspace_bytes: the cuBLAS workspaces, overriding what ``device`` implies.

    Raises:
        ConfigError: ``measured_mb`` is not a positive number or ``levers`` has unknown keys.
    """
    if not _finite(measured_mb) or measured_mb <= 0:
        raise ConfigError(Problem("measured_mb", "must be a number of MiB above 0", measured_mb))
    kind = device if isinstance(device, str) else device.type
    if workspace_bytes is None and not isinstance(device, str):
        # Imported here: torch is loaded already when the caller holds a torch.device.
        from autopeft.train.measured_memory import cuda_workspace_bytes

        workspace_bytes = cuda_workspace_bytes(device)
    resolved = _levers(levers)
    registry = method_registry.registry()
    if embeddings_trained is None:
        embeddings_trained = any(registry[name].trains_embeddings for name in candidate.methods)
    pred = predict_memory(
        profile,
        candidate,
        candidate_params(candidate, profile, registry),
        batch_size,
        seq_len,
        kind,
        embeddings_trained=embeddings_trained,
        workspace_bytes=workspace_bytes,
        levers=resolved,
        methods=registry,
    )
    terms = activation_terms(
        profile,
        candidate,
        batch_size,
        seq_len,
        embeddings_trained,
        resolved.gradient_checkpointing if resolved else False,
        registry,
    )
    width = activation_width(kind, resolved)
    return MemoryRow(profile.family, kind, float(measured_mb), pred.static / MB, width, terms)


def _levers(levers: Levers | Mapping[str, Any] | None) -> Levers | None:
    if levers is None or isinstance(levers, Levers):
        return levers
    fields = set(Levers.__dataclass_fields__)
    hint = f"the levers are {', '.join(sorted(fields))}"
    unknown = sorted(set(levers) - fields)
    if unknown:
        raise ConfigError(Problem(f"levers.{unknown[0]}", "is not a lever", unknown[0], hint))
    needed = [
        name for name in ("batch_size", "micro_batch_size", "max_length") if name not in levers
    ]
    if needed:
        raise ConfigError(Problem(f"levers.{needed[0]}", "is required", hint=hint))
    return Levers(**levers)


def _coeffs_for(table: CoeffTable, family: str, device: str) -> Terms:
    """``activation_coeffs``' lookup over ``table``: the device's, then CPU's, then CPU BERT's."""
    for entries in (table.get(device, {}), table["cpu"]):
        if family in entries:
            return entries[family]
    return table["cpu"]["bert"]


def _merged(coeffs: CoeffTable | None) -> dict[str, dict[str, Terms]]:
    """``ACTIVATION_COEFFS`` with ``coeffs``' entries in place of its own."""
    table = {device: dict(entries) for device, entries in ACTIVATION_COEFFS.items()}
    for device, entries in (coeffs or {}).items():
        table.setdefault(device, {}).update(entries)
    return table


def repredict_memory(rows: Iterable[MemoryRow], coeffs: CoeffTable | None = None) -> list[float]:
    """Each row's predicted peak in MiB with the coefficients of ``coeffs``.

    Args:
        rows: measured rows (:func:`memory_row`, or :meth:`MemoryRow.from_dict`).
        coeffs: a table in ``ACTIVATION_COEFFS``' shape (a fit's result) whose entries replace
            the model's own; a device and family it lacks fall back as ``predict_memory``'s
            do. None: the model's own coefficients (the prediction a trial makes).
    """
    table = _merged(coeffs)
    out = []
    for row in rows:
        terms = _coeffs_for(table, row.family, row.device)
        act = row.act_bytes * sum(c * x for c, x in zip(terms, row.terms))
        out.append(row.static_mb + int(act) / MB)
    return out


def _start(table: CoeffTable, family: str, device: str) -> Terms:
    """Where a fit of (device, family) starts: its entry; else the device's own physics.

    A device with entries for other families lends one (BERT's where there): fused attention
    and DoRA's tensors are the device's, not the family's. Else ``predict_memory``'s fallback.
    """
    entries = table.get(device, {})
    if family in entries:
        return entries[family]
    if entries:
        return entries["bert"] if "bert" in entries else entries[sorted(entries)[0]]
    return _coeffs_for(table, family, device)


def fit_activation_coeffs(
    rows: Sequence[MemoryRow],
    fit_terms: Mapping[str, Sequence[str]] | None = None,
    start: CoeffTable | None = None,
) -> dict[str, dict[str, Terms]]:
    """Non-negative activation coefficients per device and family, minimising relative error.

    For each (device, family) among the rows, the terms of ``fit_terms`` that some row
    exercises are solved by non-negative least squares on each row's relative error
    ``(predicted - measured) / measured``; every other term keeps its starting value: the
    entry of ``start`` for that device and family, else another family's entry on the same
    device, else the one ``predict_memory`` falls back to.

    Args:
        rows: the measured rows (any mix of devices and families).
        fit_terms: device -> the term names to solve for; None: :data:`FIT_TERMS` (a device
            not named there uses the CPU's).
        start: starting entries (``ACTIVATION_COEFFS``' shape) in place of autopeft's own;
            None: autopeft's own.

    Returns:
        device -> family -> fitted ``Terms``, only for the pairs the rows cover (pass it as
        ``coeffs`` to :func:`repredict_memory`, or paste :func:`format_activation_coeffs`).

    Raises:
        ConfigError: no rows, or ``fit_terms`` names an unknown term.
    """
    import numpy as np
    from scipy.optimize import nnls

    if not rows:
        raise ConfigError(
            Problem("rows", "must hold at least one measured row", hint="see memory_row")
        )
    chosen = FIT_TERMS | dict(fit_terms or {})
    for device, names in chosen.items():
        for name in names:
            if name not in Terms._fields:
                hint = f"the terms are {', '.join(Terms._fields)}"
                raise ConfigError(
                    Problem(f"fit_terms.{device}", "names an unknown term", name, hint)
                )
    table = _merged(start)
    fitted: dict[str, dict[str, Terms]] = {}
    for device, family in sorted({(r.device, r.family) for r in rows}):
        mine = [r for r in rows if (r.device, r.family) == (device, family)]
        begin = _start(table, family, device)._asdict()
        names = chosen.get(device, chosen["cpu"])
        free = [t for t in names if any(getattr(r.terms, t) for r in mine)]
        fixed = [t for t in Terms._fields if t not in free]
        # Each row scaled by 1/measured: the residuals are relative errors.
        a = np.array(
            [[r.act_bytes * getattr(r.terms, t) / MB / r.measured_mb for t in free] for r in mine]
        )
        b = np.array(
            [
                (
                    r.measured_mb
                    - r.static_mb
                    - r.act_bytes * sum(begin[t] * getattr(r.terms, t) for t in fixed) / MB
                )
                / r.measured_mb
                for r in mine
            ]
        )
        solution = nnls(a, b)[0].tolist() if free else []
        begin.update(zip(free, (float(v) for v in solution)))
        fitted.setdefault(device, {})[family] = Terms(**begin)
    return fitted


def format_activation_coeffs(coeffs: CoeffTable, digits: int = 3) -> str:
    """``coeffs`` as the entries of ``ACTIVATION_COEFFS`` in autopeft's source, to paste."""
    lines = []
    for device in sorted(coeffs):
        lines.append(f'    "{device}": {{')
        for family in sorted(coeffs[device]):
            terms = coeffs[device][family]
            values = [round(v, digits) + 0.0 for v in terms]  # + 0.0: no "-0.0"
            args = [repr(v) for v in values[:4]]
            args += [f"{n}={v!r}" for n, v in zip(Terms._fields[4:], values[4:]) if v]
            lines.append(f'        "{family}": Terms({", ".join(args)}),')
        lines.append("    },")
    return "\n".join(lines)
