"""On the device machine: unpack ``.gpu/site.tar.xz`` and rebuild MiniLM's fp32 weights.

    python3 -m bench.gpu.unpack .gpu/site.tar.xz /tmp/gpu    # then PYTHONPATH=/tmp/gpu/site

Needs only what the device image has (torch, safetensors). See ``bundle.py``.
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from bench.gpu.bundle import MODEL_DIR, QUANT_NAME, dequantize


def unpack(archive: Path, dest: Path) -> Path:
    """Extract the archive under ``dest`` and write ``model.safetensors``; returns the site."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    site = dest / "site"
    model = site / MODEL_DIR
    save_file(dequantize(load_file(str(model / QUANT_NAME))), str(model / "model.safetensors"))
    (model / QUANT_NAME).unlink()
    return site


def main() -> None:
    """Unpack the archive given and print the site folder (for ``PYTHONPATH``)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu.unpack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("archive", type=Path, help="the bundle, .gpu/site.tar.xz")
    parser.add_argument("dest", type=Path, help="where to unpack it")
    args = parser.parse_args()
    print(unpack(args.archive, args.dest))


if __name__ == "__main__":
    main()
