"""On the device machine: unpack ``.gpu/site.tar.xz`` and rebuild MiniLM's fp32 weights.

    python3 bench/gpu/unpack.py .gpu/site.tar.xz /tmp/gpu    # then PYTHONPATH=/tmp/gpu/site

Needs only what the device image has (torch, safetensors). See ``bundle.py``.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bundle import MODEL_DIR, QUANT_NAME, dequantize  # noqa: E402


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


if __name__ == "__main__":
    print(unpack(Path(sys.argv[1]), Path(sys.argv[2])))
